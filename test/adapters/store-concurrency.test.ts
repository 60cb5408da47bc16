// 50 host-local processes at once on one network, through the built executable: the write transaction
// serializes them, so they get 50 distinct addresses; 50 parallel DELs leave nothing allocated.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import { ipamProjection } from '../../core/ipam/decider.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { FELT_CNI, runCni } from '../support/cni.ts';

/** Build dist/ when host-local's bundle is missing or older than the sources it is made of. */
const dir = mkdtempSync(join(tmpdir(), 'felt-conc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = {
  cniVersion: '1.0.0',
  name: 'conc',
  type: 'bridge',
  ipam: { type: 'host-local', dataDir: dir, ranges: [[{ subnet: '10.77.0.0/24' }]] },
};
const call = (command: 'ADD' | 'DEL', i: number) =>
  runCni({ dir: FELT_CNI, type: 'host-local', command, containerId: `pod${i}`, netns: '/var/run/netns/none', ifname: 'eth0', config });

describe('concurrent plugin processes', () => {
  it('50 parallel ADDs get 50 distinct addresses; 50 parallel DELs leave none', async () => {
    // The database does not exist yet: the first openers also race to create the schema.
    const adds = await Promise.all(Array.from({ length: 50 }, (_, i) => call('ADD', i)));
    for (const a of adds) expect(a.code, a.stdout + a.stderr).toBe(0);
    const addrs = adds.map((a) => a.json.ips[0].address as string);
    expect(new Set(addrs).size).toBe(50);
    expect(addrs.every((a) => /^10\.77\.0\.([2-9]|[1-4][0-9]|5[01])\/24$/.test(a))).toBe(true);

    const store = openSqliteStore(dir);
    if (E.isLeft(store)) throw new Error(store.left.msg);
    const held = store.right.load('ipam/conc', ipamProjection);
    expect(E.isRight(held) && Object.keys(held.right.state.allocations).length).toBe(50);

    const dels = await Promise.all(Array.from({ length: 50 }, (_, i) => call('DEL', i)));
    for (const d of dels) expect(d.code, d.stdout + d.stderr).toBe(0);
    const after = store.right.load('ipam/conc', ipamProjection);
    expect(E.isRight(after) && after.right.state.allocations).toEqual({});
    const log = store.right.read({ stream: 'ipam/conc' });
    expect(E.isRight(log) && log.right.map((e) => e.position)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    store.right.close();
  }, 120_000);
});
