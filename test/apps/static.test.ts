// static IPAM: differential against the reference (/usr/lib/cni/static, v1.1.1) on the same configs and
// CNI_ARGS: same results, or both fail (felt with code 7 naming the field). Then static under felt's bridge in
// throwaway namespaces: the pod gets exactly the configured address and routes, DEL leaves nothing.
//
// Deliberate differences (normalized here): the reference prints `"dns":{}` when there is no dns, felt
// omits it; the reference answers errors with code 999 and does not name the field.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, runCni, type CniOutcome } from '../support/cni.ts';
import { addrs, nsPath, nsRun, Sandbox, veths } from '../support/ns.ts';

const call = (dir: string, config: unknown, command: 'ADD' | 'DEL' | 'CHECK' = 'ADD', args?: string): Promise<CniOutcome> =>
  runCni({
    dir,
    type: 'static',
    command,
    containerId: 'static-ctr',
    netns: '/run/netns/none',
    ifname: 'eth0',
    config,
    ...(args ? { args } : {}),
  });

const net = (cniVersion: string, ipam: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  cniVersion,
  name: 'st',
  type: 'static',
  ipam: { type: 'static', ...ipam },
  ...extra,
});
const dropEmptyDns = (j: Record<string, unknown>): Record<string, unknown> => {
  const { dns, ...rest } = j;
  return dns && Object.keys(dns as object).length ? { ...rest, dns } : rest;
};

const CASES: [string, unknown, string?][] = [
  [
    'dual stack with gateways, routes and dns (1.0.0)',
    net('1.0.0', {
      addresses: [
        { address: '10.10.0.5/24', gateway: '10.10.0.1' },
        { address: 'fd00:10::5/64', gateway: 'fd00:10::1' },
      ],
      routes: [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.10.0.254' }, { dst: '::/0' }],
      dns: { nameservers: ['10.10.0.53'], domain: 'example.org', search: ['example.org'], options: ['ndots:2'] },
    }),
  ],
  ['0.4.0, one address', net('0.4.0', { addresses: [{ address: '10.10.0.6/24' }] })],
  ['0.3.1, two addresses of one family', net('0.3.1', { addresses: [{ address: '10.10.0.7/24' }, { address: '10.11.0.7/24' }] })],
  ['0.2.0: one per family', net('0.2.0', { addresses: [{ address: '10.10.0.8/24', gateway: '10.10.0.1' }, { address: 'fd00::8/64' }] })],
  [
    'CNI_ARGS IP and GATEWAY added to the configured ones',
    net('1.0.0', { addresses: [{ address: '10.12.0.5/24' }] }),
    'IP=10.10.0.9/24,fd00::9/64;GATEWAY=10.10.0.1',
  ],
  [
    'args.cni.ips replaces the configured ones',
    net('1.0.0', { addresses: [{ address: '10.12.0.5/24' }] }, { args: { cni: { ips: ['10.13.0.5/24'] } } }),
  ],
  [
    'runtimeConfig.ips replaces them all',
    net(
      '1.0.0',
      { addresses: [{ address: '10.12.0.5/24' }] },
      { args: { cni: { ips: ['10.13.0.5/24'] } }, runtimeConfig: { ips: ['10.14.0.5/24'] } },
    ),
  ],
  ['no addresses: a result with none', net('1.0.0', { routes: [{ dst: '0.0.0.0/0' }] })],
];

describe('static vs the reference', () => {
  it.each(CASES)('%s', async (_name, config, args) => {
    const [ref, felt] = await Promise.all([call(REF_CNI, config, 'ADD', args), call(FELT_CNI, config, 'ADD', args)]);
    expect(ref.code, ref.stdout + ref.stderr).toBe(0);
    expect(felt.code, felt.stdout + felt.stderr).toBe(0);
    expect(dropEmptyDns(felt.json)).toEqual(dropEmptyDns(ref.json));
  });

  it.each([
    ['an address without a prefix', net('1.0.0', { addresses: [{ address: '10.10.0.5' }] }), undefined, 'ipam.addresses[0].address'],
    ['a bad gateway', net('1.0.0', { addresses: [{ address: '10.10.0.5/24', gateway: 'ten' }] }), undefined, 'ipam.addresses[0].gateway'],
    ['a CNI_ARGS IP without a prefix', net('1.0.0', {}), 'IP=10.10.0.5', 'CNI_ARGS IP[0]'],
    [
      'two IPv4 addresses at 0.2.0',
      net('0.2.0', { addresses: [{ address: '10.10.0.5/24' }, { address: '10.11.0.5/24' }] }),
      undefined,
      'ipam.addresses',
    ],
    ['no ipam key', { cniVersion: '1.0.0', name: 'st', type: 'static' }, undefined, 'ipam'],
  ])('%s: both fail, felt with code 7 naming the field', async (_name, config, args, field) => {
    const [ref, felt] = await Promise.all([call(REF_CNI, config, 'ADD', args), call(FELT_CNI, config, 'ADD', args)]);
    expect(ref.code).toBe(1);
    expect(felt.code).toBe(1);
    expect(felt.json).toMatchObject({ code: 7, msg: expect.stringContaining(field) });
  });

  it.each(['0.4.0', '1.0.0', '1.1.0'])('ADD → CHECK → DEL → DEL at %s', async (version) => {
    const config = net(version, { addresses: [{ address: '10.10.0.5/24', gateway: '10.10.0.1' }], routes: [{ dst: '0.0.0.0/0' }] });
    const add = await call(FELT_CNI, config, 'ADD');
    expect(add.code, add.stdout).toBe(0);
    expect(add.json.cniVersion).toBe(version);
    expect((await call(FELT_CNI, { ...config, prevResult: add.json }, 'CHECK')).code).toBe(0);
    expect((await call(FELT_CNI, config, 'DEL')).code).toBe(0);
    expect((await call(FELT_CNI, config, 'DEL')).code).toBe(0);
  });

  it('DEL always succeeds; CHECK compares prevResult gateways with the config', async () => {
    const config = net('1.0.0', { addresses: [{ address: '10.10.0.5/24', gateway: '10.10.0.1' }] });
    expect((await call(FELT_CNI, config, 'DEL')).code).toBe(0);
    const good = { ...config, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.10.0.5/24', gateway: '10.10.0.1' }] } };
    const bad = { ...config, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.10.0.5/24', gateway: '10.10.0.2' }] } };
    for (const dir of [REF_CNI, FELT_CNI]) {
      expect((await call(dir, good, 'CHECK')).code).toBe(0);
      expect((await call(dir, bad, 'CHECK')).code).toBe(1);
    }
  });
});

describe('static under felt bridge', () => {
  const sb = new Sandbox();
  let host = '';
  let pod = '';
  beforeAll(async () => {
    host = await sb.ns();
    pod = await sb.ns();
  });
  afterAll(() => sb.cleanup());

  it('the pod gets exactly the configured address and route; DEL leaves no veth', async () => {
    const config = {
      cniVersion: '1.0.0',
      name: 'st',
      type: 'bridge',
      bridge: 'cnist0',
      isGateway: true,
      ipam: { type: 'static', addresses: [{ address: '10.15.0.9/24', gateway: '10.15.0.1' }], routes: [{ dst: '0.0.0.0/0' }] },
    };
    const c = { dir: FELT_CNI, type: 'bridge', hostNs: host, containerId: 'st-ctr', netns: nsPath(pod), ifname: 'eth0', config };
    const add = await runCni({ ...c, command: 'ADD' });
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect((await addrs(pod))['eth0']).toContain('10.15.0.9/24');
    expect(await nsRun(pod, ['ip', 'route', 'show', 'default'])).toContain('default via 10.15.0.1 dev eth0');
    expect((await runCni({ ...c, command: 'CHECK', config: { ...config, prevResult: add.json } })).code).toBe(0);
    expect((await runCni({ ...c, command: 'DEL' })).code).toBe(0);
    expect(await veths(host)).toEqual([]);
  });
});
