// firewall `backend: "nftables"` (felt beyond the reference), by traffic: the same scenarios as
// test/apps/firewall.test.ts with felt's table inet cni_firewall instead of the filter table's chains.
//
// Kernel end-to-end tests of felt's firewall plugin through the real executable (dist/cni/firewall), chained
// after felt's bridge + host-local the way a runtime runs a conflist: the bridge's result is the firewall's
// prevResult, DEL runs in reverse order. Every test builds its own "host" namespace (where the plugins run and
// the rules land) and pod namespaces, plus an "outside" namespace joined to the host by a veth
// (198.51.100.0/24), and removes them afterwards. Bridged traffic passes the host's FORWARD chain
// (bridge-nf-call-iptables is 1 in a fresh namespace), so same-bridge and isolated can be seen by ping.

import { afterEach, describe, expect, it } from 'vitest';
import { FELT_CNI } from '../support/cni.ts';
import { cni, iptSave, nsRun, nsTry, ping, Sandbox, type Call } from '../support/ns.ts';

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
  backend: 'nftables',
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

/** The pod rules of felt's nftables firewall (their comments), and whether any iptables firewall chain exists. */
async function podRules(host: string): Promise<string[]> {
  const r = await nsTry(host, ['nft', '-j', 'list', 'chain', 'inet', 'cni_firewall', 'pods']);
  if (r.code !== 0) return [];
  return JSON.parse(r.stdout).nftables.flatMap((x: any) => (x.rule?.comment ? [x.rule.comment] : []));
}

describe('nftables firewall traffic', () => {
  it('same-bridge: pods on one bridge reach each other and the outside; pods on another bridge are cut off', async () => {
    const { host, outside } = await node();
    const dataDir = sb.dir();
    const fw = fwConf('1.0.0', { ingressPolicy: 'same-bridge' });
    const a1 = await attach(host, '1.0.0', bridgeConf('1.0.0', dataDir, 'fwa0', ['10.61.0.0/24']), fw, 'a1');
    const a2 = await attach(host, '1.0.0', bridgeConf('1.0.0', dataDir, 'fwa0', ['10.61.0.0/24']), fw, 'a2');
    const bns = await sb.ns();
    const b = await cni(call(host, bns, 'b1'), 'ADD', bridgeConf('1.0.0', dataDir, 'fwb0', ['10.62.0.0/24']));
    expect(b.code).toBe(0);
    expect(await ping(outside, ipOf(b.json))).toBe(true);
    expect((await cni(call(host, bns, 'b1'), 'ADD', { ...fw, prevResult: b.json })).code).toBe(0);

    expect(await ping(a1.ns, ipOf(a2.result))).toBe(true);
    expect(await ping(a2.ns, ipOf(a1.result))).toBe(true);
    expect(await ping(a1.ns, '198.51.100.2')).toBe(true);
    expect(await ping(outside, ipOf(a1.result))).toBe(true);
    expect(await ping(outside, ipOf(b.json))).toBe(true);
    expect(await ping(a1.ns, ipOf(b.json), 1)).toBe(false);
    expect(await ping(bns, ipOf(a2.result), 1)).toBe(false);
    // No iptables firewall chains with the nftables backend.
    expect((await fwLines(host)).filter((l) => l.includes('CNI-'))).toEqual([]);
    // Control: without the isolation rules the bridges reach each other.
    await nsRun(host, ['nft', 'flush', 'chain', 'inet', 'cni_firewall', 'isolation2']);
    expect(await ping(bns, ipOf(a2.result))).toBe(true);
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

  it('open: a drop in the admin chain wins; CHECK finds the rules; DEL removes exactly the pod rules, twice', async () => {
    const { host, outside } = await node();
    const dataDir = sb.dir();
    const bc = bridgeConf('1.0.0', dataDir, 'fwo0', ['10.64.0.0/24', 'fd00:64::/64']);
    const fw = fwConf('1.0.0');
    const p = await attach(host, '1.0.0', bc, fw, 'o1');
    const c = call(host, p.ns, 'o1');
    expect(await podRules(host)).toEqual([
      `${ipOf(p.result)}/32`,
      `${ipOf(p.result)}/32`,
      `${ipOf(p.result, 6)}/128`,
      `${ipOf(p.result, 6)}/128`,
    ]);
    expect((await cni(c, 'CHECK', { ...fw, prevResult: p.result })).code).toBe(0);
    expect(await ping(p.ns, '198.51.100.2')).toBe(true);
    await nsRun(host, ['nft', 'add', 'rule', 'inet', 'cni_firewall', 'admin', 'ip', 'saddr', ipOf(p.result), 'drop']);
    expect(await ping(p.ns, '198.51.100.2', 1)).toBe(false);
    await nsRun(host, ['nft', 'flush', 'chain', 'inet', 'cni_firewall', 'admin']);
    expect(await ping(p.ns, '198.51.100.2')).toBe(true);
    // A pod rule deleted behind its back: CHECK says so.
    const j = JSON.parse(await nsRun(host, ['nft', '-j', '-a', 'list', 'chain', 'inet', 'cni_firewall', 'pods']));
    const h = j.nftables.find((x: any) => x.rule?.comment)!.rule.handle;
    await nsRun(host, ['nft', 'delete', 'rule', 'inet', 'cni_firewall', 'pods', 'handle', String(h)]);
    const chk = await cni(c, 'CHECK', { ...fw, prevResult: p.result });
    expect(chk.json?.code, chk.stdout).toBe(103);
    expect(chk.json.msg).toMatch(/missing nftables rule in inet cni_firewall pods/);
    for (let i = 0; i < 2; i++) expect((await cni(c, 'DEL', { ...fw, prevResult: p.result })).code).toBe(0);
    expect(await podRules(host)).toEqual([]);
    // The shared parts stay: the admin jump, the chains.
    expect(await nsRun(host, ['nft', 'list', 'chain', 'inet', 'cni_firewall', 'pods'])).toContain('jump admin');
    expect(await ping(outside, ipOf(p.result))).toBe(true);
  });

  it('DEL with the other backend removes what either left; an unknown backend is code 7 naming it', async () => {
    const { host } = await node();
    const dataDir = sb.dir();
    const p = await attach(host, '1.0.0', bridgeConf('1.0.0', dataDir, 'fwx0', ['10.65.0.0/24']), fwConf('1.0.0'), 'x1');
    expect((await podRules(host)).length).toBe(2);
    expect((await cni(call(host, p.ns, 'x1'), 'DEL', { ...fwConf('1.0.0', { backend: 'iptables' }), prevResult: p.result })).code).toBe(0);
    expect(await podRules(host)).toEqual([]);
    const bad = await cni(call(host, p.ns, 'x2'), 'ADD', { ...fwConf('1.0.0', { backend: 'pf' }), prevResult: p.result });
    expect(bad.json?.code).toBe(7);
    expect(bad.json.msg).toMatch(/^backend: unknown backend "pf"/);
  });
});
