// ipvlan. On the memory twin, in-process (this machine's kernel has no ipvlan): ADD, CHECK, DEL, DEL again at
// every spec version with CHECK; chained use (master and addresses from prevResult); the default-route
// interface as master; linkInContainer; an apply failing half-way converging back; bad input changing
// nothing. Through the real executable in throwaway namespaces when the kernel has ipvlan (skipped otherwise,
// with the reason printed): two pods on one master ping each other; CHECK; DEL; bad input.
//
// Deliberate differences (docs/cni.md): felt creates the ipvlan in the pod under its final name (the reference
// uses a temporary name and renames it), and its DEL does not need the master to exist.

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Kernel, KernelError } from '../../adapters/kernel/types.ts';
import { memoryKernel, type MemoryKernel } from '../../adapters/memory/kernel.ts';
import { makeIpvlan } from '../../apps/cni/plugins/ipvlan.ts';
import { emptyKernelState, HOST, type KernelState } from '../../core/kernel/model.ts';
import { FELT_CNI, runCni, type CniOutcome } from '../support/cni.ts';
import { linkTypeMissing } from '../support/linktype.ts';
import { feltAllocations, links, nsPath, nsRun, ping, Sandbox } from '../support/ns.ts';
import { callTwin, fakeIpam, pluginDir, type FakeIpam } from '../support/twin-cni.ts';

const plugins = pluginDir();
afterAll(() => plugins.cleanup());
// Any existing path serves as CNI_NETNS for the twin.
const POD = plugins.dir;
const MASTER_MAC = '02:00:00:00:00:aa';

const world = (): KernelState => ({
  ...emptyKernelState(),
  links: [
    { ns: HOST, name: 'lo', kind: 'loopback', up: true, mtu: 65536, master: null },
    { ns: HOST, name: 'm0', kind: 'device', up: true, mtu: 1500, mac: MASTER_MAC, master: null },
    { ns: HOST, name: 'm1', kind: 'device', up: true, mtu: 9000, mac: '02:00:00:00:00:bb', master: null },
    { ns: POD, name: 'lo', kind: 'loopback', up: true, mtu: 65536, master: null },
  ],
  addresses: [{ ns: HOST, dev: 'm1', cidr: '198.51.100.10/24' }],
  routes: [{ ns: HOST, dst: '0.0.0.0/0', gw: '198.51.100.1', dev: 'm1' }],
});

let k: MemoryKernel;
let ipam: FakeIpam;
let failAt: string | undefined;
/** The twin, except that (when asked) the first op of kind `failAt` fails after the ops before it were applied. */
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
const plugin = makeIpvlan(flaky);

const conf = (extra: Record<string, unknown> = {}, version = '1.0.0') => ({
  cniVersion: version,
  name: 'ipvnet',
  type: 'ipvlan',
  master: 'm0',
  mtu: 1400,
  ipam: { type: 'fake-ipam' },
  ...extra,
});
const call = (command: 'ADD' | 'DEL' | 'CHECK', config: unknown) =>
  callTwin({ plugin, ipam, dir: plugins.dir, netns: POD, command, config });
const podLinks = () =>
  k
    .state()
    .links.filter((l) => l.ns === POD)
    .map((l) => l.name);

beforeEach(() => {
  k = memoryKernel(world());
  ipam = fakeIpam({ ips: [{ address: '10.60.0.5/24', gateway: '10.60.0.1' }], routes: [{ dst: '0.0.0.0/0' }] });
  failAt = undefined;
});

describe('ipvlan on the twin', () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])('ADD, CHECK, DEL, DEL again (%s)', async (version) => {
    const add = await call('ADD', conf({ mode: 'l3' }, version));
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    expect(add.json.interfaces).toEqual([{ name: 'eth0', mac: MASTER_MAC, sandbox: POD }]);
    expect(add.json.ips).toEqual([expect.objectContaining({ address: '10.60.0.5/24', gateway: '10.60.0.1', interface: 0 })]);
    const s = k.state();
    expect(s.links.find((l) => l.ns === POD && l.name === 'eth0')).toMatchObject({
      kind: 'ipvlan',
      mtu: 1400,
      up: true,
      mac: MASTER_MAC,
      ipvlan: { master: 'm0', mode: 'l3', masterNs: HOST },
    });
    expect(s.addresses.filter((a) => a.ns === POD)).toEqual([{ ns: POD, dev: 'eth0', cidr: '10.60.0.5/24' }]);
    expect(s.routes.filter((r) => r.ns === POD)).toEqual([{ ns: POD, dst: '0.0.0.0/0', gw: '10.60.0.1', dev: 'eth0' }]);
    expect(s.sysctls).toContainEqual({ ns: POD, key: 'net.ipv4.conf.eth0.arp_notify', value: '1' });
    expect(ipam.held).toEqual(new Set(['c1/eth0']));
    expect((await call('CHECK', { ...conf({ mode: 'l3' }, version), prevResult: add.json })).code).toBe(0);
    expect((await call('DEL', conf({ mode: 'l3' }, version))).code).toBe(0);
    expect(podLinks()).toEqual(['lo']);
    expect(ipam.held.size).toBe(0);
    expect((await call('DEL', conf({ mode: 'l3' }, version))).code).toBe(0);
    expect(k.state()).toEqual(world());
  });

  it('CHECK names what drifted: the mode, the state, an address', async () => {
    const add = await call('ADD', conf());
    expect((await call('CHECK', { ...conf({ mode: 'l3s' }), prevResult: add.json })).json).toMatchObject({
      code: 103,
      msg: expect.stringContaining('eth0'),
    });
    k.applySync([{ op: 'addr.del', addr: { ns: POD, dev: 'eth0', cidr: '10.60.0.5/24' } }]);
    expect((await call('CHECK', { ...conf(), prevResult: add.json })).json).toMatchObject({
      code: 103,
      msg: expect.stringContaining('missing address 10.60.0.5/24 on eth0'),
    });
    // CHECK without prevResult, or below 0.4.0, is refused.
    expect((await call('CHECK', conf())).json).toMatchObject({ code: 7, msg: expect.stringContaining('prevResult') });
    expect((await call('CHECK', { ...conf({}, '0.3.1'), prevResult: add.json })).json).toMatchObject({ code: 1 });
  });

  it("chained: the master is prevResult's only interface, and its addresses are reused without IPAM", async () => {
    const prevResult = {
      cniVersion: '1.0.0',
      interfaces: [{ name: 'm1' }],
      ips: [{ address: '10.70.0.9/24', gateway: '10.70.0.1' }],
      routes: [{ dst: '192.0.2.0/24' }],
    };
    const c = { cniVersion: '1.0.0', name: 'chained', type: 'ipvlan', prevResult };
    const add = await call('ADD', c);
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    expect(ipam.calls).toEqual([]);
    expect(add.json).toMatchObject({
      interfaces: [{ name: 'eth0', sandbox: POD }],
      ips: [{ address: '10.70.0.9/24', interface: 0 }],
      routes: [{ dst: '192.0.2.0/24' }],
    });
    expect(k.state().links.find((l) => l.ns === POD && l.name === 'eth0')).toMatchObject({
      ipvlan: { master: 'm1', mode: 'l2' },
      mtu: 9000,
    });
    expect(k.state().routes.filter((r) => r.ns === POD)).toEqual([{ ns: POD, dst: '192.0.2.0/24', gw: '10.70.0.1', dev: 'eth0' }]);
    expect((await call('CHECK', { ...c, prevResult: add.json })).code).toBe(0);
    expect((await call('DEL', c)).code).toBe(0);
    expect(k.state()).toEqual(world());
    // Not exactly one interface in prevResult, and no master: the config's fault.
    const two = await call('ADD', { ...c, prevResult: { ...prevResult, interfaces: [{ name: 'm0' }, { name: 'm1' }] } });
    expect(two.json).toMatchObject({
      code: 7,
      msg: expect.stringContaining('master: not set, and prevResult lacks a single named interface'),
    });
    // prevResult's interface that does not exist is named as such.
    const gone = await call('ADD', { ...c, prevResult: { ...prevResult, interfaces: [{ name: 'nope0' }] } });
    expect(gone.json).toMatchObject({
      code: 7,
      msg: expect.stringContaining('master (from prevResult.interfaces[0].name): failed to find "nope0"'),
    });
    expect(k.state()).toEqual(world());
  });

  it('no master: the interface of the default route; linkInContainer: the master in the pod', async () => {
    const add = await call('ADD', conf({ master: undefined, mtu: undefined }));
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    expect(k.state().links.find((l) => l.ns === POD && l.name === 'eth0')).toMatchObject({ ipvlan: { master: 'm1' } });
    expect((await call('DEL', conf())).code).toBe(0);
    k.reset({
      ...world(),
      links: [...world().links, { ns: POD, name: 'p0', kind: 'device', up: true, mtu: 1500, mac: '02:00:00:00:00:cc', master: null }],
    });
    const inPod = await call('ADD', conf({ master: 'p0', linkInContainer: true }));
    expect(inPod.code, JSON.stringify(inPod.json)).toBe(0);
    const l = k.state().links.find((x) => x.ns === POD && x.name === 'eth0');
    expect(l).toMatchObject({ kind: 'ipvlan', mac: '02:00:00:00:00:cc', ipvlan: { master: 'p0', mode: 'l2' } });
    expect(l?.ipvlan?.masterNs).toBeUndefined();
    expect((await call('CHECK', { ...conf({ master: 'p0', linkInContainer: true }), prevResult: inPod.json })).code).toBe(0);
    expect((await call('DEL', conf({ master: 'p0', linkInContainer: true }))).code).toBe(0);
    expect(podLinks().sort()).toEqual(['lo', 'p0']);
  });

  it('an ADD whose apply fails half-way converges back to "not attached" and gives the address back', async () => {
    failAt = 'route.replace';
    const r = await call('ADD', conf());
    expect(r.json).toMatchObject({ code: 102, msg: expect.stringContaining('failed to route.replace') });
    expect(k.state()).toEqual(world());
    expect(ipam.held.size).toBe(0);
    expect(ipam.calls).toEqual(['ADD', 'DEL']);
  });

  it.each([
    [{ master: 'nope0' }, 7, 'master: failed to find "nope0" in the host namespace'],
    [{ mode: 'l4' }, 7, 'mode: unknown ipvlan mode "l4"'],
    [{ mtu: 9000 }, 7, 'mtu: invalid MTU 9000, must be [0, master MTU(1500)]'],
    [{ mtu: 'big' }, 7, 'mtu: must be an integer'],
    [{ master: 'bad name' }, 7, 'master: "bad name"'],
    [{ ipam: undefined }, 7, 'ipam: missing, and there is no prevResult with addresses to reuse'],
    [{ linkInContainer: 'yes' }, 7, 'linkInContainer: must be true or false'],
  ])('bad input %j: code %i naming the field, nothing left, no address held', async (extra, code, msg) => {
    const r = await call('ADD', conf(extra));
    expect(r.json).toMatchObject({ code, msg: expect.stringContaining(msg) });
    expect(k.state()).toEqual(world());
    expect(ipam.held.size).toBe(0);
  });

  it('an interface of that name in the pod already: code 104, the address given back', async () => {
    k.reset({ ...world(), links: [...world().links, { ns: POD, name: 'eth0', kind: 'device', up: true, master: null }] });
    expect((await call('ADD', conf())).json).toMatchObject({ code: 104 });
    expect(ipam.held.size).toBe(0);
  });
});

// ------------------------------------------------------------------------------------------- kernel

const sb = new Sandbox();
let missing: string | undefined;
let data = '';
beforeAll(async () => {
  missing = await linkTypeMissing(sb, 'ipvlan');
  if (missing) console.warn(`ipvlan kernel tests skipped: ${missing}`);
  data = sb.dir();
});
afterAll(() => sb.cleanup());

async function hostWithMaster(): Promise<string> {
  const host = await sb.ns();
  await nsRun(host, ['ip', 'link', 'add', 'name', 'm0', 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'm0p']);
  await nsRun(host, ['ip', 'link', 'set', 'dev', 'm0', 'up']);
  await nsRun(host, ['ip', 'link', 'set', 'dev', 'm0p', 'up']);
  return host;
}
const kconf = (extra: Record<string, unknown> = {}, version = '1.0.0') => ({
  ...conf(extra, version),
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.61.0.0/24' }]], dataDir: data },
});
const kcall = (host: string, pod: string, command: 'ADD' | 'DEL' | 'CHECK', config: unknown, cid: string): Promise<CniOutcome> =>
  runCni({ dir: FELT_CNI, type: 'ipvlan', command, hostNs: host, containerId: cid, netns: nsPath(pod), ifname: 'eth0', config });

describe('ipvlan in the kernel', () => {
  it.for(['0.4.0', '1.0.0', '1.1.0'])('two pods on one master ping each other (%s); CHECK; DEL; DEL again', async (version, ctx) => {
    if (missing) ctx.skip(missing);
    const host = await hostWithMaster();
    const [a, b] = [await sb.ns(), await sb.ns()];
    const ra = await kcall(host, a, 'ADD', kconf({}, version), 'ipv-a');
    const rb = await kcall(host, b, 'ADD', kconf({}, version), 'ipv-b');
    expect(ra.code, ra.stdout + ra.stderr).toBe(0);
    expect(rb.code, rb.stdout + rb.stderr).toBe(0);
    expect(await ping(a, rb.json.ips[0].address.split('/')[0])).toBe(true);
    expect((await kcall(host, a, 'CHECK', { ...kconf({}, version), prevResult: ra.json }, 'ipv-a')).code).toBe(0);
    for (const [pod, cid] of [
      [a, 'ipv-a'],
      [b, 'ipv-b'],
    ] as const) {
      expect((await kcall(host, pod, 'DEL', kconf({}, version), cid)).code).toBe(0);
      expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
      expect((await kcall(host, pod, 'DEL', kconf({}, version), cid)).code).toBe(0);
    }
    expect((await feltAllocations(data)).filter((x) => x.network === 'ipvnet')).toEqual([]);
  });

  it.for([
    [{ master: 'nope0' }, 'master'],
    [{ mode: 'weird' }, 'mode'],
  ] as const)('bad input %j: code 7 naming the field, nothing left', async ([extra, field], ctx) => {
    if (missing) ctx.skip(missing);
    const host = await hostWithMaster();
    const pod = await sb.ns();
    const r = await kcall(host, pod, 'ADD', kconf(extra), 'ipv-bad');
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining(field) });
    expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
    expect((await feltAllocations(data)).filter((x) => x.network === 'ipvnet')).toEqual([]);
  });
});
