import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { chooseSubnet, leaseExpired, leaseFitsConfig, type ChooseSubnetInput, type SubnetChoice } from '../../core/flannel/subnets.ts';
import type { Lease, NetConfig } from '../../core/flannel/types.ts';
import { contains, parseCIDR, parseIP, overlaps } from '../../core/ip/ip.ts';
import { runs } from '../support/runs.ts';

const conf = (o: object): NetConfig => {
  const r = parseNetConfig(JSON.stringify(o));
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right.config;
};
const NOW = '2030-01-01T00:00:00.000Z';
const LATER = '2030-01-02T00:00:00.000Z';
const EARLIER = '2029-12-31T00:00:00.000Z';
const lease = (subnet: string, ip: string, expiration = LATER, ipv6Subnet?: string): Lease => ({
  subnet,
  ...(ipv6Subnet ? { ipv6Subnet } : {}),
  attrs: { PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan' },
  expiration,
});
const choose = (o: Partial<ChooseSubnetInput> & { config: NetConfig }): E.Either<string, SubnetChoice> =>
  chooseSubnet({ leases: [], publicIP: '198.51.100.1', now: NOW, rand: () => 0, ...o });
const right = <T>(r: E.Either<string, T>): T => {
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right;
};

const net16 = conf({ Network: '10.244.0.0/16' });

describe('chooseSubnet', () => {
  it('reuses the live lease holding this public IP', () => {
    const c = right(
      choose({
        config: net16,
        leases: [lease('10.244.9.0/24', '198.51.100.2'), lease('10.244.7.0/24', '198.51.100.1')],
        previous: '10.244.3.0/24',
      }),
    );
    expect(c).toMatchObject({ subnet: '10.244.7.0/24', source: 'reused', stale: [] });
  });

  it('a lease of this IP that no longer fits the config is stale and not reused', () => {
    const old = lease('10.244.7.0/25', '198.51.100.1');
    const c = right(choose({ config: net16, leases: [old] }));
    expect(c.source).toBe('random');
    expect(c.stale).toEqual([old]);
    // Being revoked, it does not hold its addresses: the first free /24 is 10.244.1.0.
    expect(c.subnet).toBe('10.244.1.0/24');
  });

  it('uses the previous subnet when free and valid', () => {
    expect(right(choose({ config: net16, previous: '10.244.3.0/24' }))).toMatchObject({ subnet: '10.244.3.0/24', source: 'previous' });
    // Taken by someone else: random.
    const c = right(choose({ config: net16, previous: '10.244.3.0/24', leases: [lease('10.244.3.0/24', '198.51.100.9')] }));
    expect(c.source).toBe('random');
    expect(c.why).toMatch(/previous subnet 10.244.3.0\/24 is leased to another node/);
    // Held by an expired lease: free again.
    expect(
      right(choose({ config: net16, previous: '10.244.3.0/24', leases: [lease('10.244.3.0/24', '198.51.100.9', EARLIER)] })).source,
    ).toBe('previous');
    // Outside SubnetMin..SubnetMax (the first subnet), another length, or outside the network: not used.
    for (const p of ['10.244.0.0/24', '10.244.3.0/25', '10.245.3.0/24']) {
      const r = right(choose({ config: net16, previous: p }));
      expect(r.source).toBe('random');
      expect(r.why).toMatch(/does not fit the config/);
    }
  });

  it('picks with rand among the first 100 free subnets, as flanneld', () => {
    const leases = [lease('10.244.1.0/24', '198.51.100.5'), lease('10.244.2.0/24', '198.51.100.6')];
    const seen: number[] = [];
    const pickAt = (i: number) => right(choose({ config: net16, leases, rand: (n) => (seen.push(n), i) })).subnet;
    expect(pickAt(0)).toBe('10.244.3.0/24');
    expect(pickAt(99)).toBe('10.244.102.0/24');
    expect(seen).toEqual([100, 100]);
  });

  it('skips a lease of a different length that overlaps several candidates', () => {
    const c = right(choose({ config: net16, leases: [lease('10.244.0.0/20', '198.51.100.5')] }));
    expect(c.subnet).toBe('10.244.16.0/24');
  });

  it('avoids the subnets other nodes were last seen holding (a wiped store), unless nothing else is free', () => {
    const two = conf({ Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.2.0' });
    for (const r of [0, 1])
      expect(right(choose({ config: two, avoid: ['10.244.1.0/24'], rand: (n) => r % n })).subnet).toBe('10.244.2.0/24');
    expect(right(choose({ config: two, avoid: ['10.244.1.0/24', '10.244.2.0/24'] })).subnet).toBe('10.244.1.0/24');
    expect(right(choose({ config: two, leases: [lease('10.244.2.0/24', '198.51.100.2')], avoid: ['10.244.1.0/24'] })).subnet).toBe(
      '10.244.1.0/24',
    );
    // The previous subnet is this node's own: avoid does not apply to it.
    expect(right(choose({ config: two, previous: '10.244.1.0/24', avoid: ['10.244.1.0/24'] }))).toMatchObject({
      subnet: '10.244.1.0/24',
      source: 'previous',
    });
    const dual = conf({
      Network: '10.244.0.0/16',
      SubnetMin: '10.244.1.0',
      SubnetMax: '10.244.2.0',
      EnableIPv6: true,
      IPv6Network: 'fd00::/62',
    });
    expect(right(choose({ config: dual, avoid: ['10.244.1.0/24', 'fd00:0:0:1::/64'] }))).toMatchObject({
      subnet: '10.244.2.0/24',
      ipv6Subnet: 'fd00:0:0:2::/64',
    });
  });

  it('"out of subnets" names the range', () => {
    const small = conf({ Network: '10.0.0.0/28' }); // /30s: 10.0.0.4, .8, .12
    const leases = ['10.0.0.4/30', '10.0.0.8/30', '10.0.0.12/30'].map((s, i) => lease(s, `198.51.100.${10 + i}`));
    expect(choose({ config: small, leases })).toEqual(
      E.left('out of subnets: all 3 subnets /30 between 10.0.0.4 and 10.0.0.12 are leased'),
    );
    // One expires: it is free again.
    const l2 = [...leases.slice(0, 2), lease('10.0.0.12/30', '198.51.100.12', EARLIER)];
    expect(right(choose({ config: small, leases: l2 })).subnet).toBe('10.0.0.12/30');
  });

  it('rejects a rand that is out of range', () => {
    expect(choose({ config: net16, rand: () => 100 })).toEqual(E.left('rand(100) returned 100, not an integer in [0, 100)'));
  });

  it('dual stack: both families, reuse needs both to fit', () => {
    const ds = conf({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' });
    const c = right(choose({ config: ds }));
    expect(c).toMatchObject({ subnet: '10.244.1.0/24', ipv6Subnet: 'fd00:10:244:1::/64', source: 'random' });
    const v4only = lease('10.244.5.0/24', '198.51.100.1');
    expect(right(choose({ config: ds, leases: [v4only] })).stale).toEqual([v4only]);
    const both = lease('10.244.5.0/24', '198.51.100.1', LATER, 'fd00:10:244:5::/64');
    expect(right(choose({ config: ds, leases: [both] }))).toMatchObject({
      source: 'reused',
      subnet: '10.244.5.0/24',
      ipv6Subnet: 'fd00:10:244:5::/64',
    });
    expect(right(choose({ config: ds, previous: '10.244.8.0/24', previousIPv6: 'fd00:10:244:8::/64' }))).toMatchObject({
      source: 'previous',
    });
  });

  it('IPv6 only: identifies its lease by PublicIPv6', () => {
    const v6 = conf({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' });
    const other: Lease = {
      ipv6Subnet: 'fd00:10:244:5::/64',
      attrs: { PublicIP: '0.0.0.0', PublicIPv6: '2001:db8::9', BackendType: 'vxlan' },
      expiration: LATER,
    };
    const mine: Lease = {
      ipv6Subnet: 'fd00:10:244:6::/64',
      attrs: { PublicIP: '0.0.0.0', PublicIPv6: '2001:db8::1', BackendType: 'vxlan' },
      expiration: LATER,
    };
    expect(
      right(chooseSubnet({ config: v6, leases: [other, mine], publicIP: '0.0.0.0', publicIPv6: '2001:db8::1', now: NOW, rand: () => 0 })),
    ).toMatchObject({
      source: 'reused',
      ipv6Subnet: 'fd00:10:244:6::/64',
    });
  });

  it('leaseExpired and leaseFitsConfig', () => {
    expect(leaseExpired(lease('10.244.1.0/24', 'x', EARLIER), NOW)).toBe(true);
    expect(leaseExpired(lease('10.244.1.0/24', 'x', NOW), NOW)).toBe(false);
    expect(leaseExpired(lease('10.244.1.0/24', 'x', 'garbage'), NOW)).toBe(false);
    expect(leaseFitsConfig(net16, { subnet: '10.244.255.0/24' })).toBe(true);
    expect(leaseFitsConfig(net16, { subnet: '10.244.0.0/24' })).toBe(false);
  });
});

// ---- properties ---------------------------------------------------------------------------------------

type Step =
  { kind: 'acquire'; node: number; rand: number; usePrev: boolean } | { kind: 'advance'; hours: number } | { kind: 'crash'; node: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ kind: fc.constant('acquire' as const), node: fc.nat(11), rand: fc.nat(1000), usePrev: fc.boolean() }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('advance' as const), hours: fc.integer({ min: 1, max: 30 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crash' as const), node: fc.nat(11) }) },
);

const configs = [
  conf({ Network: '10.0.0.0/26', SubnetLen: 29 }), // 7 subnets for 12 nodes: exhaustion happens
  conf({ Network: '10.0.0.0/24', SubnetLen: 28, SubnetMin: '10.0.0.48', SubnetMax: '10.0.0.160' }),
  conf({ Network: '10.244.0.0/16' }),
];

describe('chooseSubnet properties', () => {
  it('never hands one subnet to two nodes, and stays within SubnetMin..SubnetMax, over any history', () => {
    fc.assert(
      fc.property(fc.constantFrom(...configs), fc.array(stepArb, { maxLength: 60 }), (config, steps) => {
        let t = Date.parse(NOW);
        // The store: key -> lease (create-if-absent treats an expired key as absent, like etcd's TTL).
        const store = new Map<string, Lease>();
        const previous = new Map<number, string>();
        const ip = (n: number) => `198.51.100.${n + 1}`;
        const iso = (ms: number) => new Date(ms).toISOString();
        const min = parseIP(config.subnetMin!)!.value;
        const max = parseIP(config.subnetMax!)!.value;
        for (const s of steps) {
          const now = iso(t);
          if (s.kind === 'advance') t += s.hours * 3600_000;
          else if (s.kind === 'crash') previous.delete(s.node);
          else {
            const leases = [...store.values()];
            const r = chooseSubnet({
              config,
              leases,
              publicIP: ip(s.node),
              ...(s.usePrev && previous.has(s.node) ? { previous: previous.get(s.node)! } : {}),
              now,
              rand: (n) => s.rand % n,
            });
            if (E.isLeft(r)) {
              expect(r.left).toMatch(/^out of subnets/);
              // Only when every subnet is held by a live lease.
              const live = leases.filter((l) => !leaseExpired(l, now));
              expect(BigInt(live.length)).toBeGreaterThanOrEqual((max - min) / (1n << BigInt(32 - config.subnetLen)) + 1n);
              continue;
            }
            const c = r.right;
            for (const st of c.stale) store.delete(st.subnet!);
            const exp = iso(t + 24 * 3600_000);
            const existing = store.get(c.subnet!);
            if (c.source === 'reused') {
              expect(existing?.attrs.PublicIP).toBe(ip(s.node));
            } else {
              // create-if-absent must succeed: the allocator only offers free subnets.
              expect(existing === undefined || leaseExpired(existing, now)).toBe(true);
            }
            store.set(c.subnet!, lease(c.subnet!, ip(s.node), exp));
            previous.set(s.node, c.subnet!);
          }
          // Invariants over the live leases.
          const live = [...store.values()].filter((l) => !leaseExpired(l, iso(t)));
          const cidrs = live.map((l) => parseCIDR(l.subnet!)!);
          for (let i = 0; i < cidrs.length; i++) {
            const v = cidrs[i]!.ip.value;
            expect(v >= min && v <= max).toBe(true);
            expect(contains(parseCIDR(config.network!)!, cidrs[i]!.ip)).toBe(true);
            for (let j = i + 1; j < cidrs.length; j++) expect(overlaps(cidrs[i]!, cidrs[j]!)).toBe(false);
          }
          const owners = live.map((l) => l.attrs.PublicIP);
          expect(new Set(owners).size).toBe(owners.length);
        }
      }),
      { numRuns: runs(300) },
    );
  });
});
