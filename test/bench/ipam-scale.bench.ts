// npm run bench:ipam: does host-local's ADD cost grow with the allocations a network already holds? A /16 with
// 10 and with 60,000 allocations (filled through the store API in one transaction, not 60,000 processes),
// measured side by side in one run, alternating:
//   - the ADD transaction in process (open, transactRows over the table's view, close), and, for comparison,
//     the same ADD over a whole-state snapshot projection (what every transaction did before tables);
//   - a whole `dist/cni/host-local` ADD process.
// Each measured ADD is followed by an unmeasured DEL, so the count stays put. Prints medians, p90 and the
// ratio 60k/10 (pasted into docs/benchmarks.md). Correctness is tested in test/core/ipam-decider.test.ts.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { Projection } from '../../core/events.ts';
import { formatIP } from '../../core/ip/ip.ts';
import { parseIpamConf } from '../../core/ipam/config.ts';
import {
  decide,
  decideIpam,
  evolve,
  initialState,
  ipamProjection,
  ipamStream,
  type IpamEvent,
  type IpamState,
} from '../../core/ipam/decider.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import { FELT_CNI, runCni } from '../support/cni.ts';

const N = Number(process.env['BENCH_N'] ?? 40);
const SIZES = [10, 60_000] as const;
const NET = 'scale';
const SUBNET = '10.88.0.0/16';
const T = new Date(0).toISOString();

/** The pre-table projection: the whole state as one snapshot row, rewritten by every transaction. */
const snapshotProjection: Projection<IpamState, IpamEvent> = {
  name: 'ipam-snapshot-bench',
  initialState,
  evolve,
  // One copy per batch (the 60,000-event fill), equal to folding with evolve.
  evolveAll: (s, events) => {
    const allocations = { ...s.allocations };
    const lastReserved = { ...s.lastReserved };
    for (const e of events) {
      const { ip, containerId, ifname, rangeSet } = e.data;
      if (e.type === 'AddressAllocated') {
        allocations[ip] = { ip, containerId, ifname, rangeSet, since: e.time, position: e.position };
        lastReserved[String(rangeSet)] = ip;
      } else if (allocations[ip]?.containerId === containerId && allocations[ip]?.ifname === ifname) delete allocations[ip];
    }
    return { allocations, lastReserved };
  },
};

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const p90 = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!;

const conf = (() => {
  const c = parseIpamConf({ cniVersion: '1.0.0', name: NET, type: 'bridge', raw: { ipam: { ranges: [[{ subnet: SUBNET }]] } } }, {});
  if (E.isLeft(c)) throw new Error(c.left.msg);
  return c.right;
})();

const open = (dir: string): EventStore => {
  const s = openSqliteStore(dir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  return s.right;
};

/** `held` allocations 10.88.0.2, .3, ... in one transaction, through the store API. */
function fill(dir: string, held: number, table: boolean): void {
  const s = open(dir);
  const events: IpamEvent[] = [];
  for (let i = 0; i < held; i++) {
    const v = 0x0a580002 + i;
    const ip = formatIP({ family: 4, value: BigInt(v) });
    events.push({ type: 'AddressAllocated', data: { network: NET, containerId: `fill${i}`, ifname: 'eth0', rangeSet: 0, ip } });
  }
  const r = table
    ? s.transactRows(ipamStream(NET), ipamProjection, () => E.right(events), { time: T })
    : s.transact(ipamStream(NET), snapshotProjection, () => E.right(events), { time: T });
  s.close();
  if (E.isLeft(r)) throw new Error(r.left.msg);
}

interface Side {
  readonly name: string;
  readonly held: number;
  readonly table: boolean;
  readonly dir: string;
  readonly tx: number[];
  readonly proc: number[];
}

/** One in-process ADD (measured: open, transaction, close) and its DEL (not measured). */
function addInProcess(s: Side, i: number): void {
  const t0 = performance.now();
  const store = open(s.dir);
  const add = { type: 'AllocateAddresses' as const, data: { conf, containerId: `tx${i}`, ifname: 'eth0' } };
  const r = s.table
    ? store.transactRows(ipamStream(NET), ipamProjection, (v) => decideIpam(add, v), { time: T })
    : store.transact(ipamStream(NET), snapshotProjection, (st) => decide(add, st), { time: T });
  store.close();
  s.tx.push(performance.now() - t0);
  if (E.isLeft(r) || r.right.events.length !== 1) throw new Error(`${s.name}: ADD failed`);
  const d = open(s.dir);
  const rel = { type: 'ReleaseAddresses' as const, data: { network: NET, containerId: `tx${i}`, ifname: 'eth0' } };
  const r2 = s.table
    ? d.transactRows(ipamStream(NET), ipamProjection, (v) => decideIpam(rel, v), { time: T })
    : d.transact(ipamStream(NET), snapshotProjection, (st) => decide(rel, st), { time: T });
  d.close();
  if (E.isLeft(r2)) throw new Error(`${s.name}: DEL failed`);
}

async function addProcess(s: Side, i: number): Promise<void> {
  const config = {
    cniVersion: '1.0.0',
    name: NET,
    type: 'bridge',
    ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET }]], dataDir: s.dir },
  };
  const common = { dir: FELT_CNI, type: 'host-local', containerId: `proc${i}`, netns: '/var/run/netns/none', ifname: 'eth0', config };
  const a = await runCni({ ...common, command: 'ADD' });
  if (a.code !== 0) throw new Error(`${s.name} host-local ADD failed: ${a.stdout}${a.stderr}`);
  s.proc.push(a.ms);
  const d = await runCni({ ...common, command: 'DEL' });
  if (d.code !== 0) throw new Error(`${s.name} host-local DEL failed: ${d.stdout}${d.stderr}`);
}

async function main(): Promise<void> {
  const sides: Side[] = [];
  for (const table of [true, false]) {
    for (const held of SIZES) {
      sides.push({
        name: `${table ? 'table' : 'snapshot'} ${held}`,
        held,
        table,
        dir: mkdtempSync(join(tmpdir(), 'felt-ipam-scale-')),
        tx: [],
        proc: [],
      });
    }
  }
  try {
    const f0 = performance.now();
    for (const s of sides) {
      const t = performance.now();
      fill(s.dir, s.held, s.table);
      if (process.env['BENCH_VERBOSE']) console.error(`fill ${s.name}: ${Math.round(performance.now() - t)} ms`);
    }
    const fillMs = performance.now() - f0;
    // One warm-up round, not counted; then alternate the order every round.
    for (let i = -1; i < N; i++) {
      const order = i % 2 === 0 ? sides : [...sides].reverse();
      for (const s of order) addInProcess(s, i + 1);
      for (const s of order) if (s.table) await addProcess(s, i + 1);
      if (i < 0) for (const s of sides) ((s.tx.length = 0), (s.proc.length = 0));
    }
    const by = (table: boolean, held: number) => sides.find((s) => s.table === table && s.held === held)!;
    const [t10, t60, s10, s60] = [by(true, 10), by(true, 60_000), by(false, 10), by(false, 60_000)];
    console.log(
      `host-local ADD in a /16, 10 vs 60,000 allocations held; ${N} rounds alternating, ${new Date().toISOString().slice(0, 10)}, node ${process.version}; fill of all four logs ${Math.round(fillMs)} ms`,
    );
    console.log('| what | 10 held median ms | 60,000 held median ms | ratio 60k/10 | 10 p90 | 60k p90 |');
    console.log('|---|---|---|---|---|---|');
    const row = (what: string, a: readonly number[], b: readonly number[]) =>
      console.log(
        `| ${what} | ${median(a).toFixed(2)} | ${median(b).toFixed(2)} | ${(median(b) / median(a)).toFixed(2)} | ${p90(a).toFixed(2)} | ${p90(b).toFixed(2)} |`,
      );
    row('ADD transaction, table projection (open + transactRows + close)', t10.tx, t60.tx);
    row('ADD transaction, whole-state snapshot (before tables)', s10.tx, s60.tx);
    row('`dist/cni/host-local` ADD process (table)', t10.proc, t60.proc);
    console.log(`table/snapshot at 60,000: ${(median(t60.tx) / median(s60.tx)).toFixed(3)}`);
  } finally {
    for (const s of sides) rmSync(s.dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
