// The flannel CNI plugin on its own (the multi-node tests use it inside a cluster): the delegate it renders,
// its saved config and DEL, CHECK through the delegate, a missing subnet.env (code 11), refused fields.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { delegateConfig, parseFlannelConf, parseSubnetEnvFile } from '../../core/cni/flannel.ts';
import { parseNetConf } from '../../core/cni/env.ts';
import { PLUGIN_VERSIONS } from '../../core/cni/result.ts';
import { FELT_CNI, REF_CNI, runCni } from '../support/cni.ts';
import { cni, cniChains, feltAllocations, iptSave, nsPath, nsRun, ping, routes, Sandbox, veths } from '../support/ns.ts';

const ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

describe('flannel delegate config (core)', () => {
  const conf = (o: Record<string, unknown>) => {
    const n = parseNetConf(JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', type: 'flannel', ...o }), PLUGIN_VERSIONS, 'ADD');
    if (E.isLeft(n)) throw new Error(n.left.msg);
    return parseFlannelConf(n.right);
  };

  it('renders bridge + host-local as flannel-io/cni-plugin does', () => {
    const fc = conf({
      delegate: { hairpinMode: true, isDefaultGateway: true },
      ipam: { dataDir: '/x', routes: [{ dst: '192.0.2.0/24' }] },
    });
    const env = parseSubnetEnvFile(ENV, 'subnet.env');
    if (E.isLeft(fc) || E.isLeft(env)) throw new Error('bad fixture');
    expect(delegateConfig(fc.right, env.right)).toEqual({
      hairpinMode: true,
      isDefaultGateway: true,
      name: 'cbr0',
      type: 'bridge',
      ipMasq: false, // feltd masquerades (FLANNEL_IPMASQ=true), so the bridge does not
      mtu: 1450,
      isGateway: true,
      cniVersion: '1.0.0',
      ipam: {
        dataDir: '/x',
        type: 'host-local',
        ranges: [[{ subnet: '10.244.7.0/24' }]],
        routes: [{ dst: '192.0.2.0/24' }, { dst: '10.244.0.0/16' }],
      },
    });
  });

  it('refuses delegate.name, delegate.ipam and a non-string delegate.type, naming the field', () => {
    for (const [delegate, field] of [
      [{ name: 'x' }, 'delegate.name'],
      [{ ipam: {} }, 'delegate.ipam'],
      [{ type: 3 }, "'type'"],
    ] as const) {
      const r = conf({ delegate });
      expect(E.isLeft(r) && r.left).toMatchObject({ code: 7, msg: expect.stringContaining(field) });
    }
  });

  it('requires FLANNEL_MTU, FLANNEL_IPMASQ and a subnet in subnet.env', () => {
    const r = parseSubnetEnvFile('FLANNEL_NETWORK=10.244.0.0/16\n', '/run/flannel/subnet.env');
    expect(r).toEqual(E.left('/run/flannel/subnet.env is missing FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ'));
  });
});

describe('flannel plugin (kernel)', () => {
  const sb = new Sandbox();
  let host = '';
  let pod = '';
  let pod2 = '';
  let dir = '';
  let added: unknown;
  const config = () => ({
    cniVersion: '1.0.0',
    name: 'cbr0',
    type: 'flannel',
    subnetFile: join(dir, 'subnet.env'),
    dataDir: join(dir, 'flannel'),
    ipam: { dataDir: join(dir, 'ipam') },
    delegate: { isDefaultGateway: true },
  });

  beforeAll(async () => {
    host = await sb.ns();
    pod = await sb.ns();
    pod2 = await sb.ns();
    dir = sb.dir();
    writeFileSync(join(dir, 'subnet.env'), ENV);
  });
  afterAll(() => sb.cleanup());

  it('ADD delegates to bridge + host-local, saves the delegate config, and pods talk', async () => {
    const a = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'p1' }, 'ADD', config());
    expect(a.code, a.stdout + a.stderr).toBe(0);
    expect(a.json.ips[0].address).toBe('10.244.7.2/24');
    added = a.json;
    expect(a.json.interfaces.map((i: { name: string }) => i.name)[0]).toBe('cni0');
    const saved = JSON.parse(readFileSync(join(dir, 'flannel', 'p1'), 'utf8'));
    expect(saved).toMatchObject({ type: 'bridge', name: 'cbr0', mtu: 1450, ipMasq: false });
    expect(await routes(pod)).toEqual(expect.arrayContaining([expect.stringContaining('10.244.0.0/16 via 10.244.7.1')]));
    const b = await cni({ dir: FELT_CNI, hostNs: host, pod: pod2, cid: 'p2' }, 'ADD', config());
    expect(b.code).toBe(0);
    expect(await ping(pod, '10.244.7.3')).toBe(true);
    // ipMasq is feltd's job here: no CNI- chain.
    expect(await cniChains(host)).toEqual([]);
  });

  it('CHECK goes through the delegate with prevResult, and names drift', async () => {
    const ok = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'p1' }, 'CHECK', { ...config(), prevResult: added });
    expect(ok.code, ok.stdout).toBe(0);
    await nsRun(pod, ['ip', 'route', 'del', '10.244.0.0/16']);
    const bad = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'p1' }, 'CHECK', { ...config(), prevResult: added });
    expect(bad.json).toMatchObject({ code: 103, msg: expect.stringContaining('missing route 10.244.0.0/16 via 10.244.7.1') });
  });

  it('DEL uses the saved config, removes it, and a second DEL succeeds', async () => {
    for (const [p, cid] of [
      [pod, 'p1'],
      [pod2, 'p2'],
    ] as const) {
      const d = await cni({ dir: FELT_CNI, hostNs: host, pod: p, cid }, 'DEL', config());
      expect(d.code, d.stdout).toBe(0);
      expect(existsSync(join(dir, 'flannel', cid))).toBe(false);
      expect((await cni({ dir: FELT_CNI, hostNs: host, pod: p, cid }, 'DEL', config())).code).toBe(0);
    }
    expect(await veths(host)).toEqual([]);
    expect(await feltAllocations(join(dir, 'ipam'))).toEqual([]);
  });

  // A runtime resolves `portmap` on CNI_PATH: felt's own first; the reference's still works in its place.
  it.each([
    ["felt's portmap (first on CNI_PATH)", FELT_CNI],
    ['the reference portmap', REF_CNI],
  ])('runs the stock 10-flannel.conflist (flannel, then portmap) with %s', async (_t, portmapDir) => {
    const env = { CNI_PATH: `${FELT_CNI}:${REF_CNI}` };
    const call = (dir: string, type: string, command: 'ADD' | 'DEL' | 'CHECK', config: unknown) =>
      runCni({ dir, type, command, hostNs: host, containerId: 'p9', netns: nsPath(pod), ifname: 'eth0', config, env });
    const fl = await call(FELT_CNI, 'flannel', 'ADD', config());
    expect(fl.code, fl.stdout).toBe(0);
    const portmap = {
      cniVersion: '1.0.0',
      name: 'cbr0',
      type: 'portmap',
      capabilities: { portMappings: true },
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
      prevResult: fl.json,
    };
    const pm = await call(portmapDir, 'portmap', 'ADD', portmap);
    expect(pm.code, pm.stdout).toBe(0);
    // The conflist's result is portmap's: prevResult passed through (the reference adds "dns": {}).
    expect({ ...pm.json, dns: undefined }).toEqual({ ...fl.json, dns: undefined });
    const ip = String(fl.json.ips[0].address).split('/')[0];
    expect((await iptSave(host, 4)).some((l) => l.includes('--dport 8080') && l.includes(`DNAT --to-destination ${ip}:80`))).toBe(true);
    if (portmapDir === FELT_CNI) expect((await call(portmapDir, 'portmap', 'CHECK', portmap)).code).toBe(0);
    // DEL in reverse order, as libcni does.
    expect((await call(portmapDir, 'portmap', 'DEL', portmap)).code).toBe(0);
    expect((await call(FELT_CNI, 'flannel', 'DEL', config())).code).toBe(0);
    expect((await iptSave(host, 4)).some((l) => l.includes('--dport 8080'))).toBe(false);
    expect(await veths(host)).toEqual([]);
  });

  it('without subnet.env, ADD is code 11 (try again later) and changes nothing', async () => {
    const c = { ...config(), subnetFile: join(dir, 'missing.env') };
    const a = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'p3' }, 'ADD', c);
    expect(a.code).toBe(1);
    expect(a.json).toMatchObject({ code: 11, msg: expect.stringContaining('has not written') });
    expect(existsSync(join(dir, 'flannel', 'p3'))).toBe(false);
    expect(await veths(host)).toEqual([]);
  });
});
