// npm run bench:store: what one felt host-local call pays for its event log: opening the SQLite store and one
// ADD transaction (decide over the table's view + append + the changed rows) with up to 200 allocations held,
// 200 times in a row, as successive plugin processes do (10 vs 60,000 held: npm run bench:ipam). Prints medians and p90 (pasted into docs/benchmarks.md). That every call
// allocates correctly is tested in test/adapters/store.test.ts; this file only measures.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { parseIpamConf } from '../../core/ipam/config.ts';
import { decideIpam, ipamProjection, ipamStream } from '../../core/ipam/decider.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';

const N = Number(process.env['BENCH_N'] ?? 200);
const pct = (xs: readonly number[], p: number): number =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

const dir = mkdtempSync(join(tmpdir(), 'felt-store-bench-'));
try {
  const open = () => {
    const s = openSqliteStore(dir);
    if (E.isLeft(s)) throw new Error(s.left.msg);
    return s.right;
  };
  open().close(); // the schema, once
  const c = parseIpamConf({ cniVersion: '1.0.0', name: 'n', type: 'bridge', raw: { ipam: { ranges: [[{ subnet: '10.0.0.0/16' }]] } } }, {});
  if (E.isLeft(c)) throw new Error(c.left.msg);
  const opens: number[] = [];
  const txs: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    const s = open();
    const t1 = performance.now();
    const r = s.transactRows(
      ipamStream('n'),
      ipamProjection,
      (v) => decideIpam({ type: 'AllocateAddresses', data: { conf: c.right, containerId: `c${i}`, ifname: 'eth0' } }, v),
      { time: new Date(0).toISOString() },
    );
    const t2 = performance.now();
    s.close();
    if (E.isLeft(r)) throw new Error(r.left.msg);
    opens.push(t1 - t0);
    txs.push(t2 - t1);
  }
  console.log(`sqlite event store; ${new Date().toISOString().slice(0, 10)}, node ${process.version}, ${N} calls`);
  console.log('| step | median ms | p90 ms |');
  console.log('|---|---|---|');
  console.log(`| open | ${pct(opens, 0.5).toFixed(2)} | ${pct(opens, 0.9).toFixed(2)} |`);
  console.log(`| ADD transaction (up to ${N} allocations held) | ${pct(txs, 0.5).toFixed(2)} | ${pct(txs, 0.9).toFixed(2)} |`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
