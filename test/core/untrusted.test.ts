// Untrusted strings can never add a line, a word or a path component: whatever string sits in a name, an
// address or a namespace of an op, the adapter either refuses the op or renders exactly the intended batch
// lines (as iproute2's own line splitter reads them), and every process it starts has a fixed argv (no shell;
// the only variable argv elements are `--net=PATH` and /proc/sys paths, each one element). The edge parsers
// (CNI env, network name, bridge config, a delegate's result) refuse the same strings with the right code,
// naming the field.

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { invocations, steps, unsafe } from '../../adapters/kernel/render.ts';
import { parseBridgeConf } from '../../core/bridge/config.ts';
import { parseEnv, parseNetConf } from '../../core/cni/env.ts';
import { readResult } from '../../core/cni/result.ts';
import { HOST, type Op } from '../../core/kernel/model.ts';
import { linkNameProblem } from '../../core/kernel/names.ts';
import { runs } from '../support/runs.ts';

const POD = '/var/run/netns/felt-pod';
const ro = { pid: 4242 };

/** iproute2's batch line splitter (lib/utils.c makeargs + the '#' comment cut in getcmdline). */
function makeargs(line: string): string[] {
  const hash = line.indexOf('#');
  const cp = hash < 0 ? line : line.slice(0, hash);
  const out: string[] = [];
  let i = 0;
  const ws = ' \t\r\n';
  while (i < cp.length) {
    while (i < cp.length && ws.includes(cp[i]!)) i++;
    if (i >= cp.length) break;
    if (cp[i] === '"' || cp[i] === "'") {
      const q = cp[i]!;
      const end = cp.indexOf(q, i + 1);
      if (end < 0) throw new Error('Unterminated quoted string');
      out.push(cp.slice(i + 1, end));
      i = end + 1;
    } else {
      let j = i;
      while (j < cp.length && !ws.includes(cp[j]!)) j++;
      out.push(cp.slice(i, j));
      i = j;
    }
  }
  return out;
}

const NASTY = [
  'x\nlink add evil type bridge',
  'x"; touch /tmp/felt-pwned; "',
  'a$(id)',
  'b`id`',
  'c;id',
  '../etc',
  'br#0',
  "'q",
  '"q"',
  'e\\0',
  'f.1',
  'g h',
  '-rf',
  '!x',
  'ok0',
  '',
  'tab\there',
  'x\r',
  'ünï',
];
const text = fc.oneof(fc.constantFrom(...NASTY), fc.string({ maxLength: 18 }), fc.string({ unit: 'binary', maxLength: 18 }));

/** Ops that carry `s` in one name or address field each, with the line count and the token they must give. */
const carriers = (s: string): { op: Op; lines: number; token: string }[] => [
  { op: { op: 'link.del', ns: POD, name: s }, lines: 1, token: s },
  { op: { op: 'link.set', link: { ns: POD, name: s, kind: 'veth' }, changes: { up: true } }, lines: 1, token: s },
  { op: { op: 'link.set', link: { ns: POD, name: 'eth0', kind: 'veth' }, changes: { master: s } }, lines: 1, token: s },
  { op: { op: 'link.add', link: { ns: POD, name: 'eth0', kind: 'veth', veth: { peer: s, peerNs: HOST } } }, lines: 1, token: s },
  { op: { op: 'addr.add', addr: { ns: POD, dev: s, cidr: '10.0.0.2/24' } }, lines: 1, token: s },
  { op: { op: 'addr.add', addr: { ns: POD, dev: 'eth0', cidr: s } }, lines: 1, token: s },
  { op: { op: 'route.replace', route: { ns: POD, dst: '0.0.0.0/0', gw: s, dev: 'eth0' } }, lines: 1, token: s },
  { op: { op: 'route.replace', route: { ns: POD, dst: s, dev: 'eth0' } }, lines: 1, token: s },
  { op: { op: 'route.replace', route: { ns: POD, dst: '10.1.0.0/16', dev: 'eth0', src: s } }, lines: 1, token: s },
  { op: { op: 'neigh.replace', neigh: { ns: POD, dev: 'eth0', ip: s, lladdr: '02:00:00:00:00:01' } }, lines: 1, token: s },
  { op: { op: 'fdb.replace', fdb: { ns: POD, dev: 'vx', mac: s, dst: '198.51.100.3' } }, lines: 1, token: s },
  { op: { op: 'qdisc.replace', qdisc: { ns: POD, dev: s, kind: 'tbf', rate: 1000, burst: 100 } }, lines: 1, token: s },
  { op: { op: 'iprule.add', ipRule: { ns: POD, family: 4, src: s, table: 100 } }, lines: 1, token: s },
  { op: { op: 'iprule.del', ipRule: { ns: POD, family: 6, src: s, table: 100, priority: 5 } }, lines: 1, token: s },
];

describe('rendering: no value adds a line or a word', () => {
  it('an op holding any string is refused, or renders exactly its lines with the string as one token', () => {
    fc.assert(
      fc.property(text, (s) => {
        for (const c of carriers(s)) {
          let rendered;
          try {
            rendered = steps([c.op], ro);
          } catch (e) {
            expect((e as Error).message).toMatch(/^refusing to /);
            continue;
          }
          expect(rendered).toHaveLength(1);
          const [inv] = invocations(rendered[0]!, ro);
          if (inv?.kind !== 'exec') throw new Error('expected a process');
          const lines = inv.input.split('\n').slice(0, -1);
          expect(lines).toHaveLength(c.lines);
          for (const l of lines) expect(makeargs(l)).toContain(c.token);
          // No shell: the argv enters the namespace (nsenter with its path as one element, or ip's own `-n
          // NAME` for a named one), then the tool's fixed flags.
          const tool = inv.argv[0] === 'ip' && inv.argv[1] === '-n' ? ['ip', ...inv.argv.slice(3)] : inv.argv.slice(2);
          if (inv.argv[0] === 'ip') expect(inv.argv.slice(0, 3)).toEqual(['ip', '-n', 'felt-pod']);
          else expect(inv.argv.slice(0, 2)).toEqual(['nsenter', `--net=${POD}`]);
          expect(['ip', 'bridge', 'tc']).toContain(tool[0]);
          // (IPv6 policy rules: `ip -6`, ip's family being a global option.)
          expect(tool.slice(1)).toEqual(tool[1] === '-6' ? ['-6', '-force', '-batch', '-'] : ['-force', '-batch', '-']);
        }
      }),
      { numRuns: runs(300) },
    );
  });

  it('iptables rules and sysctl values never carry a line break; sysctl keys never climb out of /proc/sys/net', () => {
    fc.assert(
      fc.property(text, (s) => {
        const ops: Op[] = [
          {
            op: 'rule.add',
            rule: { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: `-s 10.0.0.2/32 -m comment --comment "${s}" -j C` },
          },
          { op: 'chain.sync', chain: { ns: HOST, family: 4, table: 'nat', chain: s || 'C', rules: ['-j ACCEPT'] } },
          { op: 'sysctl.set', sysctl: { ns: POD, key: `net.ipv4.conf.${s.replace(/\./g, '/')}.forwarding`, value: '1' } },
          { op: 'sysctl.set', sysctl: { ns: POD, key: 'net.ipv4.ip_forward', value: s } },
        ];
        for (const op of ops) {
          let rendered;
          try {
            rendered = steps([op], ro);
          } catch (e) {
            expect((e as Error).message).toMatch(/^refusing to /);
            continue;
          }
          for (const inv of rendered.flatMap((x) => invocations(x, ro))) {
            if (inv.kind !== 'exec') continue;
            if (inv.argv.includes('tee')) {
              const paths = inv.argv.slice(inv.argv.indexOf('--') + 1);
              for (const p of paths) expect(p.split('/').slice(0, 4)).toEqual(['', 'proc', 'sys', 'net']);
              for (const p of paths) expect(p.split('/')).not.toContain('..');
              expect(inv.input.split('\n')).toHaveLength(2);
            } else {
              // *nat, the chain declaration when one is written, the rule, COMMIT.
              expect(inv.input.split('\n').slice(0, -1)).toHaveLength(op.op === 'chain.sync' ? 4 : 3);
            }
          }
        }
      }),
      { numRuns: runs(300) },
    );
  });

  it('refuses the nastiest names before any process runs, naming the value', () => {
    expect(unsafe({ op: 'link.del', ns: POD, name: 'x\nlink add' })).toMatch(/^interface name "x\\nlink add" contains whitespace/);
    expect(unsafe({ op: 'route.replace', route: { ns: POD, dst: '0.0.0.0/0', gw: '10.0.0.1\nlink add evil type bridge' } })).toMatch(
      /^gw /,
    );
    expect(unsafe({ op: 'link.del', ns: POD, name: 'a$(id)' })).toBeUndefined(); // carried as it is: no shell reads it
    expect(unsafe({ op: 'link.del', ns: 'bad ns', name: 'eth0' })).toMatch(/^ns "bad ns"/);
    expect(() => steps([{ op: 'link.del', ns: POD, name: 'br#0' }], ro)).toThrow(
      /^refusing to delete link br#0 in \/var\/run\/netns\/felt-pod: interface name "br#0" contains '#'/,
    );
  });
});

describe('the edge refuses untrusted text, naming the field', () => {
  const env = (extra: Record<string, string>) => ({
    CNI_COMMAND: 'ADD',
    CNI_CONTAINERID: 'c1',
    CNI_NETNS: POD,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/x',
    ...extra,
  });

  it('CNI_IFNAME and CNI_NETNS: code 4, for every string the renderer would refuse', () => {
    fc.assert(
      fc.property(text, (s) => {
        const r = parseEnv(env({ CNI_IFNAME: s }), '{}');
        expect(E.isLeft(r)).toBe(linkNameProblem(s) !== undefined);
        if (E.isLeft(r)) expect(r.left).toMatchObject({ code: 4, msg: expect.stringContaining('CNI_IFNAME') });
        const n = parseEnv(env({ CNI_NETNS: `/run/netns/${s}` }), '{}');
        if (E.isLeft(n)) expect(n.left).toMatchObject({ code: 4, msg: expect.stringContaining('CNI_NETNS') });
        else expect(unsafe({ op: 'link.del', ns: n.right.netns, name: 'eth0' })).toBeUndefined();
      }),
      { numRuns: runs(300) },
    );
  });

  it("network name: the spec's characters only (code 7)", () => {
    for (const name of ['x\n*nat\n-A POSTROUTING -j ACCEPT\nCOMMIT', 'n"; touch /tmp/x; "', '../x', 'a b', '-x']) {
      const r = parseNetConf(JSON.stringify({ cniVersion: '1.0.0', name, type: 'bridge' }), ['1.0.0'], 'ADD');
      expect(E.isLeft(r) && r.left).toMatchObject({
        code: 7,
        msg: expect.stringContaining('name: invalid characters found in network name'),
      });
    }
    expect(E.isRight(parseNetConf(JSON.stringify({ cniVersion: '1.0.0', name: 'my-net_1.0', type: 'bridge' }), ['1.0.0'], 'ADD'))).toBe(
      true,
    );
  });

  it('bridge: the same names as the renderer (code 7, naming "bridge")', () => {
    fc.assert(
      fc.property(text, (s) => {
        const r = parseBridgeConf({ cniVersion: '1.0.0', name: 'n', type: 'bridge', raw: { bridge: s } }, {});
        if (s === '') return; // the default, cni0
        expect(E.isLeft(r)).toBe(linkNameProblem(s) !== undefined);
        if (E.isLeft(r)) expect(r.left).toMatchObject({ code: 7, msg: expect.stringContaining('bridge: ') });
      }),
      { numRuns: runs(300) },
    );
  });

  it("a delegate's result: addresses, prefixes and MACs are parsed and written back; anything else names the field", () => {
    expect(readResult({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.5/24', gateway: '10.0.0.1\nlink add evil type bridge' }] })).toEqual(
      E.left('ips[0].gateway: "10.0.0.1\\nlink add evil type bridge" is not an IP address'),
    );
    expect(readResult({ cniVersion: '1.0.0', routes: [{ dst: '0.0.0.0/0 dev x' }] })).toEqual(
      E.left('routes[0].dst: "0.0.0.0/0 dev x" is not a prefix (e.g. 10.22.0.0/16)'),
    );
    expect(readResult({ cniVersion: '1.0.0', routes: [{ dst: '10.0.0.0/8', gw: '$(id)' }] })).toEqual(
      E.left('routes[0].gw: "$(id)" is not an IP address'),
    );
    expect(readResult({ cniVersion: '1.0.0', interfaces: [{ name: 'e#0' }] })).toMatchObject({ _tag: 'Left' });
    expect(
      readResult({
        cniVersion: '1.0.0',
        ips: [{ address: 'FD00:0:0::5/64', gateway: 'fd00::1' }],
        routes: [{ dst: '10.1.2.3/8', gw: '10.0.0.1', mtu: 1400 }],
      }),
    ).toEqual(
      E.right({
        cniVersion: '1.1.0',
        ips: [{ address: 'fd00::5/64', gateway: 'fd00::1' }],
        routes: [{ dst: '10.0.0.0/8', gw: '10.0.0.1', mtu: 1400 }],
      }),
    );
    fc.assert(
      fc.property(text, text, (a, g) => {
        const r = readResult({ cniVersion: '1.0.0', ips: [{ address: a, gateway: g }], routes: [{ dst: a, gw: g }] });
        if (E.isLeft(r)) return;
        // Whatever parsed is canonical text that renders safely.
        const ip = r.right.ips![0]!;
        const route = r.right.routes![0]!;
        expect(unsafe({ op: 'addr.add', addr: { ns: POD, dev: 'eth0', cidr: ip.address } })).toBeUndefined();
        expect(unsafe({ op: 'route.replace', route: { ns: POD, dst: route.dst, gw: route.gw!, dev: 'eth0' } })).toBeUndefined();
      }),
      { numRuns: runs(300) },
    );
  });
});

describe('tap, dummy, win-bridge and win-overlay refuse untrusted text, naming the field', () => {
  const nc = (raw: Record<string, unknown>) => ({ cniVersion: '1.0.0', name: 'n', type: 'x', raw });

  it('tap: bridge as the renderer takes names, mac, selinuxContext and owner (code 7); a tap op carrying any context is refused or one token', async () => {
    const { parseTapConf } = await import('../../core/tap/config.ts');
    fc.assert(
      fc.property(text, (s) => {
        const b = parseTapConf(nc({ bridge: s }), {});
        if (s !== '') expect(E.isLeft(b)).toBe(linkNameProblem(s) !== undefined);
        if (E.isLeft(b)) expect(b.left).toMatchObject({ code: 7, msg: expect.stringContaining('bridge: ') });
        for (const [raw, args, field] of [
          [{ mac: s }, {}, 'mac: '],
          [{}, { MAC: s }, 'CNI_ARGS MAC: '],
          [{ selinuxContext: s }, {}, 'selinuxContext: '],
          [{ owner: s }, {}, 'owner: '],
        ] as const) {
          const r = parseTapConf(nc(raw), args);
          if (E.isLeft(r)) expect(r.left).toMatchObject({ code: 7, msg: expect.stringContaining(field) });
          else if ('selinuxContext' in raw && s !== '') {
            // Accepted: renders as exactly one word of the runcon argv, the tap line unchanged.
            const st = steps(
              [
                {
                  op: 'link.add',
                  link: { ns: POD, name: 't0', kind: 'tap', tap: { multiQueue: false, vnetHdr: false, pi: false, selinuxContext: s } },
                },
              ],
              ro,
            );
            const [inv] = invocations(st[0]!, ro);
            if (inv?.kind !== 'exec') throw new Error('expected a process');
            expect(inv.argv.slice(2, 4)).toEqual(['runcon', s]);
            expect(inv.input).toBe('tuntap add dev t0 mode tap\n');
          }
        }
      }),
      { numRuns: runs(300) },
    );
  });

  it('dummy: ipam.type (code 7)', async () => {
    const { parseDummyConf } = await import('../../core/dummy/config.ts');
    fc.assert(
      fc.property(fc.oneof(text, fc.integer(), fc.constant(null)), (v) => {
        const r = parseDummyConf(nc({ ipam: { type: v } }));
        if (E.isLeft(r)) expect(r.left).toMatchObject({ code: 7, msg: expect.stringContaining('ipam') });
        else expect(r.right.ipamType).toBe(v);
      }),
      { numRuns: runs(300) },
    );
  });

  it("win-bridge / win-overlay: ipMasqNetwork, endpointMacPrefix, a port mapping's protocol and hostIP (code 7)", async () => {
    const { parseWinBridgeConf } = await import('../../core/win-bridge/config.ts');
    const { parseWinOverlayConf } = await import('../../core/win-overlay/config.ts');
    const { protocolEnum } = await import('../../core/hns/netconf.ts');
    fc.assert(
      fc.property(text, (s) => {
        const m = parseWinBridgeConf(nc({ ipMasqNetwork: s }));
        if (E.isLeft(m)) expect(m.left).toMatchObject({ code: 7, msg: expect.stringContaining('ipMasqNetwork: ') });
        const p = parseWinOverlayConf(nc({ endpointMacPrefix: s, ipam: { type: 'host-local' } }));
        if (E.isLeft(p)) expect(p.left).toMatchObject({ code: 7, msg: expect.stringContaining('endpointMacPrefix: ') });
        else if (s !== '') expect(s).toMatch(/^[0-9A-Fa-f]{2}-[0-9A-Fa-f]{2}$/);
        const pm = parseWinBridgeConf(
          nc({ runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, protocol: s, hostIP: s }] } }),
        );
        if (E.isRight(pm)) expect(protocolEnum(s)).toBeDefined();
        else expect(pm.left).toMatchObject({ code: 7, msg: expect.stringContaining('runtimeConfig.portMappings[0].') });
      }),
      { numRuns: runs(300) },
    );
  });
});
