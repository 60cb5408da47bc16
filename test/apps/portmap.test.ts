// Kernel end-to-end tests of felt's portmap (dist/cni/portmap) chained after felt's bridge + host-local, as a
// runtime runs a conflist: every test file builds a "host" namespace (where the plugins run, so the bridge
// and the nat rules land there), a pod namespace with a TCP and a UDP echo service, and a client namespace
// on 198.51.100.0/24 that reaches the pod only through the host ports. Needs root, iproute2, iptables, node
// and a build (`npm run build`).

import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, runCni } from '../support/cni.ts';
import { cni, exec, iptSave, nsPath, nsRun, Sandbox, sysctl } from '../support/ns.ts';
import { ask, startServer, writeScripts, type Services } from '../support/traffic.ts';

const HOST_IP = '198.51.100.1';
const CLIENT_IP = '198.51.100.2';
const MAPPINGS = [
  { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
  { hostPort: 8081, containerPort: 81, protocol: 'udp' },
];

const bridgeConf = (version: string, dataDir: string): Record<string, unknown> => ({
  cniVersion: version,
  name: 'pmnet',
  type: 'bridge',
  bridge: 'cni0',
  isGateway: true,
  // The pod answers clients outside its subnet through the gateway.
  isDefaultGateway: true,
  ipMasq: true,
  hairpinMode: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/24' }]], dataDir },
});

const portmapConf = (version: string, prevResult: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  cniVersion: version,
  name: 'pmnet',
  type: 'portmap',
  capabilities: { portMappings: true },
  runtimeConfig: { portMappings: MAPPINGS },
  ...(prevResult === undefined ? {} : { prevResult }),
  ...extra,
});

/** A host namespace with lo up and a veth to a client namespace (198.51.100.1 here, .2 there). */
async function topology(sb: Sandbox): Promise<{ host: string; pod: string; client: string }> {
  const host = await sb.ns();
  const pod = await sb.ns();
  const client = await sb.ns();
  await nsRun(host, ['ip', 'link', 'set', 'lo', 'up']);
  await nsRun(pod, ['ip', 'link', 'set', 'lo', 'up']);
  await nsRun(client, ['ip', 'link', 'set', 'lo', 'up']);
  await nsRun(host, ['ip', 'link', 'add', 'ext0', 'type', 'veth', 'peer', 'name', 'ext1', 'netns', client]);
  await nsRun(host, ['ip', 'addr', 'add', `${HOST_IP}/24`, 'dev', 'ext0']);
  await nsRun(host, ['ip', 'link', 'set', 'ext0', 'up']);
  await nsRun(client, ['ip', 'addr', 'add', `${CLIENT_IP}/24`, 'dev', 'ext1']);
  await nsRun(client, ['ip', 'link', 'set', 'ext1', 'up']);
  return { host, pod, client };
}

const portmapRules = async (host: string): Promise<string[]> =>
  (await iptSave(host, 4)).filter((l) => /CNI-DN-|CNI-HOSTPORT-DNAT -p/.test(l));

describe.each(['0.4.0', '1.0.0', '1.1.0'])('bridge + host-local + portmap at cniVersion %s', (version) => {
  const sb = new Sandbox();
  let ns: { host: string; pod: string; client: string };
  let scripts: { server: string; client: string };
  let server: Services | undefined;
  let dataDir = '';
  let prev: any;
  const call = (command: 'ADD' | 'DEL' | 'CHECK', conf: unknown) =>
    cni({ dir: FELT_CNI, hostNs: ns.host, pod: ns.pod, cid: 'ctr-pm' }, command, conf);

  beforeAll(async () => {
    ns = await topology(sb);
    dataDir = sb.dir();
    scripts = writeScripts(sb.dir());
    server = await startServer(ns.pod, scripts.server, 80, 81);
  });
  afterAll(async () => {
    server?.stop();
    await sb.cleanup();
  });

  it('ADD passes prevResult through, in the version asked for', async () => {
    const b = await call('ADD', bridgeConf(version, dataDir));
    expect(b.code, b.stdout).toBe(0);
    prev = b.json;
    const p = await call('ADD', portmapConf(version, prev));
    expect(p.code, p.stdout + p.stderr).toBe(0);
    expect(p.json).toEqual(prev);
    expect(p.stderr).toBe('');
  });

  it('the TCP and UDP services answer on the host ports from another namespace', async () => {
    expect(await ask(ns.client, scripts.client, 'tcp', HOST_IP, 8080)).toBe(`tcp 80 ${CLIENT_IP}`);
    expect(await ask(ns.client, scripts.client, 'udp', HOST_IP, 8081)).toBe(`udp 81 ${CLIENT_IP}`);
  });

  it('CHECK passes, and names a DNAT rule removed by hand (code 103)', async () => {
    const ok = await call('CHECK', portmapConf(version, prev));
    expect(ok.code, ok.stdout).toBe(0);
    const dn = (await iptSave(ns.host, 4)).find((l) => l.startsWith('-A CNI-DN-') && l.includes('--dport 8081 -j DNAT'))!;
    await nsRun(ns.host, ['iptables', '-t', 'nat', '-D', ...dn.slice(3).split(' ')]);
    const bad = await call('CHECK', portmapConf(version, prev));
    expect(bad.json).toMatchObject({ code: 103, msg: expect.stringContaining('CNI-DN-') });
    // ADD again repairs it.
    expect((await call('ADD', portmapConf(version, prev))).code).toBe(0);
    expect((await call('CHECK', portmapConf(version, prev))).code).toBe(0);
  });

  it('DEL removes the forwarding (and only it), a second DEL succeeds', async () => {
    const d = await call('DEL', portmapConf(version, prev));
    expect(d.code, d.stdout).toBe(0);
    expect(await portmapRules(ns.host)).toEqual([]);
    expect(await ask(ns.client, scripts.client, 'tcp', HOST_IP, 8080, { withinMs: 500 })).toBeUndefined();
    expect((await call('DEL', portmapConf(version, prev))).code).toBe(0);
    // The shared chains stay, as the reference leaves them.
    expect((await iptSave(ns.host, 4)).filter((l) => l.startsWith(':CNI-HOSTPORT-')).sort()).toEqual([
      ':CNI-HOSTPORT-DNAT -',
      ':CNI-HOSTPORT-MASQ -',
      ':CNI-HOSTPORT-SETMARK -',
    ]);
    expect((await call('DEL', bridgeConf(version, dataDir))).code).toBe(0);
  });
});

describe('portmap traffic: host, localhost, hairpin, stale UDP conntrack', () => {
  const sb = new Sandbox();
  let ns: { host: string; pod: string; client: string };
  let scripts: { server: string; client: string };
  let server: Services | undefined;
  let dataDir = '';
  let prev: any;
  let podIP = '';
  const call = (command: 'ADD' | 'DEL' | 'CHECK', conf: unknown) =>
    cni({ dir: FELT_CNI, hostNs: ns.host, pod: ns.pod, cid: 'ctr-tr' }, command, conf);

  beforeAll(async () => {
    ns = await topology(sb);
    dataDir = sb.dir();
    scripts = writeScripts(sb.dir());
    server = await startServer(ns.pod, scripts.server, 80, 81);
    const b = await call('ADD', bridgeConf('1.0.0', dataDir));
    if (b.code !== 0) throw new Error(b.stdout);
    prev = b.json;
    podIP = String(prev.ips[0].address).split('/')[0]!;
  });
  afterAll(async () => {
    server?.stop();
    await sb.cleanup();
  });

  it('a stale UDP conntrack entry of the host port is flushed by ADD', async () => {
    // Before ADD the client's datagrams from port 40000 reach the host itself (nothing listens): conntrack
    // records that flow, and without the flush it would keep the flow away from the new DNAT rule.
    expect(await ask(ns.client, scripts.client, 'udp', HOST_IP, 8081, { srcPort: 40000, withinMs: 600 })).toBeUndefined();
    const p = await call('ADD', portmapConf('1.0.0', prev));
    expect(p.code, p.stdout + p.stderr).toBe(0);
    expect(await ask(ns.client, scripts.client, 'udp', HOST_IP, 8081, { srcPort: 40000 })).toBe(`udp 81 ${CLIENT_IP}`);
  });

  it('the host itself reaches the pod through its own address', async () => {
    expect(await ask(ns.host, scripts.client, 'tcp', HOST_IP, 8080)).toMatch(/^tcp 80 /);
    expect(await ask(ns.host, scripts.client, 'udp', HOST_IP, 8081)).toMatch(/^udp 81 /);
  });

  it('127.0.0.1 on the host reaches the pod (route_localnet on cni0, masqueraded)', async () => {
    expect(await sysctl(ns.host, 'net.ipv4.conf.cni0.route_localnet')).toBe('1');
    expect(await ask(ns.host, scripts.client, 'tcp', '127.0.0.1', 8080)).toBe('tcp 80 10.88.0.1');
  });

  it('hairpin: the pod reaches itself through its host port, masqueraded to the gateway', async () => {
    expect(await ask(ns.pod, scripts.client, 'tcp', HOST_IP, 8080)).toBe('tcp 80 10.88.0.1');
    expect(await ask(ns.pod, scripts.client, 'udp', HOST_IP, 8081)).toBe('udp 81 10.88.0.1');
    expect(podIP).toMatch(/^10\.88\.0\./);
  });

  it('DEL stops the forwarding', async () => {
    expect((await call('DEL', portmapConf('1.0.0', prev))).code).toBe(0);
    expect(await ask(ns.client, scripts.client, 'tcp', HOST_IP, 8080, { withinMs: 500 })).toBeUndefined();
  });
});

describe('portmap bad input: the right code, the field named, nothing changed', () => {
  const sb = new Sandbox();
  let host = '';
  let pod = '';
  let dataDir = '';
  let prev: any;
  const call = (command: 'ADD' | 'DEL' | 'CHECK', conf: unknown) =>
    cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-bad' }, command, conf);

  beforeAll(async () => {
    host = await sb.ns();
    pod = await sb.ns();
    dataDir = sb.dir();
    const b = await call('ADD', bridgeConf('1.0.0', dataDir));
    if (b.code !== 0) throw new Error(b.stdout);
    prev = b.json;
  });
  afterAll(() => sb.cleanup());

  const mapping = (m: Record<string, unknown>) => ({
    runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', ...m }] },
  });
  it.each([
    ['hostPort 0', mapping({ hostPort: 0 }), 7, 'runtimeConfig.portMappings[0].hostPort'],
    ['hostPort 65536', mapping({ hostPort: 65536 }), 7, 'runtimeConfig.portMappings[0].hostPort'],
    ['containerPort 70000', mapping({ containerPort: 70000 }), 7, 'runtimeConfig.portMappings[0].containerPort'],
    ['protocol icmp', mapping({ protocol: 'icmp' }), 7, 'runtimeConfig.portMappings[0].protocol'],
    ['hostIP not an IP', mapping({ hostIP: '198.51.100.300' }), 7, 'runtimeConfig.portMappings[0].hostIP'],
    ['a condition with a space', { conditionsV4: ['-m set'] }, 7, 'conditionsV4[0]'],
  ])('%s', async (_t, extra, code, field) => {
    const before = await iptSave(host, 4);
    const r = await call('ADD', portmapConf('1.0.0', prev, extra));
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ code, msg: expect.stringContaining(`${field}:`) });
    expect(await iptSave(host, 4)).toEqual(before);
  });

  it('ADD without prevResult: code 7, the field named, nothing changed', async () => {
    const before = await iptSave(host, 4);
    const r = await call('ADD', portmapConf('1.0.0', undefined));
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining('prevResult: missing') });
    expect(await iptSave(host, 4)).toEqual(before);
    const c = await call('CHECK', portmapConf('1.0.0', undefined));
    expect(c.json).toMatchObject({ code: 7, msg: expect.stringContaining('prevResult') });
  });

  it('DEL with an empty CNI_NETNS (the pod is gone) still removes the forwarding', async () => {
    expect((await call('ADD', portmapConf('1.0.0', prev))).code).toBe(0);
    expect(await portmapRules(host)).not.toEqual([]);
    const d = await cni({ dir: FELT_CNI, hostNs: host, pod: '', cid: 'ctr-bad' }, 'DEL', portmapConf('1.0.0', undefined));
    expect(d.code, d.stdout).toBe(0);
    expect(await portmapRules(host)).toEqual([]);
  });

  it('without the conntrack tool, ADD still forwards and says what it could not do', async () => {
    // A PATH with the tools felt uses, but no conntrack.
    const bin = join(sb.dir(), 'bin');
    mkdirSync(bin);
    for (const tool of ['ip', 'iptables-save', 'iptables-restore', 'ip6tables-save', 'ip6tables-restore', 'nsenter', 'grep', 'tee']) {
      const w = await exec(['which', tool]);
      symlinkSync(w.stdout.trim(), join(bin, tool));
    }
    symlinkSync(process.execPath, join(bin, 'node'));
    const r = await runCni({
      dir: FELT_CNI,
      type: 'portmap',
      command: 'ADD',
      hostNs: host,
      containerId: 'ctr-bad',
      netns: nsPath(pod),
      ifname: 'eth0',
      config: portmapConf('1.0.0', prev, { runtimeConfig: { portMappings: [{ hostPort: 5353, containerPort: 53, protocol: 'udp' }] } }),
      env: { PATH: bin },
    });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stderr).toContain('conntrack not found');
    expect((await iptSave(host, 4)).some((l) => l.includes('--dport 5353 -j DNAT'))).toBe(true);
    expect((await call('DEL', portmapConf('1.0.0', prev))).code).toBe(0);
    expect(await portmapRules(host)).toEqual([]);
  });
});

describe('portmap: concurrent ADDs on a fresh node', () => {
  const sb = new Sandbox();
  afterAll(() => sb.cleanup());

  it("keep every attachment's chain and jumps (shared chains are created, never flushed)", async () => {
    // portmap only reads prevResult and writes the host's nat table: no pod namespace is needed.
    const host = await sb.ns();
    const n = 6;
    const prevOf = (i: number) => ({
      cniVersion: '1.0.0',
      interfaces: [{ name: 'eth0', sandbox: `/var/run/netns/none-${i}` }],
      ips: [{ address: `10.99.0.${i + 2}/24`, interface: 0 }],
    });
    const conf = (i: number) => ({
      ...portmapConf('1.0.0', prevOf(i)),
      runtimeConfig: { portMappings: [{ hostPort: 7000 + i, containerPort: 80, protocol: 'tcp' }] },
    });
    const add = (i: number) => cni({ dir: FELT_CNI, hostNs: host, pod: `/var/run/netns/none-${i}`, cid: `c${i}` }, 'ADD', conf(i));
    const outs = await Promise.all(Array.from({ length: n }, (_, i) => add(i)));
    for (const o of outs) expect(o.code, o.stdout + o.stderr).toBe(0);
    const save = await iptSave(host, 4);
    for (let i = 0; i < n; i++) {
      expect(save.some((l) => l.startsWith('-A CNI-HOSTPORT-DNAT ') && l.includes(`--dports ${7000 + i} `))).toBe(true);
      expect(
        save.some((l) => l.startsWith('-A CNI-DN-') && l.includes(`--dport ${7000 + i} -j DNAT --to-destination 10.99.0.${i + 2}:80`)),
      ).toBe(true);
    }
    // Every attachment checks clean (a jump two racing ADDs both appended is one too many, and CHECK says so;
    // the next ADD of any attachment removes the copy).
    expect((await add(0)).code).toBe(0);
    for (let i = 0; i < n; i++) {
      const c = await cni({ dir: FELT_CNI, hostNs: host, pod: `/var/run/netns/none-${i}`, cid: `c${i}` }, 'CHECK', conf(i));
      expect(c.code, c.stdout).toBe(0);
    }
    const again = await iptSave(host, 4);
    expect(again.filter((l) => l === '-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT')).toHaveLength(1);
    expect(again.filter((l) => l.startsWith('-A POSTROUTING') && l.includes('CNI-HOSTPORT-MASQ'))).toHaveLength(1);
  });
});
