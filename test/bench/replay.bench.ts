// npm run bench:replay: `felt replay` of a 1,000,000-event log, as a user runs it (dist/bin/felt, from spawn to
// exit, its JSON written to a file), against the raw cost of reading that log measured side by side in the
// same run: a plain node script that SELECTs every row with better-sqlite3 and JSON.parses its data, nothing
// else. Rounds alternate felt and the baseline; medians of wall and CPU time (user + system) and peak RSS (GNU
// time's %U, %S, %M) are printed for docs/benchmarks.md. That replay is correct is tested in test/core/replay.test.ts; this file only measures.
//
// The log (generated in a temp dir, BENCH_EVENTS events, default 1,000,000):
//   - ipam/bench (80%): host-local churn on a /16, pods allocated and released in turn, ~2,000 held at a time;
//   - node/198.51.100.1 (20%): feltd's config and own lease, then remote leases of 500 nodes appearing,
//     changing their VtepMAC and leaving.
// Rows are inserted directly (in the shapes the real deciders emit: core/ipam/decider.ts, core/flannel/node.ts),
// because a million real decisions would take longer than the measurement; the replayed state is checked
// against what the generator knows.

import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import * as E from 'fp-ts/lib/Either.js';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { ROOT } from '../support/cni.ts';

const N = Number(process.env['BENCH_EVENTS'] ?? 1_000_000);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const FELT = join(ROOT, 'dist', 'bin', 'felt');
const HELD = 2000;
const NODES = 500;
const T0 = Date.parse('2026-01-01T00:00:00.000Z');

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const hex = (i: number, width: number): string => i.toString(16).padStart(width, '0');
const ipOf = (i: number): string => `10.88.${(i >> 8) & 255}.${i & 255}`;
const mac = (i: number, gen: number): string =>
  `02:${hex(gen & 255, 2)}:${hex((i >> 16) & 255, 2)}:${hex((i >> 8) & 255, 2)}:${hex(i & 255, 2)}:01`;

/** Writes the log; returns how many allocations and remote leases the end state holds. */
function generate(dir: string): { held: number; remotes: number } {
  const s = openSqliteStore(dir); // felt's schema
  if (E.isLeft(s)) throw new Error(s.left.msg);
  s.right.close();
  const db = new Database(join(dir, 'felt.db'));
  db.pragma('synchronous = OFF');
  const insert = db.prepare('INSERT INTO events (stream, type, data, time) VALUES (?, ?, ?, ?)');
  const nodeStream = 'node/198.51.100.1';
  let t = T0;
  const time = (): string => new Date((t += 7)).toISOString();
  // ipam: a ring of 2,000 pods; each step allocates the next address and, once full, releases the oldest.
  const held: { ip: string; containerId: string }[] = [];
  let next = 2;
  let pod = 0;
  const remotes = new Map<number, number>(); // node -> generation
  let nodeStep = 0;
  db.transaction(() => {
    insert.run(
      nodeStream,
      'ConfigLoaded',
      JSON.stringify({
        config: {
          network: '10.244.0.0/16',
          subnetLen: 24,
          subnetMin: '10.244.1.0',
          subnetMax: '10.244.255.0',
          enableIPv4: true,
          enableIPv6: false,
          backend: { type: 'vxlan', vni: 1, port: 8472 },
        },
      }),
      time(),
    );
    insert.run(
      nodeStream,
      'SubnetLeased',
      JSON.stringify({
        key: '10.244.1.0-24',
        subnet: '10.244.1.0/24',
        publicIP: '198.51.100.1',
        backendType: 'vxlan',
        vtepMac: '02:00:00:00:00:01',
        expiration: '2026-01-02T00:00:00.000Z',
        renewal: false,
      }),
      time(),
    );
    for (let i = 2; i < N; i++) {
      if (i % 5 === 0) {
        // node: 500 remote nodes appear, change (a new VtepMAC) and leave, in turn.
        const n = nodeStep % NODES;
        const gen = Math.floor(nodeStep / NODES);
        nodeStep++;
        const key = `10.244.${(n % 250) + 2}.${Math.floor(n / 250) * 128}-25`;
        const subnet = `10.244.${(n % 250) + 2}.${Math.floor(n / 250) * 128}/25`;
        const publicIP = `198.51.100.${(n % 200) + 20}`;
        if (gen % 3 === 2) {
          insert.run(nodeStream, 'RemoteLeaseRemoved', JSON.stringify({ key, subnet, publicIP, reason: 'removed' }), time());
          remotes.delete(n);
        } else {
          const attrs = { PublicIP: publicIP, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac(n, gen) } };
          const change = remotes.has(n)
            ? { change: 'changed', changes: [`VtepMAC ${mac(n, gen - 1)} -> ${mac(n, gen)}`] }
            : { change: 'appeared' };
          insert.run(
            nodeStream,
            'RemoteLeaseSeen',
            JSON.stringify({ key, subnet, attrs, expiration: '2026-01-02T00:00:00.000Z', ...change }),
            time(),
          );
          remotes.set(n, gen);
        }
        continue;
      }
      if (held.length >= HELD && (i & 1) === 0) {
        const gone = held.shift()!;
        insert.run(
          'ipam/bench',
          'AddressReleased',
          JSON.stringify({ network: 'bench', containerId: gone.containerId, ifname: 'eth0', rangeSet: 0, ip: gone.ip, reason: 'del' }),
          time(),
        );
        continue;
      }
      const ip = ipOf(next);
      next = next >= 65_533 ? 2 : next + 1;
      const containerId = hex(pod++, 16).repeat(4); // a 64-hex container ID, as runtimes give
      held.push({ ip, containerId });
      insert.run(
        'ipam/bench',
        'AddressAllocated',
        JSON.stringify({ network: 'bench', containerId, ifname: 'eth0', rangeSet: 0, ip }),
        time(),
      );
    }
  })();
  db.close();
  return { held: held.length, remotes: remotes.size };
}

const BASELINE = `
const Database = require(${JSON.stringify(join(ROOT, 'node_modules', 'better-sqlite3'))});
const db = new Database(process.argv[2], { readonly: true });
let n = 0;
for (const r of db.prepare('SELECT position, stream, type, data, time FROM events ORDER BY position').iterate()) { JSON.parse(r.data); n++; }
process.stdout.write(String(n) + '\\n');
`;

interface Run {
  readonly ms: number;
  /** User + system CPU time: less disturbed than wall time by other work on the machine. */
  readonly cpuMs: number;
  readonly rssMb: number;
}

/** Spawn to exit, with GNU time's peak RSS and CPU time; stdout to `outFile`. */
function timed(argv: readonly string[], outFile: string): Run {
  const fd = openSync(outFile, 'w');
  try {
    const t0 = performance.now();
    const r = spawnSync('/usr/bin/time', ['-f', '%M %U %S', ...argv], { stdio: ['ignore', fd, 'pipe'], encoding: 'utf8' });
    const ms = performance.now() - t0;
    if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr}`);
    const [kb, user, sys] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number) as [number, number, number];
    return { ms, cpuMs: (user + sys) * 1000, rssMb: kb / 1024 };
  } finally {
    closeSync(fd);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'felt-replay-bench-'));
try {
  const g0 = performance.now();
  const expected = generate(dir);
  const genS = (performance.now() - g0) / 1000;
  const db = join(dir, 'felt.db');
  const script = join(dir, 'baseline.cjs');
  writeFileSync(script, BASELINE);
  const out = join(dir, 'out.json');

  // What felt prints must be the state the generator built (checked once, outside the timings).
  execFileSync(FELT, ['replay', '--data-dir', dir, '--stream', 'ipam/bench', '--desired'], {
    stdio: ['ignore', openSync(out, 'w'), 'inherit'],
  });
  const ipam = JSON.parse(readFileSync(out, 'utf8')) as { allocations: unknown[] };
  execFileSync(FELT, ['replay', '--data-dir', dir, '--stream', 'node/198.51.100.1', '--desired'], {
    stdio: ['ignore', openSync(out, 'w'), 'inherit'],
  });
  const node = JSON.parse(readFileSync(out, 'utf8')) as { remoteLeases: unknown[] };
  if (ipam.allocations.length !== expected.held || node.remoteLeases.length !== expected.remotes) {
    throw new Error(
      `replay disagrees with the generator: ${ipam.allocations.length}/${expected.held} allocations, ${node.remoteLeases.length}/${expected.remotes} remote leases`,
    );
  }

  const runs: Record<string, Run[]> = { all: [], ipam: [], base: [] };
  for (let i = 0; i < ROUNDS; i++) {
    runs['base']!.push(timed(['node', script, db], out));
    runs['all']!.push(timed([FELT, 'replay', '--data-dir', dir], out));
    runs['ipam']!.push(timed([FELT, 'replay', '--data-dir', dir, '--stream', 'ipam/bench'], out));
  }
  const base = median(runs['base']!.map((r) => r.ms));
  const baseCpu = median(runs['base']!.map((r) => r.cpuMs));
  const row = (what: string, rs: readonly Run[]): string => {
    const ms = median(rs.map((r) => r.ms));
    const cpu = median(rs.map((r) => r.cpuMs));
    return `| ${what} | ${(ms / 1000).toFixed(2)} | ${(ms / base).toFixed(2)} | ${(cpu / 1000).toFixed(2)} | ${(cpu / baseCpu).toFixed(2)} | ${Math.max(...rs.map((r) => r.rssMb)).toFixed(0)} |`;
  };
  console.log(
    `felt replay; ${new Date().toISOString().slice(0, 10)}, node ${process.version}, ${N} events (generated in ${genS.toFixed(1)} s), ${ROUNDS} rounds, medians`,
  );
  console.log('| run | wall s | wall ratio to baseline | CPU s | CPU ratio to baseline | peak RSS MB |');
  console.log('|---|---|---|---|---|---|');
  console.log(row(`\`felt replay\` (every stream, ${N} events)`, runs['all']!));
  console.log(row(`\`felt replay --stream ipam/bench\` (${Math.round(N * 0.8)} events)`, runs['ipam']!));
  console.log(row('baseline: node + better-sqlite3 SELECT + JSON.parse of every row', runs['base']!));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
