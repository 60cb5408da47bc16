// vlan. On the memory twin, in-process (this machine's kernel has no 802.1Q): ADD, CHECK, DEL, DEL again at
// every spec version with CHECK; linkInContainer; an apply failing half-way converging back; bad input
// (missing master, a master that does not exist, vlanId 4095, an MTU above the master's, no IPAM) changing
// nothing. Through the real executable when the kernel has vlans (skipped otherwise, with the reason printed).

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Kernel, KernelError } from '../../adapters/kernel/types.ts';
import { memoryKernel, type MemoryKernel } from '../../adapters/memory/kernel.ts';
import { makeVlan } from '../../apps/cni/plugins/vlan.ts';
import { emptyKernelState, HOST, type KernelState } from '../../core/kernel/model.ts';
import { FELT_CNI, runCni, type CniOutcome } from '../support/cni.ts';
import { linkTypeMissing } from '../support/linktype.ts';
import { feltAllocations, links, nsPath, nsRun, ping, Sandbox } from '../support/ns.ts';
import { callTwin, fakeIpam, pluginDir, type FakeIpam } from '../support/twin-cni.ts';

const plugins = pluginDir();
afterAll(() => plugins.cleanup());
const POD = plugins.dir;
const MASTER_MAC = '02:00:00:00:00:aa';

const world = (): KernelState => ({
  ...emptyKernelState(),
  links: [
    { ns: HOST, name: 'lo', kind: 'loopback', up: true, mtu: 65536, master: null },
    { ns: HOST, name: 'm0', kind: 'device', up: true, mtu: 1500, mac: MASTER_MAC, master: null },
    { ns: POD, name: 'lo', kind: 'loopback', up: true, mtu: 65536, master: null },
  ],
});

let k: MemoryKernel;
let ipam: FakeIpam;
let failAt: string | undefined;
const flaky = (): Kernel => ({
  observe: (req) => k.observe(req),
  apply:
    (ops): TE.TaskEither<KernelError, void> =>
    async () => {
      const i = failAt ? ops.findIndex((o) => o.op === failAt) : -1;
      if (i < 0) return k.applySync(ops);
      const r = k.applySync(ops.slice(0, i));
      return E.isLeft(r) ? r : E.left({ kind: 'kernel', msg: `failed to ${failAt}: RTNETLINK answers: Invalid argument` });
    },
});
const plugin = makeVlan(flaky);

const conf = (extra: Record<string, unknown> = {}, version = '1.0.0') => ({
  cniVersion: version,
  name: 'vlnet',
  type: 'vlan',
  master: 'm0',
  vlanId: 42,
  ipam: { type: 'fake-ipam' },
  ...extra,
});
const call = (command: 'ADD' | 'DEL' | 'CHECK', config: unknown) =>
  callTwin({ plugin, ipam, dir: plugins.dir, netns: POD, command, config });

beforeEach(() => {
  k = memoryKernel(world());
  ipam = fakeIpam({ ips: [{ address: '10.62.0.5/24', gateway: '10.62.0.1' }, { address: 'fd62::5/64' }], routes: [{ dst: '0.0.0.0/0' }] });
  failAt = undefined;
});

describe('vlan on the twin', () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])('ADD, CHECK, DEL, DEL again (%s)', async (version) => {
    const add = await call('ADD', conf({ mtu: 1450 }, version));
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    expect(add.json.interfaces).toEqual([{ name: 'eth0', mac: MASTER_MAC, sandbox: POD }]);
    expect(add.json.ips.map((i: { address: string; interface: number }) => [i.address, i.interface])).toEqual([
      ['10.62.0.5/24', 0],
      ['fd62::5/64', 0],
    ]);
    const s = k.state();
    expect(s.links.find((l) => l.ns === POD && l.name === 'eth0')).toMatchObject({
      kind: 'vlan',
      mtu: 1450,
      up: true,
      vlan: { master: 'm0', id: 42, masterNs: HOST },
    });
    expect(s.addresses.filter((a) => a.ns === POD).map((a) => a.cidr)).toEqual(['10.62.0.5/24', 'fd62::5/64']);
    expect(s.routes.filter((r) => r.ns === POD)).toEqual([{ ns: POD, dst: '0.0.0.0/0', gw: '10.62.0.1', dev: 'eth0' }]);
    expect(s.sysctls).toContainEqual({ ns: POD, key: 'net.ipv6.conf.eth0.disable_ipv6', value: '0' });
    expect((await call('CHECK', { ...conf({ mtu: 1450 }, version), prevResult: add.json })).code).toBe(0);
    // Another VLAN id is drift.
    expect((await call('CHECK', { ...conf({ mtu: 1450, vlanId: 43 }, version), prevResult: add.json })).json).toMatchObject({
      code: 103,
      msg: expect.stringContaining('vlan eth0'),
    });
    expect((await call('DEL', conf({}, version))).code).toBe(0);
    expect(ipam.held.size).toBe(0);
    expect((await call('DEL', conf({}, version))).code).toBe(0);
    expect(k.state()).toEqual(world());
  });

  it('vlanId 0 (priority tagging) is the default; linkInContainer puts the master in the pod', async () => {
    const add = await call('ADD', conf({ vlanId: undefined }));
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    expect(k.state().links.find((l) => l.ns === POD && l.name === 'eth0')).toMatchObject({ vlan: { id: 0 }, mtu: 1500 });
    expect((await call('DEL', conf())).code).toBe(0);
    k.reset({
      ...world(),
      links: [...world().links, { ns: POD, name: 'p0', kind: 'device', up: true, mtu: 9000, mac: '02:00:00:00:00:cc', master: null }],
    });
    const inPod = await call('ADD', conf({ master: 'p0', linkInContainer: true }));
    expect(inPod.code, JSON.stringify(inPod.json)).toBe(0);
    expect(k.state().links.find((l) => l.ns === POD && l.name === 'eth0')).toMatchObject({
      vlan: { master: 'p0', id: 42 },
      mtu: 9000,
      mac: '02:00:00:00:00:cc',
    });
    expect((await call('CHECK', { ...conf({ master: 'p0', linkInContainer: true }), prevResult: inPod.json })).code).toBe(0);
    expect((await call('DEL', conf({ master: 'p0', linkInContainer: true }))).code).toBe(0);
    expect(
      k
        .state()
        .links.filter((l) => l.ns === POD)
        .map((l) => l.name)
        .sort(),
    ).toEqual(['lo', 'p0']);
  });

  it('DEL does not need the master any more', async () => {
    expect((await call('ADD', conf())).code).toBe(0);
    k.applySync([{ op: 'link.del', ns: HOST, name: 'm0' }]);
    expect((await call('DEL', conf())).code).toBe(0);
    expect(ipam.held.size).toBe(0);
  });

  it('an ADD whose apply fails half-way converges back to "not attached" and gives the address back', async () => {
    failAt = 'addr.add';
    const r = await call('ADD', conf());
    expect(r.json).toMatchObject({ code: 102 });
    expect(k.state()).toEqual(world());
    expect(ipam.held.size).toBe(0);
  });

  it.each([
    [{ master: undefined }, 'master: required'],
    [{ master: 'nope0' }, 'master: failed to find "nope0" in the host namespace'],
    [{ vlanId: 4095 }, 'vlanId: invalid VLAN ID 4095 (must be an integer between 0 and 4094)'],
    [{ vlanId: -1 }, 'vlanId: invalid VLAN ID -1'],
    [{ vlanId: '5' }, 'vlanId: invalid VLAN ID "5"'],
    [{ mtu: 1600 }, 'mtu: invalid MTU 1600, must be [0, master MTU(1500)]'],
    [{ ipam: undefined }, 'ipam.type: required'],
  ])('bad input %j: code 7 naming the field, nothing left, no address held', async (extra, msg) => {
    const r = await call('ADD', conf(extra));
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining(msg) });
    expect(k.state()).toEqual(world());
    expect(ipam.held.size).toBe(0);
  });
});

// ------------------------------------------------------------------------------------------- kernel

const sb = new Sandbox();
let missing: string | undefined;
let data = '';
beforeAll(async () => {
  missing = await linkTypeMissing(sb, 'vlan');
  if (missing) console.warn(`vlan kernel tests skipped: ${missing}`);
  data = sb.dir();
});
afterAll(() => sb.cleanup());

/** A host namespace whose master is one end of a veth pair; the other end carries the same VLAN in `peerNs`. */
async function hostWithMaster(peerNs: string): Promise<string> {
  const host = await sb.ns();
  await nsRun(host, ['ip', 'link', 'add', 'name', 'm0', 'type', 'veth', 'peer', 'name', 'm0p', 'netns', peerNs]);
  await nsRun(host, ['ip', 'link', 'set', 'dev', 'm0', 'up']);
  await nsRun(peerNs, ['ip', 'link', 'set', 'dev', 'm0p', 'up']);
  await nsRun(peerNs, ['ip', 'link', 'add', 'link', 'm0p', 'name', 'v42', 'type', 'vlan', 'id', '42']);
  await nsRun(peerNs, ['ip', 'addr', 'add', '10.63.0.200/24', 'dev', 'v42']);
  await nsRun(peerNs, ['ip', 'link', 'set', 'dev', 'v42', 'up']);
  return host;
}
const kconf = (extra: Record<string, unknown> = {}, version = '1.0.0') => ({
  ...conf(extra, version),
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.63.0.0/24' }]], dataDir: data },
});
const kcall = (host: string, pod: string, command: 'ADD' | 'DEL' | 'CHECK', config: unknown): Promise<CniOutcome> =>
  runCni({ dir: FELT_CNI, type: 'vlan', command, hostNs: host, containerId: 'vl-ctr', netns: nsPath(pod), ifname: 'eth0', config });

describe('vlan in the kernel', () => {
  it.for(['0.4.0', '1.0.0', '1.1.0'])(
    'a pod on VLAN 42 reaches the other end of the trunk (%s); CHECK; DEL; DEL again',
    async (version, ctx) => {
      if (missing) ctx.skip(missing);
      const peer = await sb.ns();
      const host = await hostWithMaster(peer);
      const pod = await sb.ns();
      const r = await kcall(host, pod, 'ADD', kconf({}, version));
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(await ping(pod, '10.63.0.200')).toBe(true);
      expect((await kcall(host, pod, 'CHECK', { ...kconf({}, version), prevResult: r.json })).code).toBe(0);
      expect((await kcall(host, pod, 'DEL', kconf({}, version))).code).toBe(0);
      expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
      expect((await kcall(host, pod, 'DEL', kconf({}, version))).code).toBe(0);
      expect((await feltAllocations(data)).filter((x) => x.network === 'vlnet')).toEqual([]);
    },
  );

  it.for([
    [{ master: 'nope0' }, 'master'],
    [{ vlanId: 4095 }, 'vlanId'],
  ] as const)('bad input %j: code 7 naming the field, nothing left', async ([extra, field], ctx) => {
    if (missing) ctx.skip(missing);
    const peer = await sb.ns();
    const host = await hostWithMaster(peer);
    const pod = await sb.ns();
    const r = await kcall(host, pod, 'ADD', kconf(extra));
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining(field) });
    expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
  });
});
