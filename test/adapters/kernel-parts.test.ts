// The Linux adapter's applyParts (used by waves.ts for the host ops of concurrent CNI calls): several calls'
// ops in one `ip -force -batch` of the host namespace, each call judged by its own lines, as if it had been
// applied alone; what cannot be one batch is applied part by part.
//
// "HOST" is a namespace of the test's own (linuxKernel's hostNetns), never the root namespace.

import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { besideSysctls, linuxKernel } from '../../adapters/kernel/linux.ts';
import { steps, type Step } from '../../adapters/kernel/render.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';
import { HOST, type KernelState, type Link, type Op } from '../../core/kernel/model.ts';
import { cleanupNetns, createNetns, type Netns } from '../support/netns.ts';

const ok = (r: E.Either<{ msg: string }, void>): true | string => (E.isRight(r) ? true : r.left.msg);

describe('applyParts: one host batch, a verdict per part', () => {
  let host: Netns;
  const pods: Netns[] = [];
  let kernel: Kernel;
  const spawns: string[][] = [];

  beforeAll(async () => {
    host = await createNetns();
    for (let i = 0; i < 3; i++) pods.push(await createNetns());
    kernel = linuxKernel({ pid: process.pid, hostNetns: host.path, onSpawn: (a) => spawns.push([...a]) });
    const made = await kernel.apply([{ op: 'link.add', link: { ns: HOST, name: 'br0', kind: 'bridge', up: true } }])();
    expect(ok(made)).toBe(true);
  });

  afterAll(async () => {
    await cleanupNetns();
  });

  /** A veth pair made from the host into pod `i`, its host end a port of br0. */
  const pair = (i: number, name = `vp${i}`): Op => ({
    op: 'link.add',
    link: {
      ns: HOST,
      name,
      kind: 'veth',
      up: true,
      master: 'br0',
      mac: `02:00:00:00:0a:0${i}`,
      veth: { peer: 'eth0', peerNs: pods[i]!.path, peerMac: `02:00:00:00:0b:0${i}` },
    },
  });
  const links = async (ns: Netns): Promise<string[]> =>
    JSON.parse(await ns.run(['ip', '-json', 'link', 'show'])).map((l: { ifname: string }) => l.ifname);

  it('makes every pair in one process; a part whose line fails gets its own error naming the op, the others succeed', async () => {
    spawns.length = 0;
    const ghost: Op = { op: 'link.set', link: { ns: HOST, name: 'ghost0', kind: 'veth' } as Link, changes: { up: true } };
    const rs = await kernel.applyParts!([[pair(0)], [pair(1), ghost], [pair(2)]])();
    expect(rs.map(ok)).toEqual([true, expect.stringMatching(/ghost0.*(Cannot find device|does not exist)/), true]);
    // One `ip -batch` in the host namespace (entered once), nothing else.
    expect(spawns.map((a) => a.filter((w) => w === 'ip').length)).toEqual([1]);
    for (let i = 0; i < 3; i++) expect(await links(pods[i]!)).toContain('eth0');
    const br = JSON.parse(await host.run(['ip', '-json', 'link', 'show', 'master', 'br0'])).map((l: { ifname: string }) => l.ifname);
    expect(br.sort()).toEqual(['vp0', 'vp1', 'vp2']);
  });

  it('a pair whose name is taken fails for its own part only; deleting links already gone fails no part', async () => {
    spawns.length = 0;
    const gone: Op = { op: 'link.del', ns: HOST, name: 'vp9' };
    const rs = await kernel.applyParts!([[{ op: 'link.del', ns: HOST, name: 'vp1' }, gone], [pair(0, 'vp0')], [pair(1, 'vp5')]])();
    expect(rs.map(ok)).toEqual([true, expect.stringMatching(/vp0.*File exists/), true]);
    expect(spawns).toHaveLength(1);
    expect(await links(pods[1]!)).toContain('eth0');
  });

  it('links deleted one after another go as one group; a link already gone fails nobody; other links stay', async () => {
    for (let i = 0; i < 3; i++) await host.run(['ip', 'link', 'add', 'name', `vg${i}`, 'type', 'veth', 'peer', 'name', `vgp${i}`]);
    await host.run(['ip', 'link', 'add', 'name', 'keep0', 'type', 'bridge']);
    spawns.length = 0;
    const inputs: string[] = [];
    const k = linuxKernel({ pid: process.pid, hostNetns: host.path, onSpawn: (a, input) => (spawns.push([...a]), inputs.push(input)) });
    const del = (name: string): Op => ({ op: 'link.del', ns: HOST, name });
    const rs = await k.applyParts!([[del('vg0')], [del('vg1'), del('vgone')], [del('vg2')]])();
    expect(rs.map(ok)).toEqual([true, true, true]);
    expect(spawns).toHaveLength(1);
    // Each put in one random group, then the group deleted at once.
    const g = /link del group (\d+)\n$/.exec(inputs[0]!)?.[1];
    expect(g).toBeDefined();
    expect(inputs[0]).toBe(['vg0', 'vg1', 'vgone', 'vg2'].map((n) => `link set dev ${n} group ${g}\n`).join('') + `link del group ${g}\n`);
    const left = JSON.parse(await host.run(['ip', '-json', 'link', 'show'])).map((l: { ifname: string }) => l.ifname);
    expect(left.filter((n: string) => n.startsWith('vg'))).toEqual([]);
    expect(left).toContain('keep0');
    expect(left).toContain('br0');
  });

  it('parts that are not one ip batch (an iptables op) are applied each on its own', async () => {
    spawns.length = 0;
    const chain: Op = { op: 'chain.add', ns: HOST, family: 4, table: 'nat', chain: 'FELT-PARTS-TEST' };
    const rs = await kernel.applyParts!([[{ op: 'link.del', ns: HOST, name: 'vp5' }], [chain]])();
    expect(rs.map(ok)).toEqual([true, true]);
    expect(spawns.length).toBe(2);
    const state: KernelState | undefined = E.getOrElseW(() => undefined)(await kernel.observe({ namespaces: [HOST], iptables: [4] })());
    expect(state?.chains.some((c) => c.chain === 'FELT-PARTS-TEST')).toBe(true);
  });
});

describe("a pod's sysctls beside its ip batch", () => {
  const pod = '/var/run/netns/pod-x';
  const ro = { pid: 1 };
  const stepsOf = (ops: Op[]) => steps(ops, ro);
  const dad: Op = { op: 'sysctl.set', sysctl: { ns: pod, key: 'net.ipv6.conf.eth0.accept_dad', value: '0' } };
  const notify: Op = { op: 'sysctl.set', sysctl: { ns: pod, key: 'net.ipv4.conf.eth0.arp_notify', value: '1' } };
  const up: Op = { op: 'link.set', link: { ns: pod, name: 'eth0', kind: 'veth', up: true }, changes: { up: true } };
  const v4: Op = { op: 'addr.add', addr: { ns: pod, dev: 'eth0', cidr: '10.1.0.2/24' } };
  const v6 = (nodad: boolean): Op => ({ op: 'addr.add', addr: { ns: pod, dev: 'eth0', cidr: 'fd00::2/64', ...(nodad ? { nodad } : {}) } });

  it('run side by side for IPv4 addresses and IPv6 ones added nodad; after, when an IPv6 address would start DAD', () => {
    const pair = (ops: Op[]): [Step, Step] => {
      const s = stepsOf(ops);
      expect(s.map((x) => x.tool)).toEqual(['sysctl', 'ip']);
      return [s[0]!, s[1]!];
    };
    expect(besideSysctls(...pair([dad, notify, up, v4]))).toBe(true);
    expect(besideSysctls(...pair([dad, notify, up, v4, v6(true)]))).toBe(true);
    expect(besideSysctls(...pair([dad, notify, up, v4, v6(false)]))).toBe(false);
    // A namespace-wide switch (forwarding) keeps its order before the addresses.
    const fwd: Op = { op: 'sysctl.set', sysctl: { ns: pod, key: 'net.ipv4.conf.all.forwarding', value: '1' } };
    expect(besideSysctls(...pair([fwd, up, v4]))).toBe(false);
  });
});
