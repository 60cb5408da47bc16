// host-device through the real executable in throwaway namespaces. The "host device" is one end of a veth
// pair the test makes in its own host namespace (this kernel has no dummy links); its peer stays in the host
// with an address, so the pod can ping through the moved device. ADD → CHECK → DEL → DEL at 0.4.0, 1.0.0 and
// 1.1.0; the device comes back with its name, MTU and up state (either), without the alias; each selector;
// bad input, a missing device, a device another pod holds and an interface name taken in the pod change
// nothing; an ADD whose apply fails converges back; against the reference (/usr/lib/cni/host-device 1.1.1),
// the same pod state and result shape, and an attachment made by the reference is undone by felt's DEL.
//
// Deliberate difference (asserted): the reference leaves the device down after DEL; felt restores its up state.

import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, type CniOutcome } from '../support/cni.ts';
import { addrs, cni, feltAllocations, link, links, nsRun, ping, Sandbox, type IpLink } from '../support/ns.ts';

const sb = new Sandbox();
let data = '';
// A log and allocations of its own per test: a failing test leaves nothing in the next one's way.
beforeEach(() => {
  data = sb.dir();
});
afterAll(() => sb.cleanup());

type Alias = IpLink & { ifalias?: string };

/** A host namespace with the device hd0 (a veth end, MTU 1400, up or down) and its peer hd0p, up, at 10.60.0.1. */
async function hostWithDevice(opts: { up?: boolean; name?: string } = {}): Promise<string> {
  const host = await sb.ns();
  const name = opts.name ?? 'hd0';
  await nsRun(host, ['ip', 'link', 'add', 'name', name, 'mtu', '1400', 'type', 'veth', 'peer', 'name', `${name}p`]);
  if (opts.up ?? true) await nsRun(host, ['ip', 'link', 'set', 'dev', name, 'up']);
  await nsRun(host, ['ip', 'link', 'set', 'dev', `${name}p`, 'up']);
  await nsRun(host, ['ip', 'addr', 'add', '10.60.0.1/24', 'dev', `${name}p`]);
  return host;
}

const conf = (extra: Record<string, unknown> = {}, version = '1.0.0', dataDir = data) => ({
  cniVersion: version,
  name: 'hdnet',
  type: 'host-device',
  device: 'hd0',
  dataDir,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.60.0.0/24', gateway: '10.60.0.1' }]], routes: [{ dst: '10.99.0.0/16' }], dataDir },
  ...extra,
});

const call = (
  dir: string,
  host: string,
  pod: string,
  command: 'ADD' | 'DEL' | 'CHECK',
  config: unknown,
  cid = 'hd-ctr',
): Promise<CniOutcome> => cni({ dir, type: 'host-device', hostNs: host, pod, cid }, command, config);

/** The device as the host sees it: name, MTU, up, alias. */
async function hostView(host: string, name = 'hd0'): Promise<unknown> {
  const l = (await link(host, name)) as Alias | undefined;
  return l && { name: l.ifname, mtu: l.mtu, up: l.flags.includes('UP'), alias: l.ifalias ?? '' };
}

async function podView(pod: string): Promise<unknown> {
  const l = (await link(pod, 'eth0')) as Alias | undefined;
  return {
    links: (await links(pod)).map((x) => x.ifname).sort(),
    mtu: l?.mtu,
    up: l?.flags.includes('UP'),
    alias: l?.ifalias,
    addrs: (await addrs(pod))['eth0']?.filter((a) => !a.startsWith('fe80')),
    routes: (await nsRun(pod, ['ip', '-4', 'route', 'show']))
      .trim()
      .split('\n')
      .map((l) => l.trim())
      .sort(),
  };
}

describe('host-device', () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])(
    'ADD moves the device into the pod, which pings through it (%s); CHECK; DEL brings it back; DEL again',
    async (version) => {
      const host = await hostWithDevice();
      const pod = await sb.ns();
      const mac = (await link(host, 'hd0'))!.address;
      const r = await call(FELT_CNI, host, pod, 'ADD', conf({}, version));
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.json.interfaces).toEqual([{ name: 'eth0', mac, sandbox: `/run/netns/${pod}` }]);
      expect(r.json.ips).toEqual([
        { address: '10.60.0.2/24', gateway: '10.60.0.1', ...(version === '0.4.0' ? { version: '4' } : {}), interface: 0 },
      ]);
      expect(await podView(pod)).toEqual({
        links: ['eth0', 'lo'],
        mtu: 1400,
        up: true,
        alias: 'hd0',
        addrs: ['10.60.0.2/24'],
        routes: ['10.60.0.0/24 dev eth0 proto kernel scope link src 10.60.0.2', '10.99.0.0/16 via 10.60.0.1 dev eth0'],
      });
      expect(await link(host, 'hd0')).toBeUndefined();
      expect(await ping(pod, '10.60.0.1')).toBe(true);

      expect((await call(FELT_CNI, host, pod, 'CHECK', { ...conf({}, version), prevResult: r.json })).code).toBe(0);
      expect((await call(FELT_CNI, host, pod, 'DEL', conf({}, version))).code).toBe(0);
      expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
      expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
      expect((await call(FELT_CNI, host, pod, 'DEL', conf({}, version))).code).toBe(0);
      expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
      expect((await feltAllocations(data)).filter((x) => x.network === 'hdnet')).toEqual([]);
    },
  );

  it('DEL restores what the pod changed (MTU, up state, alias), and a device that was down stays down', async () => {
    const host = await hostWithDevice({ up: false });
    await nsRun(host, ['ip', 'link', 'set', 'dev', 'hd0', 'alias', 'uplink-3']);
    const pod = await sb.ns();
    const r = await call(FELT_CNI, host, pod, 'ADD', conf());
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await nsRun(pod, ['ip', 'link', 'set', 'dev', 'eth0', 'mtu', '1300']);
    const check = await call(FELT_CNI, host, pod, 'CHECK', { ...conf(), prevResult: r.json });
    expect(check.json).toBeUndefined();
    await nsRun(pod, ['ip', 'link', 'set', 'dev', 'eth0', 'alias', 'renamed']);
    await nsRun(pod, ['ip', 'addr', 'flush', 'dev', 'eth0']);
    const drifted = await call(FELT_CNI, host, pod, 'CHECK', { ...conf(), prevResult: r.json });
    expect(drifted.json).toMatchObject({ code: 103 });
    expect(drifted.json.msg).toContain('wrong alias on eth0: renamed, want hd0');
    expect(drifted.json.msg).toContain('missing address 10.60.0.2/24 on eth0');
    expect((await call(FELT_CNI, host, pod, 'DEL', conf())).code).toBe(0);
    expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: false, alias: 'uplink-3' });
  });

  it.each([
    ['hwaddr', async (host: string) => ({ device: undefined, hwaddr: (await link(host, 'hd0'))!.address.toUpperCase() })],
    // /sys/devices/virtual/net lists the host's virtual devices, sorted: hd0 comes before hd0p and lo.
    ['kernelpath', async () => ({ device: undefined, kernelpath: '/sys/devices/virtual' })],
  ])('selects the device by %s', async (_by, extra) => {
    const host = await hostWithDevice();
    const pod = await sb.ns();
    const c = conf({ ...(await extra(host)), ipam: undefined });
    const r = await call(FELT_CNI, host, pod, 'ADD', c);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json.ips).toBeUndefined();
    expect(await podView(pod)).toMatchObject({ links: ['eth0', 'lo'], up: true, alias: 'hd0' });
    expect((await call(FELT_CNI, host, pod, 'DEL', c)).code).toBe(0);
    expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
  });

  it.each([
    [{ device: 'nope0' }, 7, 'device: failed to find host device'],
    [{ device: undefined, hwaddr: '02:00:00:00:00:99' }, 7, 'hwaddr: failed to find host device'],
    [{ device: undefined, hwaddr: 'zz' }, 7, 'hwaddr: failed to parse MAC address'],
    [
      { device: undefined, kernelpath: '/sys/class/net' },
      7,
      'kernelpath: kernel device path "/sys/class/net" must be absolute and begin with /sys/devices/',
    ],
    [{ device: undefined, kernelpath: '/sys/devices/../class' }, 7, 'kernelpath:'],
    [{ device: undefined, pciBusID: '0000:99:99.9' }, 7, 'pciBusID: no PCI device "0000:99:99.9"'],
    [{ device: undefined, runtimeConfig: { deviceID: '0000:99:99.9' } }, 7, 'runtimeConfig.deviceID: no PCI or auxiliary device'],
    [{ device: undefined }, 7, 'specify either "device", "hwaddr", "kernelpath" or "pciBusID"'],
    [{ device: 'a b' }, 7, 'device: "a b" contains whitespace'],
  ])('bad input %j: code %i naming the field, nothing changed', async (extra, code, msg) => {
    const host = await hostWithDevice();
    const pod = await sb.ns();
    const r = await call(FELT_CNI, host, pod, 'ADD', conf(extra));
    expect(r.json).toMatchObject({ code, msg: expect.stringContaining(msg) });
    expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
    expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
    expect((await feltAllocations(data)).filter((x) => x.network === 'hdnet')).toEqual([]);
  });

  it('a device attached to another pod: code 7 naming the field and the holder; neither pod changes', async () => {
    const host = await hostWithDevice();
    const [a, b] = [await sb.ns(), await sb.ns()];
    const dir = sb.dir();
    expect((await call(FELT_CNI, host, a, 'ADD', conf({}, '1.0.0', dir), 'hd-a')).code).toBe(0);
    const r = await call(FELT_CNI, host, b, 'ADD', conf({}, '1.0.0', dir), 'hd-b');
    expect(r.json).toMatchObject({
      code: 7,
      msg: expect.stringContaining(
        `device: host device "hd0" is not in the host namespace: it is attached to container hd-a as eth0 in /run/netns/${a}`,
      ),
    });
    expect((await links(b)).map((l) => l.ifname)).toEqual(['lo']);
    expect(await podView(a)).toMatchObject({ links: ['eth0', 'lo'], up: true, addrs: ['10.60.0.2/24'] });
    expect((await feltAllocations(dir)).map((x) => x.containerId)).toEqual(['hd-a']);
    expect((await call(FELT_CNI, host, a, 'DEL', conf({}, '1.0.0', dir), 'hd-a')).code).toBe(0);
    expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
  });

  it("two ADDs racing for one device: one wins, the loser changes nothing and keeps no address; the winner's DEL restores the device", async () => {
    const host = await hostWithDevice();
    const [a, b] = [await sb.ns(), await sb.ns()];
    const [ra, rb] = await Promise.all([call(FELT_CNI, host, a, 'ADD', conf(), 'hd-a'), call(FELT_CNI, host, b, 'ADD', conf(), 'hd-b')]);
    const won = [ra, rb].filter((r) => r.code === 0);
    expect(won.length, ra.stdout + rb.stdout).toBe(1);
    const [winner, loser, cid] = ra.code === 0 ? [a, b, 'hd-a'] : [b, a, 'hd-b'];
    const lost = (ra.code === 0 ? rb : ra).json;
    // The loser either saw the device gone (7, naming the holder) or lost the move itself (102).
    expect([7, 102]).toContain(lost.code);
    expect((await links(loser)).map((l) => l.ifname)).toEqual(['lo']);
    expect(await podView(winner)).toMatchObject({ links: ['eth0', 'lo'], up: true, alias: 'hd0' });
    expect((await feltAllocations(data)).map((x) => x.containerId)).toEqual([cid]);
    expect((await call(FELT_CNI, host, winner, 'DEL', conf(), cid)).code).toBe(0);
    expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
  });

  it('CNI_IFNAME taken in the pod: code 104, the device stays in the host', async () => {
    const host = await hostWithDevice();
    const pod = await sb.ns();
    await nsRun(pod, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']);
    const r = await call(FELT_CNI, host, pod, 'ADD', conf());
    expect(r.json).toMatchObject({ code: 104 });
    expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
    expect((await feltAllocations(data)).filter((x) => x.network === 'hdnet')).toEqual([]);
  });

  it('an ADD whose apply fails (a route via an unreachable gateway) converges back and releases the address', async () => {
    const host = await hostWithDevice();
    const pod = await sb.ns();
    const dir = sb.dir();
    const c = conf(
      {
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: '10.60.0.0/24' }]],
          routes: [{ dst: '10.98.0.0/16', gw: '192.0.2.1' }],
          dataDir: dir,
        },
      },
      '1.0.0',
      dir,
    );
    const r = await call(FELT_CNI, host, pod, 'ADD', c);
    expect(r.json).toMatchObject({ code: 102, msg: expect.stringContaining('10.98.0.0/16') });
    expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
    expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
    expect(await feltAllocations(dir)).toEqual([]);
    // Nothing recorded is left: a DEL has nothing to do.
    expect((await call(FELT_CNI, host, pod, 'DEL', c)).code).toBe(0);
    expect(await hostView(host)).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
  });

  it('DEL after the pod namespace is gone succeeds (the veth went with it) and forgets the attachment', async () => {
    const host = await hostWithDevice();
    const pod = await sb.ns();
    const dir = sb.dir();
    expect((await call(FELT_CNI, host, pod, 'ADD', conf({}, '1.0.0', dir))).code).toBe(0);
    await sb.delNs(pod);
    expect((await call(FELT_CNI, host, pod, 'DEL', conf({}, '1.0.0', dir))).code).toBe(0);
    expect(await feltAllocations(dir)).toEqual([]);
    // The device name is free again: a new hd0 can be attached without a stale record in the way.
    await hostWithDeviceIn(host);
    const pod2 = await sb.ns();
    expect((await call(FELT_CNI, host, pod2, 'ADD', conf({}, '1.0.0', dir), 'hd-2')).code).toBe(0);
    expect((await call(FELT_CNI, host, pod2, 'DEL', conf({}, '1.0.0', dir), 'hd-2')).code).toBe(0);
  });

  it('the same pod state and result shape as the reference; the reference leaves the device down after DEL, felt restores it', async () => {
    const out: { r: CniOutcome; pod: unknown; after: unknown }[] = [];
    for (const dir of [REF_CNI, FELT_CNI]) {
      const host = await hostWithDevice();
      const pod = await sb.ns();
      const d = sb.dir();
      // A route with its gateway spelled out: the reference's CHECK cannot find a route whose gw the IPAM left
      // out (it compares a nil gateway with the kernel's); felt's CHECK handles both (tested above).
      const c = conf({ ipam: { ...conf({}, '1.0.0', d).ipam, routes: [{ dst: '10.99.0.0/16', gw: '10.60.0.1' }] } }, '1.0.0', d);
      const r = await call(dir, host, pod, 'ADD', c);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const view = await podView(pod);
      const chk = await call(dir, host, pod, 'CHECK', { ...c, prevResult: r.json });
      expect(chk.code, chk.stdout + chk.stderr).toBe(0);
      expect((await call(dir, host, pod, 'DEL', c)).code).toBe(0);
      out.push({ r, pod: view, after: await hostView(host) });
    }
    const [ref, felt] = out as [(typeof out)[0], (typeof out)[0]];
    expect(felt.pod).toEqual(ref.pod);
    const shape = (j: { interfaces: { name: string; mac: string; sandbox: string }[]; ips: unknown[]; routes: unknown[] }) => ({
      interfaces: j.interfaces.map((i) => ({ name: i.name, mac: /^[0-9a-f:]{17}$/.test(i.mac), inPod: !!i.sandbox })),
      ips: j.ips,
      routes: j.routes,
    });
    expect(shape(felt.r.json)).toEqual(shape(ref.r.json));
    expect(ref.after).toMatchObject({ name: 'hd0', mtu: 1400, up: false });
    expect(felt.after).toEqual({ name: 'hd0', mtu: 1400, up: true, alias: '' });
  });

  it("felt's DEL undoes the reference's ADD (the alias names the device)", async () => {
    const host = await hostWithDevice();
    const pod = await sb.ns();
    const d = sb.dir();
    expect((await call(REF_CNI, host, pod, 'ADD', conf({ ipam: undefined }, '1.0.0', d))).code).toBe(0);
    expect(await podView(pod)).toMatchObject({ links: ['eth0', 'lo'], alias: 'hd0' });
    expect((await call(FELT_CNI, host, pod, 'DEL', conf({ ipam: undefined }, '1.0.0', d))).code).toBe(0);
    expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
    expect(await hostView(host)).toMatchObject({ name: 'hd0', mtu: 1400, alias: '' });
  });
});

/** A fresh hd0 in an existing host namespace (after the old one went with a pod). */
async function hostWithDeviceIn(host: string): Promise<void> {
  await nsRun(host, ['ip', 'link', 'add', 'name', 'hd0', 'mtu', '1400', 'type', 'veth', 'peer', 'name', 'hd0p']);
  await nsRun(host, ['ip', 'link', 'set', 'dev', 'hd0', 'up']);
}
