// Kernel end-to-end tests of felt's bridge plugin (with felt's host-local): every test builds its own "host"
// namespace (where the plugin runs, so the bridge, the host veths and the iptables rules land there) and pod
// namespaces, and removes them afterwards. Needs root, iproute2, iptables and a build (`npm run build`).

import { writeFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import {
  addrs,
  cni,
  cniChains,
  cniRules,
  exec,
  feltAllocations,
  iptSave,
  link,
  links,
  nsPath,
  nsRun,
  ping,
  routes,
  Sandbox,
  veths,
  type Call,
} from '../support/ns.ts';

const VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
const atLeast040 = (v: string): boolean => v !== '0.3.0' && v !== '0.3.1';

interface Opts {
  readonly version?: string;
  readonly name?: string;
  readonly bridge?: string;
  readonly dataDir: string;
  /** host-local ranges; one range set per entry. */
  readonly subnets?: readonly string[];
  readonly extra?: Record<string, unknown>;
}

const bridgeConf = (o: Opts): Record<string, unknown> => ({
  cniVersion: o.version ?? '1.0.0',
  name: o.name ?? 'feltnet',
  type: 'bridge',
  ...(o.bridge ? { bridge: o.bridge } : {}),
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: (o.subnets ?? ['10.88.0.0/24']).map((subnet) => [{ subnet }]), dataDir: o.dataDir },
  ...o.extra,
});

const felt = (hostNs: string, pod: string, cid: string, more: Partial<Call> = {}): Call => ({ dir: FELT_CNI, hostNs, pod, cid, ...more });

/** The host namespace holds no veth, no CNI- chain, no jump to one, and the data dir no allocation. */
async function expectClean(hostNs: string, dataDir: string): Promise<void> {
  expect(await veths(hostNs)).toEqual([]);
  expect(await cniChains(hostNs)).toEqual([]);
  expect(await cniRules(hostNs)).toEqual([]);
  expect(await feltAllocations(dataDir)).toEqual([]);
}

const ipOf = (cidr: string): string => cidr.split('/')[0]!;

describe.each(VERSIONS)('bridge + host-local at cniVersion %s', (version) => {
  const sb = new Sandbox();
  let host = '';
  let pod1 = '';
  let pod2 = '';
  let dataDir = '';
  let conf: Record<string, unknown> = {};
  let r1: any;
  let r2: any;

  beforeAll(async () => {
    host = await sb.ns();
    pod1 = await sb.ns();
    pod2 = await sb.ns();
    dataDir = sb.dir();
    conf = bridgeConf({ version, dataDir, subnets: ['10.88.0.0/24'] });
  });
  afterAll(() => sb.cleanup());

  it('ADD attaches two pods with a result in the shape of the version', async () => {
    const a = await cni(felt(host, pod1, 'ctr-a'), 'ADD', conf);
    expect(a.stderr).toBe('');
    expect(a.code).toBe(0);
    const b = await cni(felt(host, pod2, 'ctr-b'), 'ADD', conf);
    expect(b.code).toBe(0);
    r1 = a.json;
    r2 = b.json;
    for (const [r, pod] of [
      [r1, pod1],
      [r2, pod2],
    ] as const) {
      expect(r.cniVersion).toBe(version);
      expect(r.interfaces).toHaveLength(3);
      expect(r.interfaces[0]).toEqual({ name: 'cni0', mac: expect.stringMatching(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/) });
      expect(r.interfaces[1]).toEqual({ name: expect.stringMatching(/^veth[0-9a-f]{8}$/), mac: expect.any(String) });
      expect(r.interfaces[2]).toEqual({ name: 'eth0', mac: expect.any(String), sandbox: nsPath(pod) });
      expect(r.ips).toHaveLength(1);
      const want: Record<string, unknown> = { address: expect.stringMatching(/^10\.88\.0\.\d+\/24$/), gateway: '10.88.0.1', interface: 2 };
      // 0.3.x and 0.4.0 results carry ips[].version; 1.x results do not.
      expect(r.ips[0]).toEqual(version.startsWith('1.') ? want : { ...want, version: '4' });
      expect(r.routes).toBeUndefined();
      expect(r.dns).toBeUndefined();
    }
    expect(r1.ips[0].address).not.toBe(r2.ips[0].address);
    expect(r1.interfaces[1].name).not.toBe(r2.interfaces[1].name);
  });

  it('configures the kernel as the results say', async () => {
    expect((await addrs(pod1))['eth0']).toEqual([r1.ips[0].address]);
    expect((await addrs(pod2))['eth0']).toEqual([r2.ips[0].address]);
    expect((await link(pod1, 'eth0'))?.address).toBe(r1.interfaces[2].mac);
    expect((await addrs(host))['cni0']).toEqual(['10.88.0.1/24']);
    const hostVeth = await link(host, r1.interfaces[1].name);
    expect(hostVeth?.master).toBe('cni0');
    expect(hostVeth?.flags).toContain('UP');
    expect((await veths(host)).sort()).toEqual([r1.interfaces[1].name, r2.interfaces[1].name].sort());
    expect(await cniChains(host)).toHaveLength(2);
  });

  it('pods reach each other and the gateway', async () => {
    expect(await ping(pod1, ipOf(r2.ips[0].address))).toBe(true);
    expect(await ping(pod2, ipOf(r1.ips[0].address))).toBe(true);
    expect(await ping(pod1, '10.88.0.1')).toBe(true);
  });

  it(atLeast040(version) ? 'CHECK passes with prevResult = the ADD result' : 'CHECK is refused below 0.4.0 (code 1)', async () => {
    const c1 = await cni(felt(host, pod1, 'ctr-a'), 'CHECK', { ...conf, prevResult: r1 });
    const c2 = await cni(felt(host, pod2, 'ctr-b'), 'CHECK', { ...conf, prevResult: r2 });
    if (atLeast040(version)) {
      expect(c1.stdout).toBe('');
      expect(c1.code).toBe(0);
      expect(c2.code).toBe(0);
    } else {
      expect(c1.code).toBe(1);
      expect(c1.json.code).toBe(1);
    }
  });

  it('DEL removes the attachment; a second DEL succeeds', async () => {
    const d = await cni(felt(host, pod1, 'ctr-a'), 'DEL', conf);
    expect(d.stdout).toBe('');
    expect(d.code).toBe(0);
    expect(await link(pod1, 'eth0')).toBeUndefined();
    expect(await veths(host)).toEqual([r2.interfaces[1].name]);
    expect(await cniChains(host)).toHaveLength(1);
    expect((await feltAllocations(dataDir)).map((a) => a.containerId)).toEqual(['ctr-b']);
    const again = await cni(felt(host, pod1, 'ctr-a'), 'DEL', conf);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('');
  });

  it('DEL after the pod namespace is gone succeeds and removes the masquerade chain and rule', async () => {
    await sb.delNs(pod2);
    const d = await cni(felt(host, pod2, 'ctr-b'), 'DEL', conf);
    expect(d.code).toBe(0);
    // The reference bridge cannot read the pod's addresses any more and leaks both (see diff-bridge.test.ts).
    expect(await cniChains(host)).toEqual([]);
    expect(await cniRules(host)).toEqual([]);
  });

  it('DEL with an empty CNI_NETNS succeeds', async () => {
    expect((await cni(felt(host, '', 'ctr-b'), 'DEL', conf)).code).toBe(0);
    expect((await cni(felt(host, '', 'never-added'), 'DEL', conf)).code).toBe(0);
  });

  it('leaves no veth, no CNI- chain and no allocation', async () => {
    // pod2's host veth goes with its namespace, which the kernel removes asynchronously.
    await eventually(() => expectClean(host, dataDir), { what: `no veth, CNI- chain or allocation left in ${host}` });
    // The bridge is shared by attachments and stays, as with the reference.
    expect((await links(host)).map((l) => l.ifname)).toContain('cni0');
  });
});

describe('bridge options', () => {
  const sb = new Sandbox();
  afterEach(() => sb.cleanup());

  it('DEL with an empty CNI_NETNS of a live attachment releases the address and the masquerade chain', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ dataDir });
    expect((await cni(felt(host, pod, 'c1'), 'ADD', conf)).code).toBe(0);
    expect(await cniChains(host)).toHaveLength(1);
    expect((await cni(felt(host, '', 'c1'), 'DEL', conf)).code).toBe(0);
    expect(await cniChains(host)).toEqual([]);
    expect(await cniRules(host)).toEqual([]);
    expect(await feltAllocations(dataDir)).toEqual([]);
    // Without the namespace the veth cannot be found; it goes with the pod namespace.
    await sb.delNs(pod);
    await eventually(() => expectClean(host, dataDir), { what: `the deleted pod namespace ${pod} takes its host veth from ${host}` });
  });

  it('mtu: both veth ends (and the 1.1.0 result) carry it', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ version: '1.1.0', dataDir, extra: { mtu: 1400 } });
    const r = await cni(felt(host, pod, 'c1'), 'ADD', conf);
    expect(r.code).toBe(0);
    expect(r.json.interfaces[2].mtu).toBe(1400);
    expect((await link(pod, 'eth0'))?.mtu).toBe(1400);
    expect((await link(host, r.json.interfaces[1].name))?.mtu).toBe(1400);
    expect((await cni(felt(host, pod, 'c1'), 'CHECK', { ...conf, prevResult: r.json })).code).toBe(0);
    expect((await cni(felt(host, pod, 'c1'), 'DEL', conf)).code).toBe(0);
    await expectClean(host, dataDir);
  });

  it('hairpinMode turns hairpin on for the host veth', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ dataDir, extra: { hairpinMode: true } });
    const r = await cni(felt(host, pod, 'c1'), 'ADD', conf);
    expect(r.code).toBe(0);
    const hv = await link(host, r.json.interfaces[1].name);
    expect(hv?.linkinfo?.info_slave_kind).toBe('bridge');
    expect(hv?.linkinfo?.info_slave_data?.hairpin).toBe(true);
    expect((await cni(felt(host, pod, 'c1'), 'CHECK', { ...conf, prevResult: r.json })).code).toBe(0);
    expect((await cni(felt(host, pod, 'c1'), 'DEL', conf)).code).toBe(0);
  });

  it('promiscMode puts the bridge in promiscuous mode', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ dataDir, bridge: 'brp', extra: { promiscMode: true } });
    const r = await cni(felt(host, pod, 'c1'), 'ADD', conf);
    expect(r.code).toBe(0);
    expect((await link(host, 'brp'))?.flags).toContain('PROMISC');
    expect((await link(host, r.json.interfaces[1].name))?.linkinfo?.info_slave_data?.hairpin).toBe(false);
    expect((await cni(felt(host, pod, 'c1'), 'DEL', conf)).code).toBe(0);
  });

  it('mac: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC', async () => {
    const host = await sb.ns();
    const dataDir = sb.dir();
    const [pa, pb, pc] = [await sb.ns(), await sb.ns(), await sb.ns()];
    const base = bridgeConf({ dataDir });
    const cases: [string, string, Record<string, unknown>, string][] = [
      [pa, 'ca', { runtimeConfig: { mac: '02:00:00:00:00:aa' }, args: { cni: { mac: '02:00:00:00:00:bb' } } }, '02:00:00:00:00:aa'],
      [pb, 'cb', { args: { cni: { mac: '02:00:00:00:00:bb' } } }, '02:00:00:00:00:bb'],
      [pc, 'cc', {}, '02:00:00:00:00:cc'],
    ];
    for (const [pod, cid, extra, want] of cases) {
      const conf = { ...base, ...extra };
      const r = await cni(felt(host, pod, cid, { args: 'IgnoreUnknown=1;MAC=02:00:00:00:00:cc' }), 'ADD', conf);
      expect(r.code, r.stdout).toBe(0);
      expect(r.json.interfaces[2].mac).toBe(want);
      expect((await link(pod, 'eth0'))?.address).toBe(want);
      expect((await cni(felt(host, pod, cid, { args: 'IgnoreUnknown=1;MAC=02:00:00:00:00:cc' }), 'DEL', conf)).code).toBe(0);
    }
    await expectClean(host, dataDir);
  });

  it('isDefaultGateway adds a default route via the gateway', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ dataDir, extra: { isDefaultGateway: true } });
    const r = await cni(felt(host, pod, 'c1'), 'ADD', conf);
    expect(r.code).toBe(0);
    expect(r.json.routes).toEqual([{ dst: '0.0.0.0/0', gw: '10.88.0.1' }]);
    expect(await routes(pod)).toContain('default via 10.88.0.1 dev eth0');
    expect((await cni(felt(host, pod, 'c1'), 'DEL', conf)).code).toBe(0);
  });

  it('forceAddress: a bridge with another address is an error naming it, or is re-addressed', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    await nsRun(host, ['ip', 'link', 'add', 'brf', 'type', 'bridge']);
    await nsRun(host, ['ip', 'addr', 'add', '10.99.0.1/24', 'dev', 'brf']);
    const conf = bridgeConf({ dataDir, bridge: 'brf' });
    const bad = await cni(felt(host, pod, 'c1'), 'ADD', conf);
    expect(bad.code).toBe(1);
    expect(bad.json.code).toBe(7);
    expect(bad.json.msg).toContain('"brf"');
    expect(bad.json.msg).toContain('10.99.0.1/24');
    expect((await addrs(host))['brf']).toEqual(['10.99.0.1/24']);
    expect(await link(pod, 'eth0')).toBeUndefined();
    await expectClean(host, dataDir);

    const forced = await cni(felt(host, pod, 'c1'), 'ADD', { ...conf, forceAddress: true });
    expect(forced.code, forced.stdout).toBe(0);
    expect((await addrs(host))['brf']).toEqual(['10.88.0.1/24']);
    expect((await cni(felt(host, pod, 'c1'), 'DEL', conf)).code).toBe(0);
    await expectClean(host, dataDir);
  });

  it('IPv6 only: pods ping each other over IPv6', async () => {
    const [host, p1, p2, dataDir] = [await sb.ns(), await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ dataDir, subnets: ['fd00:88::/64'], extra: { isDefaultGateway: true } });
    const a = await cni(felt(host, p1, 'c1'), 'ADD', conf);
    const b = await cni(felt(host, p2, 'c2'), 'ADD', conf);
    expect(a.code, a.stdout).toBe(0);
    expect(b.code).toBe(0);
    expect(a.json.ips).toEqual([{ address: 'fd00:88::2/64', gateway: 'fd00:88::1', interface: 2 }]);
    expect(a.json.routes).toEqual([{ dst: '::/0', gw: 'fd00:88::1' }]);
    expect((await addrs(host))['cni0']).toEqual(['fd00:88::1/64']);
    expect(await ping(p1, 'fd00:88::3')).toBe(true);
    expect((await cni(felt(host, p1, 'c1'), 'CHECK', { ...conf, prevResult: a.json })).code).toBe(0);
    expect((await cni(felt(host, p1, 'c1'), 'DEL', conf)).code).toBe(0);
    expect((await cni(felt(host, p2, 'c2'), 'DEL', conf)).code).toBe(0);
    await expectClean(host, dataDir);
  });

  it('dual stack: one address per family, pods ping each other over both', async () => {
    const [host, p1, p2, dataDir] = [await sb.ns(), await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ dataDir, subnets: ['10.88.0.0/24', 'fd00:88::/64'] });
    const a = await cni(felt(host, p1, 'c1'), 'ADD', conf);
    const b = await cni(felt(host, p2, 'c2'), 'ADD', conf);
    expect(a.code, a.stdout).toBe(0);
    expect(b.code).toBe(0);
    expect(b.json.ips.map((i: { address: string }) => i.address)).toEqual(['10.88.0.3/24', 'fd00:88::3/64']);
    expect((await addrs(host))['cni0']).toEqual(['10.88.0.1/24', 'fd00:88::1/64']);
    expect(await ping(p1, '10.88.0.3')).toBe(true);
    expect(await ping(p1, 'fd00:88::3')).toBe(true);
    // Both families masquerade through a chain of the same name.
    expect((await cniChains(host)).length).toBe(4);
    expect((await cni(felt(host, p1, 'c1'), 'CHECK', { ...conf, prevResult: a.json })).code).toBe(0);
    expect((await cni(felt(host, p1, 'c1'), 'DEL', conf)).code).toBe(0);
    expect((await cni(felt(host, p2, 'c2'), 'DEL', conf)).code).toBe(0);
    await expectClean(host, dataDir);
  });

  it('ipMasq false: no chain, no rule', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ dataDir, extra: { ipMasq: false } });
    const r = await cni(felt(host, pod, 'c1'), 'ADD', conf);
    expect(r.code).toBe(0);
    expect(await cniChains(host)).toEqual([]);
    expect(await cniRules(host)).toEqual([]);
    expect((await cni(felt(host, pod, 'c1'), 'CHECK', { ...conf, prevResult: r.json })).code).toBe(0);
    expect((await cni(felt(host, pod, 'c1'), 'DEL', conf)).code).toBe(0);
  });

  it('disableContainerInterface leaves the pod interface down (layer 2 only)', async () => {
    const [host, pod] = [await sb.ns(), await sb.ns()];
    // No IPAM plugin; ipam.dataDir says where the bridge records its attachments.
    const conf = {
      cniVersion: '1.0.0',
      name: 'l2net',
      type: 'bridge',
      bridge: 'brl2',
      disableContainerInterface: true,
      ipam: { dataDir: sb.dir() },
    };
    const r = await cni(felt(host, pod, 'c1'), 'ADD', conf);
    expect(r.code, r.stdout).toBe(0);
    expect((await link(pod, 'eth0'))?.flags).not.toContain('UP');
    const hv = await link(host, r.json.interfaces[1].name);
    expect(hv?.flags).toContain('UP');
    expect(hv?.master).toBe('brl2');
    expect((await cni(felt(host, pod, 'c1'), 'CHECK', { ...conf, prevResult: r.json })).code).toBe(0);
    expect((await cni(felt(host, pod, 'c1'), 'DEL', conf)).code).toBe(0);
    expect(await veths(host)).toEqual([]);
  });

  it('an L2-only bridge (no ipam) attaches pods without addresses; they talk once given some', async () => {
    const [host, p1, p2] = [await sb.ns(), await sb.ns(), await sb.ns()];
    const conf = { cniVersion: '1.0.0', name: 'l2net', type: 'bridge', bridge: 'brl2', ipam: { dataDir: sb.dir() } };
    const a = await cni(felt(host, p1, 'c1'), 'ADD', conf);
    const b = await cni(felt(host, p2, 'c2'), 'ADD', conf);
    expect(a.code, a.stdout).toBe(0);
    expect(b.code).toBe(0);
    expect(a.json.ips).toBeUndefined();
    expect(a.json.interfaces.map((i: { name: string }) => i.name)[0]).toBe('brl2');
    expect((await addrs(p1))['eth0']).toBeUndefined();
    expect((await addrs(host))['brl2']).toBeUndefined();
    await nsRun(p1, ['ip', 'addr', 'add', '10.66.0.1/24', 'dev', 'eth0']);
    await nsRun(p2, ['ip', 'addr', 'add', '10.66.0.2/24', 'dev', 'eth0']);
    expect(await ping(p1, '10.66.0.2')).toBe(true);
    expect((await cni(felt(host, p1, 'c1'), 'DEL', conf)).code).toBe(0);
    expect((await cni(felt(host, p2, 'c2'), 'DEL', conf)).code).toBe(0);
    expect(await veths(host)).toEqual([]);
  });
});

describe('concurrency', () => {
  const sb = new Sandbox();
  afterAll(() => sb.cleanup());

  it('six parallel ADDs on a fresh host (racing to create the bridge and its address) all succeed; six parallel DELs clean up', async () => {
    const host = await sb.ns();
    const dataDir = sb.dir();
    const pods: string[] = [];
    for (let i = 0; i < 6; i++) pods.push(await sb.ns());
    const conf = bridgeConf({ dataDir });
    const adds = await Promise.all(pods.map((p, i) => cni(felt(host, p, `par-${i}`), 'ADD', conf)));
    expect(adds.map((a) => a.json?.msg ?? a.code)).toEqual(pods.map(() => 0));
    const ips = adds.map((a) => a.json.ips[0].address);
    expect(new Set(ips).size).toBe(6);
    // Every result names the bridge with the MAC it really has.
    const br = await link(host, 'cni0');
    for (const a of adds) expect(a.json.interfaces[0].mac).toBe(br?.address);
    expect((await veths(host)).length).toBe(6);
    expect(await cniChains(host)).toHaveLength(6);
    expect(await ping(pods[0]!, ipOf(ips[5]!))).toBe(true);
    const dels = await Promise.all(pods.map((p, i) => cni(felt(host, p, `par-${i}`), 'DEL', conf)));
    expect(dels.map((d) => d.code)).toEqual(pods.map(() => 0));
    await expectClean(host, dataDir);
  });
});

describe('CHECK names what drifted (code 103)', () => {
  const sb = new Sandbox();
  let host = '';
  let pod = '';
  let conf: Record<string, unknown> = {};
  let r: any;
  beforeAll(async () => {
    [host, pod] = [await sb.ns(), await sb.ns()];
    conf = bridgeConf({ dataDir: sb.dir(), extra: { mtu: 1400, isDefaultGateway: true } });
    r = (await cni(felt(host, pod, 'c1'), 'ADD', conf)).json;
  });
  afterAll(() => sb.cleanup());
  const check = () => cni(felt(host, pod, 'c1'), 'CHECK', { ...conf, prevResult: r });

  it('passes before any drift', async () => {
    expect((await check()).code).toBe(0);
  });

  it('a deleted default route', async () => {
    await nsRun(pod, ['ip', 'route', 'del', 'default']);
    const c = await check();
    expect(c.code).toBe(1);
    expect(c.json.code).toBe(103);
    expect(c.json.msg).toMatch(/missing route 0\.0\.0\.0\/0 via 10\.88\.0\.1/);
    await nsRun(pod, ['ip', 'route', 'add', 'default', 'via', '10.88.0.1']);
    expect((await check()).code).toBe(0);
  });

  it('a wrong MTU', async () => {
    await nsRun(pod, ['ip', 'link', 'set', 'eth0', 'mtu', '1300']);
    const c = await check();
    expect(c.json.code).toBe(103);
    expect(c.json.msg).toContain('wrong MTU on eth0: 1300, want 1400');
    await nsRun(pod, ['ip', 'link', 'set', 'eth0', 'mtu', '1400']);
    expect((await check()).code).toBe(0);
  });

  it('a deleted masquerade POSTROUTING rule', async () => {
    const jumps = async () => (await cniRules(host)).filter((l) => l.startsWith('-A POSTROUTING'));
    const [rule] = await jumps();
    expect(rule).toBeDefined();
    await nsRun(host, ['iptables-restore', '--noflush'], `*nat\n${rule!.replace(/^-A/, '-D')}\nCOMMIT\n`);
    expect(await jumps()).toEqual([]);
    const c = await check();
    expect(c.json.code).toBe(103);
    expect(c.json.msg).toContain('missing iptables rule in nat/POSTROUTING');
    expect(c.json.msg).toContain(ipOf(r.ips[0].address));
  });
});

describe('an ADD that fails part-way leaves nothing behind', () => {
  const sb = new Sandbox();
  afterEach(() => sb.cleanup());

  it('the interface name already exists in the pod: code 104, and that interface is kept', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    await nsRun(pod, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
    const before = await link(pod, 'eth0');
    const r = await cni(felt(host, pod, 'c1'), 'ADD', bridgeConf({ dataDir }));
    expect(r.code).toBe(1);
    expect(r.json.code).toBe(104);
    expect(r.json.msg).toContain('eth0');
    // The pod's own eth0 is not felt's: it must survive the rollback.
    expect((await link(pod, 'eth0'))?.address).toBe(before?.address);
    expect((await veths(pod)).sort()).toEqual(['eth0', 'eth0peer']);
    await expectClean(host, dataDir);
  });

  it('the bridge name is taken by a veth: an error naming it', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    await nsRun(host, ['ip', 'link', 'add', 'brx', 'type', 'veth', 'peer', 'name', 'brxpeer']);
    const r = await cni(felt(host, pod, 'c1'), 'ADD', bridgeConf({ dataDir, bridge: 'brx' }));
    expect(r.code).toBe(1);
    expect(r.json.msg).toContain('"brx"');
    expect(r.json.msg).toContain('not a bridge');
    expect((await veths(host)).sort()).toEqual(['brx', 'brxpeer']);
    expect(await link(pod, 'eth0')).toBeUndefined();
    expect(await cniChains(host)).toEqual([]);
    expect(await feltAllocations(dataDir)).toEqual([]);
  });

  it('the kernel refuses the bridge address after the veth and the rules exist: rolled back, address released', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    // IPv6 off in the host namespace (only there): adding the IPv6 gateway address to the new bridge fails,
    // after the veth pair, the pod's addresses and the masquerade chains are in place.
    await nsRun(host, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    const r = await cni(felt(host, pod, 'c1'), 'ADD', bridgeConf({ dataDir, subnets: ['10.88.0.0/24', 'fd00:88::/64'] }));
    expect(r.code).toBe(1);
    expect(r.json.code).toBe(102);
    expect(r.json.msg).toContain('fd00:88::1/64');
    expect(r.stdout).not.toMatch(/\n\s+at /);
    expect(await link(pod, 'eth0')).toBeUndefined();
    await expectClean(host, dataDir);
  });

  it('vlan needs a VLAN-filtering bridge: where the kernel has none, an error naming the bridge, as the reference', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const probe = await exec(['ip', '-n', host, 'link', 'add', 'brprobe', 'type', 'bridge', 'vlan_filtering', '1']);
    for (const extra of [{ vlan: 100 }, { vlanTrunk: [{ id: 101 }] }]) {
      const r = await cni(felt(host, pod, 'c1'), 'ADD', bridgeConf({ dataDir, bridge: 'brvl', extra }));
      if (probe.code === 0) {
        // A kernel with bridge VLAN filtering: the bridge is made with it.
        expect(r.code, r.stdout).toBe(0);
        expect(await nsRun(host, ['ip', '-d', 'link', 'show', 'brvl'])).toContain('vlan_filtering 1');
        expect((await cni(felt(host, pod, 'c1'), 'DEL', bridgeConf({ dataDir, bridge: 'brvl', extra }))).code).toBe(0);
        await nsRun(host, ['ip', 'link', 'del', 'brvl']);
      } else {
        // Not silently attached without the VLAN: refused, rolled back, address released.
        expect(r.code).toBe(1);
        expect(r.json.code).toBe(102);
        expect(r.json.msg).toContain('brvl');
        expect(await link(host, 'brvl')).toBeUndefined();
        expect(await link(pod, 'eth0')).toBeUndefined();
      }
      await expectClean(host, dataDir);
    }
  });

  it('CNI_NETNS is not a network namespace: an error, and the address is given back', async () => {
    const [host, dataDir] = [await sb.ns(), sb.dir()];
    const notNs = `${dataDir}/not-a-netns`;
    writeFileSync(notNs, '');
    const r = await cni(felt(host, notNs, 'c1'), 'ADD', bridgeConf({ dataDir }));
    expect(r.code).toBe(1);
    expect(r.json.msg).toContain(notNs);
    await expectClean(host, dataDir);
  });
});

// Guard: nothing in this file may have run in the root namespace.
it('never touched the root namespace', async () => {
  const root = await exec(['ip', '-json', 'link', 'show']);
  const names = (JSON.parse(root.stdout) as { ifname: string }[]).map((l) => l.ifname);
  // The bridges only this file names (cni0 and veths could come from elsewhere on a shared machine).
  expect(names.filter((n) => /^br(p|f|x|xpeer|l2|vl|probe)$/.test(n))).toEqual([]);
});

describe('a network name and container id longer than an iptables comment (255 bytes)', () => {
  const sb = new Sandbox();
  afterAll(() => sb.cleanup());

  it('ADD, CHECK and DEL with ipMasq: CHECK passes (the comment is what the kernel keeps), DEL leaves nothing', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const conf = bridgeConf({ dataDir, name: `n${'e'.repeat(99)}`, subnets: ['10.88.4.0/24'] });
    const cid = `c${'0123456789'.repeat(20)}`;
    const add = await cni(felt(host, pod, cid), 'ADD', conf);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    // The masquerade rules are there, with the comment cut to 255 bytes.
    const rules = (await iptSave(host, 4)).filter((l) => l.includes('--comment'));
    expect(rules.length).toBeGreaterThan(0);
    for (const l of rules) expect(l).toContain(`id: \\"c0123456789`);
    const check = await cni(felt(host, pod, cid), 'CHECK', { ...conf, prevResult: add.json });
    expect(check.code, check.stdout + check.stderr).toBe(0);
    // portmap's DNAT comment too (the reference's trimComment makes 256 characters; the kernel keeps 255).
    const pm = {
      cniVersion: '1.0.0',
      name: conf['name'],
      type: 'portmap',
      capabilities: { portMappings: true },
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
    };
    const pmAdd = await cni(felt(host, pod, cid), 'ADD', { ...pm, prevResult: add.json });
    expect(pmAdd.code, pmAdd.stdout + pmAdd.stderr).toBe(0);
    expect((await iptSave(host, 4)).some((l) => l.startsWith('-A CNI-HOSTPORT-DNAT') && l.includes('dnat name:'))).toBe(true);
    const pmCheck = await cni(felt(host, pod, cid), 'CHECK', { ...pm, prevResult: add.json });
    expect(pmCheck.code, pmCheck.stdout + pmCheck.stderr).toBe(0);
    expect((await cni(felt(host, pod, cid), 'DEL', { ...pm, prevResult: add.json })).code).toBe(0);
    expect((await cni(felt(host, pod, cid), 'DEL', conf)).code).toBe(0);
    // Nothing left but portmap's shared chains (which the reference leaves too), empty.
    expect(await veths(host)).toEqual([]);
    expect((await cniChains(host)).filter((c) => !c.startsWith('CNI-HOSTPORT-'))).toEqual([]);
    expect((await iptSave(host, 4)).filter((l) => l.includes('--comment') && l.includes('name: '))).toEqual([]);
    expect(await feltAllocations(dataDir)).toEqual([]);
  });
});
