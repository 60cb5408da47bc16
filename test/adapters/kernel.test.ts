// The Linux kernel adapter in throwaway namespaces: plan/apply/observe converge (plan(desired, observe()) = []),
// drift is repaired, vxlan neighbour/fdb/route work end to end, iptables chains and jumps come and go, foreign
// objects stay, errors name the object, deletions of things already gone succeed, and every apply and observe is
// one process from node with one `ip` batch per namespace group.
//
// "HOST" is a namespace of the test's own (linuxKernel's hostNetns), never the root namespace.

import * as E from 'fp-ts/lib/Either.js';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linuxKernel, withRestoreSentinel } from '../../adapters/kernel/linux.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import type { Kernel, ObserveRequest } from '../../adapters/kernel/types.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type Op, type OwnershipScope } from '../../core/kernel/model.ts';
import { describeOp, drift, plan } from '../../core/kernel/plan.ts';
import { scopeOf, mergeScopes } from '../../core/kernel/scope.ts';
import { cleanupNetns, createNetns, execFile, type Netns } from '../support/netns.ts';

const st = (p: Partial<KernelState>): KernelState => ({ ...emptyKernelState(), ...p });
const sc = (p: Partial<OwnershipScope>): OwnershipScope => ({ links: [], devices: [], chains: [], ruleMarkers: [], ...p });

interface Probe {
  kernel: Kernel;
  /** The argv of every process the adapter started, and what it fed to its stdin. */
  spawns: string[][];
  inputs: string[];
}

function kernelIn(host: Netns): Probe {
  const p: Probe = { kernel: undefined as unknown as Kernel, spawns: [], inputs: [] };
  p.kernel = linuxKernel({
    pid: process.pid,
    hostNetns: host.path,
    restoreSentinel: true,
    onSpawn: (a, input) => (p.spawns.push([...a]), p.inputs.push(input)),
  });
  return p;
}

/** A process's argv after what enters its namespace (`nsenter --net=PATH`, or ip's own `-n NAME`). */
const afterNs = (a: readonly string[]): string[] =>
  a[0] === 'nsenter' ? a.slice(2) : a[0] === 'ip' && a[1] === '-n' ? ['ip', ...a.slice(3)] : [...a];

/**
 * "where tool" for each process: `pod ip`, `host tee`, ... (every namespace here is entered with nsenter, or,
 * named ones, by `ip -n NAME`).
 */
const tools = (p: Probe, names: Record<string, string>): string[] =>
  p.spawns.map((a) =>
    a[0] === 'ip' && a[1] === '-n'
      ? `${names[`/var/run/netns/${a[2]}`] ?? a[2]} ip`
      : `${a[0] === 'nsenter' ? (names[a[1]!.slice('--net='.length)] ?? a[1]) : 'self'} ${a[a[0] === 'nsenter' ? 2 : 0]}`,
  );

async function observe(k: Kernel, req: ObserveRequest): Promise<KernelState> {
  const r = await k.observe(req)();
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
}

async function apply(k: Kernel, ops: readonly Op[]): Promise<void> {
  const r = await k.apply(ops)();
  if (E.isLeft(r)) throw new Error(`${r.left.msg}\n${ops.map(describeOp).join('\n')}`);
}

/** observe, plan, apply, observe again: returns the ops applied and asserts that nothing is left to do. */
async function converge(k: Kernel, desired: KernelState, scope: OwnershipScope, req: ObserveRequest): Promise<Op[]> {
  const ops = plan(desired, await observe(k, req), scope);
  await apply(k, ops);
  const again = plan(desired, await observe(k, req), scope);
  expect(again.map(describeOp)).toEqual([]);
  return ops;
}

const ping = async (ns: Netns, ip: string): Promise<boolean> =>
  (await ns.exec(['ping', '-c', '3', '-i', '0.2', '-W', '1', ip])).stdout.includes(' 0% packet loss') ||
  (await ns.exec(['ping', '-c', '1', '-W', '2', ip])).code === 0;

afterAll(async () => {
  await cleanupNetns();
});

// --------------------------------------------------------------------------------------- a CNI attachment

describe('bridge + veth pair into a pod', () => {
  let host: Netns;
  let pod: Netns;
  let probe: Probe;
  const desired = (): KernelState =>
    st({
      links: [
        { ns: HOST, name: 'cni0', kind: 'bridge', up: true },
        { ns: HOST, name: 'veth0a1b2c3d', kind: 'veth', up: true, master: 'cni0', hairpin: true, mac: '02:42:ac:11:00:02' },
        {
          ns: pod.path,
          name: 'eth0',
          kind: 'veth',
          up: true,
          mtu: 1500,
          mac: '0a:58:0a:16:00:05',
          veth: { peer: 'veth0a1b2c3d', peerNs: HOST },
        },
        { ns: pod.path, name: 'lo', kind: 'loopback', up: true },
      ],
      addresses: [
        { ns: HOST, dev: 'cni0', cidr: '10.22.0.1/16' },
        { ns: pod.path, dev: 'eth0', cidr: '10.22.0.5/16' },
        { ns: pod.path, dev: 'eth0', cidr: 'fd00:22::5/64', nodad: true },
      ],
      routes: [
        { ns: pod.path, dst: '0.0.0.0/0', gw: '10.22.0.1', dev: 'eth0' },
        { ns: pod.path, dst: '10.96.0.0/12', gw: '10.22.0.1', dev: 'eth0', metric: 100 },
      ],
      sysctls: [
        { ns: HOST, key: 'net.ipv4.ip_forward', value: '1' },
        { ns: pod.path, key: 'net.ipv6.conf.eth0.accept_dad', value: '0' },
      ],
    });
  const scope = (): OwnershipScope =>
    sc({
      links: [
        { ns: HOST, name: 'veth0a1b2c3d' },
        { ns: pod.path, name: 'eth0' },
      ],
      devices: [
        { ns: HOST, dev: 'veth0a1b2c3d' },
        { ns: pod.path, dev: 'eth0' },
      ],
    });
  const req = (): ObserveRequest => ({ namespaces: [HOST, pod.path], scope: scope(), desired: desired() });

  beforeAll(async () => {
    host = await createNetns();
    pod = await createNetns();
    probe = kernelIn(host);
  });

  it('converges with one ip batch per run of ip ops and one read per namespace, and no shell', async () => {
    const seen = await observe(probe.kernel, req());
    const ops = plan(desired(), seen, scope());
    // The host creates the pair (its peer lands in the pod), so the host goes first; a sysctl of the pod's end,
    // there before the pod's turn, goes first in the pod, before the end comes up and gets its addresses.
    expect(ops.map((o) => `${o.op} ${opWhere(o, pod)}`)).toEqual([
      'sysctl.set host',
      'link.add host',
      'link.add host',
      'addr.add host',
      'sysctl.set pod',
      'link.set pod',
      'link.set pod',
      'addr.add pod',
      'addr.add pod',
      'route.replace pod',
      'route.replace pod',
    ]);
    probe.spawns.length = 0;
    await apply(probe.kernel, ops);
    // One process per step, never a shell: the host's sysctl, then one host batch making the bridge and the
    // pair (it reaches into the pod); then one pod batch, whose first line runs the pod's sysctl there (ip
    // forks and execs it) before the end comes up.
    const names = { [pod.path]: 'pod', [host.path]: 'host' };
    const ran = tools(probe, names);
    expect(ran).toEqual(['host tee', 'host ip', 'pod ip']);
    expect(probe.inputs.at(-1)!.split('\n')[0]).toBe(`netns exec ${pod.name} sysctl -q -w net/ipv6/conf/eth0/accept_dad=0`);
    expect(probe.spawns.flat().some((a) => a === 'sh' || a === '-c')).toBe(false);
    probe.spawns.length = 0;
    const after = await observe(probe.kernel, req());
    // Per namespace: one ip batch and one read of the sysctls asked for.
    expect(tools(probe, names).sort()).toEqual(['host grep', 'host ip', 'pod grep', 'pod ip']);
    expect(plan(desired(), after, scope()).map(describeOp)).toEqual([]);
    expect(after.sysctls).toEqual(expect.arrayContaining([{ ns: pod.path, key: 'net.ipv6.conf.eth0.accept_dad', value: '0' }]));
    const hostEnd = after.links.find((l) => l.ns === HOST && l.name === 'veth0a1b2c3d');
    expect(hostEnd).toMatchObject({ kind: 'veth', master: 'cni0', hairpin: true, up: true, mac: '02:42:ac:11:00:02' });
    expect(await ping(pod, '10.22.0.1')).toBe(true);
  });

  it('a resync with nothing to do applies nothing and costs one observe', async () => {
    const ops = plan(desired(), await observe(probe.kernel, req()), scope());
    expect(ops).toEqual([]);
    probe.spawns.length = 0;
    await apply(probe.kernel, ops);
    expect(probe.spawns).toHaveLength(0);
  });

  it('drift is named in words, then repaired', async () => {
    await pod.run(['ip', 'route', 'del', 'default']);
    await pod.run(['ip', 'link', 'set', 'dev', 'eth0', 'mtu', '1400']);
    await host.run(['ip', 'link', 'set', 'dev', 'veth0a1b2c3d', 'type', 'bridge_slave', 'hairpin', 'off']);
    await host.run(['ip', 'addr', 'del', '10.22.0.1/16', 'dev', 'cni0']);
    const seen = await observe(probe.kernel, req());
    expect(drift(desired(), seen, scope()).sort()).toEqual(
      [
        `missing route 0.0.0.0/0 via 10.22.0.1 dev eth0 in ${pod.path}`,
        `wrong MTU on eth0: 1400, want 1500 (in ${pod.path})`,
        'wrong hairpin mode on veth0a1b2c3d: off, want on (in the host namespace)',
        'missing address 10.22.0.1/16 on cni0 in the host namespace',
      ].sort(),
    );
    await converge(probe.kernel, desired(), scope(), req());
    expect(await ping(pod, '10.22.0.1')).toBe(true);
  });

  it('a deleted host veth (which takes the pod end with it) is recreated as a pair, with its addresses and routes', async () => {
    await host.run(['ip', 'link', 'del', 'dev', 'veth0a1b2c3d']);
    const ops = await converge(probe.kernel, desired(), scope(), req());
    expect(ops.filter((o) => o.op === 'link.add').map((o) => o.op === 'link.add' && o.link.name)).toEqual(['veth0a1b2c3d']);
    expect(await ping(pod, '10.22.0.1')).toBe(true);
  });

  it('DEL: nothing desired removes both ends and leaves the shared bridge', async () => {
    const ops = await converge(probe.kernel, emptyKernelState(), scope(), { namespaces: [HOST, pod.path], scope: scope() });
    expect(ops.filter((o) => o.op === 'link.del')).toHaveLength(1);
    const after = await observe(probe.kernel, { namespaces: [HOST, pod.path] });
    expect(after.links.map((l) => `${l.ns === HOST ? 'host' : 'pod'}/${l.name}`).sort()).toEqual(['host/cni0', 'host/lo', 'pod/lo']);
    // The shared bridge's address was never in scope; loopback's own addresses are the kernel's.
    expect(after.addresses.filter((a) => a.dev !== 'lo')).toEqual([{ ns: HOST, dev: 'cni0', cidr: '10.22.0.1/16' }]);
  });
});

const opWhere = (o: Op, pod: Netns): string => {
  const ns =
    o.op === 'link.add' || o.op === 'link.set'
      ? o.link.ns
      : o.op === 'addr.add'
        ? o.addr.ns
        : o.op === 'route.replace'
          ? o.route.ns
          : o.op === 'sysctl.set'
            ? o.sysctl.ns
            : '?';
  return ns === HOST ? 'host' : ns === pod.path ? 'pod' : ns;
};

// ----------------------------------------------------------------------------------------------- vxlan

describe('vxlan: neighbour and fdb first, then the onlink route', () => {
  let a: Netns; // node A (the adapter's "host")
  let b: Netns; // node B
  let probe: Probe;
  const macA = '0a:00:00:00:01:00';
  const macB = '0a:00:00:00:02:00';
  const node = (ns: string, me: 1 | 2): KernelState => {
    const other = me === 1 ? 2 : 1;
    const vx: Link = {
      ns,
      name: 'flannel.1',
      kind: 'vxlan',
      up: true,
      mtu: 1450,
      mac: me === 1 ? macA : macB,
      vxlan: { vni: 1, local: `198.51.100.${me + 1}`, port: 8472, learning: false, gbp: false, dev: `ul${me}` },
    };
    return st({
      links: [vx],
      addresses: [{ ns, dev: 'flannel.1', cidr: `10.244.${me}.0/32` }],
      neighbours: [{ ns, dev: 'flannel.1', ip: `10.244.${other}.0`, lladdr: other === 1 ? macA : macB }],
      fdb: [{ ns, dev: 'flannel.1', mac: other === 1 ? macA : macB, dst: `198.51.100.${other + 1}` }],
      routes: [{ ns, dst: `10.244.${other}.0/24`, gw: `10.244.${other}.0`, dev: 'flannel.1', onlink: true }],
    });
  };
  const underlay = (): KernelState =>
    st({
      links: [
        { ns: b.path, name: 'ul2', kind: 'veth', up: true, veth: { peer: 'ul1', peerNs: HOST } },
        { ns: HOST, name: 'ul1', kind: 'veth', up: true },
      ],
      addresses: [
        { ns: HOST, dev: 'ul1', cidr: '198.51.100.2/24' },
        { ns: b.path, dev: 'ul2', cidr: '198.51.100.3/24' },
      ],
    });
  const merge = (...xs: KernelState[]): KernelState => ({
    links: xs.flatMap((x) => x.links),
    addresses: xs.flatMap((x) => x.addresses),
    routes: xs.flatMap((x) => x.routes),
    neighbours: xs.flatMap((x) => x.neighbours),
    fdb: xs.flatMap((x) => x.fdb),
    chains: xs.flatMap((x) => x.chains),
    rules: xs.flatMap((x) => x.rules),
    sysctls: xs.flatMap((x) => x.sysctls),
    qdiscs: xs.flatMap((x) => x.qdiscs),
  });
  const desired = (): KernelState => merge(underlay(), node(HOST, 1), node(b.path, 2));
  const scope = (): OwnershipScope => scopeOf(desired());
  const req = (): ObserveRequest => ({ namespaces: [HOST, b.path], scope: scope(), desired: desired(), fdb: true });

  beforeAll(async () => {
    a = await createNetns();
    b = await createNetns();
    probe = kernelIn(a);
  });

  it('two nodes reach each other over the overlay', async () => {
    await converge(probe.kernel, desired(), scope(), req());
    expect(await ping(a, '10.244.2.0')).toBe(true);
    const seen = await observe(probe.kernel, req());
    expect(seen.links.find((l) => l.name === 'flannel.1' && l.ns === HOST)?.vxlan).toEqual({
      vni: 1,
      local: '198.51.100.2',
      port: 8472,
      learning: false,
      gbp: false,
      dev: 'ul1',
    });
    expect(seen.fdb.filter((f) => f.ns === HOST)).toEqual([{ ns: HOST, dev: 'flannel.1', mac: macB, dst: '198.51.100.3' }]);
  });

  it('deleted neighbour, fdb entry and route come back, in that order', async () => {
    await a.run(['ip', 'route', 'del', '10.244.2.0/24']);
    await a.run(['ip', 'neigh', 'del', '10.244.2.0', 'dev', 'flannel.1']);
    await a.run(['bridge', 'fdb', 'del', macB, 'dev', 'flannel.1', 'dst', '198.51.100.3', 'self']);
    probe.spawns.length = 0;
    const ops = plan(desired(), await observe(probe.kernel, req()), scope());
    expect(ops.map((o) => o.op)).toEqual(['neigh.replace', 'fdb.replace', 'route.replace']);
    probe.spawns.length = 0;
    await apply(probe.kernel, ops);
    // fdb entries go through `bridge`, between the ip batches.
    expect(probe.spawns.map((x) => x[2])).toEqual(['ip', 'bridge', 'ip']);
    expect(plan(desired(), await observe(probe.kernel, req()), scope())).toEqual([]);
    expect(await ping(a, '10.244.2.0')).toBe(true);
  });

  it('a remote VTEP that moved is replaced in place; a stale one goes', async () => {
    await a.run(['bridge', 'fdb', 'replace', macB, 'dev', 'flannel.1', 'dst', '198.51.100.9', 'self', 'permanent']);
    await a.run(['bridge', 'fdb', 'append', '0a:00:00:00:09:00', 'dev', 'flannel.1', 'dst', '198.51.100.9', 'self', 'permanent']);
    const ops = await converge(probe.kernel, desired(), scope(), req());
    expect(ops.map((o) => o.op).sort()).toEqual(['fdb.del', 'fdb.replace']);
  });

  it('a vxlan with another VNI is replaced, and everything on it comes back', async () => {
    await a.run(['ip', 'link', 'del', 'dev', 'flannel.1']);
    await a.run(['ip', 'link', 'add', 'name', 'flannel.1', 'type', 'vxlan', 'id', '7', 'dstport', '8472']);
    const ops = await converge(probe.kernel, desired(), scope(), req());
    expect(ops.slice(0, 2).map((o) => o.op)).toEqual(['link.del', 'link.add']);
    expect(await ping(a, '10.244.2.0')).toBe(true);
  });
});

// -------------------------------------------------------------------------------------------- iptables

describe('iptables: chain sync, jump, removal; foreign rules stay', () => {
  let host: Netns;
  let probe: Probe;
  const chain = 'CNI-felt-test';
  const comment = '-m comment --comment "name: \\"felt\\" id: \\"c1\\""';
  const desired = (): KernelState =>
    st({
      chains: [
        {
          ns: HOST,
          family: 4,
          table: 'nat',
          chain,
          rules: [`-d 10.22.0.0/16 ${comment} -j ACCEPT`, `! -d 224.0.0.0/4 ${comment} -j MASQUERADE`],
        },
        {
          ns: HOST,
          family: 6,
          table: 'nat',
          chain,
          rules: [`-d fd00:22::/64 ${comment} -j ACCEPT`, `! -d ff00::/8 ${comment} -j MASQUERADE`],
        },
      ],
      rules: [
        { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: `-s 10.22.0.5/32 ${comment} -j ${chain}` },
        { ns: HOST, family: 6, table: 'nat', chain: 'POSTROUTING', rule: `-s fd00:22::5/128 ${comment} -j ${chain}` },
      ],
    });
  const scope = (): OwnershipScope =>
    sc({
      chains: ([4, 6] as const).map((family) => ({ ns: HOST, family, table: 'nat' as const, chain })),
      ruleMarkers: ([4, 6] as const).map((family) => ({
        ns: HOST,
        family,
        table: 'nat' as const,
        chain: 'POSTROUTING',
        marker: `-j ${chain}`,
      })),
    });
  const req = (): ObserveRequest => ({ namespaces: [HOST], scope: scope(), iptables: [4, 6], desired: desired() });

  beforeAll(async () => {
    host = await createNetns();
    probe = kernelIn(host);
    await host.run(['iptables', '-t', 'nat', '-N', 'DOCKER']);
    await host.run(['iptables', '-t', 'nat', '-A', 'DOCKER', '-j', 'RETURN']);
    await host.run(['iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', '172.17.0.0/16', '-j', 'MASQUERADE']);
  });

  const saved = async (): Promise<string> =>
    (await host.run(['iptables-save', '-t', 'nat'])) + (await host.run(['ip6tables-save', '-t', 'nat']));

  it('writes the chains and the jumps into them, one iptables-restore per family', async () => {
    const ops = plan(desired(), await observe(probe.kernel, req()), scope());
    expect(ops.map((o) => o.op)).toEqual(['chain.sync', 'chain.sync', 'rule.add', 'rule.add']);
    probe.spawns.length = 0;
    await apply(probe.kernel, ops);
    expect(probe.spawns.map((x) => x.slice(2).join(' '))).toEqual([
      'iptables-restore -w 30 --noflush',
      'ip6tables-restore -w 30 --noflush',
    ]);
    expect(plan(desired(), await observe(probe.kernel, req()), scope())).toEqual([]);
    expect(await saved()).toContain(`-A POSTROUTING -s 10.22.0.5/32 ${comment} -j ${chain}`);
  });

  it('a chain edited by hand is rewritten whole; a jump deleted by hand comes back', async () => {
    await host.run(['iptables', '-t', 'nat', '-A', chain, '-j', 'RETURN']);
    await host.run([
      'ip6tables',
      '-t',
      'nat',
      '-D',
      'POSTROUTING',
      '-s',
      'fd00:22::5/128',
      '-m',
      'comment',
      '--comment',
      'name: "felt" id: "c1"',
      '-j',
      chain,
    ]);
    const seen = await observe(probe.kernel, req());
    expect(drift(desired(), seen, scope())).toEqual([
      'iptables chain nat/CNI-felt-test differs: 3 rules, want 2 (in the host namespace)',
      `missing iptables rule in nat/POSTROUTING (IPv6): -s fd00:22::5/128 ${comment} -j ${chain}`,
    ]);
    const ops = await converge(probe.kernel, desired(), scope(), req());
    expect(ops.map((o) => o.op)).toEqual(['chain.sync', 'rule.add']);
  });

  it('removal deletes the jumps, then the chains; the foreign chain and rule stay', async () => {
    const ops = await converge(probe.kernel, emptyKernelState(), scope(), { namespaces: [HOST], scope: scope(), iptables: [4, 6] });
    expect(ops.map((o) => o.op)).toEqual(['rule.del', 'rule.del', 'chain.del', 'chain.del']);
    const s = await saved();
    expect(s).not.toContain(chain);
    expect(s).toContain('-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE');
    expect(s).toContain('-A DOCKER -j RETURN');
  });

  // iptables-restore's input ends with a line it refuses (`felt/sync`): that line's failure says every COMMIT
  // before it is done, without waiting for the process to close its netlink socket (linux.ts runRestore).
  it('every iptables-restore input ends with the sentinel; a line that fails is still the answer, naming its op', async () => {
    probe.inputs.length = 0;
    const jump = { ns: HOST, family: 4 as const, table: 'nat' as const, chain: 'POSTROUTING', rule: '-s 10.22.0.9/32 -j CNI-felt-nowhere' };
    // A jump to a chain that is not there: refused at its line, before the sentinel.
    const r = await probe.kernel.apply([{ op: 'rule.add', rule: jump }])();
    expect(E.isLeft(r) && r.left.msg).toMatch(/^failed to add iptables rule .*CNI-felt-nowhere/);
    expect(probe.inputs.at(-1)).toMatch(/\nCOMMIT\nfelt\/sync\n$/);
    // And a deletion that works is done when the call answers.
    const rule = { ...jump, rule: '-s 10.22.0.9/32 -j RETURN' };
    expect(await probe.kernel.apply([{ op: 'rule.add', rule }])()).toEqual(E.right(undefined));
    expect(await saved()).toContain('-A POSTROUTING -s 10.22.0.9/32 -j RETURN');
    expect(await probe.kernel.apply([{ op: 'rule.del', rule }])()).toEqual(E.right(undefined));
    // Read soon after it (the restore may still be closing; a kernel that says so for a minute here): under
    // stdbuf, over at "# Completed", the same state.
    const spawned: string[][] = [];
    const soon = linuxKernel({
      pid: process.pid,
      hostNetns: host.path,
      restoreSentinel: true,
      restoreClosingMs: 60_000,
      onSpawn: (a) => spawned.push([...a]),
    });
    expect(await soon.apply([{ op: 'rule.add', rule }])()).toEqual(E.right(undefined));
    expect(await soon.apply([{ op: 'rule.del', rule }])()).toEqual(E.right(undefined));
    spawned.length = 0;
    const after = await observe(soon, { namespaces: [HOST], ip: false, iptables: [4], scope: scope() });
    expect(spawned.map((a) => a.slice(2).join(' '))).toEqual(['stdbuf -oL iptables-save -t nat']);
    expect(after.rules.filter((r) => r.rule.includes('10.22.0.9'))).toEqual([]);
    expect(after.rules).toContainEqual(expect.objectContaining({ chain: 'POSTROUTING', rule: '-s 172.17.0.0/16 -j MASQUERADE' }));
    expect(await saved()).not.toContain('10.22.0.9');
    // A kernel for a plugin run once (no restoreSentinel): the input as it is, the process's exit the answer.
    const inputs: string[] = [];
    const once = linuxKernel({ pid: process.pid, hostNetns: host.path, onSpawn: (_, input) => inputs.push(input) });
    expect(await once.apply([{ op: 'rule.add', rule }])()).toEqual(E.right(undefined));
    expect(await once.apply([{ op: 'rule.del', rule }])()).toEqual(E.right(undefined));
    expect(inputs.filter((i) => i.includes('felt/sync'))).toEqual([]);
    // Only the sentinel's own line answers "done": not a real line's failure, with or without its reason.
    const { input, doneWhen } = withRestoreSentinel('*nat\n-D POSTROUTING -j RETURN\nCOMMIT\n');
    expect(input).toBe('*nat\n-D POSTROUTING -j RETURN\nCOMMIT\nfelt/sync\n');
    expect(doneWhen.line.test('iptables-restore: line 4 failed\n')).toBe(true);
    expect(doneWhen.line.test('warning\nip6tables-restore v1.8.9 (nf_tables): line 4 failed\n')).toBe(true);
    expect(doneWhen.line.test('iptables-restore: line 2 failed\n')).toBe(false);
    expect(doneWhen.line.test('iptables-restore: line 14 failed\n')).toBe(false);
    expect(doneWhen.line.test('iptables-restore: line 4 failed: Bad rule\n')).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------- more behaviour

describe('foreign objects, sysctls, qdiscs, errors, deletions of what is gone', () => {
  let host: Netns;
  let pod: Netns;
  let probe: Probe;

  beforeAll(async () => {
    host = await createNetns();
    pod = await createNetns();
    probe = kernelIn(host);
    // Foreign: a bridge with an address and a route, and a veth pair felt does not own.
    await host.run(['ip', 'link', 'add', 'name', 'docker0', 'type', 'bridge']);
    await host.run(['ip', 'link', 'set', 'dev', 'docker0', 'up']);
    await host.run(['ip', 'addr', 'add', '172.17.0.1/16', 'dev', 'docker0']);
    await host.run(['ip', 'route', 'add', '172.18.0.0/16', 'via', '172.17.0.9', 'dev', 'docker0']);
    await host.run(['ip', 'link', 'add', 'name', 'other0', 'type', 'veth', 'peer', 'name', 'other1']);
  });

  it('plans nothing for foreign objects, even with nothing desired, and leaves them through an apply', async () => {
    const mine: KernelState = st({
      links: [{ ns: HOST, name: 'br-felt', kind: 'bridge', up: true }],
      addresses: [{ ns: HOST, dev: 'br-felt', cidr: '10.30.0.1/24' }],
    });
    const scope = mergeScopes(scopeOf(mine));
    await converge(probe.kernel, mine, scope, { namespaces: [HOST], scope });
    const before = await observe(probe.kernel, { namespaces: [HOST] });
    await converge(probe.kernel, emptyKernelState(), scope, { namespaces: [HOST], scope });
    const after = await observe(probe.kernel, { namespaces: [HOST] });
    const foreignOnly = (s: KernelState) => ({
      links: s.links
        .filter((l) => l.name !== 'br-felt')
        .map((l) => l.name)
        .sort(),
      addresses: s.addresses.filter((a) => a.dev !== 'br-felt'),
      routes: s.routes,
    });
    expect(foreignOnly(after)).toEqual(foreignOnly(before));
    expect(after.routes).toEqual([{ ns: HOST, dst: '172.18.0.0/16', gw: '172.17.0.9', dev: 'docker0' }]);
    expect(plan(emptyKernelState(), after, sc({ devices: [{ ns: HOST, dev: 'br-felt' }] }))).toEqual([]);
  });

  it("a pod's sysctl that fails in its batch's first line is named, and the batch's other lines still run", async () => {
    const ns = pod.path;
    const r = await probe.kernel.apply([
      { op: 'sysctl.set', sysctl: { ns, key: 'net.ipv4.conf.lo.arp_notify', value: '1' } },
      { op: 'sysctl.set', sysctl: { ns, key: 'net.ipv4.conf.nosuch0.arp_notify', value: '1' } },
      { op: 'link.set', link: { ns, name: 'lo', kind: 'loopback', up: true }, changes: { up: true } },
    ])();
    expect(E.isLeft(r) && r.left.msg).toMatch(/^failed to set sysctl net\.ipv4\.conf\.nosuch0\.arp_notify/);
    expect(probe.inputs.at(-1)!.split('\n')[0]).toMatch(/^netns exec \S+ sysctl -q -w /);
    expect(await pod.run(['cat', '/proc/sys/net/ipv4/conf/lo/arp_notify'])).toBe('1\n');
    expect(await pod.run(['ip', '-j', 'link', 'show', 'dev', 'lo'])).toMatch(/"operstate":"UNKNOWN"|LOWER_UP/);
    // Back as it was, for the cases after this one.
    await pod.run(['ip', 'link', 'set', 'dev', 'lo', 'down']);
    await pod.run(['sysctl', '-q', '-w', 'net.ipv4.conf.lo.arp_notify=0']);
  });

  it('sysctls are set and read back, also for a device made in the same apply', async () => {
    const d = st({
      links: [
        { ns: pod.path, name: 'lo', kind: 'loopback', up: true },
        { ns: pod.path, name: 'br1', kind: 'bridge', up: true },
      ],
      addresses: [{ ns: pod.path, dev: 'br1', cidr: 'fd00:1::1/64' }],
      sysctls: [
        { ns: pod.path, key: 'net.ipv4.conf.all.forwarding', value: '1' },
        { ns: pod.path, key: 'net.ipv6.conf.br1.accept_dad', value: '0' },
        { ns: pod.path, key: 'net.core.somaxconn', value: '1234' },
      ],
    });
    const ops = await converge(probe.kernel, d, scopeOf(d), { namespaces: [pod.path], desired: d });
    expect(ops.map((o) => o.op)).toEqual(['sysctl.set', 'sysctl.set', 'link.add', 'link.set', 'sysctl.set', 'addr.add']);
    expect(await pod.run(['cat', '/proc/sys/net/ipv6/conf/br1/accept_dad'])).toBe('0\n');
    // Two values in one step: one `sysctl -p-` wrote both.
    expect(await pod.run(['cat', '/proc/sys/net/core/somaxconn'])).toBe('1234\n');
    expect(await host.run(['cat', '/proc/sys/net/ipv4/conf/all/forwarding'])).toBe('0\n'); // the other namespace is untouched
  });

  it('ip: false reads only the other things asked for (one more iptables family)', async () => {
    const ns = pod.path;
    await apply(probe.kernel, [{ op: 'chain.sync', chain: { ns, family: 6, table: 'nat', chain: 'CNI-IPONLY', rules: ['-j RETURN'] } }]);
    probe.spawns.length = 0;
    const seen = await observe(probe.kernel, {
      namespaces: [ns],
      ip: false,
      iptables: [6],
      scope: { links: [], devices: [], chains: [{ ns, family: 6, table: 'nat', chain: 'CNI-IPONLY' }], ruleMarkers: [] },
    });
    // (under stdbuf when it comes at once after the restore above: see the sentinel case)
    expect(probe.spawns.map((a) => a.filter((x) => x !== 'stdbuf' && x !== '-oL'))).toEqual([
      ['nsenter', `--net=${ns}`, 'ip6tables-save', '-t', 'nat'],
    ]);
    expect(seen.links).toEqual([]);
    expect(seen.chains).toContainEqual(expect.objectContaining({ ns, family: 6, table: 'nat', chain: 'CNI-IPONLY', rules: ['-j RETURN'] }));
    await apply(probe.kernel, [{ op: 'chain.del', ns, family: 6, table: 'nat', chain: 'CNI-IPONLY' }]);
  });

  it('differing sysctl values of a device with a dot in its name: one process, and the dot stays a dot', async () => {
    const d = st({
      links: [{ ns: pod.path, name: 'br.7', kind: 'bridge', up: true }],
      sysctls: [
        { ns: pod.path, key: 'net.ipv6.conf.br/7.accept_dad', value: '0' },
        { ns: pod.path, key: 'net.ipv4.conf.br/7.arp_notify', value: '1' },
      ],
    });
    const seen = await observe(probe.kernel, { namespaces: [pod.path], desired: d });
    const ops = plan(d, seen, scopeOf(d));
    probe.spawns.length = 0;
    await apply(probe.kernel, ops);
    expect(probe.spawns.map((x) => afterNs(x).join(' '))).toEqual(['ip -force -batch -', 'sysctl -q -p-']);
    expect(await pod.run(['cat', '/proc/sys/net/ipv6/conf/br.7/accept_dad', '/proc/sys/net/ipv4/conf/br.7/arp_notify'])).toBe('0\n1\n');
    const again = await observe(probe.kernel, { namespaces: [pod.path], desired: d });
    expect(plan(d, again, scopeOf(d))).toEqual([]);
  });

  it('a tbf qdisc is set and read back', async () => {
    const d = st({
      links: [{ ns: pod.path, name: 'br1', kind: 'bridge', up: true }],
      qdiscs: [{ ns: pod.path, dev: 'br1', kind: 'tbf', rate: 8_000_000, burst: 25_000, latencyMs: 25 }],
    });
    await converge(probe.kernel, d, scopeOf(d), { namespaces: [pod.path], desired: d });
    const seen = await observe(probe.kernel, { namespaces: [pod.path], qdiscs: true });
    expect(seen.qdiscs).toEqual([{ ns: pod.path, dev: 'br1', kind: 'tbf', rate: 8_000_000, burst: 25_000, latencyMs: 25 }]);
  });

  it('an ifb fed by an ingress redirect: Linux and the twin agree, also after the ifb is deleted (the filter stays without a target)', async () => {
    const ns = pod.path;
    const d = st({
      links: [
        { ns, name: 'vr0', kind: 'bridge', up: true },
        { ns, name: 'ifbt0', kind: 'ifb', up: true, mtu: 1400 },
      ],
      qdiscs: [
        { ns, dev: 'vr0', kind: 'ingress', redirect: 'ifbt0' },
        { ns, dev: 'ifbt0', kind: 'tbf', rate: 2_000_000, burst: 25_000, latencyMs: 25 },
      ],
    });
    const scope = scopeOf(d);
    const req: ObserveRequest = { namespaces: [ns], desired: d, scope };
    const twin = memoryKernel();
    const ops = await converge(probe.kernel, d, scope, req);
    await apply(twin, ops);
    const view = (s: KernelState) => ({
      links: s.links.filter((l) => l.name === 'ifbt0').map((l) => [l.kind, l.mtu, l.up]),
      qdiscs: s.qdiscs.filter((q) => q.dev === 'vr0' || q.dev === 'ifbt0').sort((a, b) => a.dev.localeCompare(b.dev)),
    });
    expect(view(await observe(probe.kernel, req))).toEqual(view(await observe(twin, req)));
    expect(view(await observe(probe.kernel, req)).qdiscs).toEqual(d.qdiscs.slice().sort((a, b) => a.dev.localeCompare(b.dev)));
    // Without a desired redirect the filters are not read: the same on both.
    const noFilters: ObserveRequest = { namespaces: [ns], qdiscs: true };
    expect(view(await observe(probe.kernel, noFilters))).toEqual(view(await observe(twin, noFilters)));
    for (const k of [probe.kernel, twin]) await apply(k, [{ op: 'link.del', ns, name: 'ifbt0' }]);
    const [linux, mem] = [await observe(probe.kernel, req), await observe(twin, req)];
    expect(view(linux)).toEqual(view(mem));
    expect(view(linux).qdiscs).toEqual([{ ns, dev: 'vr0', kind: 'ingress' }]);
    expect(plan(d, linux, scope).map((o) => o.op)).toEqual(plan(d, mem, scope).map((o) => o.op));
    await converge(probe.kernel, d, scope, req);
    await converge(probe.kernel, emptyKernelState(), scope, req);
    expect((await observe(probe.kernel, { namespaces: [ns], qdiscs: true })).qdiscs.filter((q) => q.dev === 'vr0')).toEqual([]);
  });

  it('errors name the object and the namespace', async () => {
    const r = await probe.kernel.apply([
      { op: 'route.replace', route: { ns: pod.path, dst: '10.99.0.0/24', gw: '10.98.0.1', dev: 'br1' } },
    ])();
    expect(E.isLeft(r) && r.left.msg).toBe(
      `failed to add route 10.99.0.0/24 via 10.98.0.1 dev br1 in ${pod.path}: Error: Nexthop has invalid gateway.`,
    );
    const dup = await probe.kernel.apply([{ op: 'link.add', link: { ns: pod.path, name: 'br1', kind: 'bridge' } }])();
    expect(E.isLeft(dup) && dup.left.msg).toBe(`failed to add bridge br1 in ${pod.path}: RTNETLINK answers: File exists`);
    const gone = await probe.kernel.apply([
      { op: 'addr.add', addr: { ns: '/var/run/netns/felt-nope', dev: 'eth0', cidr: '10.0.0.1/24' } },
    ])();
    expect(E.isLeft(gone) && gone.left.msg).toMatch(
      /^failed to enter \/var\/run\/netns\/felt-nope: (?:nsenter: cannot open \/var\/run\/netns\/felt-nope|Cannot open network namespace "felt-nope"): No such file or directory/,
    );
    const obs = await probe.kernel.observe({ namespaces: ['/var/run/netns/felt-nope'] })();
    expect(E.isLeft(obs) && obs.left.msg).toMatch(/^failed to read \/var\/run\/netns\/felt-nope: nsenter: cannot open/);
    const ipt = await probe.kernel.apply([
      { op: 'rule.add', rule: { ns: pod.path, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-j CNI-NOPE' } },
    ])();
    expect(E.isLeft(ipt) && ipt.left.msg).toMatch(
      new RegExp(`^failed to add iptables rule in nat/POSTROUTING in ${pod.path}: -j CNI-NOPE: .+`),
    );
    const kind = await probe.kernel.apply([{ op: 'link.add', link: { ns: pod.path, name: 'eth9', kind: 'device' } }])();
    expect(E.isLeft(kind) && kind.left.msg).toBe(`failed to add device eth9 in ${pod.path}: cannot create a link of kind device`);
  });

  it('deleting what is already gone succeeds, and the rest of the apply still runs', async () => {
    const ns = pod.path;
    probe.spawns.length = 0;
    await apply(probe.kernel, [
      { op: 'rule.del', rule: { ns, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-s 10.9.9.9/32 -j MASQUERADE' } },
      { op: 'chain.del', ns, family: 4, table: 'nat', chain: 'CNI-GONE' },
      { op: 'qdisc.del', qdisc: { ns, dev: 'br1', kind: 'ingress' } },
      { op: 'link.del', ns, name: 'nothere0' },
      { op: 'addr.del', addr: { ns, dev: 'br1', cidr: '10.77.0.1/24' } },
      { op: 'route.del', route: { ns, dst: '10.78.0.0/24', dev: 'br1' } },
      { op: 'neigh.del', neigh: { ns, dev: 'br1', ip: '10.77.0.9', lladdr: '02:00:00:00:00:09' } },
      { op: 'addr.add', addr: { ns, dev: 'br1', cidr: '10.77.0.1/24' } },
    ]);
    // The failed -D made iptables-restore roll back and rerun without it; tc's and ip's batches ran to their
    // end past the deletions of what is not there (iptables in its own lane, beside them).
    const tools = probe.spawns.map((x) => afterNs(x)[0]);
    expect(tools.filter((t) => t === 'iptables-restore')).toEqual(['iptables-restore', 'iptables-restore']);
    expect(tools.filter((t) => t !== 'iptables-restore')).toEqual(['tc', 'ip']);
    const seen = await observe(probe.kernel, { namespaces: [ns] });
    expect(seen.addresses).toContainEqual({ ns, dev: 'br1', cidr: '10.77.0.1/24' });
  });
});

// ------------------------------------------------------------------------------ the host by PID (production)

// ---------------------------------------------------------------------- the twin against the kernel

describe('what address removal takes along: the memory twin does what Linux does', () => {
  it('IPv4 routes by source go, IPv6 sources are cleared, a device without IPv4 addresses loses its IPv4 routes', async () => {
    const ns = await createNetns();
    try {
      const k = kernelIn(ns).kernel;
      const where = ns.path;
      const start: KernelState = st({
        links: [
          { ns: where, name: 'b0', kind: 'bridge', up: true },
          { ns: where, name: 'b1', kind: 'bridge', up: true },
        ],
        addresses: [
          { ns: where, dev: 'b0', cidr: '10.9.0.1/24' },
          { ns: where, dev: 'b0', cidr: 'fd00::1/64', nodad: true },
          { ns: where, dev: 'b1', cidr: '10.10.0.1/24' },
          { ns: where, dev: 'b1', cidr: 'fd00::2/64', nodad: true },
        ],
        routes: [
          { ns: where, dst: '10.8.0.0/24', dev: 'b1', src: '10.9.0.1' },
          { ns: where, dst: '10.6.0.0/24', dev: 'b1', src: '10.10.0.1' },
          { ns: where, dst: 'fd01::/64', dev: 'b1', src: 'fd00::1' },
          { ns: where, dst: 'fd02::/64', dev: 'b1', src: 'fd00::2' },
          { ns: where, dst: '10.7.0.0/24', dev: 'b0' },
          { ns: where, dst: 'fd07::/64', dev: 'b0' },
        ],
      });
      const req = { namespaces: [where] };
      await converge(k, start, scopeOf(start), req);
      const twin = memoryKernel(await observe(k, req));
      const ops: Op[] = [
        { op: 'addr.del', addr: { ns: where, dev: 'b0', cidr: '10.9.0.1/24' } },
        { op: 'addr.del', addr: { ns: where, dev: 'b0', cidr: 'fd00::1/64' } },
      ];
      await apply(k, ops);
      expect(E.isRight(twin.applySync(ops))).toBe(true);
      const mine = (s: KernelState) =>
        s.routes
          .filter((r) => start.routes.some((x) => x.dst === r.dst))
          .map((r) => `${r.dst} dev ${r.dev} src ${r.src ?? '-'}`)
          .sort();
      const linux = mine(await observe(k, req));
      expect(linux).toEqual([
        '10.6.0.0/24 dev b1 src 10.10.0.1',
        'fd01::/64 dev b1 src -',
        'fd02::/64 dev b1 src fd00::2',
        'fd07::/64 dev b0 src -',
      ]);
      expect(mine(twin.state())).toEqual(linux);
    } finally {
      await ns.del();
    }
  });
});

describe('HOST as the process namespace (no hostNetns): the veth peer lands in the host by PID', () => {
  it('creates a pair from the pod into the namespace the adapter runs in', async () => {
    const host = await createNetns();
    const pod = await createNetns();
    const dir = mkdtempSync(join(tmpdir(), 'felt-kernel-'));
    try {
      const root = fileURLToPath(new URL('../..', import.meta.url));
      const file = join(dir, 'pid.mts');
      writeFileSync(
        file,
        `import { linuxKernel } from ${JSON.stringify(join(root, 'adapters/kernel/linux.ts'))};
         import { plan } from ${JSON.stringify(join(root, 'core/kernel/plan.ts'))};
         const pod = process.argv[2];
         const k = linuxKernel({ pid: process.pid });
         const want = { links: [{ ns: pod, name: 'eth0', kind: 'veth', up: true, veth: { peer: 'vethpid0', peerNs: '' } }, { ns: '', name: 'vethpid0', kind: 'veth', up: true }],
           addresses: [], routes: [], neighbours: [], fdb: [], chains: [], rules: [], sysctls: [], qdiscs: [] };
         const scope = { links: [], devices: [], chains: [], ruleMarkers: [] };
         const seen = await k.observe({ namespaces: ['', pod] })();
         const r = await k.apply(plan(want, seen.right, scope))();
         const again = await k.observe({ namespaces: ['', pod] })();
         console.log(JSON.stringify({ r, left: plan(want, again.right, scope) }));`,
      );
      const r = await execFile(['ip', 'netns', 'exec', host.name, process.execPath, '--import', 'tsx', file, pod.path], {});
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toEqual({ r: { _tag: 'Right' }, left: [] });
      expect(await host.run(['ip', '-br', 'link', 'show', 'dev', 'vethpid0'])).toMatch(/^vethpid0@if\d+\s+UP/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await host.del();
      await pod.del();
    }
  });
});

// ------------------------------------------------------------------------------------------- 10,000 routes

// How fast this is, against raw `ip -batch`, is measured by test/bench/kernel.bench.ts (npm run bench:kernel);
// here only what it does: every route lands, a replan is empty, and batching holds at this size.
describe('10,000 routes', () => {
  let ns: Netns;
  let probe: Probe;
  const base = (): KernelState =>
    st({
      links: [
        { ns: ns.path, name: 'r0', kind: 'veth', up: true, veth: { peer: 'r1', peerNs: ns.path } },
        { ns: ns.path, name: 'r1', kind: 'veth', up: true },
      ],
      addresses: [{ ns: ns.path, dev: 'r0', cidr: '10.255.0.1/16' }],
    });
  const withRoutes = (gw: string): KernelState => ({
    ...base(),
    routes: Array.from({ length: 10_000 }, (_, i) => ({ ns: ns.path, dst: `10.${i >> 8}.${i & 255}.0/24`, gw, dev: 'r0' })),
  });
  const req = (): ObserveRequest => ({ namespaces: [ns.path] });
  /** The routes via r0 as the kernel lists them (not through the adapter): "dst gw". */
  const kernelRoutes = async (): Promise<string[]> =>
    (JSON.parse(await ns.run(['ip', '-4', '-json', 'route', 'show', 'dev', 'r0'])) as { dst: string; gateway?: string }[])
      .filter((r) => r.gateway)
      .map((r) => `${r.dst} ${r.gateway}`)
      .sort();
  const wanted = (d: KernelState): string[] => d.routes.map((r) => `${r.dst} ${r.gw}`).sort();

  beforeAll(async () => {
    ns = await createNetns();
    probe = kernelIn(await createNetns());
    await converge(probe.kernel, base(), scopeOf(base()), req());
  });

  // One step: plan against an observation, apply with one `ip` batch process, observe with one `ip` process,
  // and the kernel (read by `ip` directly) holds exactly the wanted routes; nothing is left to plan.
  const step = async (desired: KernelState, op: 'route.replace' | 'route.del'): Promise<void> => {
    const ops = plan(desired, await observe(probe.kernel, req()), scopeOf(withRoutes('10.255.0.2')));
    expect(ops).toHaveLength(10_000);
    expect(new Set(ops.map((o) => o.op))).toEqual(new Set([op]));
    probe.spawns.length = 0;
    probe.inputs.length = 0;
    await apply(probe.kernel, ops);
    // A named namespace: ip enters it itself.
    expect(probe.spawns).toEqual([['ip', '-n', ns.name, '-force', '-batch', '-']]);
    expect(probe.inputs[0]!.split('\n').filter(Boolean)).toHaveLength(10_000);
    probe.spawns.length = 0;
    const after = await observe(probe.kernel, req());
    expect(probe.spawns).toEqual([['nsenter', `--net=${ns.path}`, 'ip', '-json', '-d', '-batch', '-']]);
    expect(after.routes).toHaveLength(desired.routes.length);
    expect(plan(desired, after, scopeOf(withRoutes('10.255.0.2'))).map(describeOp)).toEqual([]);
    expect(await kernelRoutes()).toEqual(wanted(desired));
  };

  it('are created by one batch and observed', { timeout: 120_000 }, () => step(withRoutes('10.255.0.2'), 'route.replace'));
  it('all change gateway in one batch', { timeout: 120_000 }, () => step(withRoutes('10.255.0.3'), 'route.replace'));
  it('all go in one batch', { timeout: 120_000 }, () => step(base(), 'route.del'));
});
