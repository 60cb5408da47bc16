// tap. Differential against the reference v1.9.1 in fresh namespaces: the same config through both gives the
// same result (MACs aside) and the same kernel state (flags, tun settings, owner/group, MTU, bridge port,
// addresses, routes, arp_notify), for every option; CHECK, DEL, DEL again. One deliberate difference: with both
// owner and group, v1.9.1 makes the tap through netlink and drops the MTU and MAC there; felt applies them.
// Traffic: a tap on a bridge in the pod answers an ARP from the other side of the bridge once a process
// attaches to it. On the twin: the flow, bad input (code 7 naming the field, nothing changed, no address held).

import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { memoryKernel, type MemoryKernel } from '../../adapters/memory/kernel.ts';
import { makeTap } from '../../apps/cni/plugins/tap.ts';
import { emptyKernelState, type KernelState } from '../../core/kernel/model.ts';
import { FELT_CNI } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { cni, links, nsRun, nsTry, routes, Sandbox, sysctl } from '../support/ns.ts';
import { callTwin, fakeIpam, pluginDir, type FakeIpam } from '../support/twin-cni.ts';

const REF = '/work/shared/reference-plugins/v1.9.1';
const sb = new Sandbox();
afterAll(() => sb.cleanup());

/** The pod's links as the kernel reports them, minus what is random (MACs, ifindexes) or counters. */
async function podState(pod: string, keepMac: boolean): Promise<unknown> {
  const ls = JSON.parse(await nsRun(pod, ['ip', '-json', '-d', 'link', 'show'])) as Record<string, any>[];
  const out = ls
    .filter((l) => l['ifname'] !== 'lo')
    .map((l) => ({
      name: l['ifname'],
      flags: l['flags'],
      mtu: l['mtu'],
      master: l['master'],
      ...(keepMac && l['ifname'] !== 'br0' ? { mac: l['address'] } : {}),
      kind: l['linkinfo']?.['info_kind'],
      ...(l['linkinfo']?.['info_kind'] === 'tun' ? { tun: l['linkinfo']['info_data'] } : {}),
    }));
  const addrs = JSON.parse(await nsRun(pod, ['ip', '-json', 'addr', 'show'])) as {
    ifname: string;
    addr_info?: { local: string; prefixlen: number; scope: string }[];
  }[];
  const a = addrs
    .flatMap((l) => (l.addr_info ?? []).filter((x) => x.scope !== 'link').map((x) => `${l.ifname} ${x.local}/${x.prefixlen}`))
    .sort();
  const tap = out.find((l) => l.kind === 'tun')?.name as string | undefined;
  return {
    links: out,
    addrs: a,
    routes: await routes(pod),
    arpNotify: tap ? await sysctl(pod, `net.ipv4.conf.${tap}.arp_notify`) : undefined,
  };
}

const base = { cniVersion: '1.0.0', name: 'tapnet', type: 'tap' };
const staticIpam = {
  type: 'static',
  addresses: [{ address: '198.51.100.5/24', gateway: '198.51.100.1' }, { address: '2001:db8::5/64' }],
  routes: [{ dst: '0.0.0.0/0' }, { dst: '2001:db8:1::/48', gw: '2001:db8::1' }],
};

async function bothWays(extra: Record<string, unknown>, opts: { args?: string; bridge?: boolean; keepMac?: boolean } = {}) {
  const out = [];
  for (const dir of [FELT_CNI, REF]) {
    const host = await sb.ns();
    const pod = await sb.ns();
    if (opts.bridge) {
      await nsRun(pod, ['ip', 'link', 'add', 'name', 'br0', 'type', 'bridge']);
    }
    const call = { dir, hostNs: host, pod, cid: 'tap-ctr', ...(opts.args ? { args: opts.args } : {}) };
    const conf = { ...base, ...extra };
    const add = await cni(call, 'ADD', conf);
    expect(add.code, `${dir}: ${add.stdout}${add.stderr}`).toBe(0);
    const state = await podState(pod, opts.keepMac ?? false);
    out.push({ call, conf, add, pod, state });
  }
  return out as [(typeof out)[0], (typeof out)[0]];
}

/** The result with the pod's namespace path and (unless configured) the MAC made comparable. */
const norm = (r: any, pod: string, keepMac: boolean) =>
  JSON.parse(
    JSON.stringify(r)
      .replaceAll(pod, 'POD')
      .replace(/"mac":"[0-9a-f:]{17}"/g, keepMac ? '$&' : '"mac":"MAC"'),
  );

describe('tap against the reference v1.9.1', () => {
  it.each([
    ['layer 2 only', {}, {}],
    ['multiQueue', { multiQueue: true }, {}],
    ['owner only', { owner: 4242 }, {}],
    ['group only', { group: 4343 }, {}],
    ['owner and group (netlink in the reference: vnet_hdr, pi)', { owner: 4242, group: 4343 }, {}],
    ['owner, group and multiQueue', { owner: 0, group: 0, multiQueue: true }, {}],
    ['mtu and mac', { mtu: 1400, mac: '02:00:00:00:5a:01' }, { keepMac: true }],
    ['CNI_ARGS MAC', {}, { args: 'IgnoreUnknown=1;MAC=02:00:00:00:5a:02', keepMac: true }],
    ['runtimeConfig.mac over mac', { mac: '02:00:00:00:5a:03', runtimeConfig: { mac: '02:00:00:00:5a:04' } }, { keepMac: true }],
    ['a port of a bridge in the pod', { bridge: 'br0' }, { bridge: true }],
    ['IPAM (both families, routes) and dns', { ipam: staticIpam, dns: { nameservers: ['198.51.100.53'], search: ['example.test'] } }, {}],
  ] as const)('%s: same result and kernel state; CHECK; DEL; DEL again', async (_what, extra, opts) => {
    const [felt, ref] = await bothWays(extra, opts);
    const keep = 'keepMac' in opts && opts.keepMac === true;
    expect(norm(felt.add.json, felt.pod, keep)).toEqual(norm(ref.add.json, ref.pod, keep));
    expect(felt.state).toEqual(ref.state);
    expect((await cni(felt.call, 'CHECK', { ...felt.conf, prevResult: felt.add.json })).code).toBe(0);
    expect((await cni(ref.call, 'CHECK', { ...ref.conf, prevResult: ref.add.json })).code).toBe(0);
    for (const x of [felt, ref]) {
      expect((await cni(x.call, 'DEL', x.conf)).code).toBe(0);
      expect((await links(x.pod)).map((l) => l.ifname).filter((n) => n !== 'br0')).toEqual(['lo']);
      expect((await cni(x.call, 'DEL', x.conf)).code).toBe(0);
    }
  });

  it('owner and group with mtu and mac: v1.9.1 drops both (its netlink path), felt applies them; the tun flags agree', async () => {
    const [felt, ref] = await bothWays({ owner: 4242, group: 4343, mtu: 1400, mac: '02:00:00:00:5a:05' }, { keepMac: true });
    const tapOf = (s: any) => s.links.find((l: any) => l.kind === 'tun');
    expect(tapOf(felt.state)).toMatchObject({ mtu: 1400, mac: '02:00:00:00:5a:05' });
    expect(tapOf(ref.state).mtu).toBe(1500);
    expect(tapOf(ref.state).mac).not.toBe('02:00:00:00:5a:05');
    expect(tapOf(felt.state).tun).toEqual(tapOf(ref.state).tun);
  });

  it('CHECK finds a tap taken off its bridge', async () => {
    const [felt] = await bothWays({ bridge: 'br0' }, { bridge: true });
    await nsRun(felt.pod, ['ip', 'link', 'set', 'dev', 'eth0', 'nomaster']);
    const r = await cni(felt.call, 'CHECK', { ...felt.conf, prevResult: felt.add.json });
    expect(r.json).toMatchObject({ code: 103, msg: expect.stringContaining('eth0') });
  });

  it.each([
    [{ bridge: 'nope0' }, 'bridge: failed to find "nope0"'],
    [{ mac: 'zz' }, 'mac: "zz" is not a MAC address'],
    [{ mtu: 70000 }, 'mtu: must be an integer between 0 and 65521'],
    [{ owner: -1 }, 'owner: must be an integer'],
    [{ group: 'wheel' }, 'group: must be an integer'],
    [{ multiQueue: 'yes' }, 'multiQueue: must be true or false'],
    [{ selinuxContext: 'a b' }, 'selinuxContext'],
  ])('bad input %j: code 7 naming the field, nothing made in the pod (the reference leaves a tap behind for some)', async (extra, msg) => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const r = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'tap-bad' }, 'ADD', { ...base, ...extra });
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining(msg) });
    expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
  });
});

// ------------------------------------------------------------------------------------------- traffic

/** Attaches to tap DEV (IFF_TAP|IFF_NO_PI) and answers one ARP request for IP with MAC; prints "ready", then "answered". */
const ARP_RESPONDER = `
import fcntl, os, socket, struct, sys
dev, mac, ip = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', '')), socket.inet_aton(sys.argv[3])
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', dev.encode(), 0x0002 | 0x1000))
print('ready', flush=True)
while True:
    f = os.read(fd, 65536)
    if len(f) >= 42 and f[12:14] == b'\\x08\\x06' and f[20:22] == b'\\x00\\x01' and f[38:42] == ip:
        sha, spa = f[22:28], f[28:32]
        os.write(fd, sha + mac + b'\\x08\\x06\\x00\\x01\\x08\\x00\\x06\\x04\\x00\\x02' + mac + ip + sha + spa)
        print('answered', flush=True)
        break
`;

describe('tap traffic', () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    if (child && child.exitCode === null) child.kill();
  });

  it('a tap on a bridge in the pod carries frames both ways once a process attaches to it', async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const peer = await sb.ns();
    await nsRun(pod, ['ip', 'link', 'add', 'name', 'br0', 'type', 'bridge']);
    await nsRun(pod, ['ip', 'link', 'set', 'dev', 'br0', 'up']);
    await nsRun(pod, ['ip', 'link', 'add', 'name', 'vp', 'type', 'veth', 'peer', 'name', 'vq', 'netns', peer]);
    await nsRun(pod, ['ip', 'link', 'set', 'dev', 'vp', 'master', 'br0', 'up']);
    await nsRun(peer, ['ip', 'addr', 'add', '198.51.100.2/24', 'dev', 'vq']);
    await nsRun(peer, ['ip', 'link', 'set', 'dev', 'vq', 'up']);
    const add = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'tap-traffic', ifname: 'tap0' }, 'ADD', { ...base, bridge: 'br0' });
    expect(add.code, add.stdout).toBe(0);
    const mac = '02:00:00:00:5a:99';
    const c = spawn('ip', ['netns', 'exec', pod, 'python3', '-c', ARP_RESPONDER, 'tap0', mac, '198.51.100.9'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = c;
    let out = '';
    c.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    c.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    await eventually(
      () =>
        out.includes('ready') ||
        (c.exitCode !== null
          ? (() => {
              throw new Error(out);
            })()
          : false),
      { what: 'the responder attached to tap0' },
    );
    // The ARP request crosses the bridge into the tap; the reply comes back out of it.
    await eventually(
      async () => {
        await nsTry(peer, ['ping', '-c1', '-W1', '198.51.100.9']);
        return (await nsRun(peer, ['ip', 'neigh', 'show', '198.51.100.9', 'dev', 'vq'])).includes(`lladdr ${mac}`);
      },
      { what: `198.51.100.9 resolved to ${mac} through the tap` },
    );
    expect(out).toContain('answered');
  });
});

// ------------------------------------------------------------------------------------------- twin

const plugins = pluginDir();
afterAll(() => plugins.cleanup());
const POD = plugins.dir;
const world = (): KernelState => ({
  ...emptyKernelState(),
  links: [
    { ns: POD, name: 'lo', kind: 'loopback', up: true, mtu: 65536, master: null },
    { ns: POD, name: 'br0', kind: 'bridge', up: true, mtu: 1500, mac: '02:00:00:00:00:b0', master: null },
    { ns: POD, name: 'd0', kind: 'device', up: true, mtu: 1500, mac: '02:00:00:00:00:d0', master: null },
  ],
});
let k: MemoryKernel;
let ipam: FakeIpam;
let selinux = false;
const plugin = makeTap(
  () => k,
  () => selinux,
);
const tconf = (extra: Record<string, unknown> = {}) => ({ ...base, ipam: { type: 'fake-ipam' }, ...extra });
const call = (command: 'ADD' | 'DEL' | 'CHECK', config: unknown) =>
  callTwin({ plugin, ipam, dir: plugins.dir, netns: POD, command, config });

beforeEach(() => {
  k = memoryKernel(world());
  ipam = fakeIpam({ ips: [{ address: '10.64.0.5/24', gateway: '10.64.0.1' }], routes: [{ dst: '0.0.0.0/0' }] });
  selinux = false;
});

describe('tap on the twin', () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])('ADD, CHECK, DEL, DEL again (%s)', async (cniVersion) => {
    const c = tconf({ cniVersion, bridge: 'br0', owner: 7, group: 8, mtu: 1400 });
    const add = await call('ADD', c);
    expect(add.code, JSON.stringify(add.json)).toBe(0);
    expect(k.state().links.find((l) => l.name === 'eth0')).toMatchObject({
      kind: 'tap',
      up: true,
      mtu: 1400,
      master: 'br0',
      tap: { owner: 7, group: 8, vnetHdr: true, pi: true, multiQueue: false },
    });
    expect(k.state().sysctls).toContainEqual({ ns: POD, key: 'net.ipv4.conf.eth0.arp_notify', value: '1' });
    expect((await call('CHECK', { ...c, prevResult: add.json })).code).toBe(0);
    expect((await call('DEL', c)).code).toBe(0);
    expect((await call('DEL', c)).code).toBe(0);
    expect(ipam.held.size).toBe(0);
    expect(k.state().links).toEqual(world().links);
  });

  it('selinuxContext: made under that label where the host has SELinux; refused (code 7) where it has not', async () => {
    const c = tconf({ selinuxContext: 'system_u:system_r:container_t:s0' });
    const no = await call('ADD', c);
    expect(no.json).toMatchObject({ code: 7, msg: expect.stringContaining('selinuxContext: this host has no SELinux') });
    expect(k.state().links).toEqual(world().links);
    expect(ipam.held.size).toBe(0);
    selinux = true;
    const yes = await call('ADD', c);
    expect(yes.code, JSON.stringify(yes.json)).toBe(0);
    // The kernel does not report the label; the flags are the reference's `ip tuntap` path's.
    expect(k.state().links.find((l) => l.name === 'eth0')?.tap).toEqual({ multiQueue: false, vnetHdr: false, pi: false });
    expect((await call('DEL', c)).code).toBe(0);
  });

  it.each([
    [{ bridge: 'nope0' }, 'bridge: failed to find "nope0"'],
    [{ bridge: 'd0' }, 'bridge: "d0"'],
    [{ bridge: 'a b' }, 'bridge: "a b" contains whitespace'],
    [{ mac: '01:00:00:00:00:01' }, 'mac: 01:00:00:00:00:01 is a multicast address'],
    [{ runtimeConfig: { mac: 'x' } }, 'runtimeConfig.mac: "x" is not a MAC address'],
    [{ mtu: 1.5 }, 'mtu: must be an integer'],
    [{ owner: 2 ** 32 }, 'owner: must be an integer between 0 and 4294967295'],
    [{ ipam: { type: 'dhcp' } }, 'ipam.type: dhcp is not supported with tap'],
    [{ ipam: [] }, 'ipam: must be an object'],
    [{ dns: 'x' }, 'dns: must be an object'],
  ])('bad input %j: code 7 naming the field, nothing changed, no address held', async (extra, msg) => {
    const r = await call('ADD', tconf(extra));
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining(msg) });
    expect(k.state()).toEqual(world());
    expect(ipam.held.size).toBe(0);
  });
});
