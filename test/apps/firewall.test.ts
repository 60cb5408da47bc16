// Kernel end-to-end tests of felt's firewall plugin through the real executable (dist/cni/firewall), chained
// after felt's bridge + host-local the way a runtime runs a conflist: the bridge's result is the firewall's
// prevResult, DEL runs in reverse order. Every test builds its own "host" namespace (where the plugins run and
// the rules land) and pod namespaces, plus an "outside" namespace joined to the host by a veth
// (198.51.100.0/24), and removes them afterwards. Bridged traffic passes the host's FORWARD chain
// (bridge-nf-call-iptables is 1 in a fresh namespace), so same-bridge and isolated can be seen by ping.

import { afterEach, describe, expect, it } from 'vitest';
import { FELT_CNI } from '../support/cni.ts';
import { cni, iptSave, nsRun, ping, Sandbox, type Call } from '../support/ns.ts';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

type Conf = Record<string, unknown>;

const bridgeConf = (version: string, dataDir: string, bridge: string, subnets: readonly string[]): Conf => ({
  cniVersion: version,
  name: `net-${bridge}`,
  type: 'bridge',
  bridge,
  isGateway: true,
  isDefaultGateway: true,
  ipam: { type: 'host-local', ranges: subnets.map((subnet) => [{ subnet }]), dataDir },
});

/** felt's firewall records its rules in felt's log: here, not in /var/lib/felt. */
const fwData = sb.dir();
const fwConf = (version: string, extra: Conf = {}): Conf => ({
  cniVersion: version,
  name: 'fwnet',
  type: 'firewall',
  dataDir: fwData,
  ...extra,
});

const call = (hostNs: string, pod: string, cid: string): Call => ({ dir: FELT_CNI, hostNs, pod, cid });

const ipOf = (r: any, family: 4 | 6 = 4): string =>
  (r.ips as { address: string }[]).map((i) => i.address.split('/')[0]!).find((a) => a.includes(':') === (family === 6))!;

/** The host's filter table (both families) without the builtin chains' policies: user chains and rules. */
async function fwLines(host: string): Promise<string[]> {
  const out: string[] = [];
  for (const f of [4, 6] as const) {
    for (const l of await iptSave(host, f, 'filter'))
      if (l.startsWith('-A ') || (l.startsWith(':') && !/^:(INPUT|FORWARD|OUTPUT) /.test(l))) out.push(`${f} ${l}`);
  }
  return out;
}

interface Pod {
  readonly ns: string;
  readonly cid: string;
  readonly bridgeConf: Conf;
  readonly result: any;
}

/** A host namespace with ip forwarding and an outside namespace routed to it. */
async function node(): Promise<{ host: string; outside: string }> {
  const host = await sb.ns();
  const outside = await sb.ns();
  await nsRun(host, ['ip', 'link', 'add', 'fwout0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside]);
  await nsRun(host, ['ip', 'addr', 'add', '198.51.100.1/24', 'dev', 'fwout0']);
  await nsRun(host, ['ip', 'link', 'set', 'fwout0', 'up']);
  await nsRun(outside, ['ip', 'addr', 'add', '198.51.100.2/24', 'dev', 'eth0']);
  await nsRun(outside, ['ip', 'link', 'set', 'eth0', 'up']);
  await nsRun(outside, ['ip', 'link', 'set', 'lo', 'up']);
  await nsRun(outside, ['ip', 'route', 'add', 'default', 'via', '198.51.100.1']);
  await nsRun(host, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  return { host, outside };
}

/** bridge + host-local ADD, then firewall ADD with the bridge's result as prevResult. */
async function attach(host: string, version: string, bc: Conf, fw: Conf, cid: string): Promise<Pod> {
  const ns = await sb.ns();
  const b = await cni(call(host, ns, cid), 'ADD', bc);
  expect(b.stderr).toBe('');
  expect(b.code).toBe(0);
  const f = await cni(call(host, ns, cid), 'ADD', { ...fw, prevResult: b.json });
  expect(f.stderr).toBe('');
  expect(f.code).toBe(0);
  // The result is the prevResult, passed through.
  expect(f.json).toEqual(b.json);
  expect(f.json.cniVersion).toBe(version);
  return { ns, cid, bridgeConf: bc, result: b.json };
}

describe('traffic', () => {
  it('same-bridge: pods on one bridge reach each other and the outside; pods on another bridge are cut off', async () => {
    const { host, outside } = await node();
    const dataDir = sb.dir();
    const fw = fwConf('1.0.0', { ingressPolicy: 'same-bridge' });
    const a1 = await attach(host, '1.0.0', bridgeConf('1.0.0', dataDir, 'fwa0', ['10.61.0.0/24']), fw, 'a1');
    const a2 = await attach(host, '1.0.0', bridgeConf('1.0.0', dataDir, 'fwa0', ['10.61.0.0/24']), fw, 'a2');
    // A pod on the second bridge, before its own firewall ADD: the first bridge's isolation already applies.
    const bns = await sb.ns();
    const bc = bridgeConf('1.0.0', dataDir, 'fwb0', ['10.62.0.0/24']);
    const b = await cni(call(host, bns, 'b1'), 'ADD', bc);
    expect(b.code).toBe(0);
    // Control: nothing isolates fwb0 yet, and the outside reaches it.
    expect(await ping(outside, ipOf(b.json))).toBe(true);
    expect((await cni(call(host, bns, 'b1'), 'ADD', { ...fw, prevResult: b.json })).code).toBe(0);

    expect(await ping(a1.ns, ipOf(a2.result))).toBe(true);
    expect(await ping(a2.ns, ipOf(a1.result))).toBe(true);
    expect(await ping(a1.ns, '198.51.100.2')).toBe(true);
    expect(await ping(outside, ipOf(a1.result))).toBe(true);
    expect(await ping(outside, ipOf(b.json))).toBe(true);
    // Across bridges: dropped in CNI-ISOLATION-STAGE-2, both ways.
    expect(await ping(a1.ns, ipOf(b.json), 1)).toBe(false);
    expect(await ping(bns, ipOf(a2.result), 1)).toBe(false);

    // DEL of the firewall leaves the isolation (the bridge may still have pods), as the reference does.
    expect((await cni(call(host, a1.ns, 'a1'), 'DEL', { ...fw, prevResult: a1.result })).code).toBe(0);
    expect(await ping(bns, ipOf(a2.result), 1)).toBe(false);
    expect((await fwLines(host)).filter((l) => l.includes(ipOf(a1.result)))).toEqual([]);
  });

  it('same-bridge over IPv6: ip6tables isolates the bridges too', async () => {
    const { host } = await node();
    const dataDir = sb.dir();
    const fw = fwConf('1.0.0', { ingressPolicy: 'same-bridge' });
    const a1 = await attach(host, '1.0.0', bridgeConf('1.0.0', dataDir, 'fw6a0', ['fd00:61::/64']), fw, 'a1');
    const a2 = await attach(host, '1.0.0', bridgeConf('1.0.0', dataDir, 'fw6a0', ['fd00:61::/64']), fw, 'a2');
    const bns = await sb.ns();
    const b = await cni(call(host, bns, 'b1'), 'ADD', bridgeConf('1.0.0', dataDir, 'fw6b0', ['fd00:62::/64']));
    expect(b.code).toBe(0);
    await nsRun(host, ['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
    // Pods on one bridge reach each other over IPv6.
    expect(await ping(a1.ns, ipOf(a2.result, 6))).toBe(true);
    expect((await cni(call(host, bns, 'b1'), 'ADD', { ...fw, prevResult: b.json })).code).toBe(0);
    expect(await ping(a2.ns, ipOf(a1.result, 6))).toBe(true);
    expect(await ping(a1.ns, ipOf(b.json, 6), 1)).toBe(false);
    expect(await ping(bns, ipOf(a1.result, 6), 1)).toBe(false);
    // Without the isolation rules (a control on the same namespaces), the bridges reach each other.
    await nsRun(host, ['ip6tables', '-F', 'CNI-ISOLATION-STAGE-2']);
    expect(await ping(bns, ipOf(a1.result, 6))).toBe(true);
  });

  it('isolated: pods on the same bridge are cut off from each other, not from the outside', async () => {
    const { host, outside } = await node();
    const dataDir = sb.dir();
    const fw = fwConf('1.1.0', { ingressPolicy: 'isolated' });
    const bc = bridgeConf('1.1.0', dataDir, 'fwi0', ['10.63.0.0/24']);
    const p1 = await attach(host, '1.1.0', bc, fw, 'i1');
    const p2 = await attach(host, '1.1.0', bc, fw, 'i2');
    expect(await ping(p1.ns, '198.51.100.2')).toBe(true);
    expect(await ping(outside, ipOf(p2.result))).toBe(true);
    expect(await ping(p1.ns, ipOf(p2.result), 1)).toBe(false);
    expect(await ping(p2.ns, ipOf(p1.result), 1)).toBe(false);
  });

  it('open with FORWARD policy DROP: CNI-FORWARD lets the pod out and its replies in; new connections in stay blocked', async () => {
    const { host, outside } = await node();
    await nsRun(host, ['iptables', '-P', 'FORWARD', 'DROP']);
    const dataDir = sb.dir();
    const bc = bridgeConf('0.4.0', dataDir, 'fwo0', ['10.64.0.0/24']);
    const ns = await sb.ns();
    const b = await cni(call(host, ns, 'o1'), 'ADD', bc);
    expect(b.code).toBe(0);
    // Before the firewall: FORWARD drops everything.
    expect(await ping(ns, '198.51.100.2', 1)).toBe(false);
    const fw = fwConf('0.4.0');
    expect((await cni(call(host, ns, 'o1'), 'ADD', { ...fw, prevResult: b.json })).code).toBe(0);
    expect(await ping(ns, '198.51.100.2')).toBe(true);
    expect(await ping(outside, ipOf(b.json), 1)).toBe(false);
    // The administrator's override in CNI-ADMIN comes first: dropping the pod's traffic there wins.
    await nsRun(host, ['iptables', '-A', 'CNI-ADMIN', '-s', ipOf(b.json), '-j', 'DROP']);
    expect(await ping(ns, '198.51.100.2', 1)).toBe(false);
    await nsRun(host, ['iptables', '-D', 'CNI-ADMIN', '-s', ipOf(b.json), '-j', 'DROP']);
    expect(await ping(ns, '198.51.100.2')).toBe(true);
    // DEL takes the pod's rules away: dropped again; CNI-ADMIN, the jumps and CNI-FORWARD stay.
    expect((await cni(call(host, ns, 'o1'), 'DEL', { ...fw, prevResult: b.json })).code).toBe(0);
    expect(await ping(ns, '198.51.100.2', 1)).toBe(false);
    expect(await fwLines(host)).toEqual(
      [
        '4 :CNI-ADMIN - [0:0]',
        '4 :CNI-FORWARD - [0:0]',
        '4 -A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
        '4 -A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN',
      ].map((l) => l.replace(/ \[0:0\]$/, '')),
    );
  });
});

describe.each(['0.4.0', '1.0.0', '1.1.0'] as const)('ADD, CHECK, DEL, DEL at cniVersion %s (dual stack)', (version) => {
  it('passes prevResult through, CHECK finds the rules, DEL removes exactly them, twice', async () => {
    const { host } = await node();
    const dataDir = sb.dir();
    const bc = bridgeConf(version, dataDir, 'fwv0', ['10.65.0.0/24', 'fd00:65::/64']);
    const fw = fwConf(version, { ingressPolicy: 'same-bridge', iptablesAdminChainName: 'MY-ADMIN' });
    const p = await attach(host, version, bc, fw, 'v1');
    const [v4, v6] = [ipOf(p.result, 4), ipOf(p.result, 6)];
    const lines = await fwLines(host);
    for (const f of [4, 6] as const) {
      const ip = f === 4 ? `${v4}/32` : `${v6}/128`;
      expect(lines).toContain(`${f} -A CNI-FORWARD -d ${ip} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`);
      expect(lines).toContain(`${f} -A CNI-FORWARD -s ${ip} -j ACCEPT`);
      expect(lines).toContain(`${f} -A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j MY-ADMIN`);
      expect(lines).toContain(`${f} :MY-ADMIN -`);
    }
    const conf = { ...fw, prevResult: p.result };
    const c = await cni(call(host, p.ns, 'v1'), 'CHECK', conf);
    expect(c.stdout).toBe('');
    expect(c.code).toBe(0);

    // Drift: the administrator removes the pod's rule; CHECK names it (code 103); ADD again repairs it.
    await nsRun(host, ['ip6tables', '-D', 'CNI-FORWARD', '-s', `${v6}/128`, '-j', 'ACCEPT']);
    const bad = await cni(call(host, p.ns, 'v1'), 'CHECK', conf);
    expect(bad.code).toBe(1);
    expect(bad.json).toMatchObject({
      code: 103,
      msg: expect.stringContaining(`missing iptables rule in filter/CNI-FORWARD (IPv6): -s ${v6}/128 -j ACCEPT`),
    });
    expect((await cni(call(host, p.ns, 'v1'), 'ADD', conf)).code).toBe(0);
    expect(await fwLines(host)).toEqual(lines);
    expect((await cni(call(host, p.ns, 'v1'), 'CHECK', conf)).code).toBe(0);

    const d = await cni(call(host, p.ns, 'v1'), 'DEL', conf);
    expect(d.stdout).toBe('');
    expect(d.code).toBe(0);
    const after = await fwLines(host);
    expect(after).toEqual(lines.filter((l) => !l.includes(`${v4}/32`) && !l.includes(`${v6}/128`)));
    const again = await cni(call(host, p.ns, 'v1'), 'DEL', conf);
    expect(again.code).toBe(0);
    expect(await fwLines(host)).toEqual(after);
    // The pod namespace gone does not matter to the firewall's DEL.
    await sb.delNs(p.ns);
    expect((await cni(call(host, p.ns, 'v1'), 'DEL', conf)).code).toBe(0);
    expect((await cni(call(host, '', 'v1'), 'DEL', conf)).code).toBe(0);
    const gone = await cni(call(host, p.ns, 'v1'), 'CHECK', conf);
    expect(gone.json).toMatchObject({
      code: 103,
      msg: expect.stringContaining(`missing iptables rule in filter/CNI-FORWARD: -s ${v4}/32 -j ACCEPT`),
    });
    // The bridge's own DEL, last, as a runtime runs the list backwards.
    expect((await cni(call(host, '', 'v1'), 'DEL', bc)).code).toBe(0);
  });
});

describe('bad input changes nothing', () => {
  it.each([
    ['missing prevResult', (_prev: unknown) => fwConf('1.0.0'), 7, /^prevResult: missing prevResult/],
    [
      'bad ingressPolicy',
      (prev: unknown) => fwConf('1.0.0', { ingressPolicy: 'bogus', prevResult: prev }),
      7,
      /^ingressPolicy: unknown ingress policy "bogus"/,
    ],
    [
      'firewalld backend',
      (prev: unknown) => fwConf('1.0.0', { backend: 'firewalld', prevResult: prev }),
      7,
      /^backend: "firewalld" is not supported/,
    ],
    ['unknown backend', (prev: unknown) => fwConf('1.0.0', { backend: 'nft', prevResult: prev }), 7, /^backend: unknown backend "nft"/],
    [
      'a prevResult that does not parse',
      (_prev: unknown) => fwConf('1.0.0', { prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.66.0.5/24 -j DROP' }] } }),
      7,
      /^prevResult: ips\[0\]\.address/,
    ],
    [
      'an admin chain name that is not one word',
      (prev: unknown) => fwConf('1.0.0', { iptablesAdminChainName: 'A B', prevResult: prev }),
      7,
      /^iptablesAdminChainName: "A B"/,
    ],
    ['cniVersion 0.3.1', (prev: unknown) => ({ ...fwConf('0.3.1'), prevResult: prev }), 1, /incompatible CNI versions/],
  ])('%s: the right code, a message naming the field, no rule, no chain', async (_t, make, code, msg) => {
    const { host } = await node();
    const ns = await sb.ns();
    const b = await cni(call(host, ns, 'x1'), 'ADD', bridgeConf('1.0.0', sb.dir(), 'fwx0', ['10.66.0.0/24']));
    expect(b.code).toBe(0);
    const before = await Promise.all([iptSave(host, 4, 'filter'), iptSave(host, 6, 'filter')]);
    const r = await cni(call(host, ns, 'x1'), 'ADD', make(b.json));
    expect(r.code).toBe(1);
    expect(r.json.code).toBe(code);
    expect(r.json.msg).toMatch(msg);
    expect(await Promise.all([iptSave(host, 4, 'filter'), iptSave(host, 6, 'filter')])).toEqual(before);
    expect(await fwLines(host)).toEqual([]);
  });
});
