// Policy routing rules in the kernel model (what the sbr plugin needs): plan, ownership, order, rendering,
// parsing and the twin. The properties in plan.test.ts cover rules too; these are the seeded cases.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { parseIpBatch, parseIpRules } from '../../adapters/kernel/parse.ts';
import { invocations, steps } from '../../adapters/kernel/render.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { emptyKernelState, type IpRule, type KernelState, type Op, type OwnershipScope } from '../../core/kernel/model.ts';
import { describeOp, drift, plan } from '../../core/kernel/plan.ts';
import { foreign, mergeScopes, restrict, scopeOf } from '../../core/kernel/scope.ts';

const POD = '/var/run/netns/pod';
const st = (p: Partial<KernelState>): KernelState => ({ ...emptyKernelState(), ...p });
const sc = (p: Partial<OwnershipScope>): OwnershipScope => ({ links: [], devices: [], chains: [], ruleMarkers: [], ...p });
const rule = (src: string, table: number, priority?: number, extra: Partial<IpRule> = {}): IpRule => ({
  ns: POD,
  family: src.includes(':') ? 6 : 4,
  src,
  table,
  ...(priority !== undefined ? { priority } : {}),
  ...extra,
});
/** The kernel's own rules in a fresh namespace. */
const DEFAULTS: IpRule[] = [
  rule('0.0.0.0/0', 255, 0),
  rule('0.0.0.0/0', 254, 32766),
  rule('0.0.0.0/0', 253, 32767),
  rule('::/0', 255, 0),
  rule('::/0', 254, 32766),
];
const words = (ops: readonly Op[]): string[] => ops.map(describeOp);

describe('plan: policy rules', () => {
  const mine = sc({
    ruleSrcs: [
      { ns: POD, src: '10.1.0.5/32' },
      { ns: POD, src: 'fd00::5/128' },
    ],
  });

  it('adds what is missing; the kernel defaults and foreign rules stay, even with nothing desired', () => {
    const seen = st({ ipRules: [...DEFAULTS, rule('10.9.9.9/32', 100, 1000)] });
    expect(words(plan(st({ ipRules: [rule('10.1.0.5/32', 100)] }), seen, mine))).toEqual([`add rule from 10.1.0.5/32 table 100 in ${POD}`]);
    expect(plan(emptyKernelState(), seen, mine)).toEqual([]);
    expect(plan(emptyKernelState(), seen, sc({}))).toEqual([]);
  });

  it('a desired rule without a preference is satisfied by any; plan(d, d) = []', () => {
    const d = st({ ipRules: [rule('10.1.0.5/32', 100), rule('fd00::5/128', 101)] });
    expect(plan(d, st({ ipRules: [...DEFAULTS, rule('10.1.0.5/32', 100, 32765), rule('fd00::5/128', 101, 32765)] }), mine)).toEqual([]);
    expect(plan(d, d, mine)).toEqual([]);
  });

  it('removes owned rules that are not desired, duplicates of desired ones, and a rule with another preference', () => {
    const seen = st({
      ipRules: [
        ...DEFAULTS,
        rule('10.1.0.5/32', 100, 32765),
        rule('10.1.0.5/32', 100, 32764),
        rule('10.1.0.5/32', 102, 32763),
        rule('fd00::5/128', 100, 500),
      ],
    });
    const ops = plan(st({ ipRules: [rule('10.1.0.5/32', 100), rule('fd00::5/128', 100, 600)] }), seen, mine);
    expect(words(ops)).toEqual([
      `delete rule from 10.1.0.5/32 table 100 priority 32764 in ${POD}`,
      `delete rule from 10.1.0.5/32 table 102 priority 32763 in ${POD}`,
      `delete rule from fd00::5/128 table 100 priority 500 (IPv6) in ${POD}`,
      `add rule from fd00::5/128 table 100 priority 600 (IPv6) in ${POD}`,
    ]);
  });

  it('a rule with more selectors is never felt’s, even from an owned source', () => {
    const seen = st({ ipRules: [rule('10.1.0.5/32', 100, 10, { other: true })] });
    expect(plan(emptyKernelState(), seen, mine)).toEqual([]);
    expect(foreign(seen, mine).ipRules).toHaveLength(1);
  });

  it('ruleSrcs with a table owns only the rules to that table; sources compare in canonical form', () => {
    const scope = sc({ ruleSrcs: [{ ns: POD, src: 'FD00:0::5/128', table: 100 }] });
    const seen = st({ ipRules: [rule('fd00::5/128', 100, 1), rule('fd00::5/128', 101, 2)] });
    expect(restrict(seen, scope).ipRules).toEqual([rule('fd00::5/128', 100, 1)]);
    expect(words(plan(emptyKernelState(), seen, scope))).toEqual([`delete rule from fd00::5/128 table 100 priority 1 (IPv6) in ${POD}`]);
    expect(scopeOf(st({ ipRules: [rule('10.1.0.5/32', 7)] })).ruleSrcs).toEqual([{ ns: POD, src: '10.1.0.5/32', table: 7 }]);
    expect(mergeScopes(scope, sc({})).ruleSrcs).toHaveLength(1);
  });

  it('rule deletions run before link changes, additions after the addresses', () => {
    const d = st({
      links: [{ ns: POD, name: 'eth0', kind: 'device', up: true }],
      addresses: [{ ns: POD, dev: 'eth0', cidr: '10.1.0.5/24' }],
      routes: [{ ns: POD, dst: '0.0.0.0/0', gw: '10.1.0.1', dev: 'eth0', table: 100 }],
      ipRules: [rule('10.1.0.5/32', 100)],
    });
    const seen = st({ links: [{ ns: POD, name: 'eth0', kind: 'device', up: false }], ipRules: [rule('10.1.0.6/32', 100, 5)] });
    const ops = plan(d, seen, sc({ ruleSrcs: [{ ns: POD, src: '10.1.0.6/32' }] }));
    expect(ops.map((o) => o.op)).toEqual(['iprule.del', 'link.set', 'addr.add', 'iprule.add', 'route.replace']);
  });

  it('drift names missing and unexpected rules', () => {
    const seen = st({ ipRules: [rule('10.1.0.6/32', 100, 5)] });
    expect(drift(st({ ipRules: [rule('10.1.0.5/32', 100)] }), seen, sc({ ruleSrcs: [{ ns: POD, src: '10.1.0.6/32' }] }))).toEqual([
      `unexpected rule from 10.1.0.6/32 table 100 priority 5 in ${POD}`,
      `missing rule from 10.1.0.5/32 table 100 in ${POD}`,
    ]);
  });
});

describe('plan: routes owned by identity (routeIds)', () => {
  it('owns exactly the named routes: the same destination in another table or with another metric is foreign', () => {
    const r = (table?: number, metric?: number) => ({
      ns: POD,
      dst: '10.1.0.0/24',
      dev: 'eth0',
      scope: 'link' as const,
      ...(table ? { table } : {}),
      ...(metric ? { metric } : {}),
    });
    const seen = st({ routes: [r(), r(100), r(undefined, 5)] });
    const ops = plan(emptyKernelState(), seen, sc({ routeIds: [{ ns: POD, dst: '10.1.0.0/24' }] }));
    expect(words(ops)).toEqual([`delete route 10.1.0.0/24 dev eth0 scope link in ${POD}`]);
  });
});

describe('rendering and parsing policy rules', () => {
  it('IPv4 rules join the ip batch; IPv6 rules go to `ip -6 -force -batch -` (ip’s family is a global option)', () => {
    const ops: Op[] = [
      { op: 'iprule.del', ipRule: rule('10.1.0.6/32', 100, 5) },
      { op: 'iprule.add', ipRule: rule('10.1.0.5/32', 100) },
      { op: 'iprule.add', ipRule: rule('fd00::5/128', 101, 7) },
      { op: 'route.replace', route: { ns: POD, dst: '0.0.0.0/0', gw: '10.1.0.1', dev: 'eth0', table: 100 } },
    ];
    const s = steps(ops, { pid: 1 });
    expect(s.map((x) => [x.tool, x.lines.map((l) => l.text)])).toEqual([
      ['ip', ['rule del from 10.1.0.6/32 table 100 priority 5', 'rule add from 10.1.0.5/32 table 100']],
      ['ip6', ['rule add from fd00::5/128 table 101 priority 7']],
      ['ip', ['route replace 0.0.0.0/0 via 10.1.0.1 dev eth0 table 100']],
    ]);
    const inv = invocations(s[1]!, { pid: 1 });
    expect(inv[0]!.kind === 'exec' && inv[0]!.argv).toEqual(['nsenter', `--net=${POD}`, 'ip', '-6', '-force', '-batch', '-']);
  });

  it('refuses a source that is not one word', () => {
    expect(() => steps([{ op: 'iprule.add', ipRule: rule('10.1.0.5/32 table 1', 100) }], { pid: 1 })).toThrow(/refusing to add rule/);
  });

  it('parses ip -json rule show: plain rules by source and table, the rest marked other', () => {
    const out = JSON.stringify([
      { priority: 0, src: 'all', table: 'local' },
      { priority: 32761, src: '10.1.0.7', action: 'unreachable' },
      { priority: 32762, src: 'all', iif: 'lo', table: '103' },
      { priority: 32764, src: 'all', fwmark: '0x1', table: '101' },
      { priority: 32765, src: '10.1.0.0', srclen: 24, table: '100' },
      { priority: 32764, src: '10.1.0.5', table: '100' },
      { priority: 32766, src: 'all', table: 'main' },
    ]);
    expect(parseIpRules(POD, 4, out)).toEqual([
      rule('0.0.0.0/0', 255, 0),
      rule('10.1.0.7/32', 0, 32761, { other: true }),
      rule('0.0.0.0/0', 103, 32762, { other: true }),
      rule('0.0.0.0/0', 101, 32764, { other: true }),
      rule('10.1.0.0/24', 100, 32765),
      rule('10.1.0.5/32', 100, 32764),
      rule('0.0.0.0/0', 254, 32766),
    ]);
    expect(parseIpRules(POD, 6, '[{"priority":5,"src":"fd00:0::5","table":"7"}]')).toEqual([rule('fd00::5/128', 7, 5)]);
    expect(parseIpRules(POD, 4, 'nope')).toMatch(/cannot parse/);
  });

  it('kernel-made routes are left out unless asked for', () => {
    const routes = [
      { dst: '10.1.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', prefsrc: '10.1.0.5', flags: [] },
      { dst: 'default', gateway: '10.1.0.1', dev: 'eth0', flags: [] },
    ];
    const text = [[], [], routes, [], []].map((x) => JSON.stringify(x)).join('\n');
    const a = parseIpBatch(POD, text);
    const b = parseIpBatch(POD, text, true);
    expect(typeof a !== 'string' && a.routes.map((r) => r.dst)).toEqual(['0.0.0.0/0']);
    expect(typeof b !== 'string' && b.routes).toEqual([
      { ns: POD, dst: '10.1.0.0/24', dev: 'eth0', scope: 'link', src: '10.1.0.5' },
      { ns: POD, dst: '0.0.0.0/0', gw: '10.1.0.1', dev: 'eth0' },
    ]);
  });
});

describe('the twin: policy rules', () => {
  it('gives a rule without a preference the kernel’s (one below the lowest), refuses an exact duplicate, deletes by preference', () => {
    const k = memoryKernel(st({ ipRules: DEFAULTS }));
    expect(
      E.isRight(
        k.applySync([
          { op: 'iprule.add', ipRule: rule('10.1.0.5/32', 100) },
          { op: 'iprule.add', ipRule: rule('10.1.0.6/32', 101) },
        ]),
      ),
    ).toBe(true);
    expect(
      k
        .state()
        .ipRules!.filter((r) => r.table >= 100 && r.table < 253)
        .map((r) => [r.src, r.priority]),
    ).toEqual([
      ['10.1.0.5/32', 32765],
      ['10.1.0.6/32', 32764],
    ]);
    const dup = k.applySync([{ op: 'iprule.add', ipRule: rule('10.1.0.5/32', 100, 32765) }]);
    expect(E.isLeft(dup) && dup.left.msg).toBe(
      `failed to add rule from 10.1.0.5/32 table 100 priority 32765 in ${POD}: RTNETLINK answers: File exists`,
    );
    expect(
      E.isRight(
        k.applySync([
          { op: 'iprule.del', ipRule: rule('10.1.0.5/32', 100, 32765) },
          { op: 'iprule.del', ipRule: rule('10.1.0.5/32', 100, 32765) },
        ]),
      ),
    ).toBe(true);
    expect(k.state().ipRules!.filter((r) => r.table >= 100 && r.table < 253)).toHaveLength(1);
  });

  it('observes rules only when asked (or when desired has some), like the Linux adapter', async () => {
    const k = memoryKernel(st({ ipRules: DEFAULTS }));
    const a = await k.observe({ namespaces: [POD] })();
    expect(E.isRight(a) && a.right.ipRules).toBeUndefined();
    const b = await k.observe({ namespaces: [POD], ipRules: true })();
    expect(E.isRight(b) && b.right.ipRules).toHaveLength(DEFAULTS.length);
    const c = await k.observe({ namespaces: [POD], desired: st({ ipRules: [rule('10.1.0.5/32', 100)] }) })();
    expect(E.isRight(c) && c.right.ipRules).toHaveLength(DEFAULTS.length);
  });
});
