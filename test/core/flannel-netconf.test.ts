import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { parseNetConfig, subnetRange } from '../../core/flannel/netconf.ts';

const ok = (json: unknown) => {
  const r = parseNetConfig(typeof json === 'string' ? json : JSON.stringify(json));
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right;
};
const err = (json: unknown): string => {
  const r = parseNetConfig(typeof json === 'string' ? json : JSON.stringify(json));
  if (E.isRight(r)) throw new Error(`expected an error, got ${JSON.stringify(r.right)}`);
  return r.left;
};

describe('parseNetConfig: defaults', () => {
  it('fills flannel defaults for a /16 with a vxlan backend', () => {
    const { config, notices } = ok({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    expect(config).toEqual({
      enableIPv4: true,
      enableIPv6: false,
      network: '10.244.0.0/16',
      subnetLen: 24,
      subnetMin: '10.244.1.0',
      subnetMax: '10.244.255.0',
      ipv6SubnetLen: 0,
      backend: { type: 'vxlan', vni: 1, port: 8472, directRouting: false, gbp: false, learning: false },
    });
    expect(notices).toEqual([]);
  });

  it('uses vxlan when no Backend is given, and says so', () => {
    const { config, notices } = ok({ Network: '10.244.0.0/16' });
    expect(config.backend.type).toBe('vxlan');
    expect(notices).toContain('no Backend given: using vxlan');
  });

  it('SubnetLen: 24 for a /22, prefix+2 for smaller networks', () => {
    expect(ok({ Network: '10.0.0.0/22' }).config.subnetLen).toBe(24);
    expect(ok({ Network: '10.0.0.0/23' }).config.subnetLen).toBe(25);
    expect(ok({ Network: '10.0.0.0/28' }).config).toMatchObject({ subnetLen: 30, subnetMin: '10.0.0.4', subnetMax: '10.0.0.12' });
  });

  it('SubnetLen 0 means "not given", as a Go zero value', () => {
    expect(ok({ Network: '10.0.0.0/8', SubnetLen: 0 }).config.subnetLen).toBe(24);
  });

  it('keys are case-insensitive and the last spelling wins', () => {
    const { config } = ok(
      '{"network":"10.1.0.0/16","SUBNETLEN":20,"backend":{"type":"vxlan","vni":7,"port":0,"directrouting":true,"Gbp":true}}',
    );
    expect(config).toMatchObject({ network: '10.1.0.0/16', subnetLen: 20, subnetMin: '10.1.16.0', subnetMax: '10.1.240.0' });
    expect(config.backend).toEqual({ type: 'vxlan', vni: 7, port: 8472, directRouting: true, gbp: true, learning: false });
    expect(ok('{"Network":"10.1.0.0/16","network":"10.2.0.0/16"}').config.network).toBe('10.2.0.0/16');
  });

  it('null keeps the default', () => {
    expect(ok({ Network: '10.1.0.0/16', SubnetLen: null, EnableIPv4: null }).config).toMatchObject({ subnetLen: 24, enableIPv4: true });
  });

  it('accepts explicit SubnetMin/SubnetMax, VNI 0, MTU, Learning', () => {
    const { config } = ok({
      Network: '10.5.0.0/16',
      SubnetMin: '10.5.10.0',
      SubnetMax: '10.5.20.0',
      Backend: { Type: 'vxlan', VNI: 0, MTU: 9000, Learning: true },
    });
    expect(config).toMatchObject({ subnetMin: '10.5.10.0', subnetMax: '10.5.20.0' });
    expect(config.backend).toEqual({ type: 'vxlan', vni: 0, port: 8472, mtu: 9000, directRouting: false, gbp: false, learning: true });
  });

  it('host-gw', () => {
    expect(ok({ Network: '10.5.0.0/16', Backend: { Type: 'host-gw' } }).config.backend).toEqual({ type: 'host-gw' });
  });

  it('dual stack: IPv6SubnetLen 64 for a /62 or larger, prefix+2 below', () => {
    const { config } = ok({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' });
    expect(config).toMatchObject({
      enableIPv6: true,
      ipv6Network: 'fd00:10:244::/56',
      ipv6SubnetLen: 64,
      ipv6SubnetMin: 'fd00:10:244:1::',
      ipv6SubnetMax: 'fd00:10:244:ff::',
    });
    expect(ok({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00::/63' }).config).toMatchObject({
      ipv6SubnetLen: 65,
      enableIPv4: false,
      subnetLen: 0,
    });
  });

  it('notices: unknown keys, host bits, IPv6Network without EnableIPv6, Backend keys of another type', () => {
    const { config, notices } = ok({ Network: '10.244.7.1/16', Bogus: 1, IPv6Network: 'fd00::/48', Backend: { Type: 'host-gw', VNI: 3 } });
    expect(config.network).toBe('10.244.0.0/16');
    expect(notices).toEqual([
      'Bogus: not a flannel network setting, ignored',
      'Backend.VNI: not a host-gw setting, ignored',
      'Network: "10.244.7.1/16" has host bits set: using 10.244.0.0/16',
      'IPv6Network: given but EnableIPv6 is not true, so IPv6 stays off',
    ]);
  });

  it('subnetRange counts the leasable subnets', () => {
    const { config } = ok({ Network: '10.244.0.0/16' });
    expect(subnetRange(config, 4)?.count).toBe(255n);
    expect(subnetRange(config, 6)).toBeUndefined();
  });
});

describe('parseNetConfig: every error names its key', () => {
  const cases: [string, unknown, RegExp][] = [
    ['not JSON', '{', /^net-conf\.json: invalid JSON/],
    ['not an object', '[1]', /must be a JSON object/],
    ['no Network', { Backend: { Type: 'vxlan' } }, /^Network: missing/],
    ['Network not a string', { Network: 10 }, /^Network: must be a string/],
    ['Network not a CIDR', { Network: '10.244.0.0' }, /^Network: "10.244.0.0" is not an IPv4 CIDR/],
    ['Network is IPv6', { Network: 'fd00::/48' }, /^Network: .* is not an IPv4 CIDR/],
    ['Network 0.0.0.0/0', { Network: '0.0.0.0/0' }, /^Network: "0.0.0.0\/0" covers every IPv4 address/],
    ['Network 0.0.0.0/0 with a SubnetLen', { Network: '0.0.0.0/0', SubnetLen: 24 }, /^Network: "0.0.0.0\/0" covers every IPv4 address/],
    ['Network with host bits and /0', { Network: '10.1.2.3/0' }, /^Network: "10.1.2.3\/0" covers every IPv4 address/],
    [
      'IPv6Network ::/0',
      { Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: '::/0' },
      /^IPv6Network: "::\/0" covers every IPv6 address/,
    ],
    ['Network too small', { Network: '10.0.0.0/29' }, /^Network: 10.0.0.0\/29 is too small; the smallest useful network is a \/28/],
    ['SubnetLen > 30', { Network: '10.0.0.0/8', SubnetLen: 31 }, /^SubnetLen: 31 is too long; at most 30/],
    [
      'SubnetLen = prefix',
      { Network: '10.0.0.0/16', SubnetLen: 16 },
      /^SubnetLen: 16 does not fit Network 10.0.0.0\/16 at least four times; it must be at least 18/,
    ],
    ['SubnetLen = prefix+1', { Network: '10.0.0.0/16', SubnetLen: 17 }, /^SubnetLen: 17 does not fit/],
    ['SubnetLen < prefix', { Network: '10.0.0.0/16', SubnetLen: 8 }, /^SubnetLen: 8 does not fit/],
    ['SubnetLen not an integer', { Network: '10.0.0.0/16', SubnetLen: 24.5 }, /^SubnetLen: must be a non-negative integer/],
    ['SubnetLen a string', { Network: '10.0.0.0/16', SubnetLen: '24' }, /^SubnetLen: must be a non-negative integer, got string "24"/],
    ['SubnetLen negative', { Network: '10.0.0.0/16', SubnetLen: -1 }, /^SubnetLen: must be a non-negative integer/],
    ['SubnetMin outside', { Network: '10.0.0.0/16', SubnetMin: '10.1.0.0' }, /^SubnetMin: 10.1.0.0 is not in Network 10.0.0.0\/16/],
    ['SubnetMax outside', { Network: '10.0.0.0/16', SubnetMax: '11.0.0.0' }, /^SubnetMax: 11.0.0.0 is not in Network/],
    [
      'SubnetMin unaligned',
      { Network: '10.0.0.0/16', SubnetMin: '10.0.1.128' },
      /^SubnetMin: 10.0.1.128 is not on a \/24 boundary \(SubnetLen\)/,
    ],
    ['SubnetMax unaligned', { Network: '10.0.0.0/16', SubnetMax: '10.0.9.1' }, /^SubnetMax: 10.0.9.1 is not on a \/24 boundary/],
    ['SubnetMin not an address', { Network: '10.0.0.0/16', SubnetMin: '10.0.1.0/24' }, /^SubnetMin: "10.0.1.0\/24" is not an IPv4 address/],
    [
      'SubnetMin above SubnetMax',
      { Network: '10.0.0.0/16', SubnetMin: '10.0.9.0', SubnetMax: '10.0.3.0' },
      /^SubnetMin: 10.0.9.0 is above SubnetMax 10.0.3.0/,
    ],
    ['EnableIPv4 not a bool', { Network: '10.0.0.0/16', EnableIPv4: 'yes' }, /^EnableIPv4: must be true or false/],
    ['no family', { EnableIPv4: false }, /^EnableIPv4, EnableIPv6: both are false/],
    ['no IPv6Network', { Network: '10.0.0.0/16', EnableIPv6: true }, /^IPv6Network: missing/],
    [
      'IPv6Network IPv4',
      { Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: '10.1.0.0/16' },
      /^IPv6Network: "10.1.0.0\/16" is not an IPv6 CIDR/,
    ],
    [
      'IPv6Network too small',
      { Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/125' },
      /^IPv6Network: fd00::\/125 is too small; the smallest useful network is a \/124/,
    ],
    [
      'IPv6SubnetLen > 126',
      { Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/48', IPv6SubnetLen: 127 },
      /^IPv6SubnetLen: 127 is too long; at most 126/,
    ],
    [
      'IPv6SubnetLen too short',
      { Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/48', IPv6SubnetLen: 49 },
      /^IPv6SubnetLen: 49 does not fit IPv6Network/,
    ],
    [
      'IPv6SubnetMin outside',
      { Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/48', IPv6SubnetMin: 'fd01::' },
      /^IPv6SubnetMin: fd01:: is not in IPv6Network/,
    ],
    [
      'IPv6SubnetMax unaligned',
      { Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/48', IPv6SubnetMax: 'fd00:0:0:5::1' },
      /^IPv6SubnetMax: fd00:0:0:5::1 is not on a \/64 boundary \(IPv6SubnetLen\)/,
    ],
    ['Backend not an object', { Network: '10.0.0.0/16', Backend: 'vxlan' }, /^Backend: must be an object/],
    ['Backend.Type missing', { Network: '10.0.0.0/16', Backend: {} }, /^Backend.Type: missing/],
    [
      'Backend.Type unknown',
      { Network: '10.0.0.0/16', Backend: { Type: 'udp' } },
      /^Backend.Type: "udp" is not supported; felt supports "vxlan" and "host-gw"/,
    ],
    ['Backend.Type not a string', { Network: '10.0.0.0/16', Backend: { Type: 1 } }, /^Backend.Type: must be a string/],
    [
      'VNI too large',
      { Network: '10.0.0.0/16', Backend: { Type: 'vxlan', VNI: 16777216 } },
      /^Backend.VNI: 16777216 is too large \(at most 16777215\)/,
    ],
    ['VNI negative', { Network: '10.0.0.0/16', Backend: { Type: 'vxlan', VNI: -1 } }, /^Backend.VNI: must be a non-negative integer/],
    ['Port too large', { Network: '10.0.0.0/16', Backend: { Type: 'vxlan', Port: 70000 } }, /^Backend.Port: 70000 is too large/],
    ['MTU too small', { Network: '10.0.0.0/16', Backend: { Type: 'vxlan', MTU: 100 } }, /^Backend.MTU: 100 is too small/],
    [
      'DirectRouting not a bool',
      { Network: '10.0.0.0/16', Backend: { Type: 'vxlan', DirectRouting: 1 } },
      /^Backend.DirectRouting: must be true or false/,
    ],
    ['GBP not a bool', { Network: '10.0.0.0/16', Backend: { Type: 'vxlan', GBP: 'no' } }, /^Backend.GBP: must be true or false/],
    [
      'Learning not a bool',
      { Network: '10.0.0.0/16', Backend: { Type: 'vxlan', Learning: 0 } },
      /^Backend.Learning: must be true or false/,
    ],
  ];
  for (const [name, json, re] of cases) it(name, () => expect(err(json)).toMatch(re));
});
