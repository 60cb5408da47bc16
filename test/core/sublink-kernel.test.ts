// ipvlan, vlan and VRF links in the kernel model without a kernel: how they are rendered and parsed, how plan
// treats their fixed settings, and that plan and the memory twin agree on what the kernel does with them (a
// master's deletion takes its ipvlans and vlans, entering or leaving a VRF cycles a link: routes and IPv6
// addresses go). The kernel of this machine has none of these link types; test/apps/*.test.ts skip there.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { parseIpBatch, type IpState } from '../../adapters/kernel/parse.ts';
import { linkAddLines } from '../../adapters/kernel/render.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type OwnershipScope } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';

const POD = '/var/run/netns/pod1';
const ro = { pid: 4242 };
const scope = (links: { ns: string; name: string }[], devices: { ns: string; dev: string }[] = []): OwnershipScope => ({
  links,
  devices,
  chains: [],
  ruleMarkers: [],
});
const master: Link = { ns: HOST, name: 'm0', kind: 'device', mtu: 1500, mac: '02:00:00:00:00:aa', up: true, master: null };

describe('rendering', () => {
  it('an ipvlan or vlan on a host master is created straight into the pod, configured there', () => {
    const ipv: Link = { ns: POD, name: 'eth0', kind: 'ipvlan', mtu: 1400, up: true, ipvlan: { master: 'm0', mode: 'l3s', masterNs: HOST } };
    expect(linkAddLines(ipv, ro)).toEqual(['link add link m0 name eth0 mtu 1400 netns pod1 type ipvlan mode l3s']);
    const vl: Link = { ns: POD, name: 'eth0', kind: 'vlan', up: true, vlan: { master: 'm0', id: 0, masterNs: HOST } };
    expect(linkAddLines(vl, ro)).toEqual(['link add link m0 name eth0 netns pod1 type vlan id 0']);
    // In one namespace (linkInContainer): no netns, the rest set at once.
    expect(linkAddLines({ ...vl, vlan: { master: 'm0', id: 7 } }, ro)).toEqual([
      'link add link m0 name eth0 type vlan id 7',
      'link set dev eth0 up',
    ]);
  });

  it('a VRF with its table, brought up', () => {
    expect(linkAddLines({ ns: POD, name: 'blue', kind: 'vrf', up: true, vrf: { table: 100 } }, ro)).toEqual([
      'link add name blue type vrf table 100',
      'link set dev blue up',
    ]);
    expect(() => linkAddLines({ ns: POD, name: 'blue', kind: 'vrf' }, ro)).toThrow('vrf blue has no table');
    expect(() => linkAddLines({ ns: POD, name: 'x', kind: 'ipvlan' }, ro)).toThrow('ipvlan x has no lower device');
  });
});

describe('parsing', () => {
  it('reads the mode of an ipvlan, the id of a vlan and the table of a VRF as iproute2 prints them', () => {
    const links = [
      { ifindex: 2, ifname: 'm0', flags: ['UP'], mtu: 1500, address: '02:00:00:00:00:aa' },
      {
        ifindex: 3,
        link: 'm0',
        ifname: 'ipv0',
        flags: ['UP'],
        mtu: 1500,
        address: '02:00:00:00:00:aa',
        linkinfo: { info_kind: 'ipvlan', info_data: { mode: 'l3', flags: 'bridge' } },
      },
      {
        ifindex: 4,
        link: 'm0',
        ifname: 'm0.5',
        flags: ['UP'],
        mtu: 1500,
        address: '02:00:00:00:00:aa',
        linkinfo: { info_kind: 'vlan', info_data: { protocol: '802.1Q', id: 5, flags: ['REORDER_HDR'] } },
      },
      {
        ifindex: 5,
        ifname: 'blue',
        flags: ['UP', 'MASTER'],
        mtu: 65575,
        address: '02:00:00:00:00:bb',
        linkinfo: { info_kind: 'vrf', info_data: { table: 100 } },
      },
      // A master in another namespace is not named: no spec, only the kind.
      {
        ifindex: 6,
        link_index: 2,
        link_netnsid: 0,
        ifname: 'eth0',
        flags: ['UP'],
        mtu: 1500,
        master: 'blue',
        linkinfo: { info_kind: 'ipvlan', info_data: { mode: 'l2' }, info_slave_kind: 'vrf' },
      },
    ];
    const s = parseIpBatch(POD, [links, [], [], [], []].map((x) => JSON.stringify(x)).join('\n')) as IpState;
    const by = new Map(s.links.map((l) => [l.name, l]));
    expect(by.get('ipv0')).toMatchObject({ kind: 'ipvlan', ipvlan: { master: 'm0', mode: 'l3' } });
    expect(by.get('m0.5')).toMatchObject({ kind: 'vlan', vlan: { master: 'm0', id: 5 } });
    expect(by.get('blue')).toMatchObject({ kind: 'vrf', vrf: { table: 100 } });
    expect(by.get('eth0')).toMatchObject({ kind: 'ipvlan', master: 'blue' });
    expect(by.get('eth0')?.ipvlan).toBeUndefined();
  });
});

/** Plan, apply to the twin, observe: the twin ends where plan meant it to, and a second plan is empty. */
function converge(start: KernelState, desired: KernelState, s: OwnershipScope): KernelState {
  const k = memoryKernel(start);
  const ops = plan(desired, k.state(), s);
  const r = k.applySync(ops);
  if (E.isLeft(r)) throw new Error(r.left.msg);
  expect(plan(desired, k.state(), s)).toEqual([]);
  return k.state();
}

describe('plan and the twin', () => {
  it('an ipvlan of the wrong mode and a vlan of the wrong id are replaced; the right ones are kept', () => {
    const ipv: Link = { ns: POD, name: 'eth0', kind: 'ipvlan', up: true, ipvlan: { master: 'm0', mode: 'l2', masterNs: HOST } };
    const start = converge(
      { ...emptyKernelState(), links: [master] },
      { ...emptyKernelState(), links: [ipv] },
      scope([{ ns: POD, name: 'eth0' }]),
    );
    // The twin gives an ipvlan its master's MAC, as the kernel does.
    expect(start.links.find((l) => l.name === 'eth0')).toMatchObject({ kind: 'ipvlan', mac: '02:00:00:00:00:aa', up: true });
    const l3 = { ...ipv, ipvlan: { ...ipv.ipvlan!, mode: 'l3' as const } };
    expect(plan({ ...emptyKernelState(), links: [l3] }, start, scope([{ ns: POD, name: 'eth0' }])).map((o) => o.op)).toEqual([
      'link.del',
      'link.add',
      'link.set',
    ]);
    // The deletion in the pod runs before the host creates the new one under the same name.
    const replaced = converge(start, { ...emptyKernelState(), links: [l3] }, scope([{ ns: POD, name: 'eth0' }]));
    expect(replaced.links.find((l) => l.name === 'eth0')).toMatchObject({ ipvlan: { mode: 'l3' } });
    const vl: Link = { ns: POD, name: 'eth1', kind: 'vlan', up: true, vlan: { master: 'm0', id: 5, masterNs: HOST } };
    const s2 = converge(start, { ...emptyKernelState(), links: [ipv, vl] }, scope([{ ns: POD, name: 'eth1' }]));
    const vl6 = { ...vl, vlan: { ...vl.vlan!, id: 6 } };
    expect(plan({ ...emptyKernelState(), links: [vl6] }, s2, scope([{ ns: POD, name: 'eth1' }])).map((o) => o.op)).toEqual([
      'link.del',
      'link.add',
      'link.set',
    ]);
  });

  it("deleting the master takes its ipvlans and vlans with it, in the pod too; a missing master is the kernel's error", () => {
    const k = memoryKernel({ ...emptyKernelState(), links: [master] });
    const ipv: Link = { ns: POD, name: 'eth0', kind: 'ipvlan', ipvlan: { master: 'm0', mode: 'l2', masterNs: HOST } };
    const vl: Link = { ns: HOST, name: 'm0.5', kind: 'vlan', vlan: { master: 'm0', id: 5 } };
    expect(
      k.applySync([
        { op: 'link.add', link: ipv },
        { op: 'link.add', link: vl },
      ]),
    ).toEqual(E.right(undefined));
    expect(k.applySync([{ op: 'link.del', ns: HOST, name: 'm0' }])).toEqual(E.right(undefined));
    expect(k.state().links).toEqual([]);
    const r = k.applySync([{ op: 'link.add', link: ipv }]);
    expect(E.isLeft(r) && r.left.msg).toMatch(/Cannot find device "m0"/);
    const bad = memoryKernel({ ...emptyKernelState(), links: [master] }).applySync([
      { op: 'link.add', link: { ...vl, vlan: { master: 'm0', id: 4095 } } },
    ]);
    expect(E.isLeft(bad) && bad.left.msg).toMatch(/invalid VLAN id/);
  });

  it('enslaving a port to a VRF: routes re-made in its table after the kernel flushed them, IPv6 addresses back', () => {
    const port: Link = { ns: POD, name: 'eth0', kind: 'veth', mtu: 1500, up: true, master: null, veth: { peer: 'x', peerNs: HOST } };
    const start: KernelState = {
      ...emptyKernelState(),
      links: [port, { ns: HOST, name: 'x', kind: 'veth', up: true, veth: { peer: 'eth0', peerNs: POD } }],
      addresses: [
        { ns: POD, dev: 'eth0', cidr: '10.1.0.2/24' },
        { ns: POD, dev: 'eth0', cidr: 'fd00::2/64' },
      ],
      routes: [
        { ns: POD, dst: '0.0.0.0/0', gw: '10.1.0.1', dev: 'eth0' },
        { ns: POD, dst: '::/0', gw: 'fd00::1', dev: 'eth0' },
      ],
    };
    const vrf: Link = { ns: POD, name: 'blue', kind: 'vrf', up: true, vrf: { table: 100 } };
    const desired: KernelState = {
      ...emptyKernelState(),
      links: [vrf, { ns: POD, name: 'eth0', kind: 'device', master: 'blue' }],
      addresses: start.addresses,
      routes: start.routes.map((r) => ({ ...r, table: 100 })),
    };
    const s = scope([{ ns: POD, name: 'blue' }], [{ ns: POD, dev: 'eth0' }]);
    const ops = plan(desired, start, s);
    expect(ops.map((o) => o.op)).toEqual(['link.add', 'link.set', 'addr.add', 'route.replace', 'route.replace']);
    expect(ops[2]).toMatchObject({ addr: { cidr: 'fd00::2/64' } });
    const after = converge(start, desired, s);
    expect(after.routes.map((r) => [r.dst, r.table])).toEqual([
      ['0.0.0.0/0', 100],
      ['::/0', 100],
    ]);
    expect(after.addresses.map((a) => a.cidr).sort()).toEqual(['10.1.0.2/24', 'fd00::2/64']);
    // Leaving it again: the VRF deleted (its ports are cycled out), the routes back in the main table.
    const back: KernelState = {
      ...emptyKernelState(),
      links: [{ ns: POD, name: 'eth0', kind: 'device', master: null }],
      routes: start.routes,
    };
    const del = plan(back, after, scope([{ ns: POD, name: 'blue' }]));
    expect(del.map((o) => o.op)).toEqual(['link.del', 'route.replace', 'route.replace']);
    const final = converge(after, back, scope([{ ns: POD, name: 'blue' }]));
    expect(final.routes).toEqual(start.routes);
    expect(final.links.find((l) => l.name === 'eth0')).toMatchObject({ master: null });
  });
});
