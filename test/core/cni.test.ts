import { describe, expect, it } from 'vitest';
import * as E from 'fp-ts/lib/Either.js';
import { parseCniArgs, parseEnv, parseNetConf, validateIfname } from '../../core/cni/env.ts';
import { convertResult, parseResult, PLUGIN_VERSIONS, type Result } from '../../core/cni/result.ts';
import { chainComment, chainName, masqFor } from '../../core/cni/masq.ts';

const env = (o: Record<string, string>) => ({ CNI_PATH: '/opt/cni/bin', ...o });

describe('CNI environment', () => {
  it('accepts a valid ADD', () => {
    const r = parseEnv(
      env({
        CNI_COMMAND: 'ADD',
        CNI_CONTAINERID: 'abc',
        CNI_NETNS: '/var/run/netns/x',
        CNI_IFNAME: 'eth0',
        CNI_ARGS: 'IgnoreUnknown=1;IP=10.0.0.5',
      }),
      '{}',
    );
    expect(E.isRight(r) && r.right.args).toEqual({ IgnoreUnknown: '1', IP: '10.0.0.5' });
  });
  it('names missing variables (code 4)', () => {
    const r = parseEnv({ CNI_COMMAND: 'ADD', CNI_IFNAME: 'eth0' }, '{}');
    expect(r).toEqual(E.left({ code: 4, msg: 'required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_PATH] missing' }));
  });
  it('DEL does not need CNI_NETNS', () => {
    expect(E.isRight(parseEnv(env({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'a', CNI_IFNAME: 'eth0' }), '{}'))).toBe(true);
  });
  it('refuses path-like container ids', () => {
    const r = parseEnv(env({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: '../etc', CNI_IFNAME: 'eth0' }), '{}');
    expect(E.isLeft(r) && r.left.code).toBe(4);
  });
  it.each([
    ['', 'is empty'],
    ['a'.repeat(16), 'too long'],
    ['.', '. or ..'],
    ['..', '. or ..'],
    ['a/b', '/'],
    ['a:b', ':'],
    ['a b', 'whitespace'],
  ])('refuses interface name %j', (name, why) => {
    expect(validateIfname(name)?.msg).toContain(why);
  });
  it('accepts a 15-character interface name', () => expect(validateIfname('a'.repeat(15))).toBeUndefined());
  it('refuses an unknown command', () => {
    const r = parseEnv({ CNI_COMMAND: 'FOO' }, '');
    expect(E.isLeft(r) && r.left).toEqual({ code: 4, msg: 'unknown CNI_COMMAND: FOO' });
  });
  it('parses CNI_ARGS and refuses malformed pairs', () => {
    expect(parseCniArgs('A=1;B=x=y')).toEqual(E.right({ A: '1', B: 'x=y' }));
    expect(E.isLeft(parseCniArgs('A'))).toBe(true);
  });
});

describe('network config versions', () => {
  const conf = (v: string) => JSON.stringify({ cniVersion: v, name: 'n', type: 'bridge' });
  it.each(PLUGIN_VERSIONS)('accepts %s', (v) => expect(E.isRight(parseNetConf(conf(v), PLUGIN_VERSIONS, 'ADD'))).toBe(true));
  it('refuses an unknown version with code 1', () => {
    const r = parseNetConf(conf('9.9.9'), PLUGIN_VERSIONS, 'ADD');
    expect(E.isLeft(r) && r.left.code).toBe(1);
  });
  it('refuses CHECK below 0.4.0 and GC/STATUS below 1.1.0', () => {
    expect(E.isLeft(parseNetConf(conf('0.3.1'), PLUGIN_VERSIONS, 'CHECK'))).toBe(true);
    expect(E.isLeft(parseNetConf(conf('1.0.0'), PLUGIN_VERSIONS, 'GC'))).toBe(true);
    expect(E.isLeft(parseNetConf(conf('1.0.0'), PLUGIN_VERSIONS, 'STATUS'))).toBe(true);
    expect(E.isRight(parseNetConf(conf('1.1.0'), PLUGIN_VERSIONS, 'GC'))).toBe(true);
  });
  it('invalid JSON is a decode failure (code 6)', () => {
    const r = parseNetConf('{', PLUGIN_VERSIONS, 'ADD');
    expect(E.isLeft(r) && r.left.code).toBe(6);
  });
  it('a missing name is an invalid config naming the field (code 7)', () => {
    const r = parseNetConf(JSON.stringify({ cniVersion: '1.0.0', type: 'bridge' }), PLUGIN_VERSIONS, 'ADD');
    expect(E.isLeft(r) && r.left).toMatchObject({ code: 7, msg: expect.stringContaining('name') });
  });
});

describe('result conversion', () => {
  const r: Result = {
    cniVersion: '1.1.0',
    interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/var/run/netns/x', mtu: 1400 }],
    ips: [
      { address: '10.0.0.5/24', gateway: '10.0.0.1', interface: 0 },
      { address: 'fd00::5/64', gateway: 'fd00::1', interface: 0 },
    ],
    routes: [
      { dst: '0.0.0.0/0', mtu: 1400 },
      { dst: '::/0', gw: 'fd00::1' },
    ],
    dns: {},
  };
  it('1.1.0 keeps everything and drops an empty dns', () => {
    expect(convertResult(r, '1.1.0')).toEqual({ cniVersion: '1.1.0', interfaces: r.interfaces, ips: r.ips, routes: r.routes });
  });
  it('1.0.0 drops the 1.1-only fields', () => {
    const c = convertResult(r, '1.0.0') as unknown as Result;
    expect(c.routes).toEqual([{ dst: '0.0.0.0/0' }, { dst: '::/0', gw: 'fd00::1' }]);
    expect(c.interfaces).toEqual([{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/var/run/netns/x' }]);
  });
  it('0.3.x/0.4.0 add ips[].version', () => {
    const c = convertResult(r, '0.4.0') as { ips: { version: string }[] };
    expect(c.ips.map((i) => i.version)).toEqual(['4', '6']);
  });
  it('0.2.0 uses ip4/ip6 with per-family routes', () => {
    expect(convertResult(r, '0.2.0')).toEqual({
      cniVersion: '0.2.0',
      ip4: { ip: '10.0.0.5/24', gateway: '10.0.0.1', routes: [{ dst: '0.0.0.0/0' }] },
      ip6: { ip: 'fd00::5/64', gateway: 'fd00::1', routes: [{ dst: '::/0', gw: 'fd00::1' }] },
    });
  });
  it('parses any version back', () => {
    for (const v of ['0.2.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      const back = parseResult(convertResult(r, v));
      expect(back?.ips?.map((i) => i.address)).toEqual(['10.0.0.5/24', 'fd00::5/64']);
    }
  });
});

describe('masquerade', () => {
  it('names the chain as the reference plugins do', () => {
    expect(chainName('mynet', 'abc')).toMatch(/^CNI-[0-9a-f]{24}$/);
    expect(chainComment('mynet', 'abc')).toBe('name: "mynet" id: "abc"');
  });
  it('writes one ACCEPT per pod network, one MASQUERADE and one jump per address', () => {
    const m = masqFor('', 'n', 'c', ['10.0.0.5/24', '10.1.0.5/24', 'fd00::5/64']);
    expect(m.chains.map((c) => [c.family, c.rules.length])).toEqual([
      [4, 3],
      [6, 2],
    ]);
    expect(m.chains[0]?.rules[1]).toBe('! -d 224.0.0.0/4 -m comment --comment "name: \\"n\\" id: \\"c\\"" -j MASQUERADE');
    expect(m.rules.map((r) => r.rule.split(' ')[1])).toEqual(['10.0.0.5/32', '10.1.0.5/32', 'fd00::5/128']);
  });
});
