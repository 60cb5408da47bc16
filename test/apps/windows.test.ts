// win-bridge and win-overlay. On Linux the executables answer that they need Windows (bad config still comes
// first, code 7 naming the field); VERSION works. Their flow on the HNS twin, called in-process with Windows'
// CNI_NETNS values ("none" for a pod's own endpoint, a namespace GUID for HCN): the endpoint named
// <container>_<network> made from the core's document, attached, the result from what HNS made, an existing
// endpoint on another network replaced, an attach failure removing the new endpoint and giving the address
// back, DEL detaching a shared endpoint and removing an own one, CHECK finding a missing one.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { beforeEach, describe, expect, it } from 'vitest';
import { memoryHns, type MemoryHns } from '../../adapters/memory/hns.ts';
import type { Ctx, Plugin } from '../../apps/cni/plugin.ts';
import { makeWinBridge } from '../../apps/cni/plugins/win-bridge.ts';
import { makeWinOverlay } from '../../apps/cni/plugins/win-overlay.ts';
import type { CmdArgs, NetConf } from '../../core/cni/env.ts';
import type { Result } from '../../core/cni/result.ts';
import { FELT_CNI, runCni } from '../support/cni.ts';

const NS = '7a2f7d43-0000-4000-8000-000000000001';
let hns: MemoryHns;
let held: Set<string>;
const ipamResult = (address: string): Result => ({ cniVersion: '1.0.0', ips: [{ address }] });
let nextAddress = '10.244.1.15/24';
const ctx: Ctx = {
  env: {},
  now: () => new Date(0),
  randomBytes: (n) => new Uint8Array(n),
  pid: process.pid,
  delegate: (_type, command, _stdin, args) => {
    if (command === 'ADD') held.add(args.containerId);
    if (command === 'DEL') held.delete(args.containerId);
    return TE.right(command === 'ADD' ? ipamResult(nextAddress) : undefined);
  },
} as Ctx;
const args = (containerId: string, netns: string, stdin = '{}'): CmdArgs => ({
  command: 'ADD',
  containerId,
  netns,
  ifname: 'eth0',
  args: {},
  path: [],
  stdin,
});
const netconf = (raw: Record<string, unknown>): NetConf => ({
  cniVersion: '1.0.0',
  name: 'winnet',
  type: String(raw['type']),
  raw: { cniVersion: '1.0.0', name: 'winnet', ...raw },
});
const bridge = makeWinBridge(() => E.right(hns));
const overlay = makeWinOverlay(() => E.right(hns));
const add = (p: Plugin, a: CmdArgs, raw: Record<string, unknown>) => p.add(a, netconf(raw), ctx)();

beforeEach(() => {
  held = new Set();
  nextAddress = '10.244.1.15/24';
  hns = memoryHns({
    networks: [
      { Id: 'BR-ID', Name: 'winnet', Type: 'L2Bridge', Subnets: [{ AddressPrefix: '10.244.1.0/24', GatewayAddress: '10.244.1.1' }] },
      {
        Id: 'OVL-ID',
        Name: 'ovlnet',
        Type: 'Overlay',
        ManagementIP: '198.51.100.11',
        Subnets: [{ AddressPrefix: '10.244.3.0/24', GatewayAddress: '10.244.3.1' }],
      },
    ],
    hcnNetworks: [
      { Id: 'BR-ID', Name: 'winnet', Type: 'L2Bridge', Ipams: [{ Subnets: [{ IpAddressPrefix: '10.244.1.0/24' }] }] },
      { Id: 'OVL-ID', Name: 'ovlnet', Type: 'Overlay', Ipams: [{ Subnets: [{ IpAddressPrefix: '10.244.3.0/24' }] }] },
    ],
    namespaces: [NS],
  });
});

describe('win-bridge on the HNS twin', () => {
  const raw = { type: 'win-bridge', ipMasqNetwork: '10.244.0.0/16', ipam: { type: 'host-local' }, dns: { nameservers: ['10.96.0.10'] } };

  it('HNS v1: ADD creates and hot-attaches c1_winnet; a container joining it shares it; DEL detaches the joiner and removes the own', async () => {
    const r = await add(bridge, args('c1', 'none'), raw);
    expect(r).toEqual(
      E.right({
        cniVersion: '1.0.0',
        interfaces: [{ name: 'c1_winnet', mac: '00-15-5D-00-00-01' }],
        ips: [{ address: '10.244.1.15/24', gateway: '10.244.1.2' }],
        dns: { nameservers: ['10.96.0.10'], search: [''] },
      }),
    );
    const created = hns.calls.find((c) => c.op === 'createEndpoint')!.arg;
    expect(created).toEqual({
      Name: 'c1_winnet',
      VirtualNetwork: 'BR-ID',
      DNSServerList: '10.96.0.10',
      GatewayAddress: '10.244.1.2',
      IPAddress: '10.244.1.15',
      Policies: [{ Type: 'OutBoundNAT', ExceptionList: ['10.244.0.0/16'] }],
    });
    const id = [...hns.endpoints.keys()][0]!;
    expect(hns.attached.get(id)).toEqual(new Set(['c1']));
    // A second container of the pod ("container:c1") is attached to the same endpoint, with no new address.
    expect(E.isRight(await add(bridge, args('c2', 'container:c1'), raw))).toBe(true);
    expect(hns.endpoints.size).toBe(1);
    expect(hns.attached.get(id)).toEqual(new Set(['c1', 'c2']));
    expect(E.isRight(await bridge.check(args('c1', 'none'), netconf(raw), ctx)())).toBe(true);
    expect(await bridge.del(args('c2', 'container:c1'), netconf(raw), ctx)()).toEqual(E.right(undefined));
    expect(hns.endpoints.size).toBe(1);
    expect(await bridge.del(args('c1', 'none'), netconf(raw), ctx)()).toEqual(E.right(undefined));
    expect(hns.endpoints.size).toBe(0);
    expect(held.size).toBe(0);
    expect(await bridge.del(args('c1', 'none'), netconf(raw), ctx)()).toEqual(E.right(undefined));
    expect((await bridge.check(args('c1', 'none'), netconf(raw), ctx)()) as unknown).toMatchObject(E.left({ code: 103 }));
  });

  it('an endpoint of that name on another network is replaced; a failed attach removes the new endpoint and gives the address back', async () => {
    hns.endpoints.set('OLD', { Id: 'OLD', Name: 'c1_winnet', VirtualNetwork: 'SOMEWHERE-ELSE' });
    expect(E.isRight(await add(bridge, args('c1', 'none'), raw))).toBe(true);
    expect(hns.endpoints.has('OLD')).toBe(false);
    expect(await bridge.del(args('c1', 'none'), netconf(raw), ctx)()).toEqual(E.right(undefined));
    hns.failNext = 'hotAttach';
    expect(await add(bridge, args('c1', 'none'), raw)).toMatchObject(
      E.left({ code: 102, msg: expect.stringContaining('failed to attach container c1') }),
    );
    expect(hns.endpoints.size).toBe(0);
    expect(held.size).toBe(0);
  });

  it('HCN v2: ADD creates the HostComputeEndpoint and adds it to the namespace; DEL takes it out and deletes it', async () => {
    const r = await add(bridge, args('c1', NS), { ...raw, apiVersion: 2 });
    expect(r).toEqual(
      E.right({
        cniVersion: '1.0.0',
        interfaces: [{ name: 'c1_winnet', mac: '00-15-5D-00-00-01' }],
        ips: [{ address: '10.244.1.15/24', gateway: '10.244.1.2' }],
        dns: { nameservers: ['10.96.0.10'] },
      }),
    );
    expect(hns.namespaces.get(NS)?.size).toBe(1);
    expect(await bridge.del(args('c1', NS), netconf({ ...raw, apiVersion: 2 }), ctx)()).toEqual(E.right(undefined));
    expect(hns.hcnEndpoints.size).toBe(0);
    expect(hns.namespaces.get(NS)?.size).toBe(0);
    expect(held.size).toBe(0);
  });

  it.each([
    [{ name: 'nope' }, 'name: network "nope" is not found'],
    [{ name: 'ovlnet' }, 'name: network "ovlnet" is of unexpected type "Overlay"'],
  ])('%j: code 7 naming the field, nothing made, no address held', async (extra, msg) => {
    const c = { ...netconf(raw), name: extra.name, raw: { ...netconf(raw).raw, ...extra } };
    expect(await bridge.add(args('c1', 'none'), c, ctx)()).toMatchObject(E.left({ code: 7, msg: expect.stringContaining(msg) }));
    expect(hns.endpoints.size).toBe(0);
    expect(held.size).toBe(0);
  });
});

describe('win-overlay on the HNS twin', () => {
  const raw = { type: 'win-overlay', ipMasq: true, ipam: { type: 'host-local' } };
  const on = (x: Record<string, unknown>): NetConf => ({ ...netconf(x), name: 'ovlnet', raw: { ...netconf(x).raw, name: 'ovlnet' } });

  it('HNS v1: the MAC from the address, the network gateway, PA and OutBoundNAT; IPv6 refused and the address given back', async () => {
    nextAddress = '10.244.3.17/24';
    const r = await overlay.add(args('c1', 'none'), on(raw), ctx)();
    expect(r).toEqual(
      E.right({
        cniVersion: '1.0.0',
        interfaces: [{ name: 'c1_ovlnet', mac: '0E-2A-0a-f4-03-11' }],
        ips: [{ address: '10.244.3.17/24', gateway: '10.244.3.1' }],
        dns: { nameservers: [''], search: [''] },
      }),
    );
    expect(hns.calls.find((c) => c.op === 'createEndpoint')!.arg).toMatchObject({
      Policies: [
        { Type: 'PA', PA: '198.51.100.11' },
        { Type: 'OutBoundNAT', ExceptionList: ['10.244.3.0/24'] },
      ],
    });
    expect(await overlay.del(args('c1', 'none'), on(raw), ctx)()).toEqual(E.right(undefined));
    nextAddress = 'fd00::5/64';
    expect(await overlay.add(args('c1', 'none'), on(raw), ctx)()).toMatchObject(
      E.left({ msg: expect.stringContaining("doesn't support IPv6") }),
    );
    expect(hns.endpoints.size).toBe(0);
    expect(held.size).toBe(0);
  });

  it('HCN v2: through the namespace', async () => {
    nextAddress = '10.244.3.17/24';
    const r = await overlay.add(args('c1', NS), on({ ...raw, apiVersion: 2 }), ctx)();
    expect(r).toMatchObject(
      E.right({
        interfaces: [{ name: 'c1_ovlnet', mac: '0E-2A-0a-f4-03-11' }],
        ips: [{ address: '10.244.3.17/24', gateway: '10.244.3.1' }],
      }),
    );
    expect(hns.namespaces.get(NS)?.size).toBe(1);
    expect(await overlay.del(args('c1', NS), on({ ...raw, apiVersion: 2 }), ctx)()).toEqual(E.right(undefined));
    expect(hns.hcnEndpoints.size).toBe(0);
  });
});

describe('the executables on Linux', () => {
  it.each(['win-bridge', 'win-overlay'])(
    '%s: ADD, CHECK and DEL answer that they need Windows; bad config is code 7 first; VERSION works',
    async (type) => {
      const config = { cniVersion: '1.0.0', name: 'winnet', type, ipam: { type: 'host-local' } };
      for (const command of ['ADD', 'CHECK', 'DEL'] as const) {
        const r = await runCni({
          dir: FELT_CNI,
          type,
          command,
          containerId: 'c1',
          netns: '/var/run/netns/none-such',
          ifname: 'eth0',
          config: command === 'CHECK' ? { ...config, prevResult: { cniVersion: '1.0.0' } } : config,
        });
        expect(r.code).toBe(1);
        expect(r.json).toMatchObject({ code: 4, msg: expect.stringContaining(`${type} needs Windows`) });
      }
      const bad = await runCni({
        dir: FELT_CNI,
        type,
        command: 'ADD',
        containerId: 'c1',
        netns: '/var/run/netns/x',
        ifname: 'eth0',
        config: { ...config, apiVersion: 7 },
      });
      expect(bad.json).toMatchObject({ code: 7, msg: expect.stringContaining('apiVersion') });
      const v = await runCni({ dir: FELT_CNI, type, command: 'VERSION', config });
      expect(v.json).toMatchObject({ supportedVersions: expect.arrayContaining(['1.0.0']) });
    },
  );
});
