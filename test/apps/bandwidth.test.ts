// Kernel end-to-end tests of felt's bandwidth plugin through the real executable (dist/cni/bandwidth), chained
// after felt's bridge + host-local as a runtime chains them: ADD gets bridge's result as prevResult, CHECK and
// DEL the chain's. Every test builds its own "host" namespace (where the plugins run, so the bridge, the host
// veth, the ifb and the qdiscs land there) and pod namespaces, and removes them afterwards.

import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI } from '../support/cni.ts';
import { cni, link, links, nsRun, Sandbox, type Call } from '../support/ns.ts';

const NET = 'bwnet';
const MBIT = 1_000_000;

const bridgeConf = (version: string, dataDir: string, subnet = '10.77.0.0/24'): Record<string, unknown> => ({
  cniVersion: version,
  name: NET,
  type: 'bridge',
  bridge: 'cnibw0',
  isGateway: true,
  ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir },
});

const limits = { ingressRate: MBIT, ingressBurst: 100_000, egressRate: 2 * MBIT, egressBurst: 200_000 };
const bwConf = (version: string, prevResult: unknown, extra: Record<string, unknown> = limits): Record<string, unknown> => ({
  cniVersion: version,
  name: NET,
  type: 'bandwidth',
  ...extra,
  ...(prevResult !== undefined ? { prevResult } : {}),
});

const felt = (hostNs: string, pod: string, cid: string): Call => ({ dir: FELT_CNI, hostNs, pod, cid });

interface TcQdisc {
  kind: string;
  handle: string;
  dev: string;
  root?: boolean;
  parent?: string;
  options?: { rate?: number; burst?: number; lat?: number };
}
export const qdiscs = async (ns: string): Promise<TcQdisc[]> =>
  (JSON.parse(await nsRun(ns, ['tc', '-json', 'qdisc', 'show'])) as TcQdisc[]).filter((q) => q.kind === 'tbf' || q.kind === 'ingress');

interface TcFilter {
  kind: string;
  pref: number;
  protocol: string;
  parent: string;
  options?: { fh?: string; flowid?: string; actions?: { kind: string; mirred_action?: string; direction?: string; to_dev?: string }[] };
}
export const filters = async (ns: string, dev: string): Promise<TcFilter[]> =>
  JSON.parse(await nsRun(ns, ['tc', '-json', 'filter', 'show', 'dev', dev, 'ingress'])) as TcFilter[];

const ifbs = async (ns: string): Promise<string[]> => (await links(ns)).filter((l) => l.linkinfo?.info_kind === 'ifb').map((l) => l.ifname);

/** The host veth of an ADD result (bridge's interfaces: bridge, host veth, container). */
const hostVethOf = (r: any): string => r.interfaces[1].name as string;

// ------------------------------------------------------------------------------------------ transfers

const RECEIVER = `
const net = require('net');
const [ip, port] = process.argv.slice(1);
const srv = net.createServer((s) => {
  let bytes = 0, t0 = 0;
  s.on('data', (b) => { if (!t0) t0 = performance.now(); bytes += b.length; });
  s.on('end', () => { process.stdout.write(JSON.stringify({ bytes, ms: performance.now() - t0 }) + '\\n'); srv.close(); s.destroy(); });
});
srv.listen(Number(port), ip, () => process.stdout.write('ready\\n'));
`;
const SENDER = `
const net = require('net');
const [ip, port, size] = process.argv.slice(1);
let tries = 0;
const go = () => {
  const s = net.connect(Number(port), ip, () => s.end(Buffer.alloc(Number(size), 7)));
  s.on('error', (e) => { if (++tries < 50) setTimeout(go, 100); else { console.error(e.message); process.exit(1); } });
  s.on('close', (err) => { if (!err) process.exit(0); });
};
go();
`;

/**
 * Sends `size` bytes from `fromNs` to ip:port, received in `toNs`; resolves with the bytes counted and the
 * receiver's time from the first byte to the end, when the transfer has finished (however long it takes).
 */
function transfer(fromNs: string, toNs: string, ip: string, size: number, port = 5201): Promise<{ bytes: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const rx = spawn('ip', ['netns', 'exec', toNs, process.execPath, '-e', RECEIVER, ip, String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let started = false;
    rx.stderr.on('data', (b: Buffer) => (err += b.toString()));
    rx.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (!started && out.includes('ready\n')) {
        started = true;
        const tx = spawn('ip', ['netns', 'exec', fromNs, process.execPath, '-e', SENDER, ip, String(port), String(size)], {
          stdio: 'ignore',
        });
        tx.on('close', (code) => {
          if (code !== 0) {
            rx.kill();
            reject(new Error(`sender failed (${code})`));
          }
        });
      }
    });
    rx.on('close', () => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve(JSON.parse(line) as { bytes: number; ms: number });
      else reject(new Error(`receiver failed: ${err}`));
    });
  });
}

// --------------------------------------------------------------------------------------------- tests

describe.each(['0.4.0', '1.0.0', '1.1.0'])('bridge + host-local + bandwidth at cniVersion %s', (version) => {
  const sb = new Sandbox();
  afterAll(() => sb.cleanup());

  it('ADD limits both directions, CHECK passes and fails on a missing qdisc, DEL removes it all, DEL again succeeds', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const br = bridgeConf(version, dataDir);
    const b = await cni(felt(host, pod, 'ctr-bw'), 'ADD', br);
    expect(b.code, b.stdout).toBe(0);
    const a = await cni(felt(host, pod, 'ctr-bw'), 'ADD', bwConf(version, b.json));
    expect(a.stderr).toBe('');
    expect(a.code, a.stdout).toBe(0);
    const veth = hostVethOf(b.json);
    // The result: prevResult plus the ifb, as the reference.
    const ifb = a.json.interfaces[3].name as string;
    expect(ifb).toMatch(/^bwp[0-9a-f]{12}$/);
    expect(a.json).toEqual({
      ...b.json,
      interfaces: [...b.json.interfaces, { name: ifb, mac: expect.stringMatching(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/) }],
    });

    // The kernel: tbf on the host veth, ingress + redirect to the ifb, tbf on the ifb; the ifb up with the veth's MTU.
    const qs = await qdiscs(host);
    expect(qs.filter((q) => q.dev === veth)).toEqual([
      {
        kind: 'tbf',
        handle: '1:',
        dev: veth,
        root: true,
        refcnt: expect.any(Number),
        options: { rate: 125_000, burst: 12_500, lat: 25_000 },
      },
      { kind: 'ingress', handle: 'ffff:', dev: veth, parent: 'ffff:fff1', options: {} },
    ]);
    expect(qs.filter((q) => q.dev === ifb)).toEqual([
      {
        kind: 'tbf',
        handle: '1:',
        dev: ifb,
        root: true,
        refcnt: expect.any(Number),
        options: { rate: 250_000, burst: 25_000, lat: 25_000 },
      },
    ]);
    const redirect = (await filters(host, veth)).find((f) => f.options?.actions);
    expect(redirect?.options?.actions?.[0]).toMatchObject({ kind: 'mirred', mirred_action: 'redirect', direction: 'egress', to_dev: ifb });
    const ifbLink = await link(host, ifb);
    expect(ifbLink?.flags).toContain('UP');
    expect(ifbLink?.mtu).toBe((await link(host, veth))?.mtu);
    expect(ifbLink?.address).toBe(a.json.interfaces[3].mac);

    // CHECK with the chain's result; then without a qdisc, and without the ifb.
    const bw = bwConf(version, a.json);
    const c = await cni(felt(host, pod, 'ctr-bw'), 'CHECK', bw);
    expect(c.stdout).toBe('');
    expect(c.code).toBe(0);
    await nsRun(host, ['tc', 'qdisc', 'del', 'dev', veth, 'root']);
    const c2 = await cni(felt(host, pod, 'ctr-bw'), 'CHECK', bw);
    expect(c2.code).toBe(1);
    expect(c2.json.code).toBe(103);
    expect(c2.json.msg).toContain(`missing qdisc tbf rate 1000000bit burst 12500 latency 25ms on ${veth}`);
    await nsRun(host, ['ip', 'link', 'del', 'dev', ifb]);
    const c3 = await cni(felt(host, pod, 'ctr-bw'), 'CHECK', bw);
    expect(c3.json.code).toBe(103);
    expect(c3.json.msg).toContain(`missing ifb ${ifb}`);
    // A second ADD converges back.
    const again = await cni(felt(host, pod, 'ctr-bw'), 'ADD', bwConf(version, b.json));
    expect(again.code, again.stdout).toBe(0);
    expect((await cni(felt(host, pod, 'ctr-bw'), 'CHECK', bwConf(version, again.json))).code).toBe(0);

    // DEL (with the chain's result), DEL again, then the bridge's DEL.
    const d = await cni(felt(host, pod, 'ctr-bw'), 'DEL', bwConf(version, again.json));
    expect(d.stdout).toBe('');
    expect(d.code).toBe(0);
    expect(await ifbs(host)).toEqual([]);
    expect(await qdiscs(host)).toEqual([]);
    expect(await filters(host, veth)).toEqual([]);
    expect((await cni(felt(host, pod, 'ctr-bw'), 'DEL', bwConf(version, again.json))).code).toBe(0);
    expect((await cni(felt(host, pod, 'ctr-bw'), 'DEL', br)).code).toBe(0);
    expect((await cni(felt(host, pod, 'ctr-bw'), 'DEL', bwConf(version, undefined))).code).toBe(0);
  });
});

describe('bandwidth limits traffic', () => {
  const sb = new Sandbox();
  afterAll(() => sb.cleanup());

  it('a transfer in each direction runs no faster than 3x its limit', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const br = bridgeConf('1.0.0', dataDir);
    const b = await cni(felt(host, pod, 'ctr-rate'), 'ADD', br);
    expect(b.code, b.stdout).toBe(0);
    const a = await cni(felt(host, pod, 'ctr-rate'), 'ADD', bwConf('1.0.0', b.json));
    expect(a.code, a.stdout).toBe(0);
    const podIp = (b.json.ips[0].address as string).split('/')[0]!;
    // To the container (ingress limit, 1 Mbit/s): host → pod.
    const size = 384 * 1024;
    const toPod = await transfer(host, pod, podIp, size);
    expect(toPod.bytes).toBe(size);
    expect((toPod.bytes * 8) / (toPod.ms / 1000)).toBeLessThan(3 * limits.ingressRate);
    // From the container (egress limit, 2 Mbit/s, through the ifb): pod → host.
    const fromPod = await transfer(pod, host, '10.77.0.1', 2 * size);
    expect(fromPod.bytes).toBe(2 * size);
    expect((fromPod.bytes * 8) / (fromPod.ms / 1000)).toBeLessThan(3 * limits.egressRate);
    // Without the limits the same transfers are not held back (the limits did it): far above 3x.
    expect((await cni(felt(host, pod, 'ctr-rate'), 'DEL', bwConf('1.0.0', a.json))).code).toBe(0);
    const free = await transfer(host, pod, podIp, 8 * size);
    expect((free.bytes * 8) / (free.ms / 1000)).toBeGreaterThan(3 * limits.ingressRate);
    expect((await cni(felt(host, pod, 'ctr-rate'), 'DEL', br)).code).toBe(0);
  }, 600_000);
});

describe('bandwidth DEL after the pod namespace is gone', () => {
  const sb = new Sandbox();
  afterAll(() => sb.cleanup());

  it('succeeds and removes the ifb (the veth, and its qdiscs, went with the namespace)', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const br = bridgeConf('1.0.0', dataDir);
    const b = await cni(felt(host, pod, 'ctr-gone'), 'ADD', br);
    const a = await cni(felt(host, pod, 'ctr-gone'), 'ADD', bwConf('1.0.0', b.json));
    expect(a.code, a.stdout).toBe(0);
    expect(await ifbs(host)).toHaveLength(1);
    await sb.delNs(pod);
    const d = await cni(felt(host, pod, 'ctr-gone'), 'DEL', bwConf('1.0.0', a.json));
    expect(d.code, d.stdout).toBe(0);
    expect(await ifbs(host)).toEqual([]);
    expect(await qdiscs(host)).toEqual([]);
    expect((await cni(felt(host, '', 'ctr-gone'), 'DEL', bwConf('1.0.0', a.json))).code).toBe(0);
    expect((await cni(felt(host, pod, 'ctr-gone'), 'DEL', br)).code).toBe(0);
  });
});

describe('bandwidth bad input: the right code, the field named, nothing left', () => {
  const sb = new Sandbox();
  afterAll(() => sb.cleanup());

  it('refuses each bad config or prevResult without touching the kernel', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const b = await cni(felt(host, pod, 'ctr-bad'), 'ADD', bridgeConf('1.0.0', dataDir));
    expect(b.code, b.stdout).toBe(0);
    const prev = b.json;
    const cases: [string, unknown, Partial<Call>, number, RegExp][] = [
      ['rate without burst', bwConf('1.0.0', prev, { ingressRate: MBIT }), {}, 7, /^ingressBurst: if ingressRate is set/],
      ['burst without rate', bwConf('1.0.0', prev, { egressBurst: 1000 }), {}, 7, /^egressRate: if egressBurst is set/],
      [
        'burst too large',
        bwConf('1.0.0', prev, { egressRate: MBIT, egressBurst: 2 ** 40 }),
        {},
        7,
        /^egressBurst: burst cannot be more than 4GB/,
      ],
      [
        'rate as a string',
        bwConf('1.0.0', prev, { ingressRate: '1M', ingressBurst: 1000 }),
        {},
        7,
        /^ingressRate: must be a non-negative integer/,
      ],
      [
        'runtimeConfig rate without burst',
        bwConf('1.0.0', prev, { runtimeConfig: { bandwidth: { egressRate: MBIT } } }),
        {},
        7,
        /^runtimeConfig\.bandwidth\.egressBurst:/,
      ],
      ['no prevResult', bwConf('1.0.0', undefined), {}, 7, /^prevResult: required for ADD/],
      [
        'prevResult with a bad address',
        bwConf('1.0.0', { ...prev, ips: [{ address: '10.77.0.300/24' }] }),
        {},
        7,
        /^prevResult: ips\[0\]\.address/,
      ],
      [
        'prevResult naming another host interface',
        bwConf('1.0.0', { ...prev, interfaces: [prev.interfaces[0], { name: 'veth-nope' }, prev.interfaces[2]] }),
        {},
        7,
        /^prevResult\.interfaces: the host end of eth0/,
      ],
      ['CNI_IFNAME not in the pod', bwConf('1.0.0', prev), { ifname: 'eth9' }, 7, /^CNI_IFNAME: container interface eth9 not found/],
      ['CNI_NETNS missing', bwConf('1.0.0', prev), { pod: '/var/run/netns/felt-no-such-ns' }, 4, /^CNI_NETNS: /],
      ['config not JSON', '{"cniVersion": "1.0.0", ', { type: 'bandwidth' }, 6, /failed to parse network configuration/],
    ];
    for (const [what, conf, more, code, msg] of cases) {
      const r = await cni({ ...felt(host, pod, 'ctr-bad'), ...more }, 'ADD', conf);
      expect([what, r.code, r.json?.code]).toEqual([what, 1, code]);
      expect(r.json.msg, what).toMatch(msg);
      expect(await ifbs(host), what).toEqual([]);
      expect(await qdiscs(host), what).toEqual([]);
    }
    // CHECK without prevResult and DEL with a bad config are refused the same way.
    const c = await cni(felt(host, pod, 'ctr-bad'), 'CHECK', bwConf('1.0.0', undefined));
    expect([c.json.code, c.json.msg]).toEqual([7, expect.stringMatching(/^prevResult: required for CHECK/)]);
    const d = await cni(felt(host, pod, 'ctr-bad'), 'DEL', bwConf('1.0.0', prev, { ingressRate: MBIT }));
    expect([d.json.code, d.json.msg]).toEqual([7, expect.stringMatching(/^ingressBurst:/)]);
    // No limits at all: prevResult passed through, nothing made.
    const none = await cni(felt(host, pod, 'ctr-bad'), 'ADD', bwConf('1.0.0', prev, {}));
    expect(none.code).toBe(0);
    expect(none.json).toEqual(prev);
    expect(await ifbs(host)).toEqual([]);
    expect((await link(host, hostVethOf(prev)))?.flags).toContain('UP');
    expect((await cni(felt(host, pod, 'ctr-bad'), 'DEL', bridgeConf('1.0.0', dataDir))).code).toBe(0);
  });
});
