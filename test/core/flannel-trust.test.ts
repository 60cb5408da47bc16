// Leases are untrusted: the checks of core/flannel/trust.ts, and the node Decider and desired overlay using them.

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fold, stamp } from '../../core/events.ts';
import { parseCIDR, overlaps } from '../../core/ip/ip.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { decide, initialState, nodeProjection, remoteLeases, type NodeCommand, type NodeState } from '../../core/flannel/node.ts';
import { desiredOverlay } from '../../core/flannel/desired.ts';
import { configChanges, leaseProblem, ownLeaseStatus, screenLeases, trackRefusals } from '../../core/flannel/trust.ts';
import type { Lease, NetConfig } from '../../core/flannel/types.ts';

const T0 = '2030-01-01T00:00:00.000Z';
const EXP = '2030-01-02T00:00:00.000Z';

const conf = (o: Record<string, unknown> = {}): NetConfig => {
  const r = parseNetConfig(JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' }, ...o }));
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right.config;
};
const C = conf();
const DUAL = conf({ EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' });

const mac = (n: number) => `3e:9c:0f:11:22:${n.toString(16).padStart(2, '0')}`;
const lease = (subnet: string | undefined, n: number, o: { ipv6Subnet?: string; invalid?: string } = {}): Lease => ({
  ...(subnet ? { subnet } : {}),
  ...(o.ipv6Subnet ? { ipv6Subnet: o.ipv6Subnet } : {}),
  attrs: { PublicIP: `198.51.100.${n}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac(n) } },
  expiration: EXP,
  ...(o.invalid ? { invalid: o.invalid } : {}),
});

function run(state: NodeState, command: NodeCommand): NodeState {
  const r = decide(command, state);
  if (E.isLeft(r)) throw new Error(r.left);
  return fold(nodeProjection, stamp('node/198.51.100.1', r.right, T0, 1), state);
}
const base = (config: NetConfig = C, ownSubnet = '10.244.1.0/24', ownV6?: string): NodeState => {
  let s = run(initialState(), { type: 'LoadConfig', data: { config }, metadata: { time: T0 } });
  s = run(s, {
    type: 'RecordOwnLease',
    data: { lease: { ...lease(ownSubnet, 1, ownV6 ? { ipv6Subnet: ownV6 } : {}) } },
    metadata: { time: T0 },
  });
  return s;
};
const observe = (leases: Lease[]): NodeCommand => ({
  type: 'ObserveLeases',
  data: { snapshot: { leases, revision: 1 }, own: '198.51.100.1' },
  metadata: { time: T0 },
});
const apply = (leases: Lease[]): NodeCommand => ({
  type: 'ApplyLeaseEvents',
  data: { events: leases.map((l) => ({ type: 'added' as const, lease: l })), own: '198.51.100.1' },
  metadata: { time: T0 },
});

describe('leaseProblem: a lease must fit the network config', () => {
  it('accepts a /24 inside the network', () => {
    expect(leaseProblem(C, lease('10.244.3.0/24', 3))).toBeUndefined();
  });
  it("refuses a /25 inside another node's /24 (the issue's 10.x.y.128-25)", () => {
    expect(leaseProblem(C, lease('10.244.3.128/25', 9))).toBe('10.244.3.128/25 is a /25, not a /24 (SubnetLen)');
  });
  it('refuses a /16 covering the whole network', () => {
    expect(leaseProblem(C, lease('10.244.0.0/16', 9))).toBe('10.244.0.0/16 is a /16, not a /24 (SubnetLen)');
  });
  it('refuses a subnet outside the network', () => {
    expect(leaseProblem(C, lease('10.99.3.0/24', 9))).toBe('10.99.3.0/24 is outside the network 10.244.0.0/16');
  });
  it('refuses an IPv6 subnet when IPv6 is off, and a value that is not a lease', () => {
    expect(leaseProblem(C, lease('10.244.3.0/24', 9, { ipv6Subnet: 'fd00:10:244:3::/64' }))).toMatch(/does not enable IPv6/);
    expect(leaseProblem(C, lease('10.244.3.0/24', 9, { invalid: 'lease: invalid JSON' }))).toBe(
      'its value is not a flannel lease: lease: invalid JSON',
    );
  });
});

describe('screenLeases: no overlap with this node or another lease', () => {
  it('refuses a lease overlapping the own subnet', () => {
    const s = screenLeases({
      config: DUAL,
      leases: [lease('10.244.1.0/24', 5, { ipv6Subnet: 'fd00:10:244:5::/64' })],
      own: { subnet: '10.244.1.0/24', ipv6Subnet: 'fd00:10:244:1::/64' },
    });
    expect(s.accepted).toEqual([]);
    expect(s.refused).toEqual([
      { key: '10.244.1.0-24&fd00:10:244:5::-64', publicIP: '198.51.100.5', why: "it overlaps this node's subnet 10.244.1.0/24" },
    ]);
  });
  it("dual stack: a newcomer sharing a known lease's IPv4 subnet is refused, whatever its key order", () => {
    const known = lease('10.244.7.0/24', 7, { ipv6Subnet: 'fd00:10:244:9::/64' });
    const intruder = lease('10.244.7.0/24', 8, { ipv6Subnet: 'fd00:10:244:8::/64' });
    const s = screenLeases({ config: DUAL, leases: [intruder, known], isKnown: (k) => k === '10.244.7.0-24&fd00:10:244:9::-64' });
    expect(s.accepted).toEqual([known]);
    expect(s.refused.map((r) => [r.key, r.why])).toEqual([
      ['10.244.7.0-24&fd00:10:244:8::-64', 'it overlaps the lease 10.244.7.0-24&fd00:10:244:9::-64'],
    ]);
    // As a delta: the known lease is not in the batch, only in the state.
    const d = screenLeases({ config: DUAL, leases: [intruder], known: [known], isKnown: () => false });
    expect(d.refused.map((r) => r.key)).toEqual(['10.244.7.0-24&fd00:10:244:8::-64']);
  });

  const subnetArb = fc.oneof(
    fc
      .record({ third: fc.integer({ min: 0, max: 5 }), fourth: fc.constantFrom(0, 128), len: fc.constantFrom(16, 24, 25, 23) })
      .map(({ third, fourth, len }) =>
        `10.244.${third}.${len <= 24 ? 0 : fourth}/${len}`.replace(/^10\.244\.(\d+)\.0\/16$/, '10.244.0.0/16'),
      ),
    fc.constantFrom('10.99.1.0/24', '10.244.2.0/24', '10.244.3.0/24'),
  );
  const v6Arb = fc.option(
    fc.integer({ min: 0, max: 4 }).map((n) => `fd00:10:244:${n}::/64`),
    { nil: undefined },
  );
  const leaseArb = fc
    .record({ s: subnetArb, v6: v6Arb, n: fc.integer({ min: 2, max: 200 }) })
    .map(({ s, v6, n }) => lease(s, n, v6 ? { ipv6Subnet: v6 } : {}));

  it('property: accepted leases fit the config, overlap neither the own subnet nor each other, and every lease is accepted or refused', () => {
    fc.assert(
      // A listing or a batch holds each key once (the Decider keeps the last event of a key).
      fc.property(
        fc.boolean(),
        fc.uniqueArray(leaseArb, { maxLength: 10, selector: (l) => `${l.subnet}&${l.ipv6Subnet}` }),
        (dual, leases) => {
          const config = dual ? DUAL : C;
          const own = dual ? { subnet: '10.244.1.0/24', ipv6Subnet: 'fd00:10:244:1::/64' } : { subnet: '10.244.1.0/24' };
          const s = screenLeases({ config, leases, own });
          expect(s.accepted.length + s.refused.length).toBe(leases.length);
          const cidrs = (l: Lease) => [l.subnet, l.ipv6Subnet].flatMap((x) => (x ? [parseCIDR(x)!] : []));
          for (const l of s.accepted) {
            expect(leaseProblem(config, l)).toBeUndefined();
            for (const c of cidrs(l))
              for (const o of cidrs(own as Lease)) if (c.ip.family === o.ip.family) expect(overlaps(c, o)).toBe(false);
          }
          for (let i = 0; i < s.accepted.length; i++) {
            for (let j = i + 1; j < s.accepted.length; j++) {
              for (const a of cidrs(s.accepted[i]!))
                for (const b of cidrs(s.accepted[j]!)) if (a.ip.family === b.ip.family) expect(overlaps(a, b)).toBe(false);
            }
          }
        },
      ),
    );
  });
});

describe('the node Decider refuses leases that do not fit; desired never routes them', () => {
  it("observe: a foreign /25 inside another node's /24 and a /16 over the network are not remote nodes", () => {
    const s = run(base(), observe([lease('10.244.3.0/24', 3), lease('10.244.3.128/25', 9), lease('10.244.0.0/16', 10)]));
    expect(remoteLeases(s).map((r) => r.key)).toEqual(['10.244.3.0-24']);
    const d = desiredOverlay(s, {
      publicIP: '198.51.100.1',
      underlayDev: 'eth0',
      underlayCidr: '198.51.100.1/24',
      underlayMtu: 1500,
      vtepMac: mac(1),
      ipMasq: false,
    });
    if (E.isLeft(d)) throw new Error(d.left);
    expect(d.right.kernel.routes.map((r) => r.dst)).toEqual(['10.244.3.0/24']);
  });

  it('watch: a refused lease is not recorded; a known remote that turns invalid is removed as refused', () => {
    let s = run(base(), apply([lease('10.244.3.0/24', 3), lease('10.244.3.128/25', 9)]));
    expect(remoteLeases(s).map((r) => r.key)).toEqual(['10.244.3.0-24']);
    const r = decide(apply([{ ...lease('10.244.3.0/24', 3), invalid: 'lease: invalid JSON' }]), s);
    expect(E.isRight(r) && r.right).toEqual([
      { type: 'RemoteLeaseRemoved', data: { key: '10.244.3.0-24', subnet: '10.244.3.0/24', publicIP: '198.51.100.3', reason: 'refused' } },
    ]);
    s = run(s, apply([{ ...lease('10.244.3.0/24', 3), invalid: 'lease: invalid JSON' }]));
    expect(remoteLeases(s)).toEqual([]);
  });

  it("dual stack watch: a lease reusing a known node's IPv4 subnet under another key is refused", () => {
    let s = run(
      base(DUAL, '10.244.1.0/24', 'fd00:10:244:1::/64'),
      apply([lease('10.244.3.0/24', 3, { ipv6Subnet: 'fd00:10:244:3::/64' })]),
    );
    s = run(s, apply([lease('10.244.3.0/24', 9, { ipv6Subnet: 'fd00:10:244:9::/64' })]));
    expect(remoteLeases(s).map((r) => r.key)).toEqual(['10.244.3.0-24&fd00:10:244:3::-64']);
  });

  it('desired skips a remote of another length recorded before the check (an old log)', () => {
    const s = base();
    const old: NodeState = {
      ...s,
      remotes: {
        '10.244.3.128-25': {
          key: '10.244.3.128-25',
          subnet: '10.244.3.128/25',
          attrs: lease('10.244.3.128/25', 9).attrs,
          expiration: EXP,
          since: T0,
          changed: T0,
        },
      },
    };
    const d = desiredOverlay(old, {
      publicIP: '198.51.100.1',
      underlayDev: 'eth0',
      underlayCidr: '198.51.100.1/24',
      underlayMtu: 1500,
      vtepMac: mac(1),
      ipMasq: false,
    });
    if (E.isLeft(d)) throw new Error(d.left);
    expect(d.right.kernel.routes).toEqual([]);
    expect(d.right.ignored.join('\n')).toContain('10.244.3.128/25 is not a /24');
  });
});

describe('trackRefusals: each refusal is logged once', () => {
  it('logs a refusal once across resyncs, again after it cleared, again when the reason changes', () => {
    const r = { key: '10.244.3.128-25', publicIP: '198.51.100.9', why: 'a' };
    let t = trackRefusals(new Map(), [r], [r.key], true);
    expect(t.log).toEqual([r]);
    t = trackRefusals(t.logged, [r], [r.key], true);
    expect(t.log).toEqual([]);
    t = trackRefusals(t.logged, [r], [r.key], false);
    expect(t.log).toEqual([]);
    t = trackRefusals(t.logged, [], [], true);
    expect(t.logged.size).toBe(0);
    t = trackRefusals(t.logged, [r], [r.key], false);
    expect(t.log).toEqual([r]);
    t = trackRefusals(t.logged, [{ ...r, why: 'b' }], [r.key], false);
    expect(t.log.map((x) => x.why)).toEqual(['b']);
    // A watch batch that accepts the key forgets it.
    t = trackRefusals(t.logged, [], [r.key], false);
    expect(t.logged.size).toBe(0);
  });
});

describe('ownLeaseStatus: the own lease as the store holds it', () => {
  const me = { publicIP: '198.51.100.1', backendType: 'vxlan', vtepMac: mac(1) };
  it('ok, missing, foreign (another PublicIP, not a lease), duplicate (same IP, another VtepMAC or backend)', () => {
    expect(ownLeaseStatus(lease('10.244.1.0/24', 1), me)).toEqual({ kind: 'ok' });
    expect(ownLeaseStatus(undefined, me)).toEqual({ kind: 'missing' });
    expect(ownLeaseStatus(lease('10.244.1.0/24', 7), me)).toEqual({
      kind: 'foreign',
      why: "it names PublicIP 198.51.100.7, not this node's 198.51.100.1",
      holder: '198.51.100.7',
    });
    expect(ownLeaseStatus({ ...lease('10.244.1.0/24', 1), invalid: 'lease: invalid JSON' }, me)).toMatchObject({
      kind: 'foreign',
      why: 'its value is not a flannel lease (lease: invalid JSON)',
    });
    const other = lease('10.244.1.0/24', 1);
    expect(ownLeaseStatus({ ...other, attrs: { ...other.attrs, BackendData: { VNI: 1, VtepMAC: mac(99) } } }, me)).toEqual({
      kind: 'duplicate',
      why: `it holds VtepMAC ${mac(99)}, this feltd's is ${mac(1)}`,
    });
    expect(ownLeaseStatus({ ...other, attrs: { ...other.attrs, BackendType: 'host-gw' } }, me).kind).toBe('duplicate');
  });
});

describe('configChanges', () => {
  it('names every field that differs, and nothing for the same config', () => {
    expect(configChanges(C, conf())).toEqual([]);
    expect(configChanges(C, conf({ Network: '10.245.0.0/16', Backend: { Type: 'vxlan', VNI: 2 } }))).toEqual([
      'Network 10.244.0.0/16 -> 10.245.0.0/16',
      'SubnetMin 10.244.1.0 -> 10.245.1.0',
      'SubnetMax 10.244.255.0 -> 10.245.255.0',
      'Backend.vni 1 -> 2',
    ]);
  });
});
