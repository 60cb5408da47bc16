// Differential tests: the same portmap configs through the reference plugin (/usr/lib/cni/portmap, Debian's
// containernetworking-plugins 1.1.1) and through felt's (dist/cni/portmap), each chained after felt's bridge +
// host-local in its own fresh host and pod namespaces (so both get the same pod address). The nat tables of
// both families and route_localnet on the bridge are compared as a whole, after ADD and after DEL; then a node
// switches implementations between ADD and DEL, and is left exactly as the reference's own DEL leaves it.
//
// Deliberate differences, asserted here (see docs/cni.md):
//  - CHECK: the reference 1.1.1 checks every address's rules in both iptables and ip6tables, so it fails for
//    any attachment with port mappings (IPv4-only: no chain in ip6tables; dual stack: the IPv4 rules are not
//    in ip6tables); felt checks each family the container has an address in against that family's rules.

import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI } from '../support/cni.ts';
import { cni, iptSave, nsRun, Sandbox, sysctl } from '../support/ns.ts';

const sb = new Sandbox();
afterAll(() => sb.cleanup());

type Conf = Record<string, unknown>;

const NET = 'pmdiff';
const bridge = (dataDir: string, ranges: string[]): Conf => ({
  cniVersion: '1.0.0',
  name: NET,
  type: 'bridge',
  bridge: 'cni0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: ranges.map((subnet) => [{ subnet }]), dataDir },
});

const MAPPINGS = [
  { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
  { hostPort: 8081, containerPort: 81, protocol: 'udp' },
  { hostPort: 9090, containerPort: 90, protocol: 'tcp', hostIP: '198.51.100.1' },
  { hostPort: 9092, containerPort: 92, protocol: 'tcp', hostIP: '0.0.0.0' },
  { hostPort: 9093, containerPort: 93, protocol: 'tcp', hostIP: 'fd00:51::1' },
  { hostPort: 9091, containerPort: 91, protocol: 'sctp' },
];

interface Scenario {
  readonly title: string;
  readonly ranges?: string[];
  readonly portmap: Conf;
  /** Containers attached (each with the same portmap config). */
  readonly pods?: number;
  /** Set up in the host namespace first (both sides). */
  readonly prepare?: (host: string) => Promise<void>;
}

const many = Array.from({ length: 17 }, (_, i) => ({ hostPort: 20000 + i, containerPort: 80 + i, protocol: i % 2 ? 'udp' : 'tcp' }));

const SCENARIOS: readonly Scenario[] = [
  { title: 'IPv4: tcp, udp, sctp, hostIP of both families and 0.0.0.0', portmap: { runtimeConfig: { portMappings: MAPPINGS } } },
  { title: 'snat off', portmap: { snat: false, runtimeConfig: { portMappings: MAPPINGS } } },
  { title: 'markMasqBit 5', portmap: { markMasqBit: 5, runtimeConfig: { portMappings: MAPPINGS.slice(0, 2) } } },
  {
    title: 'externalSetMarkChain',
    portmap: { externalSetMarkChain: 'KUBE-MARK-MASQ', runtimeConfig: { portMappings: MAPPINGS.slice(0, 2) } },
    prepare: async (host) => {
      await nsRun(host, ['iptables', '-t', 'nat', '-N', 'KUBE-MARK-MASQ']);
    },
  },
  {
    title: 'conditionsV4 (address, negated interface, a match)',
    portmap: {
      conditionsV4: ['-d', '198.51.100.1', '!', '-i', 'ext9', '-m', 'addrtype', '--src-type', 'LOCAL'],
      runtimeConfig: { portMappings: MAPPINGS.slice(0, 2) },
    },
  },
  { title: '17 ports (multiport lists of 15)', portmap: { runtimeConfig: { portMappings: many } } },
  { title: 'two pods with port mappings', pods: 2, portmap: { runtimeConfig: { portMappings: MAPPINGS.slice(0, 2) } } },
  {
    title: 'dual stack with conditionsV6',
    ranges: ['10.77.0.0/24', 'fd00:77::/64'],
    portmap: { conditionsV6: ['!', '-s', 'fd00:99::/64'], runtimeConfig: { portMappings: MAPPINGS } },
  },
  { title: 'no port mappings: nothing happens', portmap: { runtimeConfig: { portMappings: [] } } },
];

interface Side {
  readonly host: string;
  readonly pods: string[];
  readonly results: unknown[];
}

async function attach(s: Scenario): Promise<Side> {
  const host = await sb.ns();
  await nsRun(host, ['ip', 'link', 'set', 'lo', 'up']);
  await s.prepare?.(host);
  const dataDir = sb.dir();
  const pods: string[] = [];
  const results: unknown[] = [];
  for (let i = 0; i < (s.pods ?? 1); i++) {
    const pod = await sb.ns();
    const b = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: `ctr-${i}` }, 'ADD', bridge(dataDir, s.ranges ?? ['10.77.0.0/24']));
    if (b.code !== 0) throw new Error(b.stdout);
    pods.push(pod);
    results.push(b.json);
  }
  return { host, pods, results };
}

const pmConf = (s: Scenario, prevResult: unknown): Conf => ({
  cniVersion: '1.0.0',
  name: NET,
  type: 'portmap',
  capabilities: { portMappings: true },
  ...s.portmap,
  prevResult,
});

const portmap = (dir: string, side: Side, i: number, command: 'ADD' | 'DEL' | 'CHECK', s: Scenario) =>
  cni({ dir, type: 'portmap', hostNs: side.host, pod: side.pods[i]!, cid: `ctr-${i}` }, command, pmConf(s, side.results[i]));

/** The nat tables of both families and route_localnet on the bridge. */
const kernel = async (host: string): Promise<{ v4: string[]; v6: string[]; localnet: string }> => ({
  v4: await iptSave(host, 4),
  v6: await iptSave(host, 6),
  localnet: await sysctl(host, 'net.ipv4.conf.cni0.route_localnet'),
});

describe.each(SCENARIOS)('portmap, felt vs reference: $title', (s) => {
  let ref: Side;
  let felt: Side;

  it('ADD: prevResult passed through, the same nat tables', async () => {
    ref = await attach(s);
    felt = await attach(s);
    for (let i = 0; i < ref.pods.length; i++) {
      const r = await portmap(REF_CNI, ref, i, 'ADD', s);
      const f = await portmap(FELT_CNI, felt, i, 'ADD', s);
      expect(r.code, r.stdout).toBe(0);
      expect(f.code, f.stdout + f.stderr).toBe(0);
      // Both pass their prevResult through (the reference adds "dns": {} for no DNS; felt leaves it out).
      const { dns: _dns, ...refResult } = r.json;
      expect(refResult).toEqual(ref.results[i]);
      expect(f.json).toEqual(felt.results[i]);
    }
    expect(await kernel(felt.host)).toEqual(await kernel(ref.host));
  });

  it("felt's CHECK passes (the reference's fails whenever there are port mappings)", async () => {
    for (let i = 0; i < felt.pods.length; i++) {
      const f = await portmap(FELT_CNI, felt, i, 'CHECK', s);
      expect(f.code, f.stdout).toBe(0);
      const r = await portmap(REF_CNI, ref, i, 'CHECK', s);
      const mapped = ((s.portmap['runtimeConfig'] as { portMappings: unknown[] }).portMappings ?? []).length > 0;
      if (mapped) expect(r.json).toMatchObject({ msg: expect.stringContaining('could not check ipv6 dnat') });
      else expect(r.code, r.stdout).toBe(0);
    }
  });

  it('DEL: the same nat tables, and a second DEL changes nothing', async () => {
    for (let i = 0; i < ref.pods.length; i++) {
      expect((await portmap(REF_CNI, ref, i, 'DEL', s)).code).toBe(0);
      expect((await portmap(FELT_CNI, felt, i, 'DEL', s)).code).toBe(0);
    }
    const after = await kernel(felt.host);
    expect(after).toEqual(await kernel(ref.host));
    for (let i = 0; i < felt.pods.length; i++) expect((await portmap(FELT_CNI, felt, i, 'DEL', s)).code).toBe(0);
    expect(await kernel(felt.host)).toEqual(after);
  });

  it('switching between ADD and DEL leaves what the reference leaves', async () => {
    // ADD by one, DEL by the other, on the now clean hosts; compared with ADD + DEL by the reference.
    const clean = await kernel(ref.host);
    for (let i = 0; i < ref.pods.length; i++) {
      expect((await portmap(REF_CNI, felt, i, 'ADD', s)).code).toBe(0);
      expect((await portmap(FELT_CNI, ref, i, 'ADD', s)).code).toBe(0);
    }
    expect(await kernel(ref.host)).toEqual(await kernel(felt.host));
    for (let i = 0; i < ref.pods.length; i++) {
      expect((await portmap(FELT_CNI, felt, i, 'DEL', s)).code).toBe(0);
      expect((await portmap(REF_CNI, ref, i, 'DEL', s)).code).toBe(0);
    }
    expect(await kernel(felt.host)).toEqual(clean);
    expect(await kernel(ref.host)).toEqual(clean);
  });
});
