// npm run bench:feltd — how fast feltd turns leases into kernel state, against the raw `ip -batch` rate
// measured in the same run:
//   1. convergence: N remote leases in the embedded store, start feltd, time until all N routes, neighbours
//      and fdb entries are in the kernel (N = 1,000 and 10,000; 3 kernel objects each);
//   2. one lease change: add one remote lease while feltd runs, time until its route appears (`ip monitor`);
//      median and p99 over many changes, with the default resync period (5 s) and again with full resyncs
//      running back to back (feltd restarted with --iptables-resync 0.1), with how many changes overlapped a
//      full pass and how many ops full passes applied meanwhile (0: no full plan undid or redid a delta);
//   3. resync: the reconcile duration with nothing to do, and that it applies no op (from /metrics);
//   4. feltd's peak RSS (VmHWM from /proc/<pid>/status) over both runs.
// BENCH_FELTD_BASELINE=path/to/feltd measures another build (e.g. the previous commit's) in the same run, before
// this one at each size; BENCH_SIZES, BENCH_CHANGES, BENCH_BUSY_RESYNC, BENCH_FELTD_LOG (keep feltd's logs).
// BENCH_MODES=iptables,nftables runs each size in both modes (EnableNFTables in the network config), side by
// side; the nftables rows also wait for the remote-subnets set to hold all N elements, and report its size
// and the time one `nft -j list table ip flannel-ipv4` takes (what a full pass reads of it). Give
// BENCH_FELTD_ARGS=--ip-masq so that both modes have masquerade rules to keep.
// Node and remote addresses live in 198.51.100.0/24 inside throwaway namespaces.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sqliteLeaseStore } from '../../adapters/lease/sqlite.ts';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';

const SIZES = (process.env['BENCH_SIZES'] ?? '1000,10000').split(',').map(Number);
const CHANGES = Number(process.env['BENCH_CHANGES'] ?? 40);
const BUSY_RESYNC = Number(process.env['BENCH_BUSY_RESYNC'] ?? 1);
/** Another feltd executable (e.g. an older build) to measure in the same run, alternating with this one. */
const BASELINE = process.env['BENCH_FELTD_BASELINE'];
const BINS: [string, string][] = [
  ...(BASELINE ? [['baseline', BASELINE] as [string, string]] : []),
  ['this', join(ROOT, 'dist/bin/feltd')],
];
const tag = `fdb${process.pid}`;
const MODES = (process.env['BENCH_MODES'] ?? 'iptables').split(',') as ('iptables' | 'nftables')[];
const netConf = (mode: string): string =>
  JSON.stringify({
    Network: '10.0.0.0/8',
    SubnetLen: 24,
    ...(mode === 'nftables' ? { EnableNFTables: true } : {}),
    Backend: { Type: 'vxlan' },
  });
/** Elements of feltd's remote-subnets set in `ns` (0 when there is none), and how long listing the table took. */
function setElements(ns: string): { count: number; listMs: number } {
  const t0 = performance.now();
  let out = '';
  try {
    out = execFileSync('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'table', 'ip', 'flannel-ipv4'], {
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    });
  } catch {
    return { count: 0, listMs: performance.now() - t0 };
  }
  const listMs = performance.now() - t0;
  const set = (JSON.parse(out).nftables as { set?: { name: string; elem?: unknown[] } }[]).find(
    (x) => x.set?.name === 'remote-subnets',
  )?.set;
  return { count: set?.elem?.length ?? 0, listMs };
}
const sh = (...a: string[]) => execFileSync(a[0]!, a.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 28 }).toString();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

const mac = (i: number) => `02:${[i >> 24, i >> 16, i >> 8, i].map((b) => (b & 255).toString(16).padStart(2, '0')).join(':')}:01`;
const subnetOf = (i: number) => `10.${100 + (i >> 8)}.${i & 255}.0/24`; // 10.100.0.0 .. inside 10.0.0.0/8
const remoteIP = (i: number) => `198.51.100.${20 + (i % 200)}`;

function makeNode(name: string): void {
  sh('ip', 'netns', 'add', name);
  sh('ip', '-n', name, 'link', 'set', 'lo', 'up');
  sh('ip', '-n', name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0');
  sh('ip', '-n', name, 'addr', 'add', '198.51.100.11/24', 'dev', 'eth0');
  sh('ip', '-n', name, 'link', 'set', 'eth0', 'up');
  sh('ip', '-n', name, 'link', 'set', 'peer0', 'up');
}

/** The raw rate: the same 3N objects written by one `ip -batch` + one `bridge -batch`, no felt involved. */
function rawRate(n: number): number {
  const ns = `${tag}-raw`;
  makeNode(ns);
  try {
    sh(
      'ip',
      '-n',
      ns,
      'link',
      'add',
      'flannel.1',
      'type',
      'vxlan',
      'id',
      '1',
      'local',
      '198.51.100.11',
      'dev',
      'eth0',
      'dstport',
      '8472',
      'nolearning',
    );
    sh('ip', '-n', ns, 'link', 'set', 'flannel.1', 'up');
    const ipLines: string[] = [];
    const brLines: string[] = [];
    for (let i = 0; i < n; i++) {
      const net = subnetOf(i).split('/')[0]!;
      ipLines.push(`neigh replace ${net} lladdr ${mac(i)} dev flannel.1 nud permanent`);
      brLines.push(`fdb replace ${mac(i)} dev flannel.1 dst ${remoteIP(i)} self permanent`);
    }
    const routes = Array.from(
      { length: n },
      (_, i) => `route replace ${subnetOf(i)} via ${subnetOf(i).split('/')[0]} dev flannel.1 onlink`,
    );
    const t0 = performance.now();
    execFileSync('ip', ['-n', ns, '-batch', '-'], { input: ipLines.join('\n') + '\n' });
    execFileSync('ip', ['netns', 'exec', ns, 'bridge', '-batch', '-'], { input: brLines.join('\n') + '\n' });
    execFileSync('ip', ['-n', ns, '-batch', '-'], { input: routes.join('\n') + '\n' });
    return (3 * n) / ((performance.now() - t0) / 1000);
  } finally {
    sh('ip', 'netns', 'del', ns);
  }
}

const countRoutes = (ns: string): number =>
  sh('ip', '-n', ns, 'route', 'show')
    .split('\n')
    .filter((l) => l.includes('dev flannel.1') && l.includes('onlink')).length;

async function metrics(ns: string, port: number): Promise<string> {
  return sh(
    'ip',
    'netns',
    'exec',
    ns,
    'node',
    '-e',
    `fetch('http://127.0.0.1:${port}/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))`,
  );
}

interface Feltd {
  readonly pid: number;
  log(): string;
  stop(): Promise<void>;
}

/** feltd in the node namespace with `--iptables-resync resync`, debug logs on (pass and record timings). */
function startFeltd(bin: string, ns: string, dir: string, db: string, port: number, resync: number): Feltd {
  const p = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      bin,
      '--iface',
      'eth0',
      '--subnet-file',
      join(dir, 'subnet.env'),
      '--state-dir',
      join(dir, 'state'),
      '--net-config-path',
      join(dir, 'net-conf.json'),
      '--store',
      `sqlite:${db}`,
      '--iptables-resync',
      String(resync),
      '--cni-socket=',
      '--healthz-ip',
      '127.0.0.1',
      '--healthz-port',
      String(port),
      '-v=1',
      ...(process.env['BENCH_FELTD_ARGS'] ?? '').split(' ').filter(Boolean),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  p.stderr.on('data', (b: Buffer) => (log += b.toString()));
  return {
    // `ip netns exec` and `env -S` exec, so the child is node itself.
    pid: p.pid!,
    log: () => {
      if (p.exitCode !== null) throw new Error(`feltd exited: ${log.slice(-2000)}`);
      return log;
    },
    stop: async () => {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      if (p.exitCode === null) await exited;
    },
  };
}

/** Peak resident set (VmHWM) of a process, in MB. */
const peakRss = (pid: number): number => Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;

interface LogLine {
  time: string;
  msg: string;
  kind?: string;
  ms?: number;
  command?: string;
}
const logLines = (log: string): LogLine[] =>
  log.split('\n').flatMap((l) => {
    try {
      return l.startsWith('{') ? [JSON.parse(l) as LogLine] : [];
    } catch {
      return [];
    }
  });

/**
 * One change at a time: a new remote lease, until `ip monitor` shows its route. Returns the latencies, how many
 * changes overlapped a full pass (from feltd's `reconcile` debug lines: end time and duration), and what
 * recording each change in the event log cost (`recorded` debug lines).
 */
async function changes(ns: string, store: ReturnType<typeof sqliteLeaseStore>, feltd: Feltd, first: number, count: number) {
  const lat: number[] = [];
  const windows: [number, number][] = [];
  const mon = spawn('ip', ['-n', ns, 'monitor', 'route']);
  let seen = '';
  mon.stdout.on('data', (b: Buffer) => (seen += b.toString()));
  // The monitor is listening once it reports a route of our own.
  await eventually(
    () => {
      if (seen.includes('192.0.2.0/24')) return true;
      // Again until the monitor (started just now, maybe not listening yet) reports one.
      sh('ip', '-n', ns, 'route', 'replace', 'blackhole', '192.0.2.0/24');
      sh('ip', '-n', ns, 'route', 'del', 'blackhole', '192.0.2.0/24');
      return false;
    },
    { what: 'ip monitor to start', timeoutMs: 30_000, intervalMs: 20 },
  );
  const logFrom = feltd.log().length;
  for (let k = 0; k < count; k++) {
    const i = first + k;
    const want = `${subnetOf(i)} via`;
    const wall = Date.now();
    const t = performance.now();
    await store.acquire(
      {
        subnet: subnetOf(i),
        attrs: { PublicIP: remoteIP(i), PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac(i) } },
      },
      86400,
    )();
    while (!seen.includes(want)) {
      if (performance.now() - t > 10_000) throw new Error(`change ${want} never reached the kernel: ${feltd.log().slice(-2000)}`);
      await sleep(1);
    }
    lat.push(performance.now() - t);
    windows.push([wall, wall + (performance.now() - t)]);
    // Let the next change land anywhere in a resync cycle.
    await sleep((k % 7) * 13);
  }
  mon.kill();
  const lines = logLines(feltd.log().slice(logFrom));
  const passes = lines
    .filter((l) => l.msg === 'reconcile' && l.kind === 'full')
    .map((l) => [Date.parse(l.time) - l.ms!, Date.parse(l.time)] as const);
  const over = windows.map(([a, b]) => passes.some(([s, e]) => s < b && e > a));
  const overlapped = over.filter(Boolean).length;
  const overLat = lat.filter((_, i) => over[i]);
  const records = lines.filter((l) => l.msg === 'recorded' && l.command === 'ApplyLeaseEvents').map((l) => l.ms!);
  return {
    p50: pct(lat, 0.5),
    p99: pct(lat, 0.99),
    overlapped,
    overP50: overLat.length ? pct(overLat, 0.5) : NaN,
    overP99: overLat.length ? pct(overLat, 0.99) : NaN,
    fullPasses: passes.length,
    recordP50: pct(records, 0.5),
    recordP99: pct(records, 0.99),
  };
}

const val = (m: string, k: string) => Number(new RegExp(`^${k.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(m)?.[1] ?? NaN);
/** The first of these series that the scrape has (a baseline build may use the older feltd_ names). */
const either = (m: string, ...ks: string[]) => ks.map((k) => val(m, k)).find((v) => !Number.isNaN(v)) ?? NaN;
/** Every series of a metric family, summed over its labels. */
const family = (m: string, name: string) =>
  [...m.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((a, x) => a + Number(x[1]), 0);
const fullPasses = (m: string) =>
  either(m, 'felt_reconcile_duration_seconds_count{kind="full"}', 'feltd_reconcile_duration_seconds_count{kind="full"}');
const fullSeconds = (m: string) =>
  either(m, 'felt_reconcile_duration_seconds_sum{kind="full"}', 'feltd_reconcile_duration_seconds_sum{kind="full"}');
const opsApplied = (m: string) => family(m, 'felt_ops_applied_total') + family(m, 'feltd_ops_applied_total');
/** Whether the scrape has any series of the family. */
const has = (m: string, name: string) => new RegExp(`^${name}(?:\\{[^}]*\\})? `, 'm').test(m);
/**
 * Ops full passes applied (lease changes merged into them and drift repairs): felt_full_pass_ops_total, which
 * counts both; a build without it counts only drift, as felt_drift_repaired_total{kind=...} (or, older still,
 * feltd_drift_repaired_total). A scrape with none of them is an error, not a zero.
 */
const fullPassOps = (m: string) => {
  for (const name of ['felt_full_pass_ops_total', 'felt_drift_repaired_total', 'feltd_drift_repaired_total'])
    if (has(m, name)) return family(m, name);
  throw new Error(
    'the scrape has no full-pass or drift metric (felt_full_pass_ops_total, felt_drift_repaired_total, feltd_drift_repaired_total)',
  );
};

async function run(n: number, bin: string, mode: string) {
  const ns = `${tag}-n${n}`;
  const dir = mkdtempSync(join(tmpdir(), 'felt-bench-feltd-'));
  const db = join(dir, 'leases.db');
  const store = sqliteLeaseStore({ path: db });
  await store.putNetworkConfig(netConf(mode))();
  for (let i = 0; i < n; i++) {
    const r = await store.acquire(
      {
        subnet: subnetOf(i),
        attrs: { PublicIP: remoteIP(i), PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac(i) } },
      },
      86400,
    )();
    if (r._tag === 'Left' || r.right === 'taken') throw new Error(`cannot seed lease ${i}`);
  }
  makeNode(ns);
  const port = 9900 + (n % 97);
  // net-conf.json for the embedded store: the same config the store holds.
  writeFileSync(join(dir, 'net-conf.json'), `${netConf(mode)}\n`);
  let feltd: Feltd | undefined = startFeltd(bin, ns, dir, db, port, 5);
  try {
    const t0 = performance.now();
    while (countRoutes(ns) < n || (mode === 'nftables' && setElements(ns).count < n)) {
      if (performance.now() - t0 > 120_000) throw new Error(`no convergence for ${n}: ${feltd.log().slice(-2000)}`);
      feltd.log();
      await sleep(20);
    }
    const converge = (performance.now() - t0) / 1000;

    // 1. Changes with the default resync period (5 s): some land in a full pass.
    const idle = await changes(ns, store, feltd, n, CHANGES);

    // A resync with nothing to do: wait for two resyncs and read the metrics.
    const before = await metrics(ns, port);
    const after = await eventually(
      async () => {
        const m = await metrics(ns, port);
        return fullPasses(m) >= fullPasses(before) + 2 && m;
      },
      { what: 'two full resyncs', timeoutMs: 30_000, intervalMs: 200 },
    );
    const opsDuringIdle = opsApplied(after) - opsApplied(before);
    const rssA = peakRss(feltd.pid);
    if (process.env['BENCH_FELTD_LOG'])
      writeFileSync(`${process.env['BENCH_FELTD_LOG']}.${n}.${bin === BASELINE ? 'baseline' : 'this'}.idle`, feltd.log());
    await feltd.stop();

    // 2. The same node restarted with a short resync period (BENCH_BUSY_RESYNC seconds, default 1): at 10,000
    // nodes a full pass takes about half of that, so many changes land in one (0.1: back to back).
    feltd = startFeltd(bin, ns, dir, db, port, BUSY_RESYNC);
    const f = feltd;
    const m0 = await eventually(
      async () => {
        f.log();
        const m = await metrics(ns, port).catch(() => '');
        return fullPasses(m) >= 2 && m;
      },
      { what: 'the restarted feltd to finish two full passes', timeoutMs: 60_000, intervalMs: 100 },
    );
    const busy = await changes(ns, store, feltd, n + CHANGES, CHANGES);
    const m1 = await metrics(ns, port);
    const set =
      mode === 'nftables'
        ? await eventually(
            () => {
              const x = setElements(ns);
              return x.count >= n + 2 * CHANGES && x;
            },
            { what: 'every change in the set', timeoutMs: 30_000, intervalMs: 100 },
          )
        : undefined;
    const rssB = peakRss(feltd.pid);
    if (process.env['BENCH_FELTD_LOG'])
      writeFileSync(`${process.env['BENCH_FELTD_LOG']}.${n}.${bin === BASELINE ? 'baseline' : 'this'}.busy`, feltd.log());
    return {
      n,
      converge,
      rate: (3 * n) / converge,
      idle,
      busy,
      // Ops full passes applied while the changes ran: a full plan undoing or redoing a delta would show here.
      busyFullOps: fullPassOps(m1) - fullPassOps(m0),
      // The mean of the idle resyncs between the two scrapes (the histogram's sum and count).
      resync: (fullSeconds(after) - fullSeconds(before)) / (fullPasses(after) - fullPasses(before)),
      idleOps: opsDuringIdle,
      rss: Math.max(rssA, rssB),
      set,
    };
  } finally {
    await feltd?.stop();
    sh('ip', 'netns', 'del', ns);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`feltd, embedded store, vxlan; ${new Date().toISOString().slice(0, 10)}, node ${process.version}, ${CHANGES} changes per run`);
console.log(
  `| remote nodes | feltd | mode | set elements (list ms) | converge s | felt objects/s | raw ip -batch objects/s | ratio felt/raw | resync 5 s: change p50 ms | p99 | overlapped a full pass | resync ${BUSY_RESYNC} s: change p50 ms | p99 | overlapped | p50 / p99 of those | ops by full passes meanwhile | record p50/p99 ms | idle resync ms | ops in idle resyncs | peak RSS MB |`,
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
const f1 = (x: number) => (Number.isNaN(x) ? '-' : x.toFixed(1));
for (const n of SIZES) {
  const raw = rawRate(n);
  for (const [label, bin] of BINS)
    for (const mode of MODES) {
      const r = await run(n, bin, mode);
      const { idle: a, busy: b } = r;
      console.log(
        `| ${n} | ${label} | ${mode} | ${r.set ? `${r.set.count} (${r.set.listMs.toFixed(0)})` : '-'} | ${r.converge.toFixed(2)} | ${Math.round(r.rate)} | ${Math.round(raw)} | ${(r.rate / raw).toFixed(2)} | ${f1(a.p50)} | ${f1(a.p99)} | ${a.overlapped}/${CHANGES} | ${f1(b.p50)} | ${f1(b.p99)} | ${b.overlapped}/${CHANGES} | ${f1(b.overP50)} / ${f1(b.overP99)} | ${r.busyFullOps} | ${b.recordP50}/${b.recordP99} | ${(r.resync * 1000).toFixed(1)} | ${r.idleOps} | ${r.rss.toFixed(0)} |`,
      );
    }
}
