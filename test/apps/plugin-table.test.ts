// The extension points a new plugin or link kind must be added to, checked: `felt cni`'s in-process table
// (apps/cni/plugins/all.ts) names exactly the executables the build makes (apps/cni/bin/*.ts), each plugin under
// its own type, and each bin entry point runs the plugin of its name; every link kind with an `ip -d` info_kind
// reads back as itself (a kind the parser did not know would read as `device`, and every plan would delete and
// recreate it).

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { toLink } from '../../adapters/kernel/parse.ts';
import { FELT_PLUGINS } from '../../apps/cni/plugins/all.ts';
import { LINK_KINDS, type LinkKind } from '../../core/kernel/link-kinds.ts';
import { ROOT } from '../support/cni.ts';

const BIN = join(ROOT, 'apps', 'cni', 'bin');

describe('extension points', () => {
  it("felt cni's plugin table equals apps/cni/bin/*", () => {
    const bins = readdirSync(BIN)
      .filter((f) => f.endsWith('.ts'))
      .map((f) => f.slice(0, -3))
      .sort();
    expect(Object.keys(FELT_PLUGINS).sort()).toEqual(bins);
    for (const [type, p] of Object.entries(FELT_PLUGINS)) expect(p.type, type).toBe(type);
  });

  it('each bin entry point runs the plugin its table entry names', () => {
    for (const type of Object.keys(FELT_PLUGINS)) {
      const src = readFileSync(join(BIN, `${type}.ts`), 'utf8');
      expect(src, type).toMatch(new RegExp(`from '\\.\\./plugins/${type}\\.ts'`));
      expect(src, type).toMatch(/void main\(/);
    }
  });

  it('every link kind ip reports by info_kind parses back as itself', () => {
    for (const [kind, info] of Object.entries(LINK_KINDS) as [LinkKind, (typeof LINK_KINDS)[LinkKind]][]) {
      if (info.infoKind === null) continue;
      const data = 'infoType' in info ? { type: info.infoType } : {};
      expect(toLink('', { ifname: 'x0', linkinfo: { info_kind: info.infoKind, info_data: data } }).kind, kind).toBe(kind);
    }
    expect(toLink('', { ifname: 'lo', flags: ['LOOPBACK'] }).kind).toBe('loopback');
    expect(toLink('', { ifname: 'eth0', linkinfo: { info_kind: 'bond' } }).kind).toBe('device');
  });
});
