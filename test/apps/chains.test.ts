// Chains as runtimes run them, through `felt cni` inside throwaway namespaces: the stock flannel conflist
// (flannel, then portmap) and a podman-like chain of felt's plugins (bridge, portmap, firewall, tuning, bandwidth, sbr), ADD → CHECK → DEL → DEL at every
// chained-plugin version, with traffic through the host port; and interop with the reference plugins over the
// same libcni cache: an attachment made with felt's plugins is removed by the reference's, and the other way
// round, leaving nothing behind.

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, ROOT } from '../support/cni.ts';
import { cniChains, cniRules, exec, feltAllocations, iptSave, links, netState, nsPath, Sandbox, veths, type Run } from '../support/ns.ts';
import { ask, startServer, writeScripts } from '../support/traffic.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const sb = new Sandbox();
let dir = '';
let scripts: { server: string; client: string };

beforeAll(() => {
  dir = sb.dir();
  scripts = writeScripts(dir);
});
afterAll(() => sb.cleanup());

interface Net {
  readonly conf: string;
  readonly cache: string;
  readonly data: string;
}

function network(file: string, list: unknown): Net {
  const d = sb.dir();
  const conf = join(d, 'net.d');
  mkdirSync(conf);
  writeFileSync(join(conf, file), JSON.stringify(list));
  return { conf, cache: join(d, 'cache'), data: join(d, 'data') };
}

const felt = (host: string, n: Net, path: string, args: string[]): Promise<Run> =>
  exec([
    'ip',
    'netns',
    'exec',
    host,
    'env',
    `CNI_PATH=${path}`,
    FELT,
    'cni',
    ...args,
    '--conf-dir',
    n.conf,
    '--cache-dir',
    n.cache,
    '--data-dir',
    n.data,
  ]);

const ok = (r: Run): void => expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);

const mappings = [
  { hostPort: 18090, containerPort: 8080, protocol: 'tcp' },
  { hostPort: 18091, containerPort: 8081, protocol: 'udp' },
];
const portMappings = JSON.stringify({ portMappings: mappings });
const capArgs = JSON.stringify({
  portMappings: mappings,
  bandwidth: { ingressRate: 100_000_000, ingressBurst: 1_000_000, egressRate: 100_000_000, egressBurst: 1_000_000 },
});

/** A chain or rule of one attachment (portmap's CNI-DN-*, bridge's CNI-<hash>), not the shared ones that stay. */
const own = (s: string): boolean => /CNI-DN-|CNI-[0-9a-f]{24}/.test(s);

/** Nothing of the attachment is left in the host: no veth, no chain or rule of its own, no address. */
async function clean(host: string, data: string): Promise<void> {
  expect(await veths(host)).toEqual([]);
  expect((await exec(['ip', '-n', host, '-br', 'link', 'show', 'type', 'ifb'])).stdout.trim()).toBe('');
  expect((await cniChains(host)).filter(own)).toEqual([]);
  expect((await cniRules(host)).filter(own)).toEqual([]);
  expect((await iptSave(host, 4, 'filter')).filter((l) => l.startsWith('-A') && /-[sd] 10\./.test(l))).toEqual([]);
  expect(await feltAllocations(data)).toEqual([]);
}

describe('the stock flannel conflist (flannel, then portmap) through felt cni', () => {
  it('ADD gives the pod a flannel address reachable through the host port; CHECK; DEL; DEL again', async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const client = await sb.ns();
    const d = sb.dir();
    writeFileSync(
      join(d, 'subnet.env'),
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
    const n = network('10-flannel.conflist', {
      name: 'cbr0',
      cniVersion: '1.0.0',
      plugins: [
        {
          type: 'flannel',
          subnetFile: join(d, 'subnet.env'),
          dataDir: join(d, 'flannel'),
          ipam: { dataDir: join(d, 'data') },
          delegate: { hairpinMode: true, isDefaultGateway: true },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    });
    // A client namespace on 198.51.100.0/24 reaching the "host" over a veth.
    await exec(['ip', 'link', 'add', 'name', 'fcl0', 'netns', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', client]);
    await exec(['ip', '-n', host, 'addr', 'add', '198.51.100.1/24', 'dev', 'fcl0']);
    await exec(['ip', '-n', host, 'link', 'set', 'fcl0', 'up']);
    await exec(['ip', '-n', client, 'addr', 'add', '198.51.100.2/24', 'dev', 'eth0']);
    await exec(['ip', '-n', client, 'link', 'set', 'eth0', 'up']);

    const add = await felt(host, n, FELT_CNI, ['add', 'cbr0', nsPath(pod), '--container-id', 'fl-ctr', '--cap-args', portMappings]);
    ok(add);
    const ip = JSON.parse(add.stdout).ips[0].address.split('/')[0];
    expect(ip).toMatch(/^10\.244\.9\.\d+$/);
    const svc = await startServer(pod, scripts.server, 8080, 8081);
    try {
      expect(await ask(client, scripts.client, 'tcp', '198.51.100.1', 18090)).toMatch(/^tcp 8080 /);
      expect(await ask(client, scripts.client, 'udp', '198.51.100.1', 18091)).toMatch(/^udp 8081 /);
    } finally {
      svc.stop();
    }
    ok(await felt(host, n, FELT_CNI, ['check', 'cbr0', nsPath(pod), '--container-id', 'fl-ctr']));
    ok(await felt(host, n, FELT_CNI, ['del', 'cbr0', nsPath(pod), '--container-id', 'fl-ctr']));
    ok(await felt(host, n, FELT_CNI, ['del', 'cbr0', nsPath(pod), '--container-id', 'fl-ctr']));
    expect((await cniChains(host)).filter(own)).toEqual([]);
    expect((await veths(host)).filter((v) => v !== 'fcl0')).toEqual([]);
    expect(await feltAllocations(join(d, 'data'))).toEqual([]);
  });
});

describe('flannel with another delegate type', () => {
  it('delegate.type ptp: the pod is routed instead of bridged, from the node subnet; CHECK; DEL', async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const d = sb.dir();
    writeFileSync(
      join(d, 'subnet.env'),
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.12.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
    const n = network('10-flannel.conflist', {
      name: 'cbr0',
      cniVersion: '1.0.0',
      plugins: [
        {
          type: 'flannel',
          subnetFile: join(d, 'subnet.env'),
          dataDir: join(d, 'flannel'),
          ipam: { dataDir: join(d, 'data') },
          delegate: { type: 'ptp' },
        },
      ],
    });
    const add = await felt(host, n, FELT_CNI, ['add', 'cbr0', nsPath(pod), '--container-id', 'flp-ctr']);
    ok(add);
    const r = JSON.parse(add.stdout) as { interfaces: { name: string }[]; ips: { address: string; gateway: string }[] };
    expect(r.ips[0]!.address).toMatch(/^10\.244\.12\.\d+\/24$/);
    // ptp: no bridge in the host, a host route to the pod through its veth.
    expect((await exec(['ip', '-n', host, '-br', 'link', 'show', 'type', 'bridge'])).stdout.trim()).toBe('');
    expect((await exec(['ip', '-n', host, 'route', 'show', `${r.ips[0]!.address.split('/')[0]}/32`])).stdout).toMatch(
      /dev veth[0-9a-f]+ scope host/,
    );
    ok(await felt(host, n, FELT_CNI, ['check', 'cbr0', nsPath(pod), '--container-id', 'flp-ctr']));
    ok(await felt(host, n, FELT_CNI, ['del', 'cbr0', nsPath(pod), '--container-id', 'flp-ctr']));
    expect(await veths(host)).toEqual([]);
    expect(await feltAllocations(join(d, 'data'))).toEqual([]);
  });
});

const podmanLike = (version: string, data: string) => ({
  cniVersion: version,
  name: 'podlike',
  plugins: [
    {
      type: 'bridge',
      bridge: 'cnipod0',
      isGateway: true,
      ipMasq: true,
      hairpinMode: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.89.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: data },
    },
    { type: 'portmap', capabilities: { portMappings: true } },
    { type: 'firewall', dataDir: data },
    { type: 'tuning', sysctl: { 'net.ipv4.conf.IFNAME.arp_notify': '1' }, dataDir: data },
    { type: 'bandwidth', capabilities: { bandwidth: true } },
    { type: 'sbr' },
  ],
});

describe("a podman-like chain of felt's plugins through felt cni", () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])(
    'cniVersion %s: ADD, traffic through the host port, CHECK, DEL, DEL again leave nothing',
    async (version) => {
      const host = await sb.ns();
      const pod = await sb.ns();
      const d = sb.dir();
      const n = network('87-podman.conflist', podmanLike(version, d));
      const add = await felt(host, n, FELT_CNI, ['add', 'podlike', nsPath(pod), '--container-id', 'pl-ctr', '--cap-args', capArgs]);
      ok(add);
      const result = JSON.parse(add.stdout);
      expect(result.cniVersion).toBe(version);
      const svc = await startServer(pod, scripts.server, 8080, 8081);
      try {
        // From the host itself, to the host port on the bridge's address.
        const got = await ask(host, scripts.client, 'tcp', '10.89.0.1', 18090);
        expect(
          got,
          got === undefined
            ? `no answer through the host port; the echo server: ${svc.log() || '(nothing)'}\nthe kernel then:\n${await netState({ host, pod })}`
            : '',
        ).toMatch(/^tcp 8080 /);
      } finally {
        svc.stop();
      }
      // bandwidth's limits are on the host side of the pod's veth (and its IFB for egress).
      expect((await exec(['ip', '-n', host, '-br', 'link', 'show', 'type', 'ifb'])).stdout).toMatch(/^bwp[0-9a-f]{12}\s/);
      ok(await felt(host, n, FELT_CNI, ['check', 'podlike', nsPath(pod), '--container-id', 'pl-ctr']));
      ok(await felt(host, n, FELT_CNI, ['del', 'podlike', nsPath(pod), '--container-id', 'pl-ctr']));
      ok(await felt(host, n, FELT_CNI, ['del', 'podlike', nsPath(pod), '--container-id', 'pl-ctr']));
      await clean(host, d);
      expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
      expect(existsSync(join(n.cache, 'results', 'podlike-pl-ctr-eth0'))).toBe(false);
    },
  );
});

describe('interop with the reference plugins over the same libcni cache', () => {
  // Only plugins whose state lives in the kernel: host-local keeps its allocations in its own store (felt's
  // event log vs the reference's files), so each side's IPAM frees only what it allocated.
  const chain = (data: string) => ({
    cniVersion: '1.0.0',
    name: 'interop',
    plugins: [
      {
        type: 'bridge',
        bridge: 'cniio0',
        isGateway: true,
        ipMasq: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/24' }]], dataDir: data },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
      { type: 'firewall', dataDir: data },
    ],
  });

  it.each([
    ["felt's plugins add, the reference's delete", FELT_CNI, REF_CNI],
    ["the reference's plugins add, felt's delete", REF_CNI, FELT_CNI],
  ])('%s: no veth, chain or rule is left', async (_what, addWith, delWith) => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const d = sb.dir();
    const n = network('10-interop.conflist', chain(d));
    ok(await felt(host, n, addWith, ['add', 'interop', nsPath(pod), '--container-id', 'io-ctr', '--cap-args', portMappings]));
    expect(await veths(host)).toHaveLength(1);
    ok(await felt(host, n, delWith, ['del', 'interop', nsPath(pod), '--container-id', 'io-ctr']));
    expect(await veths(host)).toEqual([]);
    expect((await cniChains(host)).filter(own)).toEqual([]);
    expect((await cniRules(host)).filter((r) => r.includes('io-ctr'))).toEqual([]);
    expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
  });
});
