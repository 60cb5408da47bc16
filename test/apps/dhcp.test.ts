// dhcp IPAM end to end: dnsmasq (Debian's dnsmasq-base) serves DHCP on a bridge in a server namespace; each
// pod namespace has a veth whose peer is a port of that bridge; `felt dhcp-daemon` (the built dist/bin/felt)
// runs in a "host" namespace the test makes, and the built dist/cni/dhcp asks it for leases. A pod gets a lease
// with the reference's client id and the hostname from CNI_ARGS, keeps it across a renewal (dnsmasq sends a
// T1 of a few seconds), and DEL releases it (dnsmasq's lease file no longer has it). Bad input is a clear
// error and leaves nothing behind.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, ROOT, runCni, type CniOutcome } from '../support/cni.ts';
import { execFile } from '../support/netns.ts';
import { addrs, links, nsPath, nsRun, ping, routes, Sandbox } from '../support/ns.ts';

const sb = new Sandbox();
const procs: ChildProcess[] = [];
let dir = '';
let srv = '';
let host = '';
let sock = '';
let leases = '';
let daemonLog = '';
let refSock = '';
let refLog = '';
let podCount = 0;

/** Poll `f` until it returns a value (not undefined), at most `ms`. */
async function until<T>(what: string, f: () => T | undefined | Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function start(argv: string[], onErr?: (s: string) => void): ChildProcess {
  const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  c.stderr!.on('data', (b: Buffer) => onErr?.(b.toString()));
  procs.push(c);
  return c;
}

/** Processes inside a namespace (the DHCP client of an attachment lives there). */
const pids = async (ns: string): Promise<string[]> =>
  (await execFile(['ip', 'netns', 'pids', ns])).stdout.split('\n').filter((l) => l.trim() !== '');
const noProcesses = (ns: string) => until(`no process left in ${ns}`, async () => ((await pids(ns)).length === 0 ? true : undefined));

/** The lease file's lines: expiry, MAC, address, hostname, client id. */
const leaseLines = (): { expiry: number; mac: string; ip: string; host: string; clientId: string }[] =>
  existsSync(leases)
    ? readFileSync(leases, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => {
          const [expiry, mac, ip, h, clientId] = l.split(' ');
          return { expiry: Number(expiry), mac: mac!, ip: ip!, host: h!, clientId: clientId! };
        })
    : [];

/** A pod namespace with eth0, whose peer is a port of the server's bridge. */
async function pod(attached = true): Promise<string> {
  const p = await sb.ns();
  const port = `dp${++podCount}`;
  await nsRun(srv, ['ip', 'link', 'add', 'name', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p]);
  if (attached) await nsRun(srv, ['ip', 'link', 'set', 'dev', port, 'master', 'br0']);
  await nsRun(srv, ['ip', 'link', 'set', 'dev', port, 'up']);
  return p;
}

const conf = (ipam: Record<string, unknown> = {}, version = '1.0.0') => ({
  cniVersion: version,
  name: 'dnet',
  type: 'macvlan',
  ipam: { type: 'dhcp', daemonSocketPath: sock, ...ipam },
});

const call = (
  p: string,
  command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS',
  config: unknown,
  cid = 'dhcp-ctr',
  args?: string,
  ifname = 'eth0',
): Promise<CniOutcome> =>
  runCni({
    dir: FELT_CNI,
    type: 'dhcp',
    command,
    hostNs: host,
    containerId: cid,
    netns: nsPath(p),
    ifname,
    config,
    ...(args ? { args } : {}),
  });

beforeAll(async () => {
  dir = sb.dir();
  sock = join(dir, 'dhcp.sock');
  leases = join(dir, 'leases');
  srv = await sb.ns();
  host = await sb.ns();
  await nsRun(srv, ['ip', 'link', 'add', 'name', 'br0', 'type', 'bridge']);
  await nsRun(srv, ['ip', 'addr', 'add', '198.51.100.1/24', 'dev', 'br0']);
  await nsRun(srv, ['ip', 'link', 'set', 'dev', 'br0', 'up']);
  start([
    'ip',
    'netns',
    'exec',
    srv,
    'dnsmasq',
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--port=0',
    '--interface=br0',
    '--bind-interfaces',
    '--dhcp-authoritative',
    '--no-ping',
    `--dhcp-leasefile=${leases}`,
    `--pid-file=${join(dir, 'dnsmasq.pid')}`,
    '--dhcp-range=198.51.100.50,198.51.100.99,255.255.255.0,2m',
    '--dhcp-option=option:router,198.51.100.1',
    '--dhcp-option=option:T1,3s',
    '--dhcp-option=option:T2,100s',
    // A client that says vendor class "felt-rebind" (provide option 60) gets T2 at 8 s, for the rebinding test.
    '--dhcp-vendorclass=set:rebind,felt-rebind',
    '--dhcp-option=tag:rebind,option:T2,8s',
    '--dhcp-option=121,192.0.2.0/24,198.51.100.254,0.0.0.0/0,198.51.100.1',
  ]);
  await until('dnsmasq', () => (existsSync(leases) ? true : undefined));
  start(
    [
      'ip',
      'netns',
      'exec',
      host,
      join(ROOT, 'dist/bin/felt'),
      'dhcp-daemon',
      '--socket-path',
      sock,
      '--timeout',
      '4s',
      '--retry-min',
      '1s',
    ],
    (s) => (daemonLog += s),
  );
  await until('the daemon socket', () => (existsSync(sock) ? true : undefined));
  // The reference daemon (Debian's 1.1.1), for the differential test.
  refSock = join(dir, 'ref-dhcp.sock');
  start(['ip', 'netns', 'exec', host, join(REF_CNI, 'dhcp'), 'daemon', '-socketpath', refSock, '-timeout', '4s'], (s) => (refLog += s));
  await until('the reference daemon socket', () => (existsSync(refSock) ? true : undefined));
});

afterAll(async () => {
  for (const p of procs) p.kill('SIGTERM');
  await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.on('close', r)) : undefined)));
  await sb.cleanup();
});

describe('dhcp', () => {
  it('ADD leases an address (client id, hostname), CHECK, a renewal keeps it, DEL releases it', async () => {
    const p = await pod();
    const r = await call(
      p,
      'ADD',
      conf({ provide: [{ option: 'host-name', fromArg: 'K8S_POD_NAME' }] }),
      'dhcp-a',
      'IgnoreUnknown=1;K8S_POD_NAME=web-1',
    );
    expect(r.code, r.stdout + r.stderr + daemonLog).toBe(0);
    const address = r.json.ips[0].address as string;
    expect(address).toMatch(/^198\.51\.100\.(5\d|[6-9]\d)\/24$/);
    expect(r.json.ips[0].gateway).toBe('198.51.100.1');
    // 121 was not asked for: the router gives the default route.
    expect(r.json.routes).toEqual([{ dst: '0.0.0.0/0', gw: '198.51.100.1' }]);
    const ip = address.split('/')[0]!;
    const mine = () => leaseLines().find((l) => l.ip === ip);
    const first = await until('the lease in dnsmasq', mine);
    expect(first.host).toBe('web-1');
    // Option 61 as the reference sends it: type 0, then "<containerID>/<network>/<ifname>".
    const hex = Buffer.from('\0dhcp-a/dnet/eth0').toString('hex').match(/../g)!.join(':');
    expect(first.clientId).toBe(hex);
    // Nothing left in the pod by the client's broadcast phases.
    expect(await routes(p)).toEqual([]);

    // As the main plugin would, configure the address; renewals then go to the server by unicast.
    await nsRun(p, ['ip', 'addr', 'add', address, 'dev', 'eth0']);
    expect((await call(p, 'CHECK', { ...conf(), prevResult: r.json }, 'dhcp-a')).code).toBe(0);
    const wrong = await call(p, 'CHECK', { ...conf(), prevResult: { ...r.json, ips: [{ address: '198.51.100.7/24' }] } }, 'dhcp-a');
    expect(wrong.json?.code, wrong.stdout).toBe(103);

    // T1 is 3 s: dnsmasq moves the lease's end when the renewal arrives. Same address.
    const renewed = await until('a renewal', () => {
      const l = mine();
      return l && l.expiry > first.expiry ? l : undefined;
    });
    expect(renewed.ip).toBe(ip);
    await until('the daemon to log the renewal', () => (daemonLog.includes(`${ip} renewed`) ? true : undefined));
    // ADD again for the same attachment answers with the lease held.
    const again = await call(p, 'ADD', conf(), 'dhcp-a');
    expect(again.json?.ips?.[0]?.address, again.stdout).toBe(address);

    const d = await call(p, 'DEL', conf(), 'dhcp-a');
    expect(d.code, d.stdout + d.stderr).toBe(0);
    await until('the release', () => (mine() === undefined ? true : undefined));
    await noProcesses(p);
    expect((await call(p, 'DEL', conf(), 'dhcp-a')).code).toBe(0);
    expect((await call(p, 'CHECK', { ...conf(), prevResult: r.json }, 'dhcp-a')).json?.code).toBe(103);
  });

  it('renewals the server does not answer by unicast: rebinding by broadcast after T2 keeps the lease', async () => {
    const p = await pod();
    const c = conf({ provide: [{ option: 'vendor-class-identifier', value: 'felt-rebind' }] });
    const r = await call(p, 'ADD', c, 'dhcp-rebind');
    expect(r.code, r.stdout + daemonLog).toBe(0);
    const address = r.json.ips[0].address as string;
    const ip = address.split('/')[0]!;
    await nsRun(p, ['ip', 'addr', 'add', address, 'dev', 'eth0']);
    // Unicast to the server is dropped, so the renewals at T1 go unanswered; broadcasts still pass.
    await nsRun(p, ['iptables', '-A', 'OUTPUT', '-d', '198.51.100.1/32', '-p', 'udp', '--dport', '67', '-j', 'DROP']);
    const first = await until('the lease', () => leaseLines().find((l) => l.ip === ip));
    const rebound = await until('a rebind', () => {
      const l = leaseLines().find((x) => x.ip === ip);
      return l && l.expiry > first.expiry ? l : undefined;
    });
    expect(rebound.ip).toBe(ip);
    const dropped = await nsRun(p, ['iptables', '-L', 'OUTPUT', '-v', '-n', '-x']);
    expect(
      Number(
        dropped
          .split('\n')
          .find((l) => l.includes('DROP'))
          ?.trim()
          .split(/\s+/)[0],
      ),
    ).toBeGreaterThan(0);
    // The broadcast route is gone again once the exchange is over.
    await until('the broadcast route removed', async () =>
      (await routes(p)).some((x) => x.startsWith('255.255.255.255')) ? undefined : true,
    );
    expect((await call(p, 'DEL', c, 'dhcp-rebind')).code).toBe(0);
    await until('the release', () => (leaseLines().some((l) => l.ip === ip) ? undefined : true));
  });

  it.each(['0.3.1', '0.4.0', '1.1.0'])('classless static routes (option 121, asked for) replace the router route (%s)', async (version) => {
    const p = await pod();
    const cid = `dhcp-121-${version.replace(/\./g, '')}`;
    const r = await call(p, 'ADD', conf({ request: [{ option: '121' }] }, version), cid);
    expect(r.code, r.stdout + daemonLog).toBe(0);
    expect(r.json.cniVersion).toBe(version);
    expect(r.json.routes).toEqual([
      { dst: '192.0.2.0/24', gw: '198.51.100.254' },
      { dst: '0.0.0.0/0', gw: '198.51.100.1' },
    ]);
    expect((await call(p, 'DEL', conf({}, version), cid)).code).toBe(0);
  });

  // felt's macvlan makes the interface before it asks a dhcp IPAM plugin, as the reference does.
  it.each([
    ['the reference macvlan', REF_CNI, 'm0'],
    ["felt's macvlan", FELT_CNI, 'm1'],
  ])('chained under %s (CNI_PATH finds felt dhcp): the pod reaches the server; DEL releases', async (_what, dir, master) => {
    // A master in the host namespace whose peer is a port of the server's bridge.
    const port = `dh${++podCount}`;
    await nsRun(srv, ['ip', 'link', 'add', 'name', port, 'type', 'veth', 'peer', 'name', master, 'netns', host]);
    await nsRun(srv, ['ip', 'link', 'set', 'dev', port, 'master', 'br0']);
    await nsRun(srv, ['ip', 'link', 'set', 'dev', port, 'up']);
    await nsRun(host, ['ip', 'link', 'set', 'dev', master, 'up']);
    const p = await sb.ns();
    const mv = {
      cniVersion: '1.0.0',
      name: 'dnet',
      type: 'macvlan',
      master,
      mode: 'bridge',
      ipam: { type: 'dhcp', daemonSocketPath: sock },
    };
    const mcall = (command: 'ADD' | 'DEL') =>
      runCni({
        dir,
        type: 'macvlan',
        command,
        hostNs: host,
        containerId: `dhcp-${master}`,
        netns: nsPath(p),
        ifname: 'eth0',
        config: mv,
        env: { CNI_PATH: FELT_CNI },
      });
    const r = await mcall('ADD');
    expect(r.code, r.stdout + r.stderr + daemonLog).toBe(0);
    const address = r.json.ips[0].address as string;
    expect((await addrs(p))['eth0']).toContain(address);
    expect(await ping(p, '198.51.100.1')).toBe(true);
    const ip = address.split('/')[0]!;
    expect(leaseLines().some((l) => l.ip === ip)).toBe(true);
    expect((await mcall('DEL')).code).toBe(0);
    await until('the release', () => (leaseLines().some((l) => l.ip === ip) ? undefined : true));
    expect((await links(p)).map((l) => l.ifname)).toEqual(['lo']);
  });

  it("chained under felt's bridge (a layer-2 bridge on the server's segment): a lease through the veth; DEL releases it", async () => {
    // The host's bridge has a port on the server's segment; the pod's veth end gets its address by DHCP.
    const port = `dh${++podCount}`;
    await nsRun(srv, ['ip', 'link', 'add', 'name', port, 'type', 'veth', 'peer', 'name', 'up0', 'netns', host]);
    await nsRun(srv, ['ip', 'link', 'set', 'dev', port, 'master', 'br0']);
    await nsRun(srv, ['ip', 'link', 'set', 'dev', port, 'up']);
    await nsRun(host, ['ip', 'link', 'add', 'name', 'cnidh0', 'type', 'bridge']);
    await nsRun(host, ['ip', 'link', 'set', 'dev', 'up0', 'master', 'cnidh0']);
    await nsRun(host, ['ip', 'link', 'set', 'dev', 'up0', 'up']);
    await nsRun(host, ['ip', 'link', 'set', 'dev', 'cnidh0', 'up']);
    const p = await sb.ns();
    const bconf = {
      cniVersion: '1.0.0',
      name: 'dnet',
      type: 'bridge',
      bridge: 'cnidh0',
      ipam: { type: 'dhcp', daemonSocketPath: sock, dataDir: sb.dir() },
    };
    const bcall = (command: 'ADD' | 'DEL') =>
      runCni({
        dir: FELT_CNI,
        type: 'bridge',
        command,
        hostNs: host,
        containerId: 'dhcp-br',
        netns: nsPath(p),
        ifname: 'eth0',
        config: bconf,
      });
    const r = await bcall('ADD');
    expect(r.code, r.stdout + r.stderr + daemonLog).toBe(0);
    const address = r.json.ips[0].address as string;
    expect((await addrs(p))['eth0']).toContain(address);
    expect(await ping(p, '198.51.100.1')).toBe(true);
    const ip = address.split('/')[0]!;
    expect(leaseLines().some((l) => l.ip === ip)).toBe(true);
    expect((await bcall('DEL')).code).toBe(0);
    await until('the release', () => (leaseLines().some((l) => l.ip === ip) ? undefined : true));
    expect((await links(p)).map((l) => l.ifname)).toEqual(['lo']);
  });

  it("under felt's bridge with no dhcp daemon: the veth it made first is removed, nothing left in either namespace", async () => {
    const p = await sb.ns();
    const data = sb.dir();
    const bconf = {
      cniVersion: '1.0.0',
      name: 'dnet-nodaemon',
      type: 'bridge',
      bridge: 'cnidhx0',
      ipam: { type: 'dhcp', daemonSocketPath: join(sb.dir(), 'no-daemon.sock'), dataDir: data },
    };
    const r = await runCni({
      dir: FELT_CNI,
      type: 'bridge',
      command: 'ADD',
      hostNs: host,
      containerId: 'dhcp-nod',
      netns: nsPath(p),
      ifname: 'eth0',
      config: bconf,
    });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.json.code).toBe(11);
    // The layer-2 attachment came first (the dhcp client talks on it): the failed ADD took it away again.
    expect((await links(p)).map((l) => l.ifname)).toEqual(['lo']);
    expect((await links(host)).filter((l) => l.master === 'cnidhx0')).toEqual([]);
  });

  it.each([
    ['routers and mask', [{ option: 'routers' }, { option: 'subnet-mask' }]],
    ['classless routes too', [{ option: '121' }]],
  ])('the same result as the reference plugin and daemon (1.1.1), address aside (%s)', async (_, request) => {
    const out: CniOutcome[] = [];
    for (const [dirOf, socket] of [
      [REF_CNI, refSock],
      [FELT_CNI, sock],
    ] as const) {
      const p = await pod();
      const c = conf({ daemonSocketPath: socket, request });
      const r = await runCni({
        dir: dirOf,
        type: 'dhcp',
        command: 'ADD',
        hostNs: host,
        containerId: 'dhcp-diff',
        netns: nsPath(p),
        ifname: 'eth0',
        config: c,
      });
      expect(r.code, r.stdout + r.stderr + refLog).toBe(0);
      out.push(r);
      const ip = (r.json.ips[0].address as string).split('/')[0];
      expect(leaseLines().some((l) => l.ip === ip)).toBe(true);
      const d = await runCni({
        dir: dirOf,
        type: 'dhcp',
        command: 'DEL',
        hostNs: host,
        containerId: 'dhcp-diff',
        netns: nsPath(p),
        ifname: 'eth0',
        config: c,
      });
      expect(d.code, d.stdout + d.stderr).toBe(0);
      await until('the release', () => (leaseLines().some((l) => l.ip === ip) ? undefined : true));
    }
    // felt omits an empty dns (the reference prints "dns":{}), as every felt plugin does.
    const shape = ({ dns: _dns, ...j }: { ips: { address: string }[]; dns?: unknown }) => ({
      ...j,
      ips: j.ips.map((i) => ({ ...i, address: i.address.replace(/^198\.51\.100\.\d+/, 'A') })),
    });
    expect(shape(out[1]!.json)).toEqual(shape(out[0]!.json));
  });

  it('no daemon: code 11 naming the socket and the field; DEL succeeds (no lease is held)', async () => {
    const p = await pod();
    const missing = join(dir, 'nobody.sock');
    const r = await call(p, 'ADD', conf({ daemonSocketPath: missing }));
    expect(r.code).toBe(1);
    expect(r.json.code).toBe(11);
    expect(r.json.msg).toContain(missing);
    expect(r.json.msg).toContain('ipam.daemonSocketPath');
    expect((await call(p, 'DEL', conf({ daemonSocketPath: missing }))).code).toBe(0);
    // STATUS (1.1.0): 50 without a daemon, 0 with one.
    const st = await call(p, 'STATUS', conf({ daemonSocketPath: missing }, '1.1.0'));
    expect(st.json?.code, st.stdout).toBe(50);
    expect(st.json.msg).toContain(missing);
    expect((await call(p, 'STATUS', conf({}, '1.1.0'))).code).toBe(0);
  });

  it.each([
    [{ provide: [{ option: 'no-such-option', value: 'x' }] }, 'ipam.provide[0].option'],
    [{ request: [{ option: '999' }] }, 'ipam.request[0].option'],
    [{ provide: [{ option: 'host-name', value: 'x'.repeat(300) }] }, 'ipam.provide[0]'],
    [{ daemonSocketPath: 'relative.sock' }, 'ipam.daemonSocketPath'],
  ])('bad options %j: code 7 naming the field, no lease', async (ipam, field) => {
    const p = await pod();
    const before = leaseLines().length;
    const r = await call(p, 'ADD', conf(ipam), 'dhcp-bad');
    expect(r.json?.code, r.stdout).toBe(7);
    expect(r.json.msg).toContain(field);
    expect(leaseLines().length).toBe(before);
  });

  it('a missing interface is code 4 naming CNI_IFNAME; no server answering is code 11; nothing left', async () => {
    const p = await pod();
    const r = await call(p, 'ADD', conf(), 'dhcp-noif', undefined, 'eth9');
    expect(r.json?.code, r.stdout).toBe(4);
    expect(r.json.msg).toContain('CNI_IFNAME');
    const lonely = await pod(false);
    const t = await call(lonely, 'ADD', conf(), 'dhcp-lonely');
    expect(t.json?.code, t.stdout).toBe(11);
    expect(t.json.msg).toContain('no DHCPOFFER');
    expect(await routes(lonely)).toEqual([]);
    await noProcesses(lonely);
    await noProcesses(p);
    expect((await call(lonely, 'CHECK', { ...conf(), prevResult: { cniVersion: '1.0.0', ips: [] } }, 'dhcp-lonely')).json?.code).toBe(103);
  });
});
