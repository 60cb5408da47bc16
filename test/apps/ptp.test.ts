// ptp through the real executables in throwaway namespaces: felt's and the reference's (/usr/lib/cni, v1.1.1)
// on the same configs, each in its own host and pod namespaces. Same result shape, same routes and addresses in
// the pod, same host routes and masquerade rules; ping both ways; CHECK; DEL leaves nothing; DEL again.
//
// Deliberate differences (normalized here): felt adds the container address with `noprefixroute` where the
// reference deletes the kernel's prefix route afterwards (same routes either way); felt skips DAD on IPv6
// ptp addresses (one peer; the reference waits for it); the host veth names and MACs are random on both.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, runCni, type CniOutcome } from '../support/cni.ts';
import { addrs, cniChains, iptSave, nsPath, nsRun, ping, Sandbox, veths } from '../support/ns.ts';

const sb = new Sandbox();
let data = '';
beforeEach(() => {
  data = sb.dir();
});
afterEach(() => sb.cleanup());

const conf = (version: string, subnet: string, extra: Record<string, unknown> = {}) => ({
  cniVersion: version,
  name: 'ptpnet',
  type: 'ptp',
  ipMasq: true,
  mtu: 1400,
  ipam: { type: 'host-local', ranges: [[{ subnet }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: data },
  ...extra,
});

interface Side {
  host: string;
  pod: string;
}
const side = async (): Promise<Side> => ({ host: await sb.ns(), pod: await sb.ns() });
const call = (dir: string, s: Side, command: 'ADD' | 'DEL' | 'CHECK', config: unknown): Promise<CniOutcome> =>
  runCni({ dir, type: 'ptp', command, hostNs: s.host, containerId: 'ptp-ctr', netns: nsPath(s.pod), ifname: 'eth0', config });

/** Kernel state with random names taken out. */
async function view(s: Side): Promise<unknown> {
  const podRoutes = (await nsRun(s.pod, ['ip', '-4', 'route', 'show'])).trim().split('\n').sort();
  const hostRoutes = (await nsRun(s.host, ['ip', '-4', 'route', 'show']))
    .trim()
    .split('\n')
    .map((l) => l.replace(/veth[0-9a-f]+/, 'VETH'))
    .filter(Boolean)
    .sort();
  const hostAddrs = Object.entries(await addrs(s.host))
    .filter(([d]) => d.startsWith('veth'))
    .map(([, a]) => a.filter((x) => !x.includes(':')));
  const nat = (await iptSave(s.host, 4)).filter((l) => l.includes('CNI-') || l.startsWith(':CNI-'));
  const mtu = (await nsRun(s.pod, ['cat', '/sys/class/net/eth0/mtu'])).trim();
  return { podRoutes, pod: (await addrs(s.pod))['eth0'], hostRoutes, hostAddrs, nat, mtu };
}

describe('ptp against the reference', () => {
  it.each(['0.4.0', '1.0.0'])('cniVersion %s: same result shape, routes, addresses and rules; ping; CHECK; DEL', async (version) => {
    const ref = await side();
    const felt = await side();
    const [r, f] = [
      await call(REF_CNI, ref, 'ADD', conf(version, '10.40.0.0/24')),
      await call(FELT_CNI, felt, 'ADD', conf(version, '10.40.0.0/24')),
    ];
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(f.code, f.stdout + f.stderr).toBe(0);
    const shape = (j: { interfaces: { name: string; mac: string; sandbox?: string }[]; ips: unknown[]; routes?: unknown[] }) => ({
      interfaces: j.interfaces.map((i) => ({ name: i.name.replace(/^veth[0-9a-f]+$/, 'VETH'), inPod: !!i.sandbox, mac: typeof i.mac })),
      ips: j.ips,
      routes: j.routes,
    });
    expect(shape(f.json)).toEqual(shape(r.json));
    expect(await view(felt)).toEqual(await view(ref));
    // Traffic both ways over the point-to-point link.
    const gw = f.json.ips[0].gateway;
    expect(await ping(felt.pod, gw)).toBe(true);
    expect(await ping(felt.host, f.json.ips[0].address.split('/')[0])).toBe(true);
    const check = await call(FELT_CNI, felt, 'CHECK', { ...conf(version, '10.40.0.0/24'), prevResult: f.json });
    expect(check.code, check.stdout).toBe(0);
    for (const s of [felt, ref]) {
      const dir = s === felt ? FELT_CNI : REF_CNI;
      const d = await call(dir, s, 'DEL', conf(version, '10.40.0.0/24'));
      expect(d.code, d.stdout + d.stderr).toBe(0);
      expect(await veths(s.host)).toEqual([]);
      expect(await cniChains(s.host)).toEqual([]);
    }
    expect((await call(FELT_CNI, felt, 'DEL', conf(version, '10.40.0.0/24'))).code).toBe(0);
  });

  it('dual stack at 1.1.0: the IPv6 side routes through its gateway too', async () => {
    const s = await side();
    const config = conf('1.1.0', '10.41.0.0/24', {
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.41.0.0/24' }], [{ subnet: 'fd41::/64' }]],
        routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
        dataDir: data,
      },
    });
    const add = await call(FELT_CNI, s, 'ADD', config);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const v6 = add.json.ips.find((i: { address: string }) => i.address.includes(':'));
    expect(await nsRun(s.pod, ['ip', '-6', 'route', 'show'])).toContain(`default via ${v6.gateway} dev eth0`);
    expect(await ping(s.pod, v6.gateway)).toBe(true);
    expect((await call(FELT_CNI, s, 'CHECK', { ...config, prevResult: add.json })).code).toBe(0);
    expect((await call(FELT_CNI, s, 'DEL', config)).code).toBe(0);
    expect(await veths(s.host)).toEqual([]);
    expect((await call(FELT_CNI, s, 'DEL', config)).code).toBe(0);
  });

  it('bad input: no ipam, a bad mtu, dhcp: code 7 naming the field, nothing made', async () => {
    const s = await side();
    for (const [extra, field] of [
      [{ ipam: undefined }, 'ipam.type'],
      [{ mtu: 'big' }, 'mtu'],
      [{ ipam: { type: 'dhcp' } }, 'ipam.type: dhcp is not supported'],
    ] as const) {
      const r = await call(FELT_CNI, s, 'ADD', { ...conf('1.0.0', '10.42.0.0/24'), ...extra });
      expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining(field) });
      expect(await veths(s.host)).toEqual([]);
    }
  });
});
