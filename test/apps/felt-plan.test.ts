// felt plan, felt status and felt why end to end, in namespaces this file makes: bridge ADDs (dist/cni/bridge
// with felt's host-local) in a host namespace of their own, and a two-node feltd cluster (vxlan, --ip-masq)
// with a pod attached through dist/cni/flannel. In sync first (exit 0); then drift made by hand in the test
// namespaces (a route, an address, an iptables rule deleted) makes exit 2, with words naming the object.
// felt runs under `ip netns exec` in the namespace it audits, and once from where the test runs (it finds
// the namespaces by the ids the log recorded).

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, type Node } from '../support/cluster.ts';
import { FELT_CNI, ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { cni, exec, nsPath, nsRun, Sandbox, type Run } from '../support/ns.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');

/** felt inside namespace `ns` (or where the test runs, for undefined). */
const felt = (ns: string | undefined, ...argv: string[]): Promise<Run> =>
  exec(ns ? ['ip', 'netns', 'exec', ns, FELT, ...argv] : [FELT, ...argv]);

interface PlanJson {
  inSync: boolean;
  groups: {
    kind: string;
    id: string;
    status: string;
    findings: { kind: string; object: string; problem: string; text: string }[];
    notes: string[];
  }[];
  unchecked: { what: string; why: string }[];
}

describe('felt plan, status and why: bridge attachments', () => {
  const sb = new Sandbox();
  let host: string;
  let pod1: string;
  let pod2: string;
  let dataDir: string;
  const conf = () => ({
    cniVersion: '1.0.0',
    name: 'auditnet',
    type: 'bridge',
    bridge: 'audit0',
    isGateway: true,
    ipMasq: true,
    ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '10.77.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }] },
  });

  beforeAll(async () => {
    host = await sb.ns();
    pod1 = await sb.ns();
    pod2 = await sb.ns();
    dataDir = sb.dir();
    await nsRun(host, ['ip', 'link', 'set', 'lo', 'up']);
    for (const [pod, cid] of [
      [pod1, 'c1'],
      [pod2, 'c2'],
    ] as const) {
      const r = await cni({ dir: FELT_CNI, hostNs: host, pod, cid }, 'ADD', conf());
      expect(r.code, r.stdout + r.stderr).toBe(0);
    }
  });
  afterAll(() => sb.cleanup());

  it('is in sync after the ADDs: exit 0, the network and both attachments checked', async () => {
    const r = await felt(host, 'plan', '--data-dir', dataDir);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('network auditnet: bridge audit0, shared by 2 attachment(s): in sync');
    expect(r.stdout).toContain('attachment auditnet c1/eth0');
    expect(r.stdout).toContain('in sync: 3 checked, nothing to change');
    const j = JSON.parse((await felt(host, 'plan', '--data-dir', dataDir, '--json')).stdout) as PlanJson;
    expect(j.inSync).toBe(true);
    expect(j.groups.map((g) => [g.kind, g.status])).toEqual([
      ['network', 'in-sync'],
      ['attachment', 'in-sync'],
      ['attachment', 'in-sync'],
    ]);
    // Run from the test's own namespace, it finds the host side by the namespace the plugin recorded.
    const here = await felt(undefined, 'plan', '--data-dir', dataDir, '--network', 'auditnet');
    expect(here.code, here.stdout + here.stderr).toBe(0);
    expect(here.stdout).toContain(`(host side in /run/netns/${host})`);
  });

  it('felt status counts the allocations and the free addresses', async () => {
    const r = await felt(host, 'status', '--data-dir', dataDir, '--json');
    expect(r.code, r.stderr).toBe(0);
    const st = JSON.parse(r.stdout);
    expect(st.networks).toEqual([{ network: 'auditnet', allocations: 2, free: 251, size: 254, ranges: '10.77.0.1-10.77.0.254' }]);
    expect(st.nodes).toEqual([]);
    expect(st.lastReconcile).toBeNull();
    expect(st.reconcileNote).toBe('no reconcile recorded');
    expect((await felt(host, 'status', '--data-dir', dataDir)).stdout).toContain('last reconcile: no reconcile recorded');
  });

  it('felt why names the attachment behind an address, a route, a masquerade rule and a container, with the kernel now', async () => {
    const addr = await felt(host, 'why', '--data-dir', dataDir, '10.77.0.2');
    expect(addr.code).toBe(0);
    expect(addr.stdout).toContain('10.77.0.2 is allocated to container c1 interface eth0 on network "auditnet"');
    expect(addr.stdout).toContain(
      '10.77.0.2/24 is the address of container c1 interface eth0 on network "auditnet": the bridge plugin attached it: veth veth',
    );
    expect(addr.stdout).toContain(`the kernel has address 10.77.0.2/24 on eth0 now (in ${nsPath(pod1)})`);

    const route = await felt(host, 'why', '--data-dir', dataDir, '0.0.0.0/0');
    expect(route.stdout).toContain(`the route 0.0.0.0/0 via 10.77.0.1 dev eth0 in ${nsPath(pod1)} is one of container c1 interface eth0`);
    expect(route.stdout).toContain(`the kernel has route 0.0.0.0/0 via 10.77.0.1 dev eth0 now (in ${nsPath(pod2)})`);

    const rule = await felt(host, 'why', '--data-dir', dataDir, '--', '-s 10.77.0.3/32');
    expect(rule.stdout).toMatch(
      /the nat\/POSTROUTING rule "-s 10\.77\.0\.3\/32 .* -j CNI-[0-9a-f]+" sends traffic from container c2 interface eth0/,
    );
    expect(rule.stdout).toMatch(/the kernel has iptables rule nat\/POSTROUTING -s 10\.77\.0\.3\/32 .* now \(in the host namespace\)/);
    const chain = /-j (CNI-[0-9a-f]+)/.exec(rule.stdout)![1]!;
    const byChain = await felt(host, 'why', '--data-dir', dataDir, chain);
    expect(byChain.stdout).toContain(`the nat chain ${chain} is the masquerade chain of container c2 interface eth0`);
    expect(byChain.stdout).toContain(`the kernel has iptables chain nat/${chain} with its 2 rules now`);

    const att = await felt(host, 'why', '--data-dir', dataDir, 'c2');
    expect(att.stdout).toContain(`container c2 interface eth0 on network "auditnet": the bridge plugin attached it`);
    expect(att.stdout).toContain('addresses 10.77.0.3/24');
    expect(att.stdout).toContain('the kernel has bridge audit0 now (in the host namespace)');
    // explain is the same command under its old name.
    expect((await felt(host, 'explain', '--data-dir', dataDir, 'c2')).stdout).toBe(att.stdout);
  });

  it('drift (a route, an address, a masquerade rule deleted) is exit 2 with the objects named; why says the kernel lacks them', async () => {
    await nsRun(pod1, ['ip', 'route', 'del', 'default']);
    await nsRun(pod2, ['ip', 'addr', 'del', '10.77.0.3/24', 'dev', 'eth0']);
    const save = await nsRun(host, ['iptables-save', '-t', 'nat']);
    const jump = save.split('\n').find((l) => l.startsWith('-A POSTROUTING -s 10.77.0.2/32'))!;
    await nsRun(host, ['iptables', '-t', 'nat', '-D', 'POSTROUTING', ...splitRule(jump.slice('-A POSTROUTING '.length))]);

    const r = await felt(host, 'plan', '--data-dir', dataDir);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toContain(`route 0.0.0.0/0 via 10.77.0.1 dev eth0 is missing (in ${nsPath(pod1)})`);
    expect(r.stdout).toContain(`address 10.77.0.3/24 on eth0 is missing (in ${nsPath(pod2)})`);
    expect(r.stdout).toMatch(/iptables rule nat\/POSTROUTING -s 10\.77\.0\.2\/32 .* is missing \(in the host namespace\)/);
    expect(r.stdout).toContain('drift: 2 of 3 checked differ from the log');

    const j = JSON.parse((await felt(host, 'plan', '--data-dir', dataDir, '--json')).stdout) as PlanJson;
    expect(j.inSync).toBe(false);
    const c1 = j.groups.find((g) => g.id === 'attachment auditnet c1/eth0')!;
    expect(c1.status).toBe('drift');
    expect(c1.findings.map((f) => [f.kind, f.problem])).toEqual([
      ['route', 'missing'],
      ['rule', 'missing'],
    ]);
    expect((await felt(host, 'plan', '--data-dir', dataDir, '--json', '--network', 'auditnet')).code).toBe(2);

    const why = await felt(host, 'why', '--data-dir', dataDir, '10.77.0.3');
    expect(why.stdout).toContain(`the kernel does NOT have address 10.77.0.3/24 on eth0 now (in ${nsPath(pod2)})`);
  });

  it('a pod namespace that is gone is drift, said so; bad input names the option', async () => {
    await sb.delNs(pod2);
    const r = await felt(host, 'plan', '--data-dir', dataDir);
    expect(r.code).toBe(2);
    expect(r.stdout).toContain(`the pod's network namespace ${nsPath(pod2)} is gone`);
    const why = await felt(host, 'why', '--data-dir', dataDir, 'c2');
    expect(why.code).toBe(0);
    expect(why.stdout).toContain(`the namespace ${nsPath(pod2)} is gone`);
    expect(await felt(host, 'plan', '--data-dir', dataDir, '--node', '--network', 'x')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--node and --network'),
    });
    expect(await felt(host, 'plan', '--data-dir', dataDir, '--network', 'nope')).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('--network: nothing recorded for network "nope"'),
    });
    expect(await felt(host, 'plan', '--data-dir', dataDir, '--node')).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('--node: no feltd node in the log'),
    });
    expect(await felt(host, 'plan', '--data-dir', dataDir, '--netns', '/nonexistent')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--netns: no network namespace at /nonexistent'),
    });
    expect(await felt(host, 'status', '--data-dir', dataDir, '--renew-margin', 'x')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--renew-margin'),
    });
  });
});

describe('felt plan: a felt cni chain (bridge, tuning, portmap)', () => {
  const sb = new Sandbox();
  afterAll(() => sb.cleanup());

  it("checks bridge's part, notes what tuning may change, and lists portmap and tuning as not checked", async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const dir = sb.dir();
    await nsRun(host, ['ip', 'link', 'set', 'lo', 'up']);
    const confDir = join(dir, 'net.d');
    await exec(['mkdir', '-p', confDir]);
    const list = {
      cniVersion: '1.0.0',
      name: 'chainnet',
      plugins: [
        {
          type: 'bridge',
          bridge: 'chain0',
          isGateway: true,
          ipMasq: true,
          ipam: { type: 'host-local', dataDir: dir, ranges: [[{ subnet: '10.78.0.0/24' }]] },
        },
        { type: 'tuning', dataDir: dir, sysctl: { 'net.ipv4.conf.eth0.accept_local': '1' } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    };
    await exec(['tee', join(confDir, '10-chain.conflist')], JSON.stringify(list));
    const cniArgs = ['--conf-dir', confDir, '--cache-dir', join(dir, 'cache'), '--data-dir', dir];
    const add = await exec([
      'ip',
      'netns',
      'exec',
      host,
      'env',
      `CNI_PATH=${FELT_CNI}`,
      FELT,
      'cni',
      'add',
      'chainnet',
      nsPath(pod),
      ...cniArgs,
      '--cap-args',
      JSON.stringify({ portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] }),
    ]);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const r = await felt(host, 'plan', '--data-dir', dir, '--json');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as PlanJson;
    expect(j.groups.map((g) => [g.kind, g.status])).toEqual([
      ['network', 'in-sync'],
      ['attachment', 'in-sync'],
    ]);
    expect(j.groups[1]!.notes).toEqual([expect.stringContaining('felt cni ran tuning after bridge here')]);
    expect(j.unchecked).toEqual([
      { what: 'network chainnet', why: expect.stringContaining('felt cni ran portmap, tuning for its attachments') },
    ]);
    const del = await exec([
      'ip',
      'netns',
      'exec',
      host,
      'env',
      `CNI_PATH=${FELT_CNI}`,
      FELT,
      'cni',
      'del',
      'chainnet',
      nsPath(pod),
      ...cniArgs,
    ]);
    expect(del.code, del.stdout + del.stderr).toBe(0);
    const after = await felt(host, 'plan', '--data-dir', dir);
    expect(after.code).toBe(0);
    expect(after.stdout).toContain('nothing recorded that felt plan can check');
  });
});

/** An iptables-save rule back into argv (quoted comments kept whole). */
function splitRule(rule: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(rule); m; m = re.exec(rule)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

describe('felt plan, status and why: a feltd node (vxlan, --ip-masq) and a flannel pod', () => {
  // Resyncs far apart: the drift this test makes must still be there when felt plan looks.
  const c = new Cluster({ nodes: 2, backend: 'vxlan', resyncSeconds: 3600 });
  let n1: Node;
  let n2: Node;
  const state = (n: Node): string => join(n.dir, 'state');
  const remoteNet = (): string => c.subnetOf(n2).replace(/\.1\//, '.0/');

  beforeAll(async () => {
    await c.create();
    [n1, n2] = [c.nodes[0]!, c.nodes[1]!];
    for (const n of c.nodes) c.startFeltd(n);
    await c.waitReady();
    await c.addPod(n1);
    // n1 has seen n2's lease and programmed the route to it.
    await eventually(() => c.inNode(n1, 'ip', 'route', 'show').includes(remoteNet()), {
      what: 'n1 routes to n2',
      timeoutMs: 20_000,
      intervalMs: 100,
    });
  }, 90_000);
  afterAll(async () => {
    for (const n of c.nodes) await c.stopFeltd(n);
    c.destroy();
  });

  it('the overlay is in sync: exit 0; status shows the lease, the peer and the last reconcile', async () => {
    const r = await eventually(
      async () => {
        const x = await felt(n1.ns, 'plan', '--node', '--data-dir', state(n1));
        return x.code === 0 ? x : false;
      },
      { what: 'felt plan --node in sync on n1', timeoutMs: 20_000, intervalMs: 200 },
    );
    expect(r.stdout).toContain(`overlay ${n1.ip}: vxlan overlay for ${c.subnetOf(n1).replace(/\.1\//, '.0/')}, 1 remote lease(s): in sync`);

    const st = JSON.parse((await felt(n1.ns, 'status', '--data-dir', state(n1), '--json')).stdout);
    expect(st.nodes).toHaveLength(1);
    const node = st.nodes[0];
    expect(node.node).toBe(n1.ip);
    expect(node.backend).toBe('vxlan');
    expect(node.lease.subnet).toBe(c.subnetOf(n1).replace(/\.1\//, '.0/'));
    expect(node.lease.renewMarginMinutes).toBe(60);
    expect(node.lease.renewMarginFrom).toBe('reconcile.json');
    expect(node.lease.expiresInSeconds).toBeGreaterThan(node.lease.renewalDueInSeconds);
    expect(Date.parse(node.lease.expiration) - Date.parse(node.lease.renewalDue)).toBe(60 * 60_000);
    expect(node.peers.count).toBe(1);
    expect(node.peers.newestChange.publicIP).toBe(n2.ip);
    expect(st.lastReconcile).toMatchObject({
      kind: expect.stringMatching(/^(full|delta)$/),
      passes: expect.any(Number),
      ops: expect.any(Number),
      driftRepaired: expect.any(Number),
      totalDriftRepaired: expect.any(Number),
    });
    expect(st.lastReconcile.passes).toBeGreaterThanOrEqual(1);
    expect(typeof st.lastReconcile.durationMs).toBe('number');
    const text = (await felt(n1.ns, 'status', '--data-dir', state(n1))).stdout;
    expect(text).toContain(`peers: 1, newest change`);
    expect(text).toMatch(/last reconcile: (full|delta) pass at /);
  });

  it("the flannel pod's attachment (bridge cni0) is in sync too", async () => {
    const r = await felt(n1.ns, 'plan', '--data-dir', join(n1.dir, 'ipam'));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('network cbr0: bridge cni0, shared by 1 attachment(s): in sync');
    expect(r.stdout).toContain('attachment cbr0 n1p1/eth0');
  });

  it('a deleted route and masquerade rule are drift: exit 2, named; felt why sees the route missing', async () => {
    const net = remoteNet();
    const route = c.inNode(n1, 'ip', 'route', 'show', net).trim();
    expect(route).toContain('flannel.1');
    c.inNode(n1, 'ip', 'route', 'del', net);
    c.inNode(n1, 'iptables', '-t', 'nat', '-F', 'FLANNEL-POSTRTG');
    const r = await felt(n1.ns, 'plan', '--node', '--data-dir', state(n1));
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(r.stdout).toContain(`route ${net} via ${net.split('/')[0]} dev flannel.1 onlink is missing (in the host namespace)`);
    expect(r.stdout).toContain('iptables chain nat/FLANNEL-POSTRTG differs: missing rule');
    const j = JSON.parse((await felt(n1.ns, 'plan', '--node', '--json', '--data-dir', state(n1))).stdout) as PlanJson;
    expect(j.inSync).toBe(false);
    expect(j.groups[0]!.findings.map((f) => f.kind).sort()).toEqual(['chain', 'route']);

    // From where the test runs: felt finds n1's namespace by the id feltd wrote to reconcile.json.
    const why = await felt(undefined, 'why', '--data-dir', state(n1), net);
    expect(why.code).toBe(0);
    expect(why.stdout).toContain(`exist because node ${n2.ip}`);
    expect(why.stdout).toContain(
      `the kernel does NOT have route ${net} via ${net.split('/')[0]} dev flannel.1 onlink now (in the host namespace)`,
    );
    expect(why.stdout).toContain(`the kernel has neighbour ${net.split('/')[0]} lladdr`);
    expect(why.stdout).toContain(`the kernel has fdb entry`);
    expect(why.stdout).toContain(`dst ${n2.ip} on flannel.1 now`);
    const chain = await felt(n1.ns, 'why', '--data-dir', state(n1), 'FLANNEL-POSTRTG');
    expect(chain.stdout).toContain(`on ${n1.ip}: the nat chain FLANNEL-POSTRTG is feltd's`);
  });
});
