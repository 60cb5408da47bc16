// A plugin type is a file name looked up in CNI_PATH (libcni's FindInPath refuses a path separator): felt's
// lookup, used by every delegation (bridge -> its IPAM, flannel -> its delegate) and by `felt cni`, never
// reaches outside CNI_PATH, whatever a config says.

import { describe, expect, it } from 'vitest';
import { findInPath } from '../../apps/cni/dispatch.ts';

describe('findInPath', () => {
  it.each(['../../bin/sh', '../bin/sh', '/bin/sh', 'bin/sh', '..', '.', ''])('%j: not found, whatever CNI_PATH holds', (type) => {
    expect(findInPath(type, ['/usr/lib/cni', '/usr/lib', '/'])).toBeUndefined();
  });

  it('a plain name is found in the first directory that has it', () => {
    expect(findInPath('sh', ['/nonexistent', '/bin'])).toBe('/bin/sh');
  });
});
