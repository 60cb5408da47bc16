// dummy. On the memory twin (this machine's kernel cannot make dummy links): ADD, CHECK, DEL, DEL again at every
// spec version with CHECK; the result is the IPAM plugin's with the dummy as its interface (its DNS kept, as
// the reference); an apply failing half-way converging back; bad input (no IPAM) changing nothing. Through
// the real executable, against the reference v1.9.1, when the kernel has dummy links (skipped otherwise, with
// the reason printed).

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Kernel, KernelError } from '../../adapters/kernel/types.ts';
import { memoryKernel, type MemoryKernel } from '../../adapters/memory/kernel.ts';
import { makeDummy } from '../../apps/cni/plugins/dummy.ts';
import { emptyKernelState, type KernelState } from '../../core/kernel/model.ts';
import { FELT_CNI } from '../support/cni.ts';
import { linkTypeMissing } from '../support/linktype.ts';
import { cni, links, routes, Sandbox } from '../support/ns.ts';
import { callTwin, fakeIpam, pluginDir, type FakeIpam } from '../support/twin-cni.ts';

const plugins = pluginDir();
afterAll(() => plugins.cleanup());
const POD = plugins.dir;
const world = (): KernelState => ({
  ...emptyKernelState(),
  links: [{ ns: POD, name: 'lo', kind: 'loopback', up: true, mtu: 65536, master: null }],
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
const plugin = makeDummy(flaky);
const conf = (extra: Record<string, unknown> = {}, cniVersion = '1.0.0') => ({
  cniVersion,
  name: 'dnet',
  type: 'dummy',
  ipam: { type: 'fake-ipam' },
  ...extra,
});
const call = (command: 'ADD' | 'DEL' | 'CHECK', config: unknown) =>
  callTwin({ plugin, ipam, dir: plugins.dir, netns: POD, command, config });

beforeEach(() => {
  k = memoryKernel(world());
  ipam = fakeIpam({
    ips: [{ address: '10.65.0.5/24', gateway: '10.65.0.1' }, { address: 'fd65::5/64' }],
    routes: [{ dst: '10.66.0.0/16' }],
    dns: { nameservers: ['10.65.0.53'] },
  });
  failAt = undefined;
});

describe('dummy on the twin', () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])('ADD, CHECK, DEL, DEL again (%s)', async (version) => {
    const add = await call('ADD', conf({}, version));
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    const made = k.state().links.find((l) => l.name === 'eth0');
    // As the kernel makes a dummy: an Ethernet MAC, MTU 1500; the plugin brings it up.
    expect(made).toMatchObject({ kind: 'dummy', up: true, mtu: 1500, master: null });
    expect(add.json).toMatchObject({
      interfaces: [{ name: 'eth0', mac: made!.mac, sandbox: POD }],
      ips: [
        { address: '10.65.0.5/24', gateway: '10.65.0.1', interface: 0 },
        { address: 'fd65::5/64', interface: 0 },
      ],
      routes: [{ dst: '10.66.0.0/16' }],
      dns: { nameservers: ['10.65.0.53'] },
    });
    expect(k.state().addresses.map((a) => a.cidr)).toEqual(['10.65.0.5/24', 'fd65::5/64']);
    expect(k.state().routes).toEqual([{ ns: POD, dst: '10.66.0.0/16', gw: '10.65.0.1', dev: 'eth0' }]);
    expect((await call('CHECK', { ...conf({}, version), prevResult: add.json })).code).toBe(0);
    // Down is drift, as the reference's CHECK says.
    k.applySync([{ op: 'link.set', link: made!, changes: { up: false } }]);
    expect((await call('CHECK', { ...conf({}, version), prevResult: add.json })).json).toMatchObject({
      code: 103,
      msg: expect.stringContaining('eth0'),
    });
    expect((await call('DEL', conf({}, version))).code).toBe(0);
    expect(ipam.held.size).toBe(0);
    expect((await call('DEL', conf({}, version))).code).toBe(0);
    expect(k.state()).toEqual(world());
  });

  it('an ADD whose apply fails half-way converges back to "not attached" and gives the address back', async () => {
    failAt = 'addr.add';
    const r = await call('ADD', conf());
    expect(r.json).toMatchObject({ code: 102 });
    expect(k.state()).toEqual(world());
    expect(ipam.held.size).toBe(0);
  });

  it('an interface of that name in the pod is code 104, and stays', async () => {
    k.applySync([{ op: 'link.add', link: { ns: POD, name: 'eth0', kind: 'dummy' } }]);
    const before = k.state();
    expect((await call('ADD', conf())).json).toMatchObject({ code: 104 });
    expect(k.state()).toEqual(before);
    expect(ipam.held.size).toBe(0);
  });

  it.each([
    [{ ipam: undefined }, 'ipam.type: required'],
    [{ ipam: {} }, 'ipam.type: required'],
    [{ ipam: { type: 3 } }, 'ipam.type: must be a string'],
    [{ ipam: 'x' }, 'ipam: must be an object'],
  ])('bad input %j: code 7 naming the field, nothing changed', async (extra, msg) => {
    const r = await call('ADD', conf(extra));
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining(msg) });
    expect(k.state()).toEqual(world());
    expect(ipam.held.size).toBe(0);
  });
});

// ------------------------------------------------------------------------------------------- kernel

const REF = '/work/shared/reference-plugins/v1.9.1';
const sb = new Sandbox();
let missing: string | undefined;
beforeAll(async () => {
  missing = await linkTypeMissing(sb, 'dummy');
  if (missing) console.warn(`dummy kernel tests skipped: ${missing}`);
});
afterAll(() => sb.cleanup());

const kconf = {
  cniVersion: '1.0.0',
  name: 'dnet',
  type: 'dummy',
  ipam: { type: 'static', addresses: [{ address: '198.51.100.7/24' }, { address: '2001:db8::7/64' }] },
};

describe('dummy in the kernel, against the reference v1.9.1', () => {
  it('same result (MAC aside) and pod state; CHECK; DEL; DEL again', async (ctx) => {
    if (missing) ctx.skip(missing);
    const out = [];
    for (const dir of [FELT_CNI, REF]) {
      const host = await sb.ns();
      const pod = await sb.ns();
      const c = { dir, hostNs: host, pod, cid: 'dummy-ctr' };
      const add = await cni(c, 'ADD', kconf);
      expect(add.code, add.stdout + add.stderr).toBe(0);
      const l = (await links(pod)).find((x) => x.ifname === 'eth0');
      out.push({
        result: JSON.parse(
          JSON.stringify(add.json)
            .replaceAll(pod, 'POD')
            .replace(/"mac":"[0-9a-f:]{17}"/g, '"mac":"MAC"'),
        ),
        link: { kind: l?.linkinfo?.info_kind, flags: l?.flags, mtu: l?.mtu },
        routes: await routes(pod),
      });
      expect((await cni(c, 'CHECK', { ...kconf, prevResult: add.json })).code).toBe(0);
      expect((await cni(c, 'DEL', kconf)).code).toBe(0);
      expect((await links(pod)).map((x) => x.ifname)).toEqual(['lo']);
      expect((await cni(c, 'DEL', kconf)).code).toBe(0);
    }
    expect(out[0]).toEqual(out[1]);
  });
});
