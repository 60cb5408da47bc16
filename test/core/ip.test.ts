import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { contains, formatIP, hasHostBits, lastIP, networkOf, parseCIDR, parseIP } from '../../core/ip/ip.ts';
import { macFromBytes, parseMac } from '../../core/ip/mac.ts';

describe('ip', () => {
  it('round-trips IPv4 and IPv6 text', () => {
    fc.assert(fc.property(fc.ipV4(), (s) => formatIP(parseIP(s)!) === s));
    fc.assert(fc.property(fc.ipV6(), (s) => formatIP(parseIP(formatIP(parseIP(s)!))!) === formatIP(parseIP(s)!)));
  });
  it('prints IPv6 in RFC 5952 form', () => {
    expect(formatIP(parseIP('fd00:0:0:0:0:0:0:1')!)).toBe('fd00::1');
    expect(formatIP(parseIP('2001:db8:0:0:1:0:0:1')!)).toBe('2001:db8::1:0:0:1');
    expect(formatIP(parseIP('::')!)).toBe('::');
  });
  it('refuses malformed addresses', () => {
    for (const s of ['1.2.3', '1.2.3.256', '01.2.3.4', 'fd00:::1', '1:2:3:4:5:6:7:8:9', 'x']) expect(parseIP(s)).toBeUndefined();
    for (const s of ['10.0.0.0/33', '10.0.0.0', '10.0.0.0/x', 'fd00::/129']) expect(parseCIDR(s)).toBeUndefined();
  });
  it('computes networks, broadcast and containment', () => {
    const c = parseCIDR('10.22.3.7/16')!;
    expect(formatIP(networkOf(c).ip)).toBe('10.22.0.0');
    expect(formatIP(lastIP(c))).toBe('10.22.255.255');
    expect(hasHostBits(c)).toBe(true);
    expect(contains(c, parseIP('10.22.200.1')!)).toBe(true);
    expect(contains(c, parseIP('10.23.0.1')!)).toBe(false);
  });
  it('parses and generates MACs', () => {
    expect(parseMac('AA-BB-CC-DD-EE-FF')).toBe('aa:bb:cc:dd:ee:ff');
    expect(parseMac('aa:bb:cc:dd:ee')).toBeUndefined();
    expect(macFromBytes(new Uint8Array([0xff, 1, 2, 3, 4, 5]))).toBe('fe:01:02:03:04:05');
  });
});
