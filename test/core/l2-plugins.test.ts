// The pure halves of ipvlan, vlan and vrf: config validation (every field named), the master and addressing
// choices of a chained ipvlan, the VRF table pick, and (fast-check) that a VRF ADD then DEL planned against the
// memory twin ends where it started, whatever routes and addresses the interface has and whatever VRFs the
// pod holds already, with nothing left to do after each step.

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import type { NetConf } from '../../core/cni/env.ts';
import { ipvlanAddressing, ipvlanMaster, ipvlanPlan, parseIpvlanConf } from '../../core/ipvlan/desired.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type Route } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';
import { parseVlanConf, vlanPlan } from '../../core/vlan/desired.ts';
import { parseVrfConf, vrfAddState, vrfDelState, vrfTable } from '../../core/vrf/desired.ts';

const POD = '/run/netns/pod';
const nc = (raw: Record<string, unknown>): NetConf => ({ cniVersion: '1.0.0', name: 'n', type: String(raw['type'] ?? 'x'), raw });
const msg = <T>(r: E.Either<{ code: number; msg: string }, T>): string => (E.isLeft(r) ? `${r.left.code} ${r.left.msg}` : 'ok');

describe('config validation', () => {
  it('ipvlan: defaults, and every bad field named at once', () => {
    expect(parseIpvlanConf(nc({ master: 'eth0' }))).toEqual(
      E.right({ name: 'n', cniVersion: '1.0.0', master: 'eth0', mtu: 0, linkInContainer: false, ipamType: '', mode: 'l2' }),
    );
    const all = msg(parseIpvlanConf(nc({ mode: 'l4', mtu: 70000, master: 'a b', linkInContainer: 1, ipam: [], dns: 'x' })));
    expect(all).toMatch(/^7 master: "a b" /);
    expect(all).toContain(
      '; mtu: must be an integer between 0 and 65535, got 70000; linkInContainer: must be true or false; ipam: must be an object; dns: must be an object; mode: unknown ipvlan mode "l4" (one of l2, l3, l3s)',
    );
  });

  it('vlan: master and IPAM required, vlanId 0-4094', () => {
    expect(msg(parseVlanConf(nc({})))).toBe(
      '7 master: required (the host interface to create the VLAN on); ipam.type: required (vlan needs an IPAM plugin)',
    );
    for (const id of [4095, -1, 1.5, '7'])
      expect(msg(parseVlanConf(nc({ master: 'eth0', vlanId: id, ipam: { type: 'static' } })))).toContain('vlanId: invalid VLAN ID');
    for (const id of [0, 1, 4094])
      expect(E.isRight(parseVlanConf(nc({ master: 'eth0', vlanId: id, ipam: { type: 'static' } })))).toBe(true);
    // dhcp needs the interface before IPAM runs, which vlan and ipvlan do not do (yet): refused, not left to fail.
    expect(msg(parseVlanConf(nc({ master: 'eth0', ipam: { type: 'dhcp' } })))).toContain('ipam.type: dhcp is not supported');
  });

  it('vrf: vrfname required and a link name, table a uint32 outside the kernel tables', () => {
    expect(msg(parseVrfConf(nc({})))).toBe('7 vrfname: required (the VRF to put the interface in)');
    expect(msg(parseVrfConf(nc({ vrfname: '-x' })))).toMatch(/^7 vrfname: "-x"/);
    expect(msg(parseVrfConf(nc({ vrfname: 'v', table: 2 ** 32 })))).toMatch(/^7 table: must be an integer between 0 and 4294967295/);
    for (const t of [253, 254, 255]) expect(msg(parseVrfConf(nc({ vrfname: 'v', table: t })))).toMatch(/kernel's own tables/);
    expect(parseVrfConf(nc({ vrfname: 'v', table: 0 }))).toEqual(E.right({ name: 'n', cniVersion: '1.0.0', vrfname: 'v' }));
  });
});

describe('ipvlan choices', () => {
  const c = (raw: Record<string, unknown>) => (parseIpvlanConf(nc(raw)) as E.Right<never>).right;
  it("the master: the config's, else prevResult's only interface, else the default route's (undefined)", () => {
    expect(ipvlanMaster(c({ master: 'm0' }), { cniVersion: '1.0.0', interfaces: [{ name: 'x' }] })).toEqual(
      E.right({ name: 'm0', from: 'master' }),
    );
    expect(ipvlanMaster(c({}), { cniVersion: '1.0.0', interfaces: [{ name: 'x' }] })).toEqual(
      E.right({ name: 'x', from: 'prevResult.interfaces[0].name' }),
    );
    expect(ipvlanMaster(c({}), undefined)).toEqual(E.right(undefined));
    expect(msg(ipvlanMaster(c({}), { cniVersion: '1.0.0', interfaces: [] }))).toMatch(
      /^7 master: not set, and prevResult lacks a single named interface/,
    );
  });
  it('the addresses: IPAM when configured, else prevResult with addresses, else the config is wrong', () => {
    const prev = { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] };
    expect(ipvlanAddressing(c({ ipam: { type: 'static' } }), prev, { cniVersion: '1.0.0', ips: [] })).toEqual(
      E.right({ source: 'static', result: { cniVersion: '1.0.0', ips: [] } }),
    );
    expect(ipvlanAddressing(c({}), prev, undefined)).toEqual(E.right({ source: 'prevResult', result: prev }));
    expect(msg(ipvlanAddressing(c({}), { cniVersion: '1.0.0' }, undefined))).toMatch(/^7 ipam: missing/);
  });
  it("desired state: an IPAM result without addresses is the delegate's fault, a bad prevResult the config's", () => {
    const base = { conf: c({ master: 'm0', ipam: { type: 'static' } }), master: 'm0', ifname: 'eth0', netns: POD };
    expect(msg(ipvlanPlan({ ...base, addressing: { source: 'static', result: {} } }))).toBe(
      '105 static: IPAM plugin returned missing IP config',
    );
    expect(msg(ipvlanPlan({ ...base, addressing: { source: 'prevResult', result: { ips: [{ address: 'nope' }] } } }))).toBe(
      '7 prevResult: invalid address "nope"',
    );
    const ok = ipvlanPlan({
      ...base,
      masterMac: '02:00:00:00:00:01',
      addressing: { source: 'static', result: { ips: [{ address: 'fd00::5/64', gateway: 'fd00::1' }], routes: [{ dst: '::/0' }] } },
    });
    expect(E.isRight(ok) && ok.right.kernel).toMatchObject({
      links: [{ kind: 'ipvlan', ipvlan: { master: 'm0', mode: 'l2', masterNs: HOST } }],
      routes: [{ dst: '::/0', gw: 'fd00::1', dev: 'eth0' }],
      sysctls: [{ key: 'net.ipv6.conf.eth0.ndisc_notify' }, { key: 'net.ipv6.conf.eth0.disable_ipv6', value: '0' }],
    });
    const vl = vlanPlan({
      conf: (parseVlanConf(nc({ master: 'm0', vlanId: 9, mtu: 1500, ipam: { type: 'static' } })) as E.Right<never>).right,
      masterMtu: 1400,
      ifname: 'eth0',
      netns: POD,
      addressing: { source: 'static', result: { ips: [{ address: '10.0.0.2/24' }] } },
    });
    expect(msg(vl)).toBe('7 mtu: invalid MTU 1500, must be [0, master MTU(1400)]');
  });
});

describe('vrf', () => {
  const vrf = (name: string, table: number): Link => ({ ns: POD, name, kind: 'vrf', up: true, vrf: { table } });
  const conf = (raw: Record<string, unknown> = {}) => (parseVrfConf(nc({ vrfname: 'blue', ...raw })) as E.Right<never>).right;
  it("picks the lowest table no VRF of the pod uses, skipping the kernel tables; keeps an existing VRF's", () => {
    const seen = (ts: number[]): KernelState => ({ ...emptyKernelState(), links: ts.map((t, i) => vrf(`v${i}`, t)) });
    expect(vrfTable(conf(), seen([]), POD)).toEqual(E.right(1));
    expect(vrfTable(conf(), seen([1, 2, 4]), POD)).toEqual(E.right(3));
    expect(vrfTable(conf(), seen(Array.from({ length: 252 }, (_, i) => i + 1)), POD)).toEqual(E.right(256));
    expect(vrfTable(conf({ table: 9 }), seen([9]), POD)).toEqual(E.right(9)); // another VRF's table, as the reference allows
    const blue = { ...emptyKernelState(), links: [vrf('blue', 5)] };
    expect(vrfTable(conf(), blue, POD)).toEqual(E.right(5));
    expect(msg(vrfTable(conf({ table: 6 }), blue, POD))).toBe('7 table: VRF blue already exists with table 5, not 6');
  });

  // Routes on the interface: a few destinations, some via the gateway, some in another table already.
  const route = fc.record({
    dst: fc.constantFrom('0.0.0.0/0', '192.0.2.0/24', '198.51.100.7/32', '::/0', 'fd01::/64'),
    via: fc.boolean(),
    table: fc.constantFrom(undefined, undefined, 77),
    metric: fc.constantFrom(undefined, 100),
  });
  const world = fc.record({
    routes: fc.uniqueArray(route, { selector: (r) => `${r.dst}/${r.table}/${r.metric}`, maxLength: 6 }),
    v6: fc.boolean(),
    others: fc.uniqueArray(fc.integer({ min: 1, max: 4 }), { maxLength: 3 }),
    table: fc.constantFrom(0, 3, 100),
  });

  it('ADD then DEL on the twin: back where it started, and each step leaves nothing to do', () => {
    fc.assert(
      fc.property(world, (w) => {
        const port: Link = {
          ns: POD,
          name: 'eth0',
          kind: 'veth',
          up: true,
          mtu: 1500,
          master: null,
          hairpin: false,
          veth: { peer: 'h0', peerNs: HOST },
        };
        const start: KernelState = {
          ...emptyKernelState(),
          links: [
            port,
            { ns: HOST, name: 'h0', kind: 'veth', up: true, veth: { peer: 'eth0', peerNs: POD } },
            ...w.others.map((t) => vrf(`red${t}`, t)),
          ],
          addresses: [{ ns: POD, dev: 'eth0', cidr: '10.1.0.2/24' }, ...(w.v6 ? [{ ns: POD, dev: 'eth0', cidr: 'fd00::2/64' }] : [])],
          routes: w.routes.map((r): Route => ({
            ns: POD,
            dst: r.dst,
            dev: 'eth0',
            ...(r.via ? { gw: r.dst.includes(':') ? 'fd00::1' : '10.1.0.1' } : {}),
            ...(r.table ? { table: r.table } : {}),
            ...(r.metric ? { metric: r.metric } : {}),
          })),
        };
        const k = memoryKernel(start);
        const c = conf(w.table ? { table: w.table } : {});
        const add = vrfAddState({ conf: c, ifname: 'eth0', netns: POD, seen: k.state() });
        if (E.isLeft(add)) throw new Error(add.left.msg);
        expect(E.isRight(k.applySync(plan(add.right.kernel, k.state(), add.right.scope)))).toBe(true);
        expect(plan(add.right.kernel, k.state(), add.right.scope)).toEqual([]);
        const t = add.right.table;
        const mine = k.state().routes.filter((r) => r.dev === 'eth0');
        expect(mine.filter((r) => (r.table ?? 254) === 254)).toEqual([]);
        expect(mine.length).toBe(start.routes.length);
        expect(k.state().addresses.length).toBe(start.addresses.length);
        expect(k.state().links.find((l) => l.name === 'blue')).toMatchObject({ vrf: { table: t } });
        const del = vrfDelState({ conf: c, ifname: 'eth0', netns: POD, seen: k.state() });
        if (E.isLeft(del) || !del.right) throw new Error('nothing to delete');
        expect(E.isRight(k.applySync(plan(del.right.kernel, k.state(), del.right.scope)))).toBe(true);
        // Routes that were in table t already (t = 77 is never picked, so only moved ones) come back to main.
        const key = (s: KernelState) =>
          JSON.stringify({
            ...s,
            links: [...s.links].sort((a, b) => (a.name < b.name ? -1 : 1)),
            routes: [...s.routes].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)),
            addresses: [...s.addresses].sort((a, b) => (a.cidr < b.cidr ? -1 : 1)),
          });
        expect(key(k.state())).toBe(key(memoryKernel(start).state()));
        const again = vrfDelState({ conf: c, ifname: 'eth0', netns: POD, seen: k.state() });
        expect(again).toEqual(E.right(undefined));
        return true;
      }),
      { numRuns: 200 },
    );
  });
});
