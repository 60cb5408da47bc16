// apps/cni/dispatch.ts isFeltPlugin: felt's forwarder of a type is told from a foreign executable of the same
// name by the mark compiled into it, and the answer feltd remembers for a forwarder file is dropped as soon as
// the file changes (rewritten in place, or replaced by another file), so a foreign plugin put where felt's was is
// executed, never run as felt's.

import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isFeltPlugin } from '../../apps/cni/dispatch.ts';
import { FELT_CNI } from '../support/cni.ts';

const dir = mkdtempSync(join(tmpdir(), 'felt-mark-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('isFeltPlugin on forwarders', () => {
  it("knows felt's forwarder by its type's mark, asked again and again", () => {
    const p = join(dir, 'bridge');
    copyFileSync(join(FELT_CNI, 'bridge'), p);
    for (let i = 0; i < 3; i++) {
      expect(isFeltPlugin(p, 'bridge')).toBe(true);
      expect(isFeltPlugin(p, 'ptp')).toBe(false);
    }
  });

  it('a forwarder rewritten in place without its mark is not felt’s any more, and is again once the mark is back', () => {
    const p = join(dir, 'inplace');
    copyFileSync(join(FELT_CNI, 'bridge'), p);
    expect(isFeltPlugin(p, 'bridge')).toBe(true);
    const felt = readFileSync(p);
    const mark = Buffer.from('felt-cni-forwarder type=bridge;');
    const foreign = Buffer.from(felt);
    foreign.fill('x', foreign.indexOf(mark), foreign.indexOf(mark) + mark.length);
    // Same inode, same size: only the contents and the times differ.
    writeFileSync(p, foreign);
    utimesSync(p, new Date(1_000_000), new Date(1_000_000));
    expect(isFeltPlugin(p, 'bridge')).toBe(false);
    writeFileSync(p, felt);
    utimesSync(p, new Date(2_000_000), new Date(2_000_000));
    expect(isFeltPlugin(p, 'bridge')).toBe(true);
  });

  it('a foreign executable moved over the forwarder is not felt’s', () => {
    const p = join(dir, 'replaced');
    copyFileSync(join(FELT_CNI, 'bridge'), p);
    expect(isFeltPlugin(p, 'bridge')).toBe(true);
    copyFileSync('/bin/true', `${p}.new`);
    renameSync(`${p}.new`, p);
    expect(isFeltPlugin(p, 'bridge')).toBe(false);
  });
});
