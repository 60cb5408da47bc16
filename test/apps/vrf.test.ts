// vrf. On the memory twin, in-process (this machine's kernel has no VRF): ADD puts the interface in the VRF
// with its routes in the VRF's table and its IPv6 addresses back after the kernel's cycle, CHECK, DEL moves it
// out and deletes the VRF when it is empty, DEL again, at every spec version with CHECK; the free-table pick;
// two interfaces in one VRF; an apply failing half-way converging back; bad input changing nothing. Through
// the real executable when the kernel has VRFs (skipped otherwise, with the reason printed).

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Kernel, KernelError } from '../../adapters/kernel/types.ts';
import { memoryKernel, type MemoryKernel } from '../../adapters/memory/kernel.ts';
import { makeVrf } from '../../apps/cni/plugins/vrf.ts';
import { emptyKernelState, HOST, type KernelState, type Link } from '../../core/kernel/model.ts';
import { FELT_CNI, runCni, type CniOutcome } from '../support/cni.ts';
import { linkTypeMissing } from '../support/linktype.ts';
import { nsPath, nsRun, Sandbox } from '../support/ns.ts';
import { callTwin, pluginDir } from '../support/twin-cni.ts';

const plugins = pluginDir();
afterAll(() => plugins.cleanup());
const POD = plugins.dir;

const veth = (ns: string, name: string, peer: string, peerNs: string): Link => ({
  ns,
  name,
  kind: 'veth',
  up: true,
  mtu: 1500,
  mac: '02:00:00:00:00:01',
  master: null,
  promisc: false,
  allmulti: false,
  txqlen: 1000,
  hairpin: false,
  veth: { peer, peerNs },
});

const world = (): KernelState => ({
  ...emptyKernelState(),
  links: [veth(POD, 'eth0', 'h0', HOST), veth(HOST, 'h0', 'eth0', POD), veth(POD, 'eth1', 'h1', HOST), veth(HOST, 'h1', 'eth1', POD)],
  addresses: [
    { ns: POD, dev: 'eth0', cidr: '10.1.0.2/24' },
    { ns: POD, dev: 'eth0', cidr: 'fd00::2/64' },
    { ns: POD, dev: 'eth1', cidr: '10.2.0.2/24' },
  ],
  routes: [
    { ns: POD, dst: '0.0.0.0/0', gw: '10.1.0.1', dev: 'eth0' },
    { ns: POD, dst: '::/0', gw: 'fd00::1', dev: 'eth0' },
    { ns: POD, dst: '10.1.1.1/32', dev: 'eth0', scope: 'link' },
    { ns: POD, dst: '192.0.2.0/24', gw: '10.2.0.1', dev: 'eth1' },
  ],
});

let k: MemoryKernel;
let failAt: string | undefined;
const flaky = (): Kernel => ({
  observe: (req) => k.observe(req),
  apply:
    (ops): TE.TaskEither<KernelError, void> =>
    async () => {
      const i = failAt ? ops.findIndex((o) => o.op === failAt) : -1;
      if (i < 0) return k.applySync(ops);
      const r = k.applySync(ops.slice(0, i));
      const msg = `failed to ${failAt}: RTNETLINK answers: Network is unreachable`;
      failAt = undefined; // once: the way back works
      return E.isLeft(r) ? r : E.left({ kind: 'kernel', msg });
    },
});
const plugin = makeVrf(flaky);

const prevResult = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: POD }],
  ips: [{ address: '10.1.0.2/24', gateway: '10.1.0.1', interface: 0 }],
};
const conf = (extra: Record<string, unknown> = {}, version = '1.0.0') => ({
  cniVersion: version,
  name: 'vrfnet',
  type: 'vrf',
  vrfname: 'blue',
  prevResult: { ...prevResult, cniVersion: version },
  ...extra,
});
const call = (command: 'ADD' | 'DEL' | 'CHECK', config: unknown, ifname = 'eth0') =>
  callTwin({ plugin, dir: plugins.dir, netns: POD, command, config, ifname });
const link = (name: string) => k.state().links.find((l) => l.ns === POD && l.name === name);
const routesOn = (dev: string) =>
  k
    .state()
    .routes.filter((r) => r.ns === POD && r.dev === dev)
    .map((r) => [r.dst, r.table ?? 254])
    .sort();
/** A state with its sets in one order, to compare. */
const sorted = (s: KernelState): KernelState =>
  Object.fromEntries(
    Object.entries(s).map(([key, xs]) => [key, [...(xs as unknown[])].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1))]),
  ) as unknown as KernelState;

beforeEach(() => {
  k = memoryKernel(world());
  failAt = undefined;
});

describe('vrf on the twin', () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])('ADD, CHECK, DEL, DEL again (%s)', async (version) => {
    const add = await call('ADD', conf({}, version));
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    // prevResult, passed through.
    expect(add.json).toMatchObject({ cniVersion: version, ips: [expect.objectContaining({ address: '10.1.0.2/24' })] });
    expect(link('blue')).toMatchObject({ kind: 'vrf', up: true, vrf: { table: 1 } });
    expect(link('eth0')).toMatchObject({ master: 'blue' });
    // Every route of the interface (link-scope ones too) in the VRF's table; the IPv6 address back.
    expect(routesOn('eth0')).toEqual([
      ['0.0.0.0/0', 1],
      ['10.1.1.1/32', 1],
      ['::/0', 1],
    ]);
    expect(
      k
        .state()
        .addresses.filter((a) => a.dev === 'eth0')
        .map((a) => a.cidr)
        .sort(),
    ).toEqual(['10.1.0.2/24', 'fd00::2/64']);
    // The other interface is not touched.
    expect(routesOn('eth1')).toEqual([['192.0.2.0/24', 254]]);
    expect((await call('CHECK', conf({}, version))).code).toBe(0);
    // A second ADD changes nothing.
    const before = k.applied.length;
    expect((await call('ADD', conf({}, version))).code).toBe(0);
    expect(k.applied.length).toBe(before);
    expect((await call('DEL', conf({}, version))).code).toBe(0);
    expect(sorted(k.state())).toEqual(sorted(world()));
    expect((await call('DEL', conf({}, version))).code).toBe(0);
    expect(sorted(k.state())).toEqual(sorted(world()));
  });

  it('CHECK names what drifted', async () => {
    expect((await call('ADD', conf())).code).toBe(0);
    expect((await call('CHECK', conf({ table: 7 }))).json).toMatchObject({ code: 103, msg: expect.stringContaining('vrf blue') });
    k.applySync([{ op: 'link.set', link: { ns: POD, name: 'eth0', kind: 'device' }, changes: { master: null } }]);
    expect((await call('CHECK', conf())).json).toMatchObject({
      code: 103,
      msg: expect.stringContaining('wrong master on eth0: none, want blue'),
    });
    expect((await call('CHECK', { ...conf(), prevResult: undefined })).json).toMatchObject({
      code: 7,
      msg: expect.stringContaining('prevResult: missing'),
    });
  });

  it('the lowest table no other VRF uses; two interfaces in one VRF, which goes with the last', async () => {
    k.reset({ ...world(), links: [...world().links, { ns: POD, name: 'red', kind: 'vrf', up: true, vrf: { table: 1 } }] });
    expect((await call('ADD', conf())).code).toBe(0);
    expect(link('blue')).toMatchObject({ vrf: { table: 2 } });
    expect((await call('ADD', conf({ prevResult: { ...prevResult, interfaces: [{ name: 'eth1', sandbox: POD }] } }), 'eth1')).code).toBe(0);
    expect(link('eth1')).toMatchObject({ master: 'blue' });
    expect(routesOn('eth1')).toEqual([['192.0.2.0/24', 2]]);
    expect((await call('DEL', conf())).code).toBe(0);
    expect(link('blue')).toBeDefined();
    expect(routesOn('eth0')).toEqual([
      ['0.0.0.0/0', 254],
      ['10.1.1.1/32', 254],
      ['::/0', 254],
    ]);
    expect((await call('DEL', conf(), 'eth1')).code).toBe(0);
    expect(link('blue')).toBeUndefined();
    expect(link('red')).toBeDefined();
    expect(routesOn('eth1')).toEqual([['192.0.2.0/24', 254]]);
  });

  it('a configured table: used for a new VRF, and an existing VRF must have it', async () => {
    expect((await call('ADD', conf({ table: 100 }))).code).toBe(0);
    expect(link('blue')).toMatchObject({ vrf: { table: 100 } });
    const r = await call('ADD', conf({ table: 101, prevResult: { ...prevResult, interfaces: [{ name: 'eth1', sandbox: POD }] } }), 'eth1');
    expect(r.json).toMatchObject({ code: 7, msg: 'table: VRF blue already exists with table 100, not 101' });
    expect(link('eth1')).toMatchObject({ master: null });
  });

  it('an ADD whose apply fails half-way converges back to what the pod had', async () => {
    failAt = 'route.replace';
    const r = await call('ADD', conf());
    expect(r.json).toMatchObject({ code: 102, msg: expect.stringContaining('Network is unreachable') });
    expect(sorted(k.state())).toEqual(sorted(world()));
  });

  it.each([
    [{ vrfname: undefined }, 7, 'vrfname: required'],
    [{ vrfname: 'bad name' }, 7, 'vrfname: "bad name"'],
    [{ vrfname: 'eth1' }, 7, 'vrfname: "eth1" exists in'],
    [{ table: 254 }, 7, "table: 254 is one of the kernel's own tables"],
    [{ table: -1 }, 7, 'table: must be an integer between 0 and 4294967295'],
    [{ prevResult: undefined }, 7, 'prevResult: missing'],
  ])('bad input %j: code %i naming the field, nothing changed', async (extra, code, msg) => {
    const r = await call('ADD', conf(extra));
    expect(r.json).toMatchObject({ code, msg: expect.stringContaining(msg) });
    expect(sorted(k.state())).toEqual(sorted(world()));
  });

  it('no such interface, or one with another master: code 4 naming CNI_IFNAME', async () => {
    expect((await call('ADD', conf(), 'eth9')).json).toMatchObject({
      code: 4,
      msg: expect.stringContaining('CNI_IFNAME: no interface "eth9"'),
    });
    k.reset({
      ...world(),
      links: [
        ...world().links.map((l) => (l.name === 'eth0' ? { ...l, master: 'br0' } : l)),
        { ns: POD, name: 'br0', kind: 'bridge', up: true },
      ],
    });
    expect((await call('ADD', conf())).json).toMatchObject({ code: 4, msg: 'CNI_IFNAME: interface eth0 has already a master set: br0' });
    expect(link('blue')).toBeUndefined();
  });
});

// ------------------------------------------------------------------------------------------- kernel

const sb = new Sandbox();
let missing: string | undefined;
beforeAll(async () => {
  missing = await linkTypeMissing(sb, 'vrf');
  if (missing) console.warn(`vrf kernel tests skipped: ${missing}`);
});
afterAll(() => sb.cleanup());

const kcall = (host: string, pod: string, command: 'ADD' | 'DEL' | 'CHECK', config: unknown): Promise<CniOutcome> =>
  runCni({ dir: FELT_CNI, type: 'vrf', command, hostNs: host, containerId: 'vrf-ctr', netns: nsPath(pod), ifname: 'eth0', config });

describe('vrf in the kernel', () => {
  it.for(['0.4.0', '1.0.0', '1.1.0'])(
    'the interface in the VRF, its routes in the table (%s); CHECK; DEL; DEL again',
    async (version, ctx) => {
      if (missing) ctx.skip(missing);
      const [host, pod] = [await sb.ns(), await sb.ns()];
      await nsRun(pod, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0']);
      await nsRun(pod, ['ip', 'link', 'set', 'dev', 'eth0', 'up']);
      await nsRun(pod, ['ip', 'link', 'set', 'dev', 'peer0', 'up']);
      await nsRun(pod, ['ip', 'addr', 'add', '10.64.0.2/24', 'dev', 'eth0']);
      await nsRun(pod, ['ip', 'route', 'add', '198.51.100.0/24', 'via', '10.64.0.1', 'dev', 'eth0']);
      const c = {
        cniVersion: version,
        name: 'vrfnet',
        type: 'vrf',
        vrfname: 'blue',
        table: 100,
        prevResult: { cniVersion: version, interfaces: [{ name: 'eth0', sandbox: nsPath(pod) }], ips: [] },
      };
      const r = await kcall(host, pod, 'ADD', c);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(await nsRun(pod, ['ip', 'route', 'show', 'table', '100'])).toContain('198.51.100.0/24 via 10.64.0.1 dev eth0');
      expect((await kcall(host, pod, 'CHECK', c)).code).toBe(0);
      expect((await kcall(host, pod, 'DEL', c)).code).toBe(0);
      expect(await nsRun(pod, ['ip', 'route', 'show'])).toContain('198.51.100.0/24 via 10.64.0.1 dev eth0');
      expect(await nsRun(pod, ['ip', 'link', 'show'])).not.toContain('blue');
      expect((await kcall(host, pod, 'DEL', c)).code).toBe(0);
    },
  );
});
