// The tuning plugin's pure parts: config parsing (sysctl keys, precedence, duplicates, the allowlist, ranges),
// the desired states of ADD, CHECK and DEL, and the Decider that keeps the original values.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import type { NetConf } from '../../core/cni/env.ts';
import type { CniError } from '../../core/cni/errors.ts';
import { fold, stamp } from '../../core/events.ts';
import { emptyKernelState, type KernelState } from '../../core/kernel/model.ts';
import {
  parseAllowlist,
  parseDataDir,
  parseTuningConf,
  sysctlKeyFor,
  type TuningConf,
  type TuningInput,
} from '../../core/tuning/config.ts';
import { decide, tuningProjection, type TuningCommand, type TuningEvent, type TuningState } from '../../core/tuning/decider.ts';
import { duplicateKeys } from '../../core/tuning/json-keys.ts';
import {
  checkedState,
  mergeOriginals,
  originalsOf,
  restoredState,
  tunedResult,
  tunedState,
  type Originals,
} from '../../core/tuning/desired.ts';

const NS = '/var/run/netns/pod';

const input = (raw: Record<string, unknown>, more: Partial<TuningInput> = {}, text?: string): TuningInput => {
  const full = { cniVersion: '1.0.0', name: 'net1', type: 'tuning', ...raw };
  const conf: NetConf = { cniVersion: full.cniVersion as string, name: full.name as string, type: 'tuning', raw: full };
  return { conf, stdin: text ?? JSON.stringify(full), cniArgs: {}, ifname: 'eth0', ...more };
};
const ok = (raw: Record<string, unknown>, more: Partial<TuningInput> = {}): TuningConf => {
  const r = parseTuningConf(input(raw, more));
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
};
const bad = (raw: Record<string, unknown>, more: Partial<TuningInput> = {}, text?: string): CniError => {
  const r = parseTuningConf(input(raw, more, text));
  if (E.isRight(r)) throw new Error(`accepted ${JSON.stringify(raw)}`);
  return r.left;
};

describe('sysctl keys', () => {
  it('are dotted or slashed, IFNAME replaced after the dots became slashes (a dotted ifname stays one directory)', () => {
    expect(sysctlKeyFor('net.ipv4.conf.IFNAME.arp_notify', 'eth0')).toEqual(E.right('net.ipv4.conf.eth0.arp_notify'));
    expect(sysctlKeyFor('net/ipv4/conf/IFNAME/arp_notify', 'eth0')).toEqual(E.right('net.ipv4.conf.eth0.arp_notify'));
    expect(sysctlKeyFor('net.ipv4.conf.IFNAME.arp_notify', 'eth0.5')).toEqual(E.right('net.ipv4.conf.eth0/5.arp_notify'));
    expect(sysctlKeyFor('net.core.somaxconn', 'eth0')).toEqual(E.right('net.core.somaxconn'));
    // Only the first IFNAME, as the reference.
    expect(sysctlKeyFor('net.IFNAME.IFNAME', 'e')).toEqual(E.right('net.e.IFNAME'));
  });

  it('outside net.*, with .., empty components or batch-breaking characters are refused', () => {
    for (const k of [
      'kernel.pid_max',
      'net',
      'vm.swappiness',
      'netx.a',
      '/net/ipv4/ip_forward',
      'net.ipv4.',
      'net//ipv4',
      'net.ipv4..ip_forward',
      'net/../kernel/x',
      'net.ipv4 .x',
      'net.a#b',
      'net."a"',
      '',
    ]) {
      expect(E.isLeft(sysctlKeyFor(k, 'eth0')), k).toBe(true);
    }
  });
});

describe('parseTuningConf', () => {
  it('reads every option', () => {
    const tc = ok({
      sysctl: { 'net.ipv4.conf.IFNAME.arp_notify': '1' },
      mac: 'C2-11-22-33-44-55',
      promisc: true,
      mtu: 1400,
      allmulti: false,
      txQLen: 0,
    });
    expect(tc).toEqual({
      name: 'net1',
      cniVersion: '1.0.0',
      sysctls: [{ from: 'sysctl', field: 'net.ipv4.conf.IFNAME.arp_notify', key: 'net.ipv4.conf.eth0.arp_notify', value: '1' }],
      mac: 'c2:11:22:33:44:55',
      promisc: true,
      mtu: 1400,
      allmulti: false,
      txqlen: 0,
      dataDir: '/var/lib/felt',
    });
    expect(ok({})).toEqual({ name: 'net1', cniVersion: '1.0.0', sysctls: [], promisc: false, dataDir: '/var/lib/felt' });
    // Blanks between values as single spaces; one trailing newline dropped.
    expect(ok({ sysctl: { 'net.ipv4.ping_group_range': '0\t 100\n' } }).sysctls[0]!.value).toBe('0 100');
    // mtu 0 is "leave it", as in the reference.
    expect(ok({ mtu: 0 }).mtu).toBeUndefined();
  });

  it('mac: mac < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac', () => {
    const m = (n: number): string => `02:00:00:00:00:0${n}`;
    expect(ok({ mac: m(1) }, { cniArgs: { MAC: m(2) } }).mac).toBe(m(2));
    expect(ok({ mac: m(1), runtimeConfig: { mac: m(3) } }, { cniArgs: { MAC: m(2) } }).mac).toBe(m(3));
    expect(ok({ mac: m(1), runtimeConfig: { mac: m(3) }, args: { cni: { mac: m(4) } } }, { cniArgs: { MAC: m(2) } }).mac).toBe(m(4));
  });

  it('args.cni overrides the top-level fields and adds to (or replaces) sysctls', () => {
    const tc = ok({
      sysctl: { 'net.core.somaxconn': '500', 'net.ipv4.ip_forward': '0' },
      promisc: true,
      mtu: 1400,
      args: { cni: { sysctl: { 'net/ipv4/ip_forward': '1' }, promisc: false, mtu: 1300, allmulti: true, txQLen: 10 } },
    });
    expect(tc.sysctls.map((s) => [s.key, s.value])).toEqual([
      ['net.core.somaxconn', '500'],
      ['net.ipv4.ip_forward', '1'],
    ]);
    expect([tc.promisc, tc.mtu, tc.allmulti, tc.txqlen]).toEqual([false, 1300, true, 10]);
  });

  it('CNI_ARGS: only MAC and IgnoreUnknown, as libcni LoadArgs (code 4)', () => {
    expect(bad({}, { cniArgs: { IP: '10.0.0.2' } })).toMatchObject({ code: 4, msg: expect.stringContaining('IgnoreUnknown=1') });
    expect(ok({}, { cniArgs: { IP: '10.0.0.2', IgnoreUnknown: '1', MAC: '02:00:00:00:00:09' } }).mac).toBe('02:00:00:00:00:09');
    expect(bad({}, { cniArgs: { IgnoreUnknown: 'maybe' } }).code).toBe(4);
  });

  it('refuses bad input with code 7, naming the field', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ sysctl: { 'kernel.pid_max': '1' } }, /sysctl\["kernel.pid_max"\]: invalid sysctl key: it is not under net/],
      [{ sysctl: { 'net.ipv4..conf': '1' } }, /sysctl\["net.ipv4..conf"\]: invalid sysctl key: it contains '\.\.'/],
      [{ sysctl: { 'net.core.somaxconn': 5 } }, /sysctl\["net.core.somaxconn"\]: the value must be a string/],
      [{ sysctl: { 'net.core.somaxconn': '1\n2' } }, /control characters/],
      [{ sysctl: ['net.core.somaxconn'] }, /^sysctl: must be an object/],
      [
        { sysctl: { 'net.ipv4.ip_forward': '1', 'net/ipv4/ip_forward': '0' } },
        /sysctl\["net\/ipv4\/ip_forward"\]: names the same sysctl as "net.ipv4.ip_forward"/,
      ],
      [{ mac: '02:00:00:00:00' }, /^mac: "02:00:00:00:00" is not a MAC address/],
      [{ runtimeConfig: { mac: 'x' } }, /^runtimeConfig.mac: "x" is not a MAC/],
      [{ args: { cni: { mac: 7 } } }, /^args.cni.mac: 7 is not a MAC/],
      [{ mtu: 67 }, /^mtu: must be an integer between 68 and 65535, got 67/],
      [{ mtu: 65536 }, /^mtu: must be an integer between 68 and 65535/],
      [{ mtu: '1500' }, /^mtu: must be an integer/],
      [{ args: { cni: { mtu: -1 } } }, /^args.cni.mtu: must be an integer/],
      [{ txQLen: -1 }, /^txQLen: must be an integer between 0 and 4294967295/],
      [{ promisc: 'yes' }, /^promisc: must be true or false/],
      [{ allmulti: 1 }, /^allmulti: must be true or false/],
      [{ dataDir: 'relative' }, /^dataDir: "relative" is not an absolute path/],
    ];
    for (const [raw, re] of cases) {
      const e = bad(raw);
      expect(e.code, JSON.stringify(raw)).toBe(7);
      expect(e.msg).toMatch(re);
    }
  });

  it('refuses duplicated sysctl keys, which JSON.parse would silently merge', () => {
    const text = '{"cniVersion":"1.0.0","name":"net1","type":"tuning","sysctl":{"net.core.somaxconn":"1","net.core.somaxconn":"2"}}';
    const raw = JSON.parse(text) as Record<string, unknown>;
    expect(bad(raw, {}, text)).toMatchObject({ code: 7, msg: 'sysctl["net.core.somaxconn"]: duplicated sysctl keys are not allowed' });
  });

  it('honours the allowlist (unanchored regular expressions on the key as written)', () => {
    const al = parseAllowlist('\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\n  net.core.somaxconn  \n');
    expect(E.isRight(al)).toBe(true);
    const allowlist = { path: '/etc/cni/tuning/allowlist.conf', patterns: (al as E.Right<readonly RegExp[]>).right };
    expect(ok({ sysctl: { 'net.ipv4.conf.IFNAME.arp_notify': '1', 'net.core.somaxconn': '9' } }, { allowlist }).sysctls).toHaveLength(2);
    expect(bad({ args: { cni: { sysctl: { 'net.core.rmem_max': '1' } } } }, { allowlist }).msg).toMatch(
      /^args\.cni\.sysctl\["net\.core\.rmem_max"\]: not allowed/,
    );
    expect(bad({ sysctl: { 'net.ipv4.conf.eth0.arp_notify': '1' } }, { allowlist })).toMatchObject({
      code: 7,
      msg: expect.stringMatching(/^sysctl\["net.ipv4.conf.eth0.arp_notify"\]: not allowed by \/etc\/cni\/tuning\/allowlist.conf/),
    });
    expect(parseAllowlist('ok\n(unclosed')).toEqual(E.left(expect.stringMatching(/^line 2: "\(unclosed" is not a regular expression/)));
  });

  it('DEL needs only the data dir', () => {
    const conf = input({ dataDir: '/tmp/x', sysctl: { 'kernel.x': '1' } }).conf;
    expect(parseDataDir(conf)).toEqual(E.right('/tmp/x'));
    expect(E.isLeft(parseDataDir(input({ dataDir: '/a/../b' }).conf))).toBe(true);
  });
});

describe('duplicateKeys', () => {
  it('finds keys that occur twice in the objects at the given paths, escapes and nesting included', () => {
    const text = '{"a":{"x":1,"x":[{"x":1,"x":2}]},"args":{"cni":{"sysctl":{"k\\"1":"1","k\\"1":"2","z":"{\\"q\\":1}"}}},"sysctl":{}}';
    expect(duplicateKeys(text, [['a'], ['args', 'cni', 'sysctl'], ['sysctl']])).toEqual([
      { path: ['a'], key: 'x' },
      { path: ['args', 'cni', 'sysctl'], key: 'k"1' },
    ]);
    expect(duplicateKeys('{"sysctl":{"a":"1","b":"1"}}', [['sysctl']])).toEqual([]);
  });
});

describe('desired states', () => {
  const tc = ok({ sysctl: { 'net.ipv4.conf.IFNAME.arp_notify': '1' }, mac: '02:00:00:00:00:aa', mtu: 1400, allmulti: true });
  const seen: KernelState = {
    ...emptyKernelState(),
    links: [{ ns: NS, name: 'eth0', kind: 'veth', mtu: 1500, mac: '02:00:00:00:00:01', promisc: false, allmulti: false, txqlen: 1000 }],
    sysctls: [{ ns: NS, key: 'net.ipv4.conf.eth0.arp_notify', value: '0' }],
  };

  it('ADD wants the configured values; CHECK also wants promiscuous mode off unless configured', () => {
    expect(tunedState(tc, NS, 'eth0').links).toEqual([
      { ns: NS, name: 'eth0', kind: 'device', mac: '02:00:00:00:00:aa', mtu: 1400, allmulti: true },
    ]);
    expect(tunedState(tc, NS, 'eth0').sysctls).toEqual([{ ns: NS, key: 'net.ipv4.conf.eth0.arp_notify', value: '1' }]);
    expect(checkedState(tc, NS, 'eth0').links[0]!.promisc).toBe(false);
  });

  it('originals are the current values of what ADD changes, or why ADD cannot start', () => {
    expect(originalsOf(tc, seen, NS, 'eth0')).toEqual(
      E.right({
        link: { mac: '02:00:00:00:00:01', mtu: 1500, allmulti: false },
        sysctls: [{ key: 'net.ipv4.conf.eth0.arp_notify', value: '0' }],
      }),
    );
    // Values read back with tabs are kept with spaces (a batch carries no control characters).
    const tabbed = ok({ sysctl: { 'net.ipv4.ping_group_range': '0 100' } });
    const withRange = { ...seen, sysctls: [{ ns: NS, key: 'net.ipv4.ping_group_range', value: '1\t0' }] };
    expect(originalsOf(tabbed, withRange, NS, 'eth0')).toEqual(
      E.right({ link: {}, sysctls: [{ key: 'net.ipv4.ping_group_range', value: '1 0' }] }),
    );
    expect(originalsOf(tc, seen, NS, 'eth1')).toEqual(E.left({ code: 4, msg: `CNI_IFNAME: no interface "eth1" in ${NS}` }));
    expect(originalsOf(tc, { ...seen, sysctls: [] }, NS, 'eth0')).toEqual(
      E.left({ code: 7, msg: `sysctl["net.ipv4.conf.IFNAME.arp_notify"]: no such sysctl in ${NS}` }),
    );
  });

  it('DEL wants the originals back for what still exists', () => {
    const orig: Originals = {
      link: { mtu: 1500 },
      sysctls: [
        { key: 'net.ipv4.conf.eth0.arp_notify', value: '0' },
        { key: 'net.core.somaxconn', value: '4096' },
      ],
    };
    const withCore = { ...seen, sysctls: [...seen.sysctls, { ns: NS, key: 'net.core.somaxconn', value: '9' }] };
    expect(restoredState(orig, withCore, NS, 'eth0')).toMatchObject({
      links: [{ ns: NS, name: 'eth0', kind: 'device', mtu: 1500 }],
      sysctls: [
        { ns: NS, key: 'net.ipv4.conf.eth0.arp_notify', value: '0' },
        { ns: NS, key: 'net.core.somaxconn', value: '4096' },
      ],
    });
    // The interface is gone: its attributes and per-device sysctls went with it.
    const gone = restoredState(orig, { ...withCore, links: [] }, NS, 'eth0');
    expect(gone.links).toEqual([]);
    expect(gone.sysctls).toEqual([{ ns: NS, key: 'net.core.somaxconn', value: '4096' }]);
  });

  it('merging keeps the first originals and adds what only the new config manages', () => {
    const first: Originals = { link: { mtu: 1500 }, sysctls: [{ key: 'a', value: '0' }] };
    const now: Originals = {
      link: { mtu: 1400, mac: '02:00:00:00:00:01' },
      sysctls: [
        { key: 'a', value: '1' },
        { key: 'b', value: '2' },
      ],
    };
    expect(mergeOriginals(first, now)).toEqual({
      link: { mtu: 1500, mac: '02:00:00:00:00:01' },
      sysctls: [
        { key: 'a', value: '0' },
        { key: 'b', value: '2' },
      ],
    });
  });

  it('the result is prevResult with the new MAC on CNI_IFNAME', () => {
    const prev = {
      cniVersion: '1.1.0',
      interfaces: [
        { name: 'cni0', mac: '02:00:00:00:00:02' },
        { name: 'eth0', mac: '02:00:00:00:00:01', sandbox: NS },
      ],
      ips: [{ address: '10.0.0.2/24', interface: 1 }],
    };
    expect(tunedResult(prev, tc, 'eth0')).toEqual({
      ...prev,
      interfaces: [prev.interfaces[0], { name: 'eth0', mac: '02:00:00:00:00:aa', sandbox: NS }],
    });
    expect(tunedResult(prev, ok({}), 'eth0')).toBe(prev);
  });
});

describe('the tuning Decider', () => {
  const ref = { network: 'net1', containerId: 'c1', ifname: 'eth0' };
  const orig: Originals = { link: { mtu: 1500 }, sysctls: [] };
  const given = (events: readonly TuningEvent[]): TuningState =>
    fold(tuningProjection, stamp('tuning/net1', events, '2030-01-01T00:00:00Z', 1));
  const when = (s: TuningState, c: TuningCommand): readonly TuningEvent[] => {
    const r = decide(c, s);
    if (E.isLeft(r)) throw new Error(r.left.msg);
    return r.right;
  };
  const applied: TuningEvent = { type: 'TuningApplied', data: { ...ref, netns: NS, original: orig } };

  it('records the originals once; a repeated ADD keeps the first ones', () => {
    expect(when(given([]), { type: 'RecordOriginals', data: { ...ref, netns: NS, original: orig } })).toEqual([applied]);
    expect(
      when(given([applied]), { type: 'RecordOriginals', data: { ...ref, netns: NS, original: { link: { mtu: 1400 }, sysctls: [] } } }),
    ).toEqual([]);
    expect(
      when(given([applied]), { type: 'RecordOriginals', data: { ...ref, netns: NS, original: { link: { txqlen: 1000 }, sysctls: [] } } }),
    ).toEqual([{ type: 'TuningApplied', data: { ...ref, netns: NS, original: { link: { txqlen: 1000, mtu: 1500 }, sysctls: [] } } }]);
  });

  it('a record of another namespace is replaced', () => {
    const other = { link: { mtu: 9000 }, sysctls: [] };
    expect(when(given([applied]), { type: 'RecordOriginals', data: { ...ref, netns: '/var/run/netns/new', original: other } })).toEqual([
      { type: 'TuningApplied', data: { ...ref, netns: '/var/run/netns/new', original: other } },
    ]);
  });

  it('forgets once; forgetting what is not there emits nothing', () => {
    expect(when(given([applied]), { type: 'ForgetOriginals', data: { ...ref, reason: 'del' } })).toEqual([
      { type: 'TuningReverted', data: { ...ref, reason: 'del' } },
    ]);
    const reverted: TuningEvent = { type: 'TuningReverted', data: { ...ref, reason: 'del' } };
    expect(given([applied, reverted]).attachments).toEqual({});
    expect(when(given([applied, reverted]), { type: 'ForgetOriginals', data: { ...ref, reason: 'del' } })).toEqual([]);
    expect(given([applied]).attachments['c1/eth0']).toEqual({
      containerId: 'c1',
      ifname: 'eth0',
      netns: NS,
      original: orig,
      since: '2030-01-01T00:00:00Z',
    });
  });
});
