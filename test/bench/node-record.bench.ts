// npm run bench:node-record: what feltd's `record` pays for one lease event when the node knows 10,000 remote
// leases, side by side in one run on one long-lived connection each (as feltd keeps it), alternating:
//   - table: transactRows over the node table's view (reads the one remote it names, writes its row and the
//     small header), then the daemon's cached NodeState evolved with the new events;
//   - snapshot: the whole-state projection every record used before tables (load, decide, rewrite the ~3 MB
//     snapshot JSON).
// Each round records a VtepMAC change of one remote (a real event). Prints medians, p90 and the ratio.

import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { fold, type Projection } from '../../core/events.ts';
import {
  decide,
  decideNodeIn,
  evolve,
  evolveAll,
  initialState,
  nodeProjection,
  nodeStream,
  type NodeCommand,
  type NodeEvent,
  type NodeState,
} from '../../core/flannel/node.ts';
import type { Lease } from '../../core/flannel/types.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import type { EventStore } from '../../adapters/store/types.ts';

const N = Number(process.env['BENCH_N'] ?? 60);
const REMOTES = Number(process.env['BENCH_REMOTES'] ?? 10_000);
const stream = nodeStream('198.51.100.1');
const T = '2030-01-01T00:00:00.000Z';
const EXP = '2030-01-02T00:00:00.000Z';

const snapshotProjection: Projection<NodeState, NodeEvent> = { name: 'feltd-node-snapshot-bench', initialState, evolve, evolveAll };

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const p90 = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!;

const hex = (n: number) => n.toString(16).padStart(2, '0');
const lease = (n: number, flip = 0): Lease => ({
  subnet: `10.${128 + (n >> 8)}.${n & 255}.0/24`,
  attrs: {
    PublicIP: `10.0.${n >> 8}.${n & 255}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: `3e:00:${hex(flip)}:${hex(n >> 8)}:${hex(n & 255)}:01` },
  },
  expiration: EXP,
});

const open = (dir: string): EventStore => {
  const s = openSqliteStore(dir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  return s.right;
};
const err = (m: string) => ({ code: 999, msg: m });

interface Side {
  readonly name: string;
  readonly dir: string;
  readonly store: EventStore;
  state: NodeState;
  readonly ms: number[];
  /** Of which: evolving the cached state (table side). */
  readonly foldMs: number[];
  readonly record: (cmd: NodeCommand) => void;
}

function side(name: string, table: boolean): Side {
  const dir = mkdtempSync(join(tmpdir(), 'felt-node-record-'));
  const store = open(dir);
  const s: Side = {
    name,
    dir,
    store,
    state: initialState(),
    ms: [],
    foldMs: [],
    record: (cmd) => {
      if (table) {
        const r = store.transactRows(stream, nodeProjection, (v) => E.mapLeft(err)(decideNodeIn(cmd, v)), { time: T });
        if (E.isLeft(r)) throw new Error(r.left.msg);
        const t1 = performance.now();
        s.state = r.right.replayed.length ? s.state : fold(nodeProjection, r.right.events, s.state);
        s.foldMs.push(performance.now() - t1);
      } else {
        const r = store.transact(stream, snapshotProjection, (st) => E.mapLeft(err)(decide(cmd, st)), { time: T });
        if (E.isLeft(r)) throw new Error(r.left.msg);
        s.state = r.right.state;
      }
    },
  };
  return s;
}

const sides = [side('table', true), side('snapshot', false)];
try {
  const all = Array.from({ length: REMOTES }, (_, i) => lease(i));
  for (const s of sides) {
    s.record({ type: 'ObserveLeases', data: { snapshot: { leases: all, revision: 1 } }, metadata: { time: T } });
    if (Object.keys(s.state.remotes).length !== REMOTES) throw new Error(`${s.name}: fill failed`);
  }
  for (let i = -2; i < N; i++) {
    const n = (i + 2) % REMOTES;
    const cmd: NodeCommand = {
      type: 'ApplyLeaseEvents',
      data: { events: [{ type: 'added', lease: lease(n, 1 + ((i + 2) % 200)) }] },
      metadata: { time: T },
    };
    for (const s of i % 2 === 0 ? sides : [...sides].reverse()) {
      const t0 = performance.now();
      s.record(cmd);
      const dt = performance.now() - t0;
      if (i >= 0) s.ms.push(dt);
      else s.foldMs.length = 0;
    }
  }
  const [t, o] = sides as [Side, Side];
  if (JSON.stringify(t.state.remotes) !== JSON.stringify(o.state.remotes)) throw new Error('the two sides disagree');
  const size = (s: Side) => (statSync(join(s.dir, 'felt.db')).size / 1e6).toFixed(1);
  console.log(
    `feltd record of one lease event with ${REMOTES} remote leases; ${N} rounds alternating, ${new Date().toISOString().slice(0, 10)}, node ${process.version}`,
  );
  console.log('| record | median ms | p90 ms |');
  console.log('|---|---|---|');
  console.log(`| table (transactRows, one row + header; cached state evolved) | ${median(t.ms).toFixed(2)} | ${p90(t.ms).toFixed(2)} |`);
  console.log(`| of which evolving the cached NodeState | ${median(t.foldMs).toFixed(2)} | ${p90(t.foldMs).toFixed(2)} |`);
  console.log(`| whole-state snapshot (before tables) | ${median(o.ms).toFixed(2)} | ${p90(o.ms).toFixed(2)} |`);
  console.log(
    `ratio table/snapshot: ${(median(t.ms) / median(o.ms)).toFixed(3)}; db files ${size(t)} MB (table) vs ${size(o)} MB (snapshot)`,
  );
} finally {
  for (const s of sides) {
    s.store.close();
    rmSync(s.dir, { recursive: true, force: true });
  }
}
