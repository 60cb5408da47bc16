// The operator metrics of a real feltd, scraped from /metrics: a two-node cluster in namespaces (see
// test/support/cluster.ts), node 1 serving its health port on 127.0.0.1 inside its namespace. Every metric is
// there with its TYPE from the start; the lease gauges follow a lease change, the drift counter a deleted
// route, and the CNI ADD histogram a pod attached through dist/cni/flannel (which delegates to bridge, whose
// AttachmentReady event feltd reads from the CNI event log, --cni-data-dir).

import { execFileSync, spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { escapeLabelValue, Metrics } from '../../apps/feltd/observability.ts';
import { Cluster, type Node } from '../support/cluster.ts';
import { FELT_CNI, ROOT, runCni } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';

const PORT = 9471;
const TTL = 600;

/** The text format: `# TYPE` lines and samples (`name{labels} value`). */
function parseMetrics(text: string): { types: Map<string, string>; samples: Map<string, number> } {
  const types = new Map<string, string>();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1]!, t[2]!);
    else if (line && !line.startsWith('#')) {
      const i = line.lastIndexOf(' ');
      samples.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
  }
  return { types, samples };
}

function scrape(ns: string, port: number, path = '/metrics'): string {
  return execFileSync(
    'ip',
    [
      'netns',
      'exec',
      ns,
      'node',
      '-e',
      `fetch('http://127.0.0.1:${port}${path}').then(async r=>{process.stdout.write(String(r.status)+'\\n'+await r.text())},e=>{process.stderr.write(String(e));process.exit(1)})`,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  ).toString();
}

const metricsOf = (n: Node) => {
  const [status, ...rest] = scrape(n.ns, PORT).split('\n');
  if (status !== '200') throw new Error(`/metrics answered ${status}`);
  return parseMetrics(rest.join('\n'));
};

describe('Metrics (text format)', () => {
  it('escapes label values and renders histograms cumulatively with +Inf, _sum and _count', () => {
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    const m = new Metrics();
    m.observe('x_seconds', 'help', [0.1, 1], 0.05, { network: 'we"ird\\net\n' });
    m.observe('x_seconds', 'help', [0.1, 1], 0.5, { network: 'we"ird\\net\n' });
    m.observe('x_seconds', 'help', [0.1, 1], 5, { network: 'we"ird\\net\n' });
    const text = m.render();
    const l = 'network="we\\"ird\\\\net\\n"';
    expect(text).toContain(`x_seconds_bucket{${l},le="0.1"} 1\n`);
    expect(text).toContain(`x_seconds_bucket{${l},le="1"} 2\n`);
    expect(text).toContain(`x_seconds_bucket{${l},le="+Inf"} 3\n`);
    expect(text).toContain(`x_seconds_sum{${l}} 5.55\n`);
    expect(text).toContain(`x_seconds_count{${l}} 3\n`);
    expect(text).toContain('# TYPE felt_reconcile_duration_seconds histogram\n');
    expect(text).toContain('felt_reconcile_duration_seconds_count{kind="delta"} 0\n');
  });
});

describe('feltd /metrics', () => {
  const c = new Cluster({ nodes: 3, store: 'embedded', backend: 'vxlan' });
  let n1: Node;
  let cniDir: string;

  const start = (n: Node, extra: string[] = []): void => {
    const out = openSync(n.logFile, 'a');
    n.proc = spawn('ip', ['netns', 'exec', n.ns, join(ROOT, 'dist/bin/feltd'), ...c.feltdArgs(n), '--lease-ttl', String(TTL), ...extra], {
      stdio: ['ignore', out, out],
    });
  };

  beforeAll(async () => {
    await c.create();
    n1 = c.nodes[0]!;
    cniDir = join(n1.dir, 'ipam');
    start(n1, ['--healthz-ip', '127.0.0.1', '--healthz-port', String(PORT), '--cni-data-dir', cniDir]);
    // Node 2 reads ADDs from its own event log (the default: --cni-data-dir is the state dir).
    start(c.nodes[1]!, ['--healthz-ip', '127.0.0.1', '--healthz-port', String(PORT)]);
    await c.waitReady(c.nodes.slice(0, 2));
  }, 60_000);

  afterAll(async () => {
    for (const n of c.nodes) await c.stopFeltd(n);
    c.destroy();
  });

  it('has every metric with its TYPE', async () => {
    const { types } = await eventually(() => metricsOf(n1), { what: 'feltd answers /metrics', timeoutMs: 20_000, intervalMs: 200 });
    expect(
      Object.fromEntries(
        [
          'felt_reconcile_duration_seconds',
          'felt_ops_applied_total',
          'felt_drift_repaired_total',
          'felt_leases',
          'felt_lease_expiry_timestamp_seconds',
          'felt_store_errors_total',
          'felt_cni_add_duration_seconds',
        ].map((n) => [n, types.get(n)]),
      ),
    ).toEqual({
      felt_reconcile_duration_seconds: 'histogram',
      felt_ops_applied_total: 'counter',
      felt_drift_repaired_total: 'counter',
      felt_leases: 'gauge',
      felt_lease_expiry_timestamp_seconds: 'gauge',
      felt_store_errors_total: 'counter',
      felt_cni_add_duration_seconds: 'histogram',
    });
  });

  it('counts leases, own expiry, reconcile passes and ops by kind', async () => {
    const { samples: s } = await eventually(
      () => {
        const m = metricsOf(n1);
        return m.samples.get('felt_leases') === 2 && (m.samples.get('felt_ops_applied_total{kind="route"}') ?? 0) >= 1 ? m : false;
      },
      { what: 'node 1 knows both leases and routed to node 2', timeoutMs: 20_000, intervalMs: 200 },
    );
    const expiry = s.get('felt_lease_expiry_timestamp_seconds')!;
    expect(Math.abs(expiry - (Date.now() / 1000 + TTL))).toBeLessThan(120);
    for (const kind of ['full', 'delta']) {
      const count = s.get(`felt_reconcile_duration_seconds_count{kind="${kind}"}`)!;
      expect(s.get(`felt_reconcile_duration_seconds_bucket{kind="${kind}",le="+Inf"}`)).toBe(count);
      const buckets = [...s].filter(([k]) => k.startsWith(`felt_reconcile_duration_seconds_bucket{kind="${kind}"`)).map(([, v]) => v);
      expect(buckets.length).toBeGreaterThan(5);
      expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
    }
    expect(s.get('felt_reconcile_duration_seconds_count{kind="full"}')).toBeGreaterThanOrEqual(1);
    expect(s.get('felt_reconcile_duration_seconds_sum{kind="full"}')).toBeGreaterThan(0);
    for (const kind of ['link', 'address', 'neigh', 'fdb', 'iptables'])
      expect(s.get(`felt_ops_applied_total{kind="${kind}"}`), kind).toBeGreaterThanOrEqual(1);
    expect(s.get('felt_store_errors_total{store="events"}')).toBe(0);
    expect(s.get('felt_store_errors_total{store="leases"}')).toBe(0);
  });

  it('follows a lease change: a third node joins, then its lease is revoked', async () => {
    const n3 = c.nodes[2]!;
    start(n3);
    await c.waitReady([n3]);
    await eventually(() => metricsOf(n1).samples.get('felt_leases') === 3, {
      what: 'felt_leases 3 on node 1',
      timeoutMs: 20_000,
      intervalMs: 200,
    });
    await c.stopFeltd(n3);
    const dst = c.subnetOf(n3).replace(/\.1\//, '.0/');
    execFileSync(
      'node',
      [
        '--import',
        'tsx',
        '-e',
        `import('${ROOT}/adapters/lease/sqlite.ts').then(async (m) => { const s = m.sqliteLeaseStore({ path: ${JSON.stringify(`${c.dir}/leases.db`)} }); await s.revoke(${JSON.stringify(dst)})(); await s.close(); })`,
      ],
      { cwd: ROOT },
    );
    await eventually(() => metricsOf(n1).samples.get('felt_leases') === 2, {
      what: 'felt_leases back to 2 on node 1',
      timeoutMs: 20_000,
      intervalMs: 200,
    });
  });

  it('counts the repair of a deleted route as drift of kind route', async () => {
    // Nothing drifted so far: the lease changes above are not drift.
    const drift = [...metricsOf(n1).samples].filter(([k]) => k.startsWith('felt_drift_repaired_total{'));
    expect(drift.length).toBeGreaterThan(5);
    expect(drift.filter(([, v]) => v !== 0)).toEqual([]);
    const before = 0;
    const dst = c.subnetOf(c.nodes[1]!).replace(/\.1\//, '.0/');
    c.inNode(n1, 'ip', 'route', 'del', dst);
    await eventually(() => c.inNode(n1, 'ip', 'route', 'show').includes(dst), {
      what: `route to ${dst} restored`,
      timeoutMs: 20_000,
      intervalMs: 200,
    });
    await eventually(() => metricsOf(n1).samples.get('felt_drift_repaired_total{kind="route"}')! >= before + 1, {
      what: 'felt_drift_repaired_total{kind="route"} counts it',
      timeoutMs: 10_000,
      intervalMs: 200,
    });
  });

  it('has the duration of a CNI ADD from the event log in felt_cni_add_duration_seconds', async () => {
    const before = metricsOf(n1).samples;
    expect([...before.keys()].some((k) => k.startsWith('felt_cni_add_duration_seconds_count'))).toBe(false);
    await c.addPod(n1);
    const s = await eventually(
      () => {
        const m = metricsOf(n1).samples;
        return m.get('felt_cni_add_duration_seconds_count{network="cbr0"}') === 1 ? m : false;
      },
      { what: 'one ADD in felt_cni_add_duration_seconds', timeoutMs: 10_000, intervalMs: 200 },
    );
    expect(s.get('felt_cni_add_duration_seconds_sum{network="cbr0"}')).toBeGreaterThan(0);
    expect(s.get('felt_cni_add_duration_seconds_bucket{network="cbr0",le="+Inf"}')).toBe(1);
  });

  it('reads the ADDs from its own event log when the CNI dataDir is its state dir (the default)', async () => {
    const n2 = c.nodes[1]!;
    const pod = `${c.id}-n2own`;
    execFileSync('ip', ['netns', 'add', pod]);
    try {
      const r = await runCni({
        dir: FELT_CNI,
        type: 'flannel',
        command: 'ADD',
        hostNs: n2.ns,
        containerId: 'n2own',
        netns: `/var/run/netns/${pod}`,
        ifname: 'eth0',
        config: { ...c.podConf(n2), name: 'own-log', ipam: { dataDir: join(n2.dir, 'state') } },
      });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      await eventually(() => metricsOf(n2).samples.get('felt_cni_add_duration_seconds_count{network="own-log"}') === 1, {
        what: 'node 2 counts the ADD recorded in its own event log',
        timeoutMs: 10_000,
        intervalMs: 200,
      });
    } finally {
      execFileSync('ip', ['netns', 'del', pod]);
    }
  });
});
