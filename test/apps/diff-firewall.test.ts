// Differential tests: the same conflists (bridge + host-local, then firewall) through the reference plugins
// (/usr/lib/cni, Debian's containernetworking-plugins 1.1.1) and through felt's (dist/cni), each side in its
// own fresh host and pod namespaces with its own IPAM data dir. The filter table of both families is compared
// whole after every ADD and DEL; results are compared with what the bridge returned (the firewall passes its
// prevResult through). Then the two are mixed on one host: ADD with one, DEL with the other, no leftovers.
//
// Where felt deliberately differs, the test asserts the difference (see docs/cni.md, "firewall"):
//  - the reference prints "dns":{} when there is none; felt omits it;
//  - ingressPolicy "isolated" (v1.2.0) is refused by 1.1.1; felt has it;
//  - a refused ADD (unknown ingressPolicy) leaves the reference's CNI-FORWARD rules behind; felt changes nothing;
//  - an unknown backend makes the reference fall back to iptables (or to firewalld when it runs); felt refuses
//    it (code 7), and firewalld too; the reference answers code 999 where felt gives 7 naming the field;
//  - cniVersion 1.1.0 is refused by 1.1.1; felt accepts it.

import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI } from '../support/cni.ts';
import { cni, iptSave, Sandbox, type Call } from '../support/ns.ts';

const sb = new Sandbox();
afterAll(() => sb.cleanup());

type Conf = Record<string, unknown>;

const bridgeConf = (dataDir: string, bridge: string, ranges: readonly string[]): Conf => ({
  cniVersion: '1.0.0',
  name: `dfw-${bridge}`,
  type: 'bridge',
  bridge,
  isGateway: true,
  ipam: { type: 'host-local', ranges: ranges.map((subnet) => [{ subnet }]), dataDir },
});
/** felt's firewall records its rules in felt's log: here, not in /var/lib/felt (the reference ignores the key). */
const fwData = sb.dir();
const fwConf = (extra: Conf = {}): Conf => ({
  cniVersion: '1.0.0',
  name: 'dfw',
  type: 'firewall',
  backend: 'iptables',
  dataDir: fwData,
  ...extra,
});

/** Both families' filter tables, as iptables-save prints them (without counters and comments). */
async function filter(host: string): Promise<string[]> {
  return [...(await iptSave(host, 4, 'filter')).map((l) => `4 ${l}`), ...(await iptSave(host, 6, 'filter')).map((l) => `6 ${l}`)];
}

const noEmptyDns = (r: any): any => {
  const o = structuredClone(r);
  if (o?.dns && Object.keys(o.dns).length === 0) delete o.dns;
  return o;
};

interface PodSpec {
  readonly cid: string;
  readonly bridge: string;
  readonly ranges: readonly string[];
}

interface Scenario {
  readonly title: string;
  readonly fw: Conf;
  readonly pods: readonly PodSpec[];
}

const V4 = ['10.71.0.0/24'];
const DUAL = ['10.71.0.0/24', 'fd00:71::/64'];

const SCENARIOS: readonly Scenario[] = [
  {
    title: 'open, IPv4, two pods',
    fw: {},
    pods: [
      { cid: 'p1', bridge: 'dfw0', ranges: V4 },
      { cid: 'p2', bridge: 'dfw0', ranges: V4 },
    ],
  },
  { title: 'backend left out, IPv6 only', fw: { backend: undefined }, pods: [{ cid: 'p1', bridge: 'dfw0', ranges: ['fd00:72::/64'] }] },
  { title: 'iptablesAdminChainName', fw: { iptablesAdminChainName: 'NODE-ADMIN' }, pods: [{ cid: 'p1', bridge: 'dfw0', ranges: DUAL }] },
  {
    title: 'same-bridge, dual stack, two bridges',
    fw: { ingressPolicy: 'same-bridge' },
    pods: [
      { cid: 'p1', bridge: 'dfw0', ranges: DUAL },
      { cid: 'p2', bridge: 'dfw0', ranges: DUAL },
      { cid: 'p3', bridge: 'dfw1', ranges: ['10.73.0.0/24', 'fd00:73::/64'] },
    ],
  },
];

interface Side {
  readonly dir: string;
  readonly host: string;
  readonly dataDir: string;
  readonly pods: Map<string, { ns: string; result: any }>;
}

const newSide = async (dir: string): Promise<Side> => ({ dir, host: await sb.ns(), dataDir: sb.dir(), pods: new Map() });
const at = (s: Side, ns: string, cid: string): Call => ({ dir: s.dir, hostNs: s.host, pod: ns, cid });

/** bridge ADD, firewall ADD on its result; returns the firewall's output. */
async function add(s: Side, p: PodSpec, fw: Conf): Promise<any> {
  const ns = await sb.ns();
  const b = await cni(at(s, ns, p.cid), 'ADD', bridgeConf(s.dataDir, p.bridge, p.ranges));
  expect(b.code, b.stdout + b.stderr).toBe(0);
  const f = await cni(at(s, ns, p.cid), 'ADD', { ...fw, prevResult: b.json });
  expect(f.code, f.stdout + f.stderr).toBe(0);
  s.pods.set(p.cid, { ns, result: b.json });
  return f.json;
}

async function del(s: Side, p: PodSpec, fw: Conf): Promise<void> {
  const pod = s.pods.get(p.cid)!;
  const f = await cni(at(s, pod.ns, p.cid), 'DEL', { ...fw, prevResult: pod.result });
  expect(f.code, f.stdout + f.stderr).toBe(0);
  expect((await cni(at(s, pod.ns, p.cid), 'DEL', bridgeConf(s.dataDir, p.bridge, p.ranges))).code).toBe(0);
}

describe.each(SCENARIOS)('felt vs the reference: $title', ({ fw: extra, pods }) => {
  const fw = fwConf(extra);
  let ref: Side;
  let felt: Side;

  it('ADD: the same filter table after every pod; the result is the prevResult', async () => {
    ref = await newSide(REF_CNI);
    felt = await newSide(FELT_CNI);
    for (const p of pods) {
      const r = await add(ref, p, fw);
      const f = await add(felt, p, fw);
      expect(noEmptyDns(r)).toEqual(noEmptyDns(ref.pods.get(p.cid)!.result));
      expect(f).toEqual(noEmptyDns(felt.pods.get(p.cid)!.result));
      const felts = await filter(felt.host);
      expect(felts.filter((l) => l.includes(' -A CNI-FORWARD -s '))).toHaveLength(
        pods.slice(0, pods.indexOf(p) + 1).flatMap((q) => q.ranges).length,
      );
      expect(felts).toEqual(await filter(ref.host));
    }
  });

  it("CHECK passes on both, each on the other's rules too", async () => {
    for (const p of pods) {
      for (const s of [ref, felt]) {
        const pod = s.pods.get(p.cid)!;
        for (const dir of [REF_CNI, FELT_CNI]) {
          const c = await cni({ ...at(s, pod.ns, p.cid), dir }, 'CHECK', { ...fw, prevResult: pod.result });
          expect(c.code, `${dir} on ${s.dir}: ${c.stdout}`).toBe(0);
        }
      }
    }
  });

  it('DEL, one pod after the other, and again: the same filter table each time', async () => {
    for (const p of pods) {
      await del(ref, p, fw);
      await del(felt, p, fw);
      expect(await filter(felt.host)).toEqual(await filter(ref.host));
    }
    for (const p of pods.slice(0, 1)) {
      await del(ref, p, fw);
      await del(felt, p, fw);
    }
    const left = await filter(felt.host);
    expect(left).toEqual(await filter(ref.host));
    // What stays is shared: no rule names an address.
    expect(left.filter((l) => / -[sd] /.test(l))).toEqual([]);
  });
});

describe('switching between felt and the reference on one host', () => {
  it.each([
    ['the reference ADDs, felt DELs', REF_CNI, FELT_CNI],
    ['felt ADDs, the reference DELs', FELT_CNI, REF_CNI],
  ])('%s: no leftovers, and the shared rules are not doubled', async (_t, adder, deleter) => {
    const fw = fwConf({ ingressPolicy: 'same-bridge' });
    const host = await sb.ns();
    const control = await newSide(REF_CNI);
    const dataDir = sb.dir();
    const spec: PodSpec = { cid: 'm1', bridge: 'dfw0', ranges: DUAL };
    const ns = await sb.ns();
    const b = await cni({ dir: FELT_CNI, hostNs: host, pod: ns, cid: 'm1' }, 'ADD', bridgeConf(dataDir, spec.bridge, spec.ranges));
    expect(b.code).toBe(0);
    const conf = { ...fw, prevResult: b.json };
    expect((await cni({ dir: adder, hostNs: host, pod: ns, cid: 'm1' }, 'ADD', conf)).code).toBe(0);
    // The other one's ADD of a second pod changes only that pod's rules.
    const ns2 = await sb.ns();
    const b2 = await cni({ dir: FELT_CNI, hostNs: host, pod: ns2, cid: 'm2' }, 'ADD', bridgeConf(dataDir, spec.bridge, spec.ranges));
    expect((await cni({ dir: deleter, hostNs: host, pod: ns2, cid: 'm2' }, 'ADD', { ...fw, prevResult: b2.json })).code).toBe(0);
    expect((await cni({ dir: deleter, hostNs: host, pod: ns2, cid: 'm2' }, 'DEL', { ...fw, prevResult: b2.json })).code).toBe(0);
    expect((await cni({ dir: deleter, hostNs: host, pod: ns, cid: 'm1' }, 'CHECK', conf)).code).toBe(0);
    expect((await cni({ dir: deleter, hostNs: host, pod: ns, cid: 'm1' }, 'DEL', conf)).code).toBe(0);
    // The same as the reference alone after ADD and DEL of one pod (its own fresh host).
    await add(control, spec, fw);
    await del(control, spec, fw);
    expect(await filter(host)).toEqual(await filter(control.host));
  });
});

describe('deliberate differences', () => {
  const attachOne = async (dir: string): Promise<{ host: string; ns: string; prev: any }> => {
    const host = await sb.ns();
    const ns = await sb.ns();
    const b = await cni({ dir, hostNs: host, pod: ns, cid: 'd1' }, 'ADD', bridgeConf(sb.dir(), 'dfw0', V4));
    expect(b.code).toBe(0);
    return { host, ns, prev: b.json };
  };

  it('an unknown ingressPolicy: the reference says 999 and leaves its rules; felt says 7 and changes nothing', async () => {
    const conf = (prev: unknown) => fwConf({ ingressPolicy: 'bogus', prevResult: prev });
    const r = await attachOne(REF_CNI);
    const ro = await cni({ dir: REF_CNI, hostNs: r.host, pod: r.ns, cid: 'd1' }, 'ADD', conf(r.prev));
    expect(ro.json).toMatchObject({ code: 999, msg: 'unknown ingress policy: "bogus"' });
    expect((await filter(r.host)).some((l) => l.includes('-s 10.71.0.'))).toBe(true);
    const f = await attachOne(FELT_CNI);
    const before = await filter(f.host);
    const fo = await cni({ dir: FELT_CNI, hostNs: f.host, pod: f.ns, cid: 'd1' }, 'ADD', conf(f.prev));
    expect(fo.json).toMatchObject({ code: 7, msg: expect.stringMatching(/^ingressPolicy: unknown ingress policy "bogus"/) });
    expect(await filter(f.host)).toEqual(before);
  });

  it('isolated: refused by the reference 1.1.1, supported by felt (as v1.2.0)', async () => {
    const r = await attachOne(REF_CNI);
    const ro = await cni(
      { dir: REF_CNI, hostNs: r.host, pod: r.ns, cid: 'd1' },
      'ADD',
      fwConf({ ingressPolicy: 'isolated', prevResult: r.prev }),
    );
    expect(ro.json).toMatchObject({ code: 999, msg: 'unknown ingress policy: "isolated"' });
    const f = await attachOne(FELT_CNI);
    const fo = await cni(
      { dir: FELT_CNI, hostNs: f.host, pod: f.ns, cid: 'd1' },
      'ADD',
      fwConf({ ingressPolicy: 'isolated', prevResult: f.prev }),
    );
    expect(fo.code).toBe(0);
    expect(await filter(f.host)).toContain(
      '4 -A CNI-ISOLATION-STAGE-1 -i dfw0 -o dfw0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: isolated)" -j DROP',
    );
  });

  it('an unknown backend: the reference falls back to iptables; felt refuses it (code 7 naming backend)', async () => {
    const r = await attachOne(REF_CNI);
    expect(
      (await cni({ dir: REF_CNI, hostNs: r.host, pod: r.ns, cid: 'd1' }, 'ADD', fwConf({ backend: 'nft', prevResult: r.prev }))).code,
    ).toBe(0);
    const f = await attachOne(FELT_CNI);
    const fo = await cni({ dir: FELT_CNI, hostNs: f.host, pod: f.ns, cid: 'd1' }, 'ADD', fwConf({ backend: 'nft', prevResult: f.prev }));
    expect(fo.json).toMatchObject({ code: 7, msg: expect.stringMatching(/^backend: unknown backend "nft"/) });
  });

  it('missing prevResult: 999 from the reference, 7 naming prevResult from felt; neither changes anything', async () => {
    for (const [dir, code] of [
      [REF_CNI, 999],
      [FELT_CNI, 7],
    ] as const) {
      const host = await sb.ns();
      const ns = await sb.ns();
      const o = await cni({ dir, hostNs: host, pod: ns, cid: 'd1' }, 'ADD', fwConf());
      expect(o.json).toMatchObject({ code, msg: expect.stringContaining('missing prevResult from earlier plugin') });
      expect((await filter(host)).filter((l) => l.includes('CNI-'))).toEqual([]);
    }
  });
});
