// portmap `backend: "nftables"`, differential against the reference v1.9.1 in fresh host namespaces: the same
// ruleset after ADD (tables ip/ip6 cni_hostport, their chains in the reference's order, a DNAT rule per
// mapping matching the host address when one is named (GHSA-jv3w-x3r3-g6rm), hairpin and 127.0.0.1
// masquerade), either side's DEL removes the other's rules, a container's DEL leaves another container's rules
// (even when its id is a prefix of the other's), CHECK notices a missing rule, and bad input is code 7.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI } from '../support/cni.ts';
import { cni, iptSave, nsRun, nsTry, Sandbox, sysctl } from '../support/ns.ts';
import { ask, startServer, writeScripts, type Services } from '../support/traffic.ts';

const REF = '/work/shared/reference-plugins/v1.9.1';
const sb = new Sandbox();
afterAll(() => sb.cleanup());

const MAPPINGS = [
  { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
  { hostPort: 5353, containerPort: 53, protocol: 'udp', hostIP: '198.51.100.7' },
  { hostPort: 9090, containerPort: 90, protocol: 'tcp', hostIP: '2001:db8::7' },
  { hostPort: 7070, containerPort: 70, protocol: 'tcp', hostIP: '0.0.0.0' },
];
const prev = (n: number) => ({
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: '/run/netns/nope' }],
  ips: [
    { address: `10.94.0.${n}/24`, interface: 0 },
    { address: `fd00:94::${n}/64`, interface: 0 },
  ],
});
const conf = (extra: Record<string, unknown> = {}, n = 5) => ({
  cniVersion: '1.0.0',
  name: 'pmnet',
  type: 'portmap',
  backend: 'nftables',
  runtimeConfig: { portMappings: MAPPINGS },
  prevResult: prev(n),
  ...extra,
});
const tables = async (ns: string): Promise<string> =>
  (await nsTry(ns, ['nft', 'list', 'table', 'ip', 'cni_hostport'])).stdout +
  (await nsTry(ns, ['nft', 'list', 'table', 'ip6', 'cni_hostport'])).stdout;
/** Comments of the rules in hostports and masquerading, both families. */
async function owned(ns: string): Promise<string[]> {
  const out: string[] = [];
  for (const f of ['ip', 'ip6']) {
    const r = await nsTry(ns, ['nft', '-j', 'list', 'table', f, 'cni_hostport']);
    if (r.code !== 0) continue;
    for (const x of JSON.parse(r.stdout).nftables) if (x.rule?.comment) out.push(`${f} ${x.rule.chain} ${x.rule.comment}`);
  }
  return out.sort();
}

describe('portmap backend nftables against the reference v1.9.1', () => {
  it('ADD: the same ruleset; CHECK passes; DEL leaves what the reference DEL leaves', async () => {
    const felt = { dir: FELT_CNI, hostNs: await sb.ns(), pod: '/run/netns/nope', cid: 'ctr-pm' };
    const ref = { ...felt, dir: REF, hostNs: await sb.ns() };
    const fa = await cni(felt, 'ADD', conf());
    const ra = await cni(ref, 'ADD', conf());
    expect(fa.code, fa.stdout).toBe(0);
    expect(ra.code, ra.stdout).toBe(0);
    const rs = await tables(felt.hostNs);
    expect(rs).toContain('ip daddr 198.51.100.7 udp dport 5353 dnat to 10.94.0.5:53 comment "ctr-pm"');
    expect(rs).toContain('ip saddr 127.0.0.1 ip daddr 10.94.0.5 masquerade comment "ctr-pm"');
    expect(rs).toEqual(await tables(ref.hostNs));
    expect((await cni(felt, 'CHECK', conf())).code).toBe(0);
    expect((await cni(felt, 'DEL', conf())).code).toBe(0);
    expect((await cni(ref, 'DEL', conf())).code).toBe(0);
    expect(await owned(felt.hostNs)).toEqual([]);
    expect(await tables(felt.hostNs)).toEqual(await tables(ref.hostNs));
  });

  it('felt ADD then reference DEL, and reference ADD then felt DEL, leave no container rule', async () => {
    for (const [adder, deleter] of [
      [FELT_CNI, REF],
      [REF, FELT_CNI],
    ] as const) {
      const c = { dir: adder, hostNs: await sb.ns(), pod: '/run/netns/nope', cid: 'ctr-pm' };
      expect((await cni(c, 'ADD', conf())).code).toBe(0);
      expect((await owned(c.hostNs)).length).toBe(8);
      const d = await cni({ ...c, dir: deleter }, 'DEL', conf());
      expect(d.code, d.stdout).toBe(0);
      expect(await owned(c.hostNs), `${adder} ADD, ${deleter} DEL`).toEqual([]);
    }
  });

  it("a container's DEL leaves another's rules, even when its id is a prefix of the other's", async () => {
    const host = await sb.ns();
    const a = { dir: FELT_CNI, hostNs: host, pod: '/run/netns/nope', cid: 'ctr1' };
    const b = { ...a, cid: 'ctr10' };
    expect((await cni(a, 'ADD', conf({}, 5))).code).toBe(0);
    expect((await cni(b, 'ADD', conf({}, 6))).code).toBe(0);
    expect((await cni(a, 'DEL', conf({}, 5))).code).toBe(0);
    const left = await owned(host);
    expect(left.length).toBe(8);
    expect(left.every((x) => x.endsWith(' ctr10'))).toBe(true);
    expect((await cni(b, 'CHECK', conf({}, 6))).code).toBe(0);
  });

  it('CHECK reports a DNAT rule deleted behind its back', async () => {
    const c = { dir: FELT_CNI, hostNs: await sb.ns(), pod: '/run/netns/nope', cid: 'ctr-pm' };
    expect((await cni(c, 'ADD', conf())).code).toBe(0);
    const j = JSON.parse(await nsRun(c.hostNs, ['nft', '-j', '-a', 'list', 'chain', 'ip', 'cni_hostport', 'hostports']));
    const h = j.nftables.find((x: any) => x.rule)!.rule.handle;
    await nsRun(c.hostNs, ['nft', 'delete', 'rule', 'ip', 'cni_hostport', 'hostports', 'handle', String(h)]);
    const r = await cni(c, 'CHECK', conf());
    expect(r.json?.code, r.stdout).toBe(103);
    expect(r.json.msg).toMatch(/missing nftables rule in ip cni_hostport hostports/);
  });

  it('bad input: an unknown backend, conditions or externalSetMarkChain with nftables: code 7 naming the field, nothing made', async () => {
    for (const [extra, field] of [
      [{ backend: 'ebtables' }, /backend: must be "iptables" or "nftables"/],
      [{ conditionsV4: ['-s', '1.2.3.4'] }, /conditionsV4: not supported by felt with backend "nftables"/],
      [{ externalSetMarkChain: 'KUBE-MARK' }, /externalSetMarkChain: an iptables option/],
    ] as const) {
      const c = { dir: FELT_CNI, hostNs: await sb.ns(), pod: '/run/netns/nope', cid: 'ctr-pm' };
      const r = await cni(c, 'ADD', conf(extra));
      expect(r.json?.code, r.stdout).toBe(7);
      expect(r.json.msg).toMatch(field);
      expect(await tables(c.hostNs)).toBe('');
    }
  });
});

// ------------------------------------------------------------------------------------------- traffic

const HOST_IP = '198.51.100.1';
const HOST_IP2 = '198.51.100.3';
const CLIENT_IP = '198.51.100.2';

describe('portmap backend nftables: traffic (host address, 127.0.0.1, hairpin, stale UDP conntrack; bridge masquerade)', () => {
  const tsb = new Sandbox();
  let host = '';
  let pod = '';
  let client = '';
  let scripts: { server: string; client: string };
  let server: Services | undefined;
  let prev: any;
  const call = (command: 'ADD' | 'DEL', conf: unknown) => cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-nft-tr' }, command, conf);
  const pm = {
    cniVersion: '1.0.0',
    name: 'pmnet',
    type: 'portmap',
    backend: 'nftables',
    runtimeConfig: {
      portMappings: [
        { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
        { hostPort: 8081, containerPort: 81, protocol: 'udp' },
        { hostPort: 8082, containerPort: 80, protocol: 'tcp', hostIP: HOST_IP2 },
      ],
    },
  };

  beforeAll(async () => {
    host = await tsb.ns();
    pod = await tsb.ns();
    client = await tsb.ns();
    for (const n of [host, pod, client]) await nsRun(n, ['ip', 'link', 'set', 'lo', 'up']);
    await nsRun(host, ['ip', 'link', 'add', 'ext0', 'type', 'veth', 'peer', 'name', 'ext1', 'netns', client]);
    await nsRun(host, ['ip', 'addr', 'add', `${HOST_IP}/24`, 'dev', 'ext0']);
    await nsRun(host, ['ip', 'addr', 'add', `${HOST_IP2}/24`, 'dev', 'ext0']);
    await nsRun(host, ['ip', 'link', 'set', 'ext0', 'up']);
    await nsRun(client, ['ip', 'addr', 'add', `${CLIENT_IP}/24`, 'dev', 'ext1']);
    await nsRun(client, ['ip', 'link', 'set', 'ext1', 'up']);
    scripts = writeScripts(tsb.dir());
    server = await startServer(pod, scripts.server, 80, 81);
    const b = await call('ADD', {
      cniVersion: '1.0.0',
      name: 'pmnet',
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      isDefaultGateway: true,
      ipMasq: true,
      ipMasqBackend: 'nftables',
      hairpinMode: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/24' }]], dataDir: tsb.dir() },
    });
    if (b.code !== 0) throw new Error(b.stdout);
    prev = b.json;
  });
  afterAll(async () => {
    server?.stop();
    await tsb.cleanup();
  });

  it('a stale UDP conntrack entry of the host port is flushed by ADD', async () => {
    expect(await ask(client, scripts.client, 'udp', HOST_IP, 8081, { srcPort: 40000, withinMs: 600 })).toBeUndefined();
    const p = await call('ADD', { ...pm, prevResult: prev });
    expect(p.code, p.stdout + p.stderr).toBe(0);
    expect(await ask(client, scripts.client, 'udp', HOST_IP, 8081, { srcPort: 40000 })).toBe(`udp 81 ${CLIENT_IP}`);
    // No iptables rules at all: bridge and portmap both wrote nftables.
    expect((await iptSave(host, 4)).filter((l) => l.includes('CNI-'))).toEqual([]);
  });

  it('a mapping with a host address answers on that address only (GHSA-jv3w-x3r3-g6rm)', async () => {
    expect(await ask(client, scripts.client, 'tcp', HOST_IP, 8080)).toBe(`tcp 80 ${CLIENT_IP}`);
    expect(await ask(client, scripts.client, 'tcp', HOST_IP2, 8082)).toBe(`tcp 80 ${CLIENT_IP}`);
    expect(await ask(client, scripts.client, 'tcp', HOST_IP, 8082, { withinMs: 500 })).toBeUndefined();
  });

  it('127.0.0.1 on the host reaches the pod (route_localnet, masqueraded), and hairpin is masqueraded to the gateway', async () => {
    expect(await sysctl(host, 'net.ipv4.conf.cni0.route_localnet')).toBe('1');
    expect(await ask(host, scripts.client, 'tcp', '127.0.0.1', 8080)).toBe('tcp 80 10.88.0.1');
    expect(await ask(pod, scripts.client, 'tcp', HOST_IP, 8080)).toBe('tcp 80 10.88.0.1');
  });

  it("bridge's nftables masquerade: the pod reaches the outside from the host's address", async () => {
    await nsRun(host, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const outside = await startServer(client, scripts.server, 80, 81);
    try {
      expect(await ask(pod, scripts.client, 'tcp', CLIENT_IP, 80)).toBe(`tcp 80 ${HOST_IP}`);
    } finally {
      outside.stop();
    }
  });

  it('DEL stops the forwarding', async () => {
    expect((await call('DEL', { ...pm, prevResult: prev })).code).toBe(0);
    expect(await ask(client, scripts.client, 'tcp', HOST_IP, 8080, { withinMs: 500 })).toBeUndefined();
  });
});
