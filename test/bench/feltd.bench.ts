// npm run bench:feltd — how fast feltd turns leases into kernel state, against the raw `ip -batch` rate
// measured in the same run:
//   1. convergence: N remote leases in the embedded store, start feltd, time until all N routes, neighbours
//      and fdb entries are in the kernel (N = 1,000 and 10,000; 3 kernel objects each);
//   2. one lease change: add one remote lease while feltd runs, time until its route appears (`ip monitor`);
//      median and p99 over many changes;
//   3. resync: the reconcile duration with nothing to do, and that it applies no op (from /metrics).
// Node and remote addresses live in 198.51.100.0/24 inside throwaway namespaces.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sqliteLeaseStore } from '../../adapters/lease/sqlite.ts';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';

const SIZES = (process.env['BENCH_SIZES'] ?? '1000,10000').split(',').map(Number);
const CHANGES = Number(process.env['BENCH_CHANGES'] ?? 40);
const tag = `fdb${process.pid}`;
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
    sh('ip', '-n', ns, 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '1', 'local', '198.51.100.11', 'dev', 'eth0', 'dstport', '8472', 'nolearning');
    sh('ip', '-n', ns, 'link', 'set', 'flannel.1', 'up');
    const ipLines: string[] = [];
    const brLines: string[] = [];
    for (let i = 0; i < n; i++) {
      const net = subnetOf(i).split('/')[0]!;
      ipLines.push(`neigh replace ${net} lladdr ${mac(i)} dev flannel.1 nud permanent`);
      brLines.push(`fdb replace ${mac(i)} dev flannel.1 dst ${remoteIP(i)} self permanent`);
    }
    const routes = Array.from({ length: n }, (_, i) => `route replace ${subnetOf(i)} via ${subnetOf(i).split('/')[0]} dev flannel.1 onlink`);
    const t0 = performance.now();
    execFileSync('ip', ['-n', ns, '-batch', '-'], { input: ipLines.join('\n') + '\n' });
    execFileSync('ip', ['netns', 'exec', ns, 'bridge', '-batch', '-'], { input: brLines.join('\n') + '\n' });
    execFileSync('ip', ['-n', ns, '-batch', '-'], { input: routes.join('\n') + '\n' });
    return (3 * n) / ((performance.now() - t0) / 1000);
  } finally {
    sh('ip', 'netns', 'del', ns);
  }
}

const countRoutes = (ns: string): number => sh('ip', '-n', ns, 'route', 'show').split('\n').filter((l) => l.includes('dev flannel.1') && l.includes('onlink')).length;

async function metrics(ns: string, port: number): Promise<string> {
  return sh('ip', 'netns', 'exec', ns, 'node', '-e', `fetch('http://127.0.0.1:${port}/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))`);
}

async function run(n: number): Promise<Record<string, number>> {
  const ns = `${tag}-n${n}`;
  const dir = mkdtempSync(join(tmpdir(), 'felt-bench-feltd-'));
  const db = join(dir, 'leases.db');
  const store = sqliteLeaseStore({ path: db });
  await store.putNetworkConfig(JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } }))();
  for (let i = 0; i < n; i++) {
    const r = await store.acquire({ subnet: subnetOf(i), attrs: { PublicIP: remoteIP(i), PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac(i) } } }, 86400)();
    if (r._tag === 'Left' || r.right === 'taken') throw new Error(`cannot seed lease ${i}`);
  }
  makeNode(ns);
  const port = 9900 + (n % 97);
  const feltd = spawn(
    'ip',
    ['netns', 'exec', ns, join(ROOT, 'dist/bin/feltd'), '--iface', 'eth0', '--subnet-file', join(dir, 'subnet.env'), '--state-dir', join(dir, 'state'),
      '--net-config-path', join(dir, 'net-conf.json'), '--store', `sqlite:${db}`, '--iptables-resync', '5', '--healthz-ip', '127.0.0.1', '--healthz-port', String(port), ...(process.env['BENCH_FELTD_ARGS'] ?? '').split(' ').filter(Boolean)],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  feltd.stderr.on('data', (b: Buffer) => (log += b.toString()));
  // net-conf.json for the embedded store: the same config the store holds.
  execFileSync('sh', ['-c', `echo '{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}' > ${join(dir, 'net-conf.json')}`]);
  try {
    const t0 = performance.now();
    while (countRoutes(ns) < n) {
      if (performance.now() - t0 > 120_000) throw new Error(`no convergence for ${n}: ${log.slice(-2000)}`);
      if (feltd.exitCode !== null) throw new Error(`feltd exited: ${log.slice(-2000)}`);
      await sleep(20);
    }
    const converge = (performance.now() - t0) / 1000;

    // One change at a time: a new remote lease, until `ip monitor` shows its route.
    const lat: number[] = [];
    const mon = spawn('ip', ['-n', ns, 'monitor', 'route']);
    let seen = '';
    mon.stdout.on('data', (b: Buffer) => (seen += b.toString()));
    // The monitor is listening once it reports a route of our own.
    sh('ip', '-n', ns, 'route', 'add', 'blackhole', '192.0.2.0/24');
    await eventually(() => seen.includes('192.0.2.0/24'), { what: 'ip monitor to start', timeoutMs: 10_000, intervalMs: 5 });
    sh('ip', '-n', ns, 'route', 'del', 'blackhole', '192.0.2.0/24');
    for (let k = 0; k < CHANGES; k++) {
      const i = n + k;
      const want = subnetOf(i);
      const t = performance.now();
      await store.acquire({ subnet: want, attrs: { PublicIP: remoteIP(i), PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac(i) } } }, 86400)();
      while (!seen.includes(want)) {
        if (performance.now() - t > 10_000) throw new Error(`change ${want} never reached the kernel`);
        await sleep(1);
      }
      lat.push(performance.now() - t);
    }
    mon.kill();
    if (process.env['BENCH_FELTD_LOG']) (await import('node:fs')).writeFileSync(process.env['BENCH_FELTD_LOG'], log);

    // A resync with nothing to do: wait for two resyncs and read the metrics.
    const val = (m: string, k: string) => Number(new RegExp(`^${k.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(m)?.[1] ?? NaN);
    const fullPasses = (m: string) => val(m, 'felt_reconcile_duration_seconds_count{kind="full"}');
    const fullSeconds = (m: string) => val(m, 'felt_reconcile_duration_seconds_sum{kind="full"}');
    const opsApplied = (m: string) => [...m.matchAll(/^felt_ops_applied_total\{[^}]*\} (\S+)$/gm)].reduce((a, x) => a + Number(x[1]), 0);
    const before = await metrics(ns, port);
    const after = await eventually(
      async () => {
        const m = await metrics(ns, port);
        return fullPasses(m) >= fullPasses(before) + 2 && m;
      },
      { what: 'two full resyncs', timeoutMs: 30_000, intervalMs: 200 },
    );
    const opsDuringIdle = opsApplied(after) - opsApplied(before);
    return {
      n,
      converge,
      rate: (3 * n) / converge,
      p50: pct(lat, 0.5),
      p99: pct(lat, 0.99),
      // The mean of the idle resyncs between the two scrapes (the histogram's sum and count).
      resync: (fullSeconds(after) - fullSeconds(before)) / (fullPasses(after) - fullPasses(before)),
      idleOps: opsDuringIdle,
    };
  } finally {
    const exited = new Promise((r) => feltd.once('exit', r));
    feltd.kill('SIGTERM');
    if (feltd.exitCode === null) await exited;
    sh('ip', 'netns', 'del', ns);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`feltd, embedded store, vxlan; ${new Date().toISOString().slice(0, 10)}, node ${process.version}`);
console.log('| remote nodes | converge s | felt objects/s | raw ip -batch objects/s | ratio felt/raw | one change p50 ms | p99 ms | idle resync ms | ops in idle resyncs |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const n of SIZES) {
  const raw = rawRate(n);
  const r = await run(n);
  console.log(
    `| ${n} | ${r.converge!.toFixed(2)} | ${Math.round(r.rate!)} | ${Math.round(raw)} | ${(r.rate! / raw).toFixed(2)} | ${r.p50!.toFixed(1)} | ${r.p99!.toFixed(1)} | ${(r.resync! * 1000).toFixed(1)} | ${r.idleOps} |`,
  );
}
