// host-local end to end, through the built executable dist/cni/host-local (a temp dataDir, no namespaces
// needed: IPAM never touches the kernel), and in-process through the dispatcher's delegate, the way bridge
// calls it.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import { ipamProjection } from '../../core/ipam/decider.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { memoryStore } from '../../adapters/memory/store.ts';
import { dispatch, makeCtx } from '../../apps/cni/dispatch.ts';
import { hostLocal, makeHostLocal } from '../../apps/cni/plugins/host-local.ts';
import { FELT_CNI, runCni, type CniCall } from '../support/cni.ts';

/** Build dist/ when host-local's bundle is missing or older than the sources it is made of. */
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'felt-hl-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const NETNS = '/var/run/netns/felt-test-none';
const netconf = (dataDir: string, ipam: Record<string, unknown>, cniVersion = '1.0.0', extra: Record<string, unknown> = {}) => ({
  cniVersion,
  name: 'hl',
  type: 'bridge',
  ...extra,
  ipam: { type: 'host-local', dataDir, ...ipam },
});
const hl = (command: CniCall['command'], config: unknown, containerId = 'c1', more: Partial<CniCall> = {}) =>
  runCni({ dir: FELT_CNI, type: 'host-local', command, containerId, netns: NETNS, ifname: 'eth0', config, ...more });

/** Allocations held in a dataDir (none when there is no database). */
function held(dataDir: string, network = 'hl'): Record<string, string> {
  if (!existsSync(join(dataDir, 'felt.db'))) return {};
  const s = openSqliteStore(dataDir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  const l = s.right.load(`ipam/${network}`, ipamProjection);
  s.right.close();
  if (E.isLeft(l)) throw new Error(l.left.msg);
  return Object.fromEntries(Object.values(l.right.state.allocations).map((a) => [a.ip, `${a.containerId}/${a.ifname}`]));
}

describe('host-local executable', () => {
  it('ADD, CHECK, DEL, DEL again, CHECK fails', async () => {
    const d = tmp();
    const conf = netconf(d, { ranges: [[{ subnet: '10.10.0.0/24' }], [{ subnet: 'fd10::/64' }]], routes: [{ dst: '0.0.0.0/0' }] });
    const add = await hl('ADD', conf);
    expect(add.code, add.stdout).toBe(0);
    expect(add.json).toEqual({
      cniVersion: '1.0.0',
      ips: [
        { address: '10.10.0.2/24', gateway: '10.10.0.1' },
        { address: 'fd10::2/64', gateway: 'fd10::1' },
      ],
      routes: [{ dst: '0.0.0.0/0' }],
    });
    expect(held(d)).toEqual({ '10.10.0.2': 'c1/eth0', 'fd10::2': 'c1/eth0' });
    expect((await hl('CHECK', { ...conf, prevResult: add.json })).code).toBe(0);
    const dup = await hl('ADD', conf);
    expect(dup.json).toMatchObject({ code: 101, msg: expect.stringContaining('duplicate allocation is not allowed') });
    expect((await hl('DEL', conf)).code).toBe(0);
    expect(held(d)).toEqual({});
    expect((await hl('DEL', conf)).code).toBe(0);
    const check = await hl('CHECK', conf);
    expect(check.json).toMatchObject({ code: 103, msg: 'host-local: no address is allocated to c1/eth0 in network "hl"' });
  });

  it.each([
    [
      '0.1.0',
      {
        cniVersion: '0.1.0',
        ip4: { ip: '10.11.0.2/24', gateway: '10.11.0.1', routes: [{ dst: '0.0.0.0/0' }] },
        ip6: { ip: 'fd11::2/64', gateway: 'fd11::1' },
      },
    ],
    [
      '0.2.0',
      {
        cniVersion: '0.2.0',
        ip4: { ip: '10.11.0.2/24', gateway: '10.11.0.1', routes: [{ dst: '0.0.0.0/0' }] },
        ip6: { ip: 'fd11::2/64', gateway: 'fd11::1' },
      },
    ],
    [
      '0.3.1',
      {
        cniVersion: '0.3.1',
        ips: [
          { version: '4', address: '10.11.0.2/24', gateway: '10.11.0.1' },
          { version: '6', address: 'fd11::2/64', gateway: 'fd11::1' },
        ],
        routes: [{ dst: '0.0.0.0/0' }],
      },
    ],
    [
      '0.4.0',
      {
        cniVersion: '0.4.0',
        ips: [
          { version: '4', address: '10.11.0.2/24', gateway: '10.11.0.1' },
          { version: '6', address: 'fd11::2/64', gateway: 'fd11::1' },
        ],
        routes: [{ dst: '0.0.0.0/0' }],
      },
    ],
    [
      '1.0.0',
      {
        cniVersion: '1.0.0',
        ips: [
          { address: '10.11.0.2/24', gateway: '10.11.0.1' },
          { address: 'fd11::2/64', gateway: 'fd11::1' },
        ],
        routes: [{ dst: '0.0.0.0/0' }],
      },
    ],
    [
      '1.1.0',
      {
        cniVersion: '1.1.0',
        ips: [
          { address: '10.11.0.2/24', gateway: '10.11.0.1' },
          { address: 'fd11::2/64', gateway: 'fd11::1' },
        ],
        routes: [{ dst: '0.0.0.0/0', mtu: 1400 }],
      },
    ],
  ])('result in the %s form', async (v, want) => {
    const d = tmp();
    const route = v === '1.1.0' ? { dst: '0.0.0.0/0', mtu: 1400 } : { dst: '0.0.0.0/0' };
    const conf = netconf(d, { ranges: [[{ subnet: '10.11.0.0/24' }], [{ subnet: 'fd11::/64' }]], routes: [route] }, v);
    const r = await hl('ADD', conf);
    expect(r.code, r.stdout).toBe(0);
    expect(r.json).toEqual(want);
    expect((await hl('DEL', conf)).code).toBe(0);
  });

  it('dns from resolvConf; a missing resolvConf is an I/O error and allocates nothing', async () => {
    const d = tmp();
    const rc = join(d, 'resolv.conf');
    writeFileSync(rc, 'nameserver 10.0.0.53\nsearch a.example b.example\noptions ndots:5\ndomain a.example\n');
    const r = await hl('ADD', netconf(d, { subnet: '10.12.0.0/24', resolvConf: rc }));
    expect(r.json.dns).toEqual({
      nameservers: ['10.0.0.53'],
      domain: 'a.example',
      search: ['a.example', 'b.example'],
      options: ['ndots:5'],
    });
    const bad = await hl('ADD', netconf(d, { subnet: '10.12.0.0/24', resolvConf: join(d, 'nope') }), 'c2');
    expect(bad.json).toMatchObject({ code: 5, msg: expect.stringContaining('ipam.resolvConf') });
    expect(held(d)).toEqual({ '10.12.0.2': 'c1/eth0' });
  });

  it('requested addresses from CNI_ARGS, args and runtimeConfig; a held one is code 101 naming the holder', async () => {
    const d = tmp();
    const base = { ranges: [[{ subnet: '10.13.0.0/24' }], [{ subnet: 'fd13::/64' }]] };
    const a = await hl('ADD', netconf(d, base), 'a', { args: 'IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.13.0.50,fd13::50' });
    expect(a.json.ips.map((i: { address: string }) => i.address)).toEqual(['10.13.0.50/24', 'fd13::50/64']);
    // b asks only for an IPv4 address; its IPv6 one continues after the last reserved (fd13::50).
    const b = await hl('ADD', netconf(d, base, '1.0.0', { args: { cni: { ips: ['10.13.0.60'] } } }), 'b');
    expect(b.json.ips[0].address).toBe('10.13.0.60/24');
    const c = await hl('ADD', netconf(d, base, '1.0.0', { runtimeConfig: { ips: ['10.13.0.50/24'] } }), 'c');
    expect(c.json).toMatchObject({ code: 101, msg: 'runtimeConfig.ips[0]: requested address 10.13.0.50 is already allocated to a/eth0' });
    const e = await hl('ADD', netconf(d, base), 'e', { args: 'FOO=1' });
    expect(e.json).toMatchObject({ code: 4, msg: expect.stringContaining('unknown args ["FOO=1"]') });
    expect(Object.keys(held(d)).sort()).toEqual(['10.13.0.50', '10.13.0.60', 'fd13::50', 'fd13::51']);
  });

  it('GC (1.1.0) releases what is not in cni.dev/valid-attachments; STATUS answers', async () => {
    const d = tmp();
    const conf = netconf(d, { subnet: '10.14.0.0/24' }, '1.1.0');
    for (const id of ['a', 'b', 'c']) expect((await hl('ADD', conf, id)).code).toBe(0);
    const gc = await runCni({
      dir: FELT_CNI,
      type: 'host-local',
      command: 'GC',
      config: { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'b', ifname: 'eth0' }] },
    });
    expect(gc.code, gc.stdout).toBe(0);
    expect(held(d)).toEqual({ '10.14.0.3': 'b/eth0' });
    const noList = await runCni({ dir: FELT_CNI, type: 'host-local', command: 'GC', config: conf });
    expect(noList.json).toMatchObject({ code: 7, msg: 'cni.dev/valid-attachments: required for GC' });
    expect((await runCni({ dir: FELT_CNI, type: 'host-local', command: 'STATUS', config: conf })).code).toBe(0);
    const v = await runCni({ dir: FELT_CNI, type: 'host-local', command: 'VERSION', config: conf });
    expect(v.json.supportedVersions).toEqual(['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });

  describe('bad input: right code, clear message, nothing allocated', () => {
    it.each([
      ['invalid JSON', '{"cniVersion": "1.0.0", ', 6, 'failed to parse network configuration'],
      [
        'unknown cniVersion',
        { cniVersion: '9.9.9', name: 'hl', type: 'bridge', ipam: { type: 'host-local', subnet: '10.15.0.0/24' } },
        1,
        'incompatible CNI versions',
      ],
      ['host bits', { ranges: [[{ subnet: '10.15.0.5/24' }]] }, 7, 'ipam.ranges[0][0].subnet: 10.15.0.5/24 has host bits set'],
      [
        'overlap',
        { ranges: [[{ subnet: '10.15.0.0/16' }], [{ subnet: '10.15.0.0/24' }]] },
        7,
        'ipam.ranges[1][0] 10.15.0.1-10.15.0.254 (10.15.0.0/24) overlaps ipam.ranges[0][0]',
      ],
      [
        'too small',
        { ranges: [[{ subnet: '10.15.0.0/24' }], [{ subnet: '10.16.0.0/31' }]] },
        7,
        'ipam.ranges[1][0].subnet: 10.16.0.0/31 is too small',
      ],
      [
        'outside',
        { ranges: [[{ subnet: '10.15.0.0/24', rangeEnd: '10.16.0.9' }]] },
        7,
        'ipam.ranges[0][0].rangeEnd: 10.16.0.9 is not in subnet 10.15.0.0/24',
      ],
      ['no ipam', { cniVersion: '1.0.0', name: 'hl', type: 'bridge' }, 7, "ipam: IPAM config missing 'ipam' key"],
    ])('%s', async (_what, ipamOrConf, code, msg) => {
      const d = tmp();
      const config = typeof ipamOrConf === 'string' || 'cniVersion' in ipamOrConf ? ipamOrConf : netconf(d, ipamOrConf);
      const r = await hl('ADD', config);
      expect(r.code).toBe(1);
      expect(r.json).toMatchObject({ code, msg: expect.stringContaining(msg) });
      expect(r.stdout).not.toMatch(/\n\s+at /);
      expect(existsSync(join(d, 'felt.db'))).toBe(false);
    });

    it('exhausted range: code 100 naming it; the second range set gets nothing either', async () => {
      const d = tmp();
      const conf = netconf(d, { ranges: [[{ subnet: '10.17.0.0/24' }], [{ subnet: '10.18.0.0/30' }]] });
      expect((await hl('ADD', conf, 'a')).code).toBe(0);
      const r = await hl('ADD', conf, 'b');
      expect(r.json).toEqual({
        cniVersion: '1.0.0',
        code: 100,
        msg: 'ipam.ranges[1]: no IP addresses available in range set: 10.18.0.1-10.18.0.2',
      });
      expect(held(d)).toEqual({ '10.17.0.2': 'a/eth0', '10.18.0.2': 'a/eth0' });
    });
  });
});

describe('host-local in-process', () => {
  it('runs in-process when delegated to felt own dist/cni/host-local (as bridge does)', async () => {
    const d = tmp();
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'p1', CNI_NETNS: NETNS, CNI_IFNAME: 'eth0', CNI_PATH: FELT_CNI };
    const stdin = JSON.stringify(netconf(d, { subnet: '10.19.0.0/24' }));
    const ctx = makeCtx(env, FELT_CNI, { 'host-local': hostLocal });
    const args = { command: 'ADD' as const, containerId: 'p1', netns: NETNS, ifname: 'eth0', args: {}, path: [FELT_CNI], stdin };
    const r = await ctx.delegate('host-local', 'ADD', stdin, args)();
    expect(r).toEqual(E.right({ cniVersion: '1.0.0', ips: [{ address: '10.19.0.2/24', gateway: '10.19.0.1' }] }));
    expect(held(d)).toEqual({ '10.19.0.2': 'p1/eth0' });
    expect(await ctx.delegate('host-local', 'DEL', stdin, { ...args, command: 'DEL' })()).toEqual(E.right(undefined));
    expect(held(d)).toEqual({});
  });

  it('runs on the in-memory store with a fixed clock', async () => {
    const store = memoryStore();
    const plugin = makeHostLocal({
      openStore: async () => E.right(store),
      storeExists: () => true,
      readFile: () => E.right('nameserver 9.9.9.9\n'),
    });
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'm1', CNI_NETNS: NETNS, CNI_IFNAME: 'eth0', CNI_PATH: '/nowhere' };
    const ctx = { ...makeCtx(env, '/nowhere', {}), now: () => new Date('2030-01-02T03:04:05.000Z') };
    const out = await dispatch(
      plugin,
      env,
      JSON.stringify(netconf('/unused', { subnet: '10.20.0.0/24', resolvConf: '/etc/x' }, '0.4.0')),
      ctx,
    );
    expect(out).toEqual({
      exitCode: 0,
      stdout: JSON.stringify({
        cniVersion: '0.4.0',
        ips: [{ version: '4', address: '10.20.0.2/24', gateway: '10.20.0.1' }],
        dns: { nameservers: ['9.9.9.9'] },
      }),
    });
    expect(store.events).toEqual([
      {
        position: 1,
        stream: 'ipam/hl',
        type: 'AddressAllocated',
        data: { network: 'hl', containerId: 'm1', ifname: 'eth0', rangeSet: 0, ip: '10.20.0.2' },
        time: '2030-01-02T03:04:05.000Z',
      },
    ]);
  });
});
