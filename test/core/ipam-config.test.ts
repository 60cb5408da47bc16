import { describe, expect, it } from 'vitest';
import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../../core/cni/env.ts';
import { DEFAULT_DATA_DIR, parseIpamConf, type IpamConf } from '../../core/ipam/config.ts';
import { rangeSetString } from '../../core/ipam/range.ts';
import { parseResolvConf } from '../../core/ipam/resolv.ts';
import { formatIP } from '../../core/ip/ip.ts';

const net = (ipam: unknown, extra: Record<string, unknown> = {}, cniVersion = '1.0.0'): NetConf => ({
  cniVersion,
  name: 'net1',
  type: 'bridge',
  raw: { cniVersion, name: 'net1', type: 'bridge', ipam, ...extra },
});

const ok = (n: NetConf, args: Record<string, string> = {}): IpamConf => {
  const r = parseIpamConf(n, args);
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
};
const fail = (n: NetConf, args: Record<string, string> = {}) => {
  const r = parseIpamConf(n, args);
  if (E.isRight(r)) throw new Error('expected an error');
  return r.left;
};

describe('host-local config: defaults', () => {
  it('IPv4: start = network+1, end = broadcast-1, gateway = network+1', () => {
    const c = ok(net({ type: 'host-local', ranges: [[{ subnet: '10.1.2.0/24' }]] }));
    const r = c.rangeSets[0]!.ranges[0]!;
    expect([formatIP(r.rangeStart), formatIP(r.rangeEnd), formatIP(r.gateway)]).toEqual(['10.1.2.1', '10.1.2.254', '10.1.2.1']);
    expect(c.dataDir).toBe(DEFAULT_DATA_DIR);
    expect(c.dataDir).toBe('/var/lib/felt');
  });
  it('IPv6: end is the last address', () => {
    const r = ok(net({ ranges: [[{ subnet: 'fd00::/120' }]] })).rangeSets[0]!.ranges[0]!;
    expect([formatIP(r.rangeStart), formatIP(r.rangeEnd), formatIP(r.gateway)]).toEqual(['fd00::1', 'fd00::ff', 'fd00::1']);
  });
  it('/30 and /126 are the smallest subnets', () => {
    expect(rangeSetString(ok(net({ ranges: [[{ subnet: '10.0.0.0/30' }]] })).rangeSets[0]!)).toBe('10.0.0.1-10.0.0.2');
    expect(rangeSetString(ok(net({ ranges: [[{ subnet: 'fd00::/126' }]] })).rangeSets[0]!)).toBe('fd00::1-fd00::3');
  });
  it('keeps explicit start, end, gateway and dataDir; ignores unknown keys', () => {
    const c = ok(
      net({
        dataDir: '/tmp/x',
        foo: 1,
        ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.10', rangeEnd: '10.0.0.20', gateway: '10.0.0.254', bar: 2 }]],
      }),
    );
    expect(rangeSetString(c.rangeSets[0]!)).toBe('10.0.0.10-10.0.0.20');
    expect(formatIP(c.rangeSets[0]!.ranges[0]!.gateway)).toBe('10.0.0.254');
    expect(c.dataDir).toBe('/tmp/x');
  });
});

describe('host-local config: range sets', () => {
  it('orders runtimeConfig.ipRanges, then the legacy subnet, then ranges (the reference prepends)', () => {
    const c = ok(
      net(
        {
          subnet: '10.1.0.0/24',
          rangeStart: '10.1.0.5',
          ranges: [[{ subnet: '10.2.0.0/24' }, { subnet: '10.3.0.0/24' }], [{ subnet: 'fd00::/64' }]],
        },
        { runtimeConfig: { ipRanges: [[{ subnet: '10.9.0.0/24' }]] } },
      ),
    );
    expect(c.rangeSets.map((s) => [s.index, s.label, rangeSetString(s)])).toEqual([
      [0, 'runtimeConfig.ipRanges[0]', '10.9.0.1-10.9.0.254'],
      [1, 'ipam.subnet', '10.1.0.5-10.1.0.254'],
      [2, 'ipam.ranges[0]', '10.2.0.1-10.2.0.254,10.3.0.1-10.3.0.254'],
      [3, 'ipam.ranges[1]', 'fd00::1-fd00::ffff:ffff:ffff:ffff'],
    ]);
  });
  it('allows two sets in one subnet when their intervals are disjoint (as the reference)', () => {
    const c = ok(
      net({ ranges: [[{ subnet: '10.0.0.0/24', rangeEnd: '10.0.0.100' }], [{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.101' }]] }),
    );
    expect(c.rangeSets).toHaveLength(2);
  });
  it('requires ranges', () => {
    expect(fail(net({ type: 'host-local' })).msg).toContain('no IP ranges specified');
    expect(fail(net(undefined)).msg).toContain("missing 'ipam' key");
  });
});

describe('host-local config: validation names the range and field (code 7)', () => {
  it.each([
    [{ ranges: [[{ subnet: '10.0.0.5/24' }]] }, 'ipam.ranges[0][0].subnet: 10.0.0.5/24 has host bits set'],
    [{ ranges: [[{ subnet: '10.0.0.0/31' }]] }, 'ipam.ranges[0][0].subnet: 10.0.0.0/31 is too small'],
    [{ ranges: [[{ subnet: '10.0.0.0/32' }]] }, 'is too small'],
    [{ ranges: [[{ subnet: 'fd00::/127' }]] }, 'fd00::/127 is too small'],
    [{ ranges: [[{ subnet: 'fd00::/128' }]] }, 'is too small'],
    [{ ranges: [[{ subnet: 'bogus' }]] }, 'ipam.ranges[0][0].subnet: invalid CIDR address bogus'],
    [{ ranges: [[{}]] }, 'ipam.ranges[0][0].subnet: missing'],
    [
      { ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.1.0.1' }]] },
      'ipam.ranges[0][0].rangeStart: 10.1.0.1 is not in subnet 10.0.0.0/24',
    ],
    [{ ranges: [[{ subnet: '10.0.0.0/24', rangeEnd: 'fd00::1' }]] }, 'ipam.ranges[0][0].rangeEnd: fd00::1 is not in subnet'],
    [{ ranges: [[{ subnet: '10.0.0.0/24', gateway: '10.1.0.1' }]] }, 'ipam.ranges[0][0].gateway: 10.1.0.1 is not in subnet 10.0.0.0/24'],
    [{ ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.0' }]] }, 'rangeStart: 10.0.0.0 is the network address'],
    [{ ranges: [[{ subnet: '10.0.0.0/24', rangeEnd: '10.0.0.255' }]] }, 'rangeEnd: 10.0.0.255 is the broadcast address'],
    [
      { ranges: [[{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.50', rangeEnd: '10.0.0.10' }]] },
      'rangeEnd: 10.0.0.10 is before rangeStart 10.0.0.50',
    ],
    [{ ranges: [[{ subnet: '10.0.0.0/24', rangeStart: 'x' }]] }, 'rangeStart: invalid IP address x'],
    [
      { ranges: [[{ subnet: '10.0.0.0/16' }], [{ subnet: '10.0.0.0/24' }]] },
      'ipam.ranges[1][0] 10.0.0.1-10.0.0.254 (10.0.0.0/24) overlaps ipam.ranges[0][0] 10.0.0.1-10.0.255.254 (10.0.0.0/16)',
    ],
    [
      { ranges: [[{ subnet: '10.0.0.0/16' }, { subnet: '10.0.0.0/24' }]] },
      'ipam.ranges[0][1] 10.0.0.1-10.0.0.254 (10.0.0.0/24) overlaps ipam.ranges[0][0]',
    ],
    [
      { subnet: '10.0.0.0/24', ranges: [[{ subnet: '10.0.0.0/25' }]] },
      'ipam.ranges[0][0] 10.0.0.1-10.0.0.126 (10.0.0.0/25) overlaps ipam ',
    ],
    [{ ranges: [[{ subnet: '10.0.0.0/24' }, { subnet: 'fd00::/64' }]] }, 'ipam.ranges[0]: mixed address families'],
    [{ ranges: [[]] }, 'ipam.ranges[0]: empty range set'],
    [{ ranges: 'x' }, 'ipam.ranges: must be an array'],
    [{ ranges: ['x'] }, 'ipam.ranges[0]: must be an array of ranges'],
    [{ subnet: '10.0.0.1/24' }, 'ipam.subnet: 10.0.0.1/24 has host bits set'],
    [{ subnet: '10.0.0.0/24', gateway: '10.9.0.1' }, 'ipam.gateway: 10.9.0.1 is not in subnet'],
    [{ ranges: [[{ subnet: '10.0.0.0/24' }]], routes: [{ dst: 'bad' }] }, 'ipam.routes[0].dst: invalid CIDR address bad'],
    [{ ranges: [[{ subnet: '10.0.0.0/24' }]], routes: [{ dst: '0.0.0.0/0', gw: 'x' }] }, 'ipam.routes[0].gw: invalid IP address x'],
    [{ ranges: [[{ subnet: '10.0.0.0/24' }]], dataDir: 5 }, 'ipam.dataDir: must be a path'],
  ])('%j', (ipam, msg) => {
    const e = fail(net(ipam));
    expect(e.code).toBe(7);
    expect(e.msg).toContain(msg);
  });
  it('collects every error, not just the first', () => {
    const e = fail(net({ ranges: [[{ subnet: '10.0.0.5/24' }], [{ subnet: '10.1.0.0/31' }]] }));
    expect(e.msg).toContain('ranges[0][0].subnet');
    expect(e.msg).toContain('ranges[1][0].subnet');
  });
  it('names runtimeConfig.ipRanges', () => {
    expect(
      fail(net({ ranges: [[{ subnet: '10.0.0.0/24' }]] }, { runtimeConfig: { ipRanges: [[{ subnet: '10.0.0.0/8' }]] } })).msg,
    ).toContain('ipam.ranges[0][0] 10.0.0.1-10.0.0.254 (10.0.0.0/24) overlaps runtimeConfig.ipRanges[0][0]');
  });
  it('0.2.0 results carry one address per family', () => {
    const n = net({ ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.1.0.0/24' }]] }, {}, '0.2.0');
    expect(fail(n).msg).toContain('CNI version 0.2.0 does not support more than 1 address per family');
    expect(E.isRight(parseIpamConf(net({ ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: 'fd00::/64' }]] }, {}, '0.2.0'), {}))).toBe(true);
  });
  it('refuses network names that are not stream-safe', () => {
    const n = { ...net({ ranges: [[{ subnet: '10.0.0.0/24' }]] }), name: '../x' };
    expect(fail(n)).toMatchObject({ code: 7, msg: expect.stringContaining('invalid characters found in network name') });
  });
});

describe('host-local config: requested addresses', () => {
  const ipam = { ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: 'fd00::/64' }]] };
  it('reads CNI_ARGS IP (a comma list), args.cni.ips and runtimeConfig.ips (with or without prefix)', () => {
    const c = ok(net(ipam, { args: { cni: { ips: ['10.0.0.8'] } }, runtimeConfig: { ips: ['fd00::9/64', '10.0.0.10'] } }), {
      IP: '10.0.0.5,fd00::5',
    });
    expect(c.requested.map((r) => [formatIP(r.ip), r.source])).toEqual([
      ['10.0.0.5', 'CNI_ARGS IP'],
      ['fd00::5', 'CNI_ARGS IP'],
      ['10.0.0.8', 'args.cni.ips[0]'],
      ['fd00::9', 'runtimeConfig.ips[0]'],
      ['10.0.0.10', 'runtimeConfig.ips[1]'],
    ]);
  });
  it('treats IPv4-mapped IPv6 as IPv4', () => {
    expect(formatIP(ok(net(ipam), { IP: '::ffff:10.0.0.7' }).requested[0]!.ip)).toBe('10.0.0.7');
  });
  it('refuses unknown CNI_ARGS unless IgnoreUnknown (code 4, as the reference)', () => {
    expect(fail(net(ipam), { FOO: '1' })).toMatchObject({ code: 4, msg: expect.stringContaining('unknown args ["FOO=1"]') });
    expect(E.isRight(parseIpamConf(net(ipam), { IgnoreUnknown: '1', FOO: '1' }))).toBe(true);
    expect(E.isRight(parseIpamConf(net(ipam), { IgnoreUnknown: 'true', K8S_POD_NAME: 'x' }))).toBe(true);
  });
  it('names bad addresses', () => {
    expect(fail(net(ipam), { IP: 'zzz' })).toMatchObject({ code: 4, msg: 'CNI_ARGS: IP: invalid IP address "zzz"' });
    expect(fail(net(ipam, { args: { cni: { ips: ['nope'] } } })).msg).toBe('args.cni.ips[0]: invalid IP address nope');
    expect(fail(net(ipam, { runtimeConfig: { ips: ['10.0.0.1/99'] } })).msg).toBe('runtimeConfig.ips[0]: invalid IP address 10.0.0.1/99');
  });
});

describe('host-local config: routes, resolvConf, valid attachments', () => {
  it('parses routes in canonical form, keeping 1.1 fields', () => {
    const c = ok(
      net({ ranges: [[{ subnet: '10.0.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }, { dst: 'FD00:0::/8', gw: 'fd00::01', mtu: 1400 }] }),
    );
    expect(c.routes).toEqual([{ dst: '0.0.0.0/0' }, { dst: 'fd00::/8', gw: 'fd00::1', mtu: 1400 }]);
  });
  it('reads cni.dev/valid-attachments', () => {
    const c = ok(net({ ranges: [[{ subnet: '10.0.0.0/24' }]] }, { 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }));
    expect(c.validAttachments).toEqual([{ containerId: 'a', ifname: 'eth0' }]);
    expect(fail(net({ ranges: [[{ subnet: '10.0.0.0/24' }]] }, { 'cni.dev/valid-attachments': [{ id: 1 }] })).msg).toContain(
      'cni.dev/valid-attachments[0]',
    );
  });
  it('parses resolv.conf as the reference does', () => {
    const text =
      'nameserver 1.1.1.1\n# comment\n; also\nnameserver 8.8.8.8\ndomain a.example\ndomain b.example\nsearch x y\nsearch z\noptions ndots:2 rotate\nbogus\nnameserver\n';
    expect(parseResolvConf(text)).toEqual({
      nameservers: ['1.1.1.1', '8.8.8.8'],
      domain: 'b.example',
      search: ['x', 'y', 'z'],
      options: ['ndots:2', 'rotate'],
    });
    expect(parseResolvConf('')).toEqual({});
  });
});
