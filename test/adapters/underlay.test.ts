// The underlay choice (adapters/kernel/underlay.ts chooseUnderlay) for the families the network config enables,
// as flanneld's LookupExtIface makes it: --iface by name or address of either family, --iface-regex, --public-ip
// and --public-ipv6, the default routes of both families; addresses in flannel's order of preference.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { chooseUnderlay, type Interfaces, type IpAddrLink, type UnderlayRequest } from '../../adapters/kernel/underlay.ts';

const v4 = (local: string, prefixlen = 24, extra: object = {}) => ({ family: 'inet', local, prefixlen, scope: 'global', ...extra });
const v6 = (local: string, prefixlen = 64, extra: object = {}) => ({ family: 'inet6', local, prefixlen, scope: 'global', ...extra });
const ll = (local: string) => ({ family: 'inet6', local, prefixlen: 64, scope: 'link' });

const lo: IpAddrLink = {
  ifname: 'lo',
  mtu: 65536,
  addr_info: [
    { family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' },
    { family: 'inet6', local: '::1', prefixlen: 128, scope: 'host' },
  ],
};
const eth0: IpAddrLink = { ifname: 'eth0', mtu: 1500, addr_info: [v4('198.51.100.11'), v6('2001:db8::11'), ll('fe80::1')] };
const eth1: IpAddrLink = { ifname: 'eth1', mtu: 9000, addr_info: [v4('198.51.100.211'), v6('2001:db8:1::11')] };
const v4only: IpAddrLink = { ifname: 'eth2', mtu: 1500, addr_info: [v4('198.51.100.111'), ll('fe80::2')] };
const ifs = (links: IpAddrLink[], d4?: string, d6?: string): Interfaces => ({
  links,
  ...(d4 ? { defaultDev: d4 } : {}),
  ...(d6 ? { defaultDevV6: d6 } : {}),
});
const req = (r: Partial<UnderlayRequest>): UnderlayRequest => ({ iface: [], ifaceRegex: [], ipv4: true, ipv6: false, ...r });
const ok = <T>(e: E.Either<string, T>): T => {
  if (E.isLeft(e)) throw new Error(e.left);
  return e.right;
};
const err = (e: E.Either<string, unknown>): string => (E.isLeft(e) ? e.left : 'no error');

describe('chooseUnderlay', () => {
  it('IPv4 only: the IPv4 default route interface, no IPv6 fields', () => {
    expect(ok(chooseUnderlay(ifs([lo, eth0], 'eth0'), req({})))).toEqual({
      dev: 'eth0',
      mtu: 1500,
      ip: '198.51.100.11',
      cidr: '198.51.100.0/24',
      publicIP: '198.51.100.11',
    });
  });

  it('dual stack: both default routes leave through one interface, its global IPv6 address is PublicIPv6 (not the link-local one)', () => {
    expect(ok(chooseUnderlay(ifs([lo, eth0], 'eth0', 'eth0'), req({ ipv6: true })))).toEqual({
      dev: 'eth0',
      mtu: 1500,
      ip: '198.51.100.11',
      cidr: '198.51.100.0/24',
      publicIP: '198.51.100.11',
      ip6: '2001:db8::11',
      cidr6: '2001:db8::/64',
      publicIPv6: '2001:db8::11',
    });
  });

  it('dual stack: default routes through two interfaces are refused, as flanneld does', () => {
    expect(err(chooseUnderlay(ifs([eth0, eth1], 'eth0', 'eth1'), req({ ipv6: true })))).toMatch(
      /IPv6 default route's interface eth1 is not the IPv4 default route's interface eth0/,
    );
    expect(err(chooseUnderlay(ifs([eth0], 'eth0'), req({ ipv6: true })))).toMatch(/no IPv6 default route/);
  });

  it('IPv6 only: the IPv6 default route interface; no IPv4 needed', () => {
    const only6: IpAddrLink = { ifname: 'eth0', mtu: 1500, addr_info: [v6('2001:db8::11')] };
    expect(ok(chooseUnderlay(ifs([only6], undefined, 'eth0'), req({ ipv4: false, ipv6: true })))).toEqual({
      dev: 'eth0',
      mtu: 1500,
      ip6: '2001:db8::11',
      cidr6: '2001:db8::/64',
      publicIPv6: '2001:db8::11',
    });
  });

  it('an interface with only a link-local IPv6 address has no IPv6 for the overlay', () => {
    expect(err(chooseUnderlay(ifs([v4only], 'eth2', 'eth2'), req({ ipv6: true, iface: ['eth2'] })))).toMatch(
      /eth2 has no global IPv6 address \(EnableIPv6 is true\)/,
    );
  });

  it('--iface: the first that has every enabled family wins; by name or by an address of either family', () => {
    expect(ok(chooseUnderlay(ifs([v4only, eth1]), req({ ipv6: true, iface: ['eth2', 'eth1'] }))).dev).toBe('eth1');
    const by6 = ok(chooseUnderlay(ifs([eth0, eth1]), req({ ipv6: true, iface: ['2001:db8:1::11'] })));
    expect([by6.dev, by6.ip, by6.ip6]).toEqual(['eth1', '198.51.100.211', '2001:db8:1::11']);
    const by4 = ok(chooseUnderlay(ifs([eth0, eth1]), req({ ipv6: true, iface: ['198.51.100.211'] })));
    expect([by4.dev, by4.ip, by4.ip6]).toEqual(['eth1', '198.51.100.211', '2001:db8:1::11']);
    expect(err(chooseUnderlay(ifs([eth0]), req({ iface: ['nope0'] })))).toMatch(
      /--iface: .*nope0: no interface of that name or with that address/,
    );
  });

  it('--iface-regex: an address of either family, then a name', () => {
    const r = ok(chooseUnderlay(ifs([eth0, eth1]), req({ ipv6: true, ifaceRegex: ['^2001:db8:1:'] })));
    expect([r.dev, r.ip6]).toEqual(['eth1', '2001:db8:1::11']);
    expect(ok(chooseUnderlay(ifs([eth0, eth1]), req({ ipv6: true, ifaceRegex: ['^eth1$'] }))).dev).toBe('eth1');
    expect(err(chooseUnderlay(ifs([eth0]), req({ ifaceRegex: ['('] })))).toMatch(/not a regular expression/);
  });

  it('--public-ip and --public-ipv6 are what other nodes reach this node at; each must be of its family', () => {
    const r = ok(chooseUnderlay(ifs([eth0], 'eth0', 'eth0'), req({ ipv6: true, publicIP: '203.0.113.5', publicIPv6: '2001:db8:ffff::5' })));
    expect([r.ip, r.publicIP, r.ip6, r.publicIPv6]).toEqual(['198.51.100.11', '203.0.113.5', '2001:db8::11', '2001:db8:ffff::5']);
    expect(err(chooseUnderlay(ifs([eth0], 'eth0', 'eth0'), req({ ipv6: true, publicIPv6: '198.51.100.9' })))).toMatch(
      /--public-ipv6: "198.51.100.9" is not an IPv6 address/,
    );
    expect(err(chooseUnderlay(ifs([eth0], 'eth0'), req({ publicIP: '2001:db8::9' })))).toMatch(
      /--public-ip: "2001:db8::9" is not an IPv4 address/,
    );
    // Without --iface, the interface holding --public-ipv6 (IPv6 only) is the underlay, as flanneld looks it up.
    expect(
      ok(chooseUnderlay(ifs([eth0, eth1], undefined, 'eth0'), req({ ipv4: false, ipv6: true, publicIPv6: '2001:db8:1::11' }))).dev,
    ).toBe('eth1');
  });

  it("addresses in flannel's order: permanent before dynamic, non-temporary before temporary, deprecated never", () => {
    const l: IpAddrLink = {
      ifname: 'eth0',
      mtu: 1500,
      addr_info: [
        v6('2001:db8::a', 64, { dynamic: true, temporary: true }),
        v6('2001:db8::b', 64, { deprecated: true }),
        v6('2001:db8::c', 64, { dynamic: true }),
        v6('2001:db8::d', 64),
      ],
    };
    expect(ok(chooseUnderlay(ifs([l], undefined, 'eth0'), req({ ipv4: false, ipv6: true }))).ip6).toBe('2001:db8::d');
    const noPermanent = { ...l, addr_info: l.addr_info!.slice(0, 3) };
    expect(ok(chooseUnderlay(ifs([noPermanent], undefined, 'eth0'), req({ ipv4: false, ipv6: true }))).ip6).toBe('2001:db8::c');
  });
});
