// macvlan through the real executables in throwaway namespaces: two pods on one master reach each other; the
// same config through the reference (/usr/lib/cni/macvlan, v1.1.1) gives the same result shape and pod state;
// no IPAM means an interface without addresses; the default-route interface is the default master; CHECK, DEL,
// DEL again; bad input changes nothing.
//
// Deliberate differences (normalized here): felt creates the macvlan in the pod under its final name (the
// reference uses a temporary name and renames it) and picks a random locally administered MAC itself when the
// config names none (the kernel picks one for the reference); felt omits an empty `dns`; felt's DEL does not
// need the master to exist.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, runCni, type CniOutcome } from '../support/cni.ts';
import { addrs, feltAllocations, links, nsPath, nsRun, ping, Sandbox } from '../support/ns.ts';

const sb = new Sandbox();
let data = '';
beforeAll(() => {
  data = sb.dir();
});
afterAll(() => sb.cleanup());

/** A host namespace with a master device that has carrier (one end of an up veth pair). */
async function hostWithMaster(): Promise<string> {
  const host = await sb.ns();
  await nsRun(host, ['ip', 'link', 'add', 'name', 'm0', 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'm0p']);
  await nsRun(host, ['ip', 'link', 'set', 'dev', 'm0', 'up']);
  await nsRun(host, ['ip', 'link', 'set', 'dev', 'm0p', 'up']);
  return host;
}

const conf = (extra: Record<string, unknown> = {}, version = '1.0.0') => ({
  cniVersion: version,
  name: 'mvnet',
  type: 'macvlan',
  master: 'm0',
  mode: 'bridge',
  mtu: 1400,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.50.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: data },
  ...extra,
});

const call = (
  dir: string,
  host: string,
  pod: string,
  command: 'ADD' | 'DEL' | 'CHECK',
  config: unknown,
  cid = 'mv-ctr',
): Promise<CniOutcome> =>
  runCni({ dir, type: 'macvlan', command, hostNs: host, containerId: cid, netns: nsPath(pod), ifname: 'eth0', config });

async function podView(pod: string): Promise<unknown> {
  const l = (await links(pod)).find((x) => x.ifname === 'eth0');
  return {
    kind: l?.linkinfo?.info_kind,
    mode: (l?.linkinfo as { info_data?: { mode?: string } } | undefined)?.info_data?.mode,
    mtu: l?.mtu,
    up: l?.flags.includes('UP'),
    addrs: (await addrs(pod))['eth0']?.filter((a) => !a.startsWith('fe80')),
    routes: (await nsRun(pod, ['ip', '-4', 'route', 'show'])).trim().split('\n').sort(),
  };
}

describe('macvlan', () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])('two pods on one master ping each other (%s); CHECK; DEL; DEL again', async (version) => {
    const host = await hostWithMaster();
    const [a, b] = [await sb.ns(), await sb.ns()];
    const ra = await call(FELT_CNI, host, a, 'ADD', conf({}, version), 'mv-a');
    const rb = await call(FELT_CNI, host, b, 'ADD', conf({}, version), 'mv-b');
    expect(ra.code, ra.stdout + ra.stderr).toBe(0);
    expect(rb.code, rb.stdout + rb.stderr).toBe(0);
    expect(await ping(a, rb.json.ips[0].address.split('/')[0])).toBe(true);
    expect((await call(FELT_CNI, host, a, 'CHECK', { ...conf({}, version), prevResult: ra.json }, 'mv-a')).code).toBe(0);
    for (const [pod, cid] of [
      [a, 'mv-a'],
      [b, 'mv-b'],
    ] as const) {
      expect((await call(FELT_CNI, host, pod, 'DEL', conf({}, version), cid)).code).toBe(0);
      expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
      expect((await call(FELT_CNI, host, pod, 'DEL', conf({}, version), cid)).code).toBe(0);
    }
    expect((await feltAllocations(data)).filter((x) => x.network === 'mvnet')).toEqual([]);
    // The master is the host's, untouched.
    expect((await links(host)).map((l) => l.ifname).sort()).toEqual(['lo', 'm0', 'm0p']);
  });

  it('the same pod state and result shape as the reference', async () => {
    const out: { r: CniOutcome; view: unknown }[] = [];
    for (const dir of [REF_CNI, FELT_CNI]) {
      const host = await hostWithMaster();
      const pod = await sb.ns();
      const r = await call(dir, host, pod, 'ADD', conf({ ipam: { ...conf().ipam, dataDir: sb.dir() } }));
      expect(r.code, r.stdout + r.stderr).toBe(0);
      out.push({ r, view: await podView(pod) });
      expect((await call(dir, host, pod, 'DEL', conf())).code).toBe(0);
    }
    const [ref, felt] = out as [{ r: CniOutcome; view: unknown }, { r: CniOutcome; view: unknown }];
    expect(felt.view).toEqual(ref.view);
    const shape = (j: { interfaces: { name: string; mac: string; sandbox: string }[]; ips: unknown[]; routes: unknown[] }) => ({
      interfaces: j.interfaces.map((i) => ({ name: i.name, mac: /^[0-9a-f:]{17}$/.test(i.mac), inPod: !!i.sandbox })),
      ips: j.ips,
      routes: j.routes,
    });
    expect(shape(felt.r.json)).toEqual(shape(ref.r.json));
  });

  it('no IPAM: an interface that is up, without addresses; the default-route interface as master', async () => {
    const host = await hostWithMaster();
    await nsRun(host, ['ip', 'addr', 'add', '198.51.100.10/24', 'dev', 'm0']);
    await nsRun(host, ['ip', 'route', 'add', 'default', 'via', '198.51.100.1', 'dev', 'm0']);
    const pod = await sb.ns();
    const r = await call(FELT_CNI, host, pod, 'ADD', { cniVersion: '1.0.0', name: 'mvl2', type: 'macvlan', mode: 'private' });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json.ips).toBeUndefined();
    const view = (await podView(pod)) as { kind: string; mode: string; up: boolean; addrs?: string[] };
    expect(view).toMatchObject({ kind: 'macvlan', mode: 'private', up: true });
    expect(view.addrs ?? []).toEqual([]);
    expect((await call(FELT_CNI, host, pod, 'DEL', { cniVersion: '1.0.0', name: 'mvl2', type: 'macvlan' })).code).toBe(0);
  });

  it.each([
    [{ master: 'nope0' }, 'master'],
    [{ mode: 'weird' }, 'mode'],
    [{ mtu: 9000 }, 'mtu'],
    [{ mac: 'zz' }, 'mac'],
  ])('bad input %j: code 7 naming the field, nothing left', async (extra, field) => {
    const host = await hostWithMaster();
    const pod = await sb.ns();
    const r = await call(FELT_CNI, host, pod, 'ADD', conf(extra));
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringContaining(field) });
    expect((await links(pod)).map((l) => l.ifname)).toEqual(['lo']);
    expect((await feltAllocations(data)).filter((x) => x.network === 'mvnet')).toEqual([]);
  });
});
