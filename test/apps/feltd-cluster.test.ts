// Multi-node clusters on real kernels: an underlay bridge in its own namespace, three node namespaces on it
// (198.51.100.0/24), one feltd per node inside its namespace, pods attached through dist/cni/flannel. Every pod
// must reach every pod on the other nodes; then restarts, lease removal, drift and store outages.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, type Node } from '../support/cluster.ts';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';

/** Poll until `f` holds (the daemons resync every second here). */
const until = (what: string, f: () => boolean, timeoutMs = 15000): Promise<unknown> => eventually(f, { what, timeoutMs, intervalMs: 200 });

const routes = (c: Cluster, n: Node): string => c.inNode(n, 'ip', 'route', 'show');
const hasRouteTo = (c: Cluster, n: Node, subnet: string): boolean => routes(c, n).includes(subnet);
const subnetNet = (c: Cluster, n: Node): string => c.subnetOf(n).replace(/\.1\//, '.0/');

// The first cluster's pods are attached as on a real node with feltd running: each node's feltd serves the
// CNI calls its forwarders send (daemon mode); the others run the plugins as the test mode says.
describe.each([
  { store: 'embedded' as const, backend: 'vxlan' as const, cni: 'node' as const },
  { store: 'etcd' as const, backend: 'vxlan' as const, cni: 'mode' as const },
  { store: 'embedded' as const, backend: 'host-gw' as const, cni: 'mode' as const },
])('feltd cluster: $store store, $backend, CNI served by $cni', ({ store, backend, cni }) => {
  const c = new Cluster({ nodes: 3, store, backend, cni });

  beforeAll(async () => {
    await c.create();
    for (const n of c.nodes) c.startFeltd(n);
    await c.waitReady();
    for (const n of c.nodes) {
      await c.addPod(n);
      await c.addPod(n);
    }
  }, 90_000);

  afterAll(async () => {
    for (const n of c.nodes) await c.stopFeltd(n);
    c.destroy();
  });

  it('gives every node its own subnet and every pod reaches every pod on the other nodes', async () => {
    const subnets = c.nodes.map((n) => c.subnetOf(n));
    expect(new Set(subnets).size).toBe(3);
    await until('routes to every other node', () =>
      c.nodes.every((a) => c.nodes.every((b) => a === b || hasRouteTo(c, a, subnetNet(c, b)))),
    );
    expect(c.pingMatrix(), c.logs()).toEqual([]);
  });

  it.runIf(cni === 'node')("each node's feltd served its pods' CNI calls (cni.json counts them)", async () => {
    for (const n of c.nodes) {
      const served = (): number => {
        try {
          return (JSON.parse(readFileSync(join(n.dir, 'state', 'cni.json'), 'utf8')) as { requestsTotal: number }).requestsTotal;
        } catch {
          return 0;
        }
      };
      // Two pods per node: two flannel ADDs, each served whole by feltd (bridge and host-local in-process there).
      await until(`${n.name}'s feltd counts its pods' ADDs`, () => served() >= 2);
    }
  });

  it('a restarted feltd keeps its subnet and no route goes missing meanwhile', async () => {
    const n = c.nodes[0]!;
    const before = c.subnetOf(n);
    const others = c.nodes.slice(1);
    await c.stopFeltd(n);
    // The dataplane stays while feltd is down.
    expect(others.every((o) => hasRouteTo(c, n, subnetNet(c, o)))).toBe(true);
    const mark = c.logMark(n);
    c.startFeltd(n);
    await until(`${n.name}'s new feltd is ready`, () => c.loggedSince(n, mark, 'subnet.env written'));
    expect(c.subnetOf(n)).toBe(before);
    expect(c.pingMatrix(), c.logs()).toEqual([]);
  });

  it('repairs drift within a resync: routes, neighbours, fdb entries, rules and the vxlan device', async () => {
    const n = c.nodes[1]!;
    const other = c.nodes[2]!;
    const dst = subnetNet(c, other);
    c.inNode(n, 'ip', 'route', 'del', dst);
    await until(`route to ${dst} restored`, () => hasRouteTo(c, n, dst));
    c.inNode(n, 'iptables', '-t', 'nat', '-F', 'FLANNEL-POSTRTG');
    await until('FLANNEL-POSTRTG restored', () => c.inNode(n, 'iptables', '-t', 'nat', '-S', 'FLANNEL-POSTRTG').split('\n').length > 3);
    if (backend === 'vxlan') {
      c.inNode(n, 'ip', 'neigh', 'flush', 'dev', 'flannel.1', 'nud', 'permanent');
      const mac = c
        .inNode(n, 'bridge', 'fdb', 'show', 'dev', 'flannel.1')
        .split('\n')
        .find((l) => l.includes('dst'))!
        .split(' ')[0]!;
      c.inNode(n, 'bridge', 'fdb', 'del', mac, 'dev', 'flannel.1', 'self');
      await until(
        'neighbours and fdb restored',
        () =>
          c.inNode(n, 'ip', 'neigh', 'show', 'dev', 'flannel.1').includes('PERMANENT') &&
          c.inNode(n, 'bridge', 'fdb', 'show', 'dev', 'flannel.1').includes(mac),
      );
      c.inNode(n, 'ip', 'link', 'del', 'flannel.1');
      await until(
        'flannel.1 and its routes restored',
        () => hasRouteTo(c, n, dst) && c.inNode(n, 'ip', 'link', 'show').includes('flannel.1'),
      );
    }
    expect(c.pingMatrix(), c.logs()).toEqual([]);
  });

  it('leaves foreign routes and rules alone', async () => {
    const n = c.nodes[0]!;
    c.inNode(n, 'ip', 'route', 'add', '192.0.2.0/24', 'via', '198.51.100.1');
    c.inNode(n, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', '192.0.2.0/24', '-j', 'RETURN');
    // Wait for a resync that saw them: drift of feltd's own, repaired, proves one ran.
    const dst = subnetNet(c, c.nodes[1]!);
    c.inNode(n, 'ip', 'route', 'del', dst);
    await until(`route to ${dst} restored by a resync`, () => hasRouteTo(c, n, dst));
    expect(routes(c, n)).toContain('192.0.2.0/24');
    expect(c.inNode(n, 'iptables', '-t', 'nat', '-S', 'POSTROUTING')).toContain('192.0.2.0/24');
  });

  it('removes a node whose lease is deleted from every other node', async () => {
    const gone = c.nodes[2]!;
    const dst = subnetNet(c, gone);
    await c.stopFeltd(gone);
    if (store === 'etcd') c.etcdctl('del', `/coreos.com/network/subnets/${dst.replace('/', '-')}`);
    if (store === 'embedded') {
      // Revoke through the store's own API so its change log records the removal.
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
    }
    for (const n of c.nodes.slice(0, 2)) await until(`${n.name} forgets ${dst}`, () => !hasRouteTo(c, n, dst));
    // The node comes back with the same subnet (its subnet.env names it) and everybody learns it again.
    c.startFeltd(gone);
    for (const n of c.nodes.slice(0, 2))
      await until(`${n.name} learns ${gone.name} again`, () => hasRouteTo(c, n, subnetNet(c, gone)), 20000);
    expect(c.pingMatrix(), c.logs()).toEqual([]);
  });

  it('keeps the dataplane while etcd is down and recovers when it is back', async (ctx) => {
    ctx.skip(store !== 'etcd', `the ${store} store has no etcd to stop`);
    await c.stopEtcd();
    // Resyncs go on without etcd: drift is repaired and pods still reach each other.
    const n = c.nodes[0]!;
    const dst = subnetNet(c, c.nodes[1]!);
    c.inNode(n, 'ip', 'route', 'del', dst);
    await until(`route to ${dst} restored while etcd is down`, () => hasRouteTo(c, n, dst));
    expect(c.pingMatrix(), c.logs()).toEqual([]);
    await c.restartEtcd();
    const extra = await c.addPod(c.nodes[0]!);
    expect(extra.ip).toBeTruthy();
    await until('every pod, the new one too, reaches every pod on the other nodes', () => c.pingMatrix().length === 0, 20_000);
  });

  it('records every lease seen in the node event log', () => {
    const n = c.nodes[0]!;
    const out = execFileSync(`${ROOT}/dist/bin/felt`, ['events', '--data-dir', `${n.dir}/state`], { encoding: 'utf8' });
    expect(out).toContain('SubnetLeased');
    expect(out).toContain('RemoteLeaseSeen');
    expect(out).toContain('RemoteLeaseRemoved');
    expect(readFileSync(n.subnetFile, 'utf8')).toMatch(/FLANNEL_SUBNET=10\.244\.\d+\.1\/24/);
    // felt explain names the lease behind a route to another node.
    const other = subnetNet(c, c.nodes[1]!);
    const why = execFileSync(`${ROOT}/dist/bin/felt`, ['explain', other, '--data-dir', `${n.dir}/state`], { encoding: 'utf8' });
    expect(why).toContain(`exist because node ${c.nodes[1]!.ip}`);
  });
});
