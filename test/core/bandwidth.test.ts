// The bandwidth plugin's pure half: config validation as the reference (plus what tc cannot do), the ifb name,
// tbf values in tc's units, the host veth found from prevResult and the kernel's pairing, and the desired
// state planned against the memory twin: ADD converges, a resync plans nothing, DEL leaves nothing of it and
// never touches the host veth itself.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { parseBandwidthConf } from '../../core/bandwidth/config.ts';
import { bandwidthDesired, bandwidthScope, hostInterface, ifbName, tbfOn, withIfb } from '../../core/bandwidth/desired.ts';
import { emptyKernelState, HOST, type KernelState, type Link } from '../../core/kernel/model.ts';
import { describeOp, drift, plan } from '../../core/kernel/plan.ts';

const POD = '/var/run/netns/pod';
const err = (raw: Record<string, unknown>): { code: number; msg: string } | undefined => {
  const r = parseBandwidthConf(raw);
  return E.isLeft(r) ? { code: r.left.code, msg: r.left.msg } : undefined;
};

describe('parseBandwidthConf', () => {
  it('reads the top-level limits, or runtimeConfig.bandwidth when none of them is there', () => {
    expect(parseBandwidthConf({ ingressRate: 1000, ingressBurst: 800 })).toEqual(E.right({ ingress: { rate: 1000, burst: 800 } }));
    expect(parseBandwidthConf({ runtimeConfig: { bandwidth: { egressRate: 8000, egressBurst: 80 } } })).toEqual(
      E.right({ egress: { rate: 8000, burst: 80 } }),
    );
    // As the reference: a top-level key wins over runtimeConfig, even a zero one.
    expect(parseBandwidthConf({ ingressRate: 0, runtimeConfig: { bandwidth: { egressRate: 8000, egressBurst: 80 } } })).toEqual(
      E.right({}),
    );
    expect(parseBandwidthConf({})).toEqual(E.right({}));
    expect(parseBandwidthConf({ ingressRate: null, ingressBurst: null })).toEqual(E.right({}));
  });

  it('refuses what the reference refuses, naming the field (code 7)', () => {
    expect(err({ ingressRate: 1000 })).toEqual({ code: 7, msg: 'ingressBurst: if ingressRate is set, ingressBurst must also be set' });
    expect(err({ egressBurst: 1000 })).toEqual({ code: 7, msg: 'egressRate: if egressBurst is set, egressRate must also be set' });
    expect(err({ egressRate: 1000, egressBurst: 8 * 0xffffffff })).toEqual({ code: 7, msg: 'egressBurst: burst cannot be more than 4GB' });
    expect(err({ egressRate: 1000, egressBurst: 8 * 0xffffffff - 1 })).toBeUndefined();
    expect(err({ runtimeConfig: { bandwidth: { ingressRate: 5 } } })?.msg).toBe(
      'runtimeConfig.bandwidth.ingressBurst: if ingressRate is set, ingressBurst must also be set',
    );
  });

  it('refuses what tc cannot do and what is not a bit count', () => {
    expect(err({ ingressRate: -1, ingressBurst: 10 })?.msg).toMatch(
      /^ingressRate: must be a non-negative integer \(bits per second\), got -1$/,
    );
    expect(err({ ingressRate: 1.5, ingressBurst: 10 })?.msg).toMatch(/^ingressRate: must be a non-negative integer/);
    expect(err({ ingressRate: '1000', ingressBurst: 10 })?.msg).toMatch(/^ingressRate: .*got "1000"$/);
    expect(err({ egressRate: 1000, egressBurst: 2 ** 60 })?.msg).toMatch(/^egressBurst: .* is too large$/);
    expect(err({ ingressRate: 7, ingressBurst: 800 })?.msg).toMatch(/^ingressRate: 7 bit\/s is less than one byte per second/);
    expect(err({ ingressRate: 800, ingressBurst: 7 })?.msg).toMatch(/^ingressBurst: 7 bits is less than one byte/);
    expect(err({ runtimeConfig: 'x' })?.msg).toBe('runtimeConfig: must be an object');
    expect(err({ runtimeConfig: { bandwidth: [] } })?.msg).toBe('runtimeConfig.bandwidth: must be an object');
  });
});

describe('names and tc units', () => {
  it('the ifb is named as the reference names it (value from /usr/lib/cni/bandwidth 1.1.1: network net1, container c1)', () => {
    expect(ifbName('net1', 'c1')).toBe('bwpc2d892b58e87');
    expect(ifbName('a', 'bc')).toBe(ifbName('ab', 'c')); // the reference hashes the concatenation
    expect(ifbName('net1', 'c2')).toHaveLength(15);
  });

  it('tbf: whole bytes per second and bytes of burst, 25 ms', () => {
    expect(tbfOn('v', { rate: 1_000_007, burst: 100_007 })).toEqual({
      ns: HOST,
      dev: 'v',
      kind: 'tbf',
      rate: 1_000_000,
      burst: 12_500,
      latencyMs: 25,
    });
  });
});

// ------------------------------------------------------------------------------------------- attachment

const hostVeth: Link = {
  ns: HOST,
  name: 'veth1234',
  kind: 'veth',
  mtu: 1400,
  up: true,
  master: 'cni0',
  veth: { peer: 'eth0', peerNs: POD },
};
const podEnd: Link = { ns: POD, name: 'eth0', kind: 'veth', mtu: 1400, up: true, veth: { peer: 'veth1234', peerNs: HOST } };
const bridge: Link = { ns: HOST, name: 'cni0', kind: 'bridge', up: true };
const other: Link = {
  ns: HOST,
  name: 'veth9999',
  kind: 'veth',
  up: true,
  master: 'cni0',
  veth: { peer: 'eth0', peerNs: '/var/run/netns/other' },
};
const prevIfs = [{ name: 'cni0' }, { name: 'veth1234' }, { name: 'eth0', sandbox: POD }];
const world = (): KernelState => ({
  ...emptyKernelState(),
  links: [bridge, hostVeth, podEnd, other],
  addresses: [{ ns: HOST, dev: 'cni0', cidr: '10.0.0.1/24' }],
});

describe('hostInterface', () => {
  it('is the host end the kernel pairs with the container interface, when prevResult names it', () => {
    expect(hostInterface(prevIfs, world().links, 'eth0', POD)).toEqual(E.right(hostVeth));
    // Only the host end knows the pairing (CNI_NETNS in /run/netns, the host unnamed): still found.
    const links = [bridge, { ...hostVeth }, { ...podEnd, veth: undefined }, other];
    expect(E.isRight(hostInterface(prevIfs, links, 'eth0', POD))).toBe(true);
  });

  it('from the host alone: the one host veth prevResult names whose peer is in the pod, if prevResult names the interface there', () => {
    const hostEnd: Link = { ...hostVeth, veth: undefined, peerNetns: 'pod' };
    const away: Link = { ...other, veth: undefined, peerNetns: 'other' };
    const links = [bridge, hostEnd, away];
    expect(hostInterface(prevIfs, links, 'eth0', POD, true)).toEqual(E.right(hostEnd));
    // prevResult names another interface in the pod: not for the host alone to say (the caller reads the pod).
    expect(E.isLeft(hostInterface(prevIfs, links, 'eth1', POD, true))).toBe(true);
    // Its host veth has its peer elsewhere, or two of them are in the pod: not one.
    expect(E.isLeft(hostInterface([{ name: 'veth9999' }, { name: 'eth0', sandbox: POD }], links, 'eth0', POD, true))).toBe(true);
    const two = [...prevIfs, { name: 'veth9999' }];
    expect(E.isLeft(hostInterface(two, [bridge, hostEnd, { ...away, peerNetns: 'pod' }], 'eth0', POD, true))).toBe(true);
    // A namespace outside /run/netns has no name to match.
    expect(
      E.isLeft(hostInterface([{ name: 'veth1234' }, { name: 'eth0', sandbox: '/proc/7/ns/net' }], links, 'eth0', '/proc/7/ns/net', true)),
    ).toBe(true);
  });

  it('refuses a prevResult that does not name the peer, and a container interface that is not a veth', () => {
    const r = hostInterface([{ name: 'veth9999' }, { name: 'eth0', sandbox: POD }], world().links, 'eth0', POD);
    expect(E.isLeft(r) && r.left).toMatchObject({
      code: 7,
      msg: expect.stringMatching(/^prevResult.interfaces: the host end of eth0 \(veth1234\)/),
    });
    expect(E.isLeft(hostInterface([], world().links, 'eth0', POD))).toBe(true);
    const notVeth = hostInterface(prevIfs, [bridge, { ns: POD, name: 'eth0', kind: 'device' }], 'eth0', POD);
    expect(E.isLeft(notVeth) && notVeth.left.msg).toMatch(/^CNI_IFNAME: container interface eth0 in .* has no veth peer/);
    const missing = hostInterface(prevIfs, [bridge], 'eth0', POD);
    expect(E.isLeft(missing) && missing.left.msg).toMatch(/^CNI_IFNAME: container interface eth0 not found/);
  });
});

describe('the desired state against the memory twin', () => {
  const ifb = ifbName('net', 'c1');
  const conf = { ingress: { rate: 1_000_000, burst: 100_000 }, egress: { rate: 2_000_000, burst: 200_000 } };
  const desired = bandwidthDesired({ conf, ifb, hostVeth: 'veth1234', hostMtu: 1400, ifbMac: '02:00:00:00:00:b1' });
  const scope = bandwidthScope(ifb, 'veth1234');

  it('is a tbf on the host veth, and the ifb with its tbf fed by the veth ingress redirect', () => {
    expect(desired.links).toEqual([{ ns: HOST, name: ifb, kind: 'ifb', up: true, mtu: 1400, mac: '02:00:00:00:00:b1' }]);
    expect(desired.qdiscs).toEqual([
      { ns: HOST, dev: 'veth1234', kind: 'tbf', rate: 1_000_000, burst: 12_500, latencyMs: 25 },
      { ns: HOST, dev: 'veth1234', kind: 'ingress', redirect: ifb },
      { ns: HOST, dev: ifb, kind: 'tbf', rate: 2_000_000, burst: 25_000, latencyMs: 25 },
    ]);
    expect(plan(desired, desired, scope)).toEqual([]);
  });

  it('ADD converges, a resync plans nothing, DEL removes the ifb and the veth qdiscs and nothing else', () => {
    const k = memoryKernel(world());
    const ops = plan(desired, k.state(), scope);
    expect(ops.map(describeOp)).toEqual([
      `add ifb ${ifb} in the host namespace`,
      'set qdisc tbf rate 1000000bit burst 12500 latency 25ms on veth1234 in the host namespace',
      `set qdisc ingress on veth1234 redirecting to ${ifb} in the host namespace`,
      `set qdisc tbf rate 2000000bit burst 25000 latency 25ms on ${ifb} in the host namespace`,
    ]);
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(plan(desired, k.state(), scope)).toEqual([]);
    expect(drift(desired, k.state(), scope)).toEqual([]);
    const del = plan(emptyKernelState(), k.state(), scope);
    expect(E.isRight(k.applySync(del))).toBe(true);
    expect(k.state().qdiscs).toEqual([]);
    expect(k.state().links).toEqual(world().links);
    expect(k.state().addresses).toEqual(world().addresses);
    expect(plan(emptyKernelState(), k.state(), scope)).toEqual([]);
  });

  it('CHECK names a missing qdisc and a missing ifb', () => {
    const k = memoryKernel(world());
    expect(E.isRight(k.applySync(plan(desired, k.state(), scope)))).toBe(true);
    expect(E.isRight(k.applySync([{ op: 'qdisc.del', qdisc: desired.qdiscs[0]! }]))).toBe(true);
    expect(drift(desired, k.state(), scope)).toEqual([
      'missing qdisc tbf rate 1000000bit burst 12500 latency 25ms on veth1234 in the host namespace',
    ]);
    expect(E.isRight(k.applySync([{ op: 'link.del', ns: HOST, name: ifb }]))).toBe(true);
    expect(drift(desired, k.state(), scope)).toEqual([
      `missing ifb ${ifb} in the host namespace`,
      'missing qdisc tbf rate 1000000bit burst 12500 latency 25ms on veth1234 in the host namespace',
      `wrong qdisc ingress on veth1234 redirecting to ${ifb} in the host namespace`,
      `missing qdisc tbf rate 2000000bit burst 25000 latency 25ms on ${ifb} in the host namespace`,
    ]);
  });

  it('dropping the egress limit removes the ifb and the ingress qdisc, keeps the ingress tbf', () => {
    const k = memoryKernel(world());
    expect(E.isRight(k.applySync(plan(desired, k.state(), scope)))).toBe(true);
    const less = bandwidthDesired({ conf: { ingress: conf.ingress }, ifb, hostVeth: 'veth1234' });
    expect(E.isRight(k.applySync(plan(less, k.state(), scope)))).toBe(true);
    expect(k.state().qdiscs).toEqual(less.qdiscs);
    expect(k.state().links.some((l) => l.name === ifb)).toBe(false);
  });

  it('the result is prevResult plus the ifb', () => {
    const prev = { cniVersion: '1.1.0', interfaces: prevIfs };
    expect(withIfb(prev, ifb, '02:00:00:00:00:b1').interfaces).toEqual([...prevIfs, { name: ifb, mac: '02:00:00:00:00:b1' }]);
    expect(withIfb(prev, undefined, undefined)).toBe(prev);
  });
});
