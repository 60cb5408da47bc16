import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateHostGw, type HostGwLease } from '../../core/flannel/desired.ts';

const hostGw = (subnet: string, publicIP: string, o: { ipv6Subnet?: string; publicIPv6?: string; type?: string } = {}): HostGwLease => ({
  subnet,
  ...(o.ipv6Subnet ? { ipv6Subnet: o.ipv6Subnet } : {}),
  attrs: { PublicIP: publicIP, PublicIPv6: o.publicIPv6 ?? null, BackendType: o.type ?? 'host-gw' },
});
const left = (r: E.Either<string, void>): string => (E.isLeft(r) ? r.left : '');

describe('validateHostGw', () => {
  it('accepts nodes on the segment, and no nodes at all', () => {
    expect(validateHostGw([], '198.51.100.0/24')).toEqual(E.right(undefined));
    expect(validateHostGw([hostGw('10.244.2.0/24', '198.51.100.2'), hostGw('10.244.3.0/24', '198.51.100.254')], '198.51.100.1/24')).toEqual(
      E.right(undefined),
    );
  });

  it('names every node that is off the segment, with its lease key and the segment', () => {
    const msg = left(
      validateHostGw(
        [hostGw('10.244.2.0/24', '198.51.100.2'), hostGw('10.244.7.0/24', '203.0.113.7'), hostGw('10.244.8.0/24', '198.51.101.8')],
        '198.51.100.0/24',
      ),
    );
    expect(msg).toMatch(/^host-gw: /);
    expect(msg).toContain("node 203.0.113.7 (lease 10.244.7.0-24) is not on this node's L2 segment 198.51.100.0/24");
    expect(msg).toContain('node 198.51.101.8 (lease 10.244.8.0-24)');
    expect(msg).not.toContain('198.51.100.2');
    expect(msg).toContain('use vxlan');
  });

  it('leases of another backend are not host-gw routes and are skipped, as flanneld does', () => {
    expect(validateHostGw([hostGw('10.244.7.0/24', '203.0.113.7', { type: 'vxlan' })], '198.51.100.0/24')).toEqual(E.right(undefined));
  });

  it('a lease without a public IPv4 cannot be routed', () => {
    expect(left(validateHostGw([hostGw('10.244.7.0/24', '0.0.0.0')], '198.51.100.0/24'))).toContain(
      'node of lease 10.244.7.0-24 has no public IPv4 address',
    );
  });

  it('IPv6: checked against underlayCidrV6 when given', () => {
    const l = hostGw('10.244.2.0/24', '198.51.100.2', { ipv6Subnet: 'fd00:10:244:2::/64', publicIPv6: '2001:db8:1::2' });
    expect(validateHostGw([l], '198.51.100.0/24')).toEqual(E.right(undefined));
    expect(validateHostGw([l], '198.51.100.0/24', '2001:db8:1::/64')).toEqual(E.right(undefined));
    expect(left(validateHostGw([l], '198.51.100.0/24', '2001:db8:2::/64'))).toContain(
      "node 2001:db8:1::2 (lease 10.244.2.0-24&fd00:10:244:2::-64) is not on this node's L2 segment 2001:db8:2::/64",
    );
  });

  it('refuses an underlay that is not a CIDR of the right family, naming the parameter', () => {
    expect(left(validateHostGw([], '198.51.100.1'))).toBe('underlayCidr: "198.51.100.1" is not an IPv4 CIDR');
    expect(left(validateHostGw([], 'fd00::/64'))).toBe('underlayCidr: "fd00::/64" is not an IPv4 CIDR');
    expect(left(validateHostGw([], '198.51.100.0/24', '198.51.100.0/24'))).toBe('underlayCidrV6: "198.51.100.0/24" is not an IPv6 CIDR');
  });

  it('Right exactly when every host-gw public IP is inside the segment', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 }), fc.boolean()), { maxLength: 8 }),
        (nodes) => {
          const leases = nodes.map(([third, host, gw], i) =>
            hostGw(`10.244.${i + 1}.0/24`, `198.51.${third}.${host}`, { type: gw ? 'host-gw' : 'vxlan' }),
          );
          const ok = nodes.every(([third, , gw]) => !gw || third === 100);
          expect(E.isRight(validateHostGw(leases, '198.51.100.0/24'))).toBe(ok);
        },
      ),
    );
  });
});
