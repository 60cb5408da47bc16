// plan(desired, observed, scope) against the memory twin: properties over arbitrary worlds (desired, a
// previous desired state the kernel still holds, foreign objects, drift), and felix-style seeded cases:
// "correct already / needs change / must go / not ours".

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { addrKey, chainKey, fdbKey, ipRuleKey, linkKey, neighKey, qdiscKey, routeKey, ruleKey, sysctlKey } from '../../core/kernel/keys.ts';
import type {
  Address,
  Fdb,
  IpRule,
  IptChain,
  IptFamily,
  IptRule,
  IptTable,
  KernelState,
  Link,
  Neighbour,
  NsRef,
  Op,
  OwnershipScope,
  Qdisc,
  Route,
  Sysctl,
} from '../../core/kernel/model.ts';
import { emptyKernelState, HOST, opNs } from '../../core/kernel/model.ts';
import { describeOp, diffSummary, drift, plan, PHASE } from '../../core/kernel/plan.ts';
import { foreign, mergeScopes, restrict, scopeOf } from '../../core/kernel/scope.ts';
import { runs } from '../support/runs.ts';

// ------------------------------------------------------------------------------------------------ worlds

const NSS: readonly NsRef[] = [HOST, '/var/run/netns/felt-a', '/var/run/netns/felt-b'];
const NAMES = ['x0', 'x1', 'x2', 'x3', 'eth0', 'cni0'];
const CIDRS = ['10.0.0.1/24', '10.0.0.2/24', '10.1.0.1/16', 'fd00::1/64', 'fd00::2/64'];
const DSTS = ['10.2.0.0/24', '10.3.0.0/16', '0.0.0.0/0', 'fd01::/64', '::/0'];
const MACS = ['02:00:00:00:00:01', '02:00:00:00:00:02', '0a:58:0a:f4:01:00'];
const MARK = 'felt';
const RULE_SRCS = ['10.0.0.1/32', '10.0.0.2/32', 'fd00::1/128', 'fd00::2/128'];

const pick = <T>(xs: readonly T[], i: number): T => xs[Math.abs(i) % xs.length]!;
const opt = <T>(xs: readonly (T | undefined)[], i: number): T | undefined => pick(xs, i);

const linkSpec = fc.record({
  t: fc.constantFrom('bridge', 'veth', 'veth', 'vxlan', 'macvlan', 'ifb', 'lo'),
  ns: fc.nat(2),
  ns2: fc.nat(2),
  name: fc.nat(5),
  name2: fc.nat(5),
  mtu: fc.nat(2),
  up: fc.nat(2),
  mac: fc.nat(3),
  promisc: fc.nat(2),
  allmulti: fc.nat(2),
  txqlen: fc.nat(2),
  master: fc.nat(3),
  hairpin: fc.boolean(),
  back: fc.boolean(),
  vni: fc.nat(1),
  learning: fc.boolean(),
  gbp: fc.boolean(),
  dev: fc.nat(3),
  vf: fc.nat(2),
});
type LinkSpec = typeof linkSpec extends fc.Arbitrary<infer T> ? T : never;

const objSpec = fc.record({
  t: fc.constantFrom('addr', 'route', 'route', 'neigh', 'fdb', 'chain', 'rule', 'sysctl', 'qdisc', 'iprule'),
  a: fc.nat(20),
  b: fc.nat(20),
  c: fc.nat(20),
  d: fc.nat(20),
  flag: fc.boolean(),
});
type ObjSpec = typeof objSpec extends fc.Arbitrary<infer T> ? T : never;

interface Specs {
  links: LinkSpec[];
  objs: ObjSpec[];
}

const specs = fc.record({ links: fc.array(linkSpec, { maxLength: 7 }), objs: fc.array(objSpec, { maxLength: 14 }) });

/** A desired state the kernel can hold: every reference points at something in it. */
function build(
  s: Specs,
  names: readonly string[] = NAMES,
  chainPrefix = 'FELT-',
  mark = MARK,
  ruleSrcs: readonly string[] = RULE_SRCS,
): KernelState {
  const links: Link[] = [];
  const taken = new Set<string>();
  const free = (ns: NsRef, name: string): boolean => !taken.has(`${ns}/${name}`);
  const take = (l: Link): void => {
    taken.add(`${l.ns}/${l.name}`);
    links.push(l);
  };
  const attrs = (x: LinkSpec, ns: NsRef, port: boolean): Partial<Link> => {
    const bridges = links.filter((l) => l.ns === ns && l.kind === 'bridge');
    const master = port
      ? x.master === 0
        ? undefined
        : x.master === 1 || bridges.length === 0
          ? null
          : pick(bridges, x.master).name
      : undefined;
    return {
      ...(opt([undefined, 1400, 1500], x.mtu) !== undefined ? { mtu: opt([undefined, 1400, 1500], x.mtu)! } : {}),
      ...(x.up !== 0 ? { up: x.up === 1 } : {}),
      ...(x.mac !== 0 ? { mac: pick(MACS, x.mac) } : {}),
      ...(x.promisc !== 0 ? { promisc: x.promisc === 1 } : {}),
      ...(x.allmulti !== 0 ? { allmulti: x.allmulti === 1 } : {}),
      ...(x.txqlen !== 0 ? { txqlen: x.txqlen === 1 ? 500 : 1000 } : {}),
      ...(master !== undefined ? { master } : {}),
      ...(typeof master === 'string' && x.hairpin ? { hairpin: true } : {}),
    };
  };
  for (const x of s.links) {
    const ns = pick(NSS, x.ns);
    const name = pick(names, x.name);
    switch (x.t) {
      case 'lo':
        if (free(ns, 'lo')) take({ ns, name: 'lo', kind: 'loopback', ...(x.up !== 0 ? { up: x.up === 1 } : {}) });
        break;
      case 'ifb':
        if (free(ns, name)) take({ ns, name, kind: 'ifb', ...attrs(x, ns, false) });
        break;
      case 'bridge':
        if (free(ns, name))
          take({ ns, name, kind: 'bridge', ...attrs(x, ns, false), ...(x.vf !== 0 ? { bridge: { vlanFiltering: x.vf === 1 } } : {}) });
        break;
      case 'veth': {
        const ns2 = pick(NSS, x.ns2);
        const name2 = pick(names, x.name2);
        if (!free(ns, name) || !free(ns2, name2) || (ns === ns2 && name === name2)) break;
        take({ ns, name, kind: 'veth', ...attrs(x, ns, true), veth: { peer: name2, peerNs: ns2 } });
        const y = { ...x, mtu: x.mtu + 1, up: x.up + 1, master: x.master + 1, mac: x.mac + 1 };
        take({ ns: ns2, name: name2, kind: 'veth', ...attrs(y, ns2, true), ...(x.back ? { veth: { peer: name, peerNs: ns } } : {}) });
        break;
      }
      case 'vxlan': {
        if (!free(ns, name)) break;
        const devs = links.filter((l) => l.ns === ns && l.kind === 'veth');
        const dev = x.dev === 0 || devs.length === 0 ? undefined : pick(devs, x.dev).name;
        take({
          ns,
          name,
          kind: 'vxlan',
          ...attrs(x, ns, false),
          vxlan: {
            vni: 1 + x.vni,
            port: 8472,
            learning: x.learning,
            gbp: x.gbp,
            ...(x.hairpin ? { local: '198.51.100.2' } : {}),
            ...(dev ? { dev } : {}),
          },
        });
        break;
      }
      case 'macvlan': {
        if (!free(ns, name)) break;
        const lower = links.filter((l) => l.ns === ns && (l.kind === 'veth' || l.kind === 'bridge'));
        if (lower.length === 0) break;
        take({
          ns,
          name,
          kind: 'macvlan',
          ...attrs(x, ns, false),
          macvlan: { master: pick(lower, x.dev).name, mode: x.learning ? 'bridge' : 'private' },
        });
        break;
      }
    }
  }
  const devs = links.filter((l) => l.kind !== 'loopback');
  const addresses: Address[] = [];
  const routes: Route[] = [];
  const neighbours: Neighbour[] = [];
  const fdb: Fdb[] = [];
  const chains: IptChain[] = [];
  const rules: IptRule[] = [];
  const sysctls: Sysctl[] = [];
  const qdiscs: Qdisc[] = [];
  const ipRules: IpRule[] = [];
  const chainAt = (ns: NsRef, family: IptFamily, table: IptTable): IptChain[] =>
    chains.filter((c) => c.ns === ns && c.family === family && c.table === table);
  for (const o of s.objs) {
    const l = devs.length ? pick(devs, o.a) : undefined;
    switch (o.t) {
      case 'addr':
        if (l) addresses.push({ ns: l.ns, dev: l.name, cidr: pick(CIDRS, o.b), ...(o.flag ? { nodad: true } : {}) });
        break;
      case 'route': {
        // The kernel refuses routes through a device that is down.
        const up = devs.filter((x) => x.up === true);
        const l = up.length ? pick(up, o.a) : undefined;
        if (!l) break;
        const dst = pick(DSTS, o.b);
        const v6 = dst.includes(':');
        const gw = o.c % 3 === 0 ? undefined : v6 ? 'fd00::fe' : pick(['10.0.0.254', '10.1.0.254'], o.c);
        const srcs = addresses.filter((a) => a.ns === l.ns && a.cidr.includes(':') === v6);
        routes.push({
          ns: l.ns,
          dst,
          ...(gw ? { gw } : {}),
          ...(o.d % 5 !== 4 ? { dev: l.name } : {}),
          ...(o.flag && gw ? { onlink: true } : {}),
          ...(o.d % 3 === 1 ? { metric: 100 } : {}),
          ...(o.d % 4 === 2 ? { table: 100 } : {}),
          ...(o.d % 7 === 3 && srcs.length ? { src: pick(srcs, o.c).cidr.split('/')[0]! } : {}),
          ...(o.d % 6 === 5 ? { mtu: 1400 } : {}),
          ...(!gw && o.d % 8 === 1 ? { scope: 'link' as const } : {}),
        });
        break;
      }
      case 'neigh':
        if (l) neighbours.push({ ns: l.ns, dev: l.name, ip: pick(['10.0.0.9', '10.0.0.10', 'fd00::9'], o.b), lladdr: pick(MACS, o.c) });
        break;
      case 'fdb': {
        const vx = links.filter((x) => x.kind === 'vxlan');
        if (vx.length) {
          const v = pick(vx, o.a);
          fdb.push({ ns: v.ns, dev: v.name, mac: pick(MACS, o.b), dst: pick(['198.51.100.2', '198.51.100.3'], o.c) });
        }
        break;
      }
      case 'chain': {
        const ns = pick(NSS, o.a);
        const family = pick([4, 6] as const, o.b);
        const table = pick(['nat', 'filter'] as const, o.c);
        const idx = o.d % 3;
        const name = `${chainPrefix}${idx}`;
        if (chains.some((c) => chainKey(c) === chainKey({ ns, family, table, chain: name }))) break;
        // Jumps only to chains made earlier (no loops).
        const targets = chainAt(ns, family, table).map((c) => c.chain);
        const body = [`-s 10.${o.a}.0.0/16 -j ACCEPT`];
        if (o.flag && targets.length) body.push(`-j ${pick(targets, o.b)}`);
        if (o.c % 2) body.push(`! -d 224.0.0.0/4 -j MASQUERADE`);
        chains.push({ ns, family, table, chain: name, rules: body });
        break;
      }
      case 'rule': {
        const ns = pick(NSS, o.a);
        const family = pick([4, 6] as const, o.b);
        const table = pick(['nat', 'filter'] as const, o.c);
        const chain = table === 'nat' ? 'POSTROUTING' : 'FORWARD';
        const targets = chainAt(ns, family, table).map((c) => c.chain);
        const target = targets.length && o.flag ? pick(targets, o.d) : table === 'nat' ? 'MASQUERADE' : 'ACCEPT';
        const rule = `-s 10.9.${o.d}.0/24 -m comment --comment ${mark} -j ${target}`;
        if (!rules.some((r) => r.ns === ns && r.family === family && r.table === table && r.rule === rule)) {
          rules.push({ ns, family, table, chain, rule, ...(o.c % 3 === 2 ? { position: 'head' as const } : {}) });
        }
        break;
      }
      case 'sysctl':
        if (o.flag && l) sysctls.push({ ns: l.ns, key: `net.ipv6.conf.${l.name}.accept_dad`, value: String(o.b % 2) });
        else sysctls.push({ ns: pick(NSS, o.a), key: 'net.ipv4.ip_forward', value: String(o.b % 2) });
        break;
      case 'iprule': {
        const src = pick(ruleSrcs, o.b);
        ipRules.push({
          ns: pick(NSS, o.a),
          family: src.includes(':') ? 6 : 4,
          src,
          table: 100 + (o.c % 3),
          ...(o.flag ? { priority: 1000 + (o.d % 2) } : {}),
        });
        break;
      }
      case 'qdisc':
        if (l) {
          qdiscs.push(
            o.flag
              ? ((ifbs) => ({
                  ns: l.ns,
                  dev: l.name,
                  kind: 'ingress' as const,
                  ...(o.d % 2 === 1 && ifbs.length ? { redirect: pick(ifbs, o.c).name } : {}),
                }))(links.filter((x) => x.ns === l.ns && x.kind === 'ifb'))
              : {
                  ns: l.ns,
                  dev: l.name,
                  kind: 'tbf',
                  rate: pick([1_000_000, 8_000_000], o.b),
                  burst: pick([12_500, 25_000], o.c),
                  latencyMs: 25,
                },
          );
        }
        break;
    }
  }
  const uniq = <T>(xs: T[], key: (x: T) => string): T[] =>
    [...new Map(xs.map((x) => [key(x), x] as const)).values()]
      .reverse()
      .filter((x, i, all) => all.findIndex((y) => key(y) === key(x)) === i);
  return {
    links,
    addresses: uniq(addresses, addrKey),
    routes: uniq(routes, routeKey),
    neighbours: uniq(neighbours, neighKey),
    fdb: uniq(fdb, fdbKey),
    chains,
    rules,
    sysctls: uniq(sysctls, sysctlKey),
    qdiscs: uniq(qdiscs, qdiscKey),
    ipRules: uniq(ipRules, ipRuleKey),
  };
}

/** Loopback in every namespace: the kernel makes it, felt never creates it. */
const base = (): KernelState => ({
  ...emptyKernelState(),
  links: NSS.map((ns) => ({ ns, name: 'lo', kind: 'loopback' as const, mtu: 65536, up: false, master: null })),
});

/** Rule markers for everything felt marks, everywhere. */
const markers = (mark = MARK): OwnershipScope['ruleMarkers'] =>
  NSS.flatMap((ns) =>
    ([4, 6] as const).flatMap((family) => [
      { ns, family, table: 'nat' as const, chain: 'POSTROUTING', marker: mark },
      { ns, family, table: 'filter' as const, chain: 'FORWARD', marker: mark },
    ]),
  );

/** A kernel holding `d` (made by planning from nothing), on top of whatever `k` already holds. */
function realise(k: ReturnType<typeof memoryKernel>, d: KernelState, scope: OwnershipScope): void {
  const ops = plan(d, k.state(), scope);
  const r = k.applySync(ops);
  if (E.isLeft(r)) throw new Error(`building the world failed: ${r.left.msg}\n${ops.map(describeOp).join('\n')}`);
}

const sortBy = <T>(xs: readonly T[], key: (x: T) => string): string[] => xs.map(key).sort();
const linkView = (l: Link): string => JSON.stringify([linkKey(l), l.kind, l.mtu, l.mac, l.up, l.master ?? null, !!l.hairpin, !!l.promisc]);
const routeView = (r: Route): string => JSON.stringify([routeKey(r), r.gw, r.dev, !!r.onlink, r.scope, r.mtu, r.src]);

/** Foreign objects, compared exactly (minus anything desired: desired objects are always felt's). */
function foreignView(s: KernelState, scope: OwnershipScope, d: KernelState): Record<string, string[]> {
  const f = foreign(s, scope);
  const dl = new Set(d.links.map(linkKey));
  const dr = new Set(d.routes.map(routeKey));
  const ds = new Set(d.sysctls.map(sysctlKey));
  const drule = new Set(d.rules.map(ruleKey));
  return {
    links: sortBy(
      f.links.filter((l) => !dl.has(linkKey(l))),
      linkView,
    ),
    addresses: sortBy(f.addresses, addrKey),
    routes: sortBy(
      f.routes.filter((r) => !dr.has(routeKey(r))),
      routeView,
    ),
    neighbours: sortBy(f.neighbours, (n) => `${neighKey(n)} ${n.lladdr}`),
    fdb: sortBy(f.fdb, (x) => `${fdbKey(x)} ${x.dst}`),
    chains: sortBy(f.chains, (c) => `${chainKey(c)} ${c.rules.join('|')}`),
    rules: sortBy(
      f.rules.filter((r) => !drule.has(ruleKey(r))),
      ruleKey,
    ),
    sysctls: sortBy(
      f.sysctls.filter((x) => !ds.has(sysctlKey(x))),
      (x) => `${sysctlKey(x)}=${x.value}`,
    ),
    qdiscs: sortBy(f.qdiscs, (q) => `${qdiscKey(q)} ${q.rate} ${q.burst} ${q.redirect}`),
    ipRules: sortBy(f.ipRules ?? [], (r) => `${ipRuleKey(r)} ${r.priority}`),
  };
}

/** Objects felt must not touch: other names, other addresses, other chains, no marker. */
const foreignSpecs = fc.record({ links: fc.array(linkSpec, { maxLength: 4 }), objs: fc.array(objSpec, { maxLength: 8 }) });
const FOREIGN_NAMES = ['f0', 'f1', 'fbr', 'ext0'];
function buildForeign(s: Specs): KernelState {
  const f = build(s, FOREIGN_NAMES, 'OTHER-', 'other', ['192.168.99.1/32', 'fd99::1/128']);
  // Foreign routes and sysctls must not share identity with felt's (then they would be felt's).
  return {
    ...f,
    routes: f.routes.map((r) => ({ ...r, dst: r.dst.includes(':') ? 'fd99::/64' : '192.168.99.0/24', metric: 7 })),
    sysctls: f.sysctls.map((x) => (x.key === 'net.ipv4.ip_forward' ? { ...x, key: 'net.ipv4.conf.all.rp_filter' } : x)),
  };
}

interface World {
  desired: KernelState;
  previous: KernelState;
  foreignState: KernelState;
  scope: OwnershipScope;
}

const world = fc
  .record({ common: specs, mine: specs, before: specs, other: foreignSpecs, ownDesired: fc.boolean() })
  .map(({ common, mine, before, other, ownDesired }): World => {
    const desired = build({ links: [...common.links, ...mine.links], objs: [...common.objs, ...mine.objs] });
    const previous = build({ links: [...common.links, ...before.links], objs: [...common.objs, ...before.objs] });
    const foreignState = buildForeign(other);
    // What felt owned before (and, sometimes, what it is about to own: desired is in scope either way).
    const scope = mergeScopes(scopeOf(previous), ownDesired ? scopeOf(desired) : { links: [], devices: [], chains: [], ruleMarkers: [] }, {
      links: [],
      devices: [],
      chains: [],
      ruleMarkers: markers(),
    });
    return { desired, previous, foreignState, scope };
  });

function kernelOf(w: World): ReturnType<typeof memoryKernel> {
  const k = memoryKernel(base());
  realise(k, w.foreignState, mergeScopes(scopeOf(w.foreignState), { links: [], devices: [], chains: [], ruleMarkers: markers('other') }));
  realise(k, w.previous, w.scope);
  return k;
}

const RUNS = Number(process.env['FELT_PLAN_RUNS'] ?? runs(300));

describe('plan against the memory twin (properties)', () => {
  it('plan(d, d, s) is []', () => {
    fc.assert(
      fc.property(world, (w) => {
        expect(plan(w.desired, w.desired, w.scope)).toEqual([]);
        expect(plan(w.previous, w.previous, w.scope)).toEqual([]);
      }),
      { numRuns: RUNS },
    );
  });

  it('applying the plan converges: in-scope state is desired, foreign objects are untouched, a second plan is []', () => {
    fc.assert(
      fc.property(world, (w) => {
        const k = kernelOf(w);
        const before = k.state();
        const ops = plan(w.desired, before, w.scope);
        const r = k.applySync(ops);
        if (E.isLeft(r))
          throw new Error(
            `${r.left.msg}\nops:\n${ops.map(describeOp).join('\n')}\nlinks before: ${JSON.stringify(before.links)}\ndesired: ${JSON.stringify(w.desired.links)}`,
          );
        const after = k.state();
        const owned = mergeScopes(w.scope, scopeOf(w.desired));

        // Nothing left to do, and nothing drifted.
        expect(plan(w.desired, after, w.scope).map(describeOp)).toEqual([]);
        expect(drift(w.desired, after, w.scope)).toEqual([]);

        // In scope: exactly the desired objects.
        const mine = restrict(after, owned);
        // (Loopback is never deleted: an owned one that is not desired stays.)
        const notLo = (l: Link): boolean => l.kind !== 'loopback' || w.desired.links.some((d) => linkKey(d) === linkKey(l));
        expect(sortBy(mine.links.filter(notLo), linkKey)).toEqual(sortBy(w.desired.links, linkKey));
        for (const d of w.desired.links) {
          const got = after.links.find((l) => linkKey(l) === linkKey(d))!;
          for (const f of ['mtu', 'up', 'promisc', 'hairpin', 'allmulti', 'txqlen'] as const)
            if (d[f] !== undefined) expect([d.name, f, !!got[f] === got[f] ? got[f] : got[f]]).toEqual([d.name, f, d[f]]);
          if (d.mac !== undefined) expect(got.mac).toBe(d.mac.toLowerCase());
          if (d.master !== undefined) expect(got.master ?? null).toBe(d.master);
          if (d.kind !== 'loopback') expect(got.kind).toBe(d.kind);
        }
        expect(sortBy(mine.addresses, addrKey)).toEqual(sortBy(w.desired.addresses, addrKey));
        const wantRoutes = new Set(w.desired.routes.map(routeKey));
        expect(mine.routes.filter((x) => !wantRoutes.has(routeKey(x))).map(routeView)).toEqual([]);
        for (const d of w.desired.routes) {
          const got = after.routes.find((x) => routeKey(x) === routeKey(d));
          // Attributes left undefined (dev, scope, mtu, src) are not managed; gw and onlink always are.
          expect(got && { ...d, ...pickDefined(got, d) }).toEqual({ ...d, gw: got?.gw, onlink: got?.onlink });
          expect(got?.gw).toBe(d.gw);
          expect(!!got?.onlink).toBe(!!d.onlink);
        }
        expect(sortBy(mine.neighbours, (n) => `${neighKey(n)} ${n.lladdr}`)).toEqual(
          sortBy(w.desired.neighbours, (n) => `${neighKey(n)} ${n.lladdr}`),
        );
        expect(sortBy(mine.fdb, (f) => `${fdbKey(f)} ${f.dst}`)).toEqual(sortBy(w.desired.fdb, (f) => `${fdbKey(f)} ${f.dst}`));
        expect(sortBy(mine.chains, (c) => `${chainKey(c)} ${c.rules.join('|')}`)).toEqual(
          sortBy(w.desired.chains, (c) => `${chainKey(c)} ${c.rules.join('|')}`),
        );
        expect(sortBy(mine.rules, ruleKey)).toEqual(sortBy(w.desired.rules, ruleKey));
        for (const s of w.desired.sysctls) expect(after.sysctls.find((x) => sysctlKey(x) === sysctlKey(s))?.value).toBe(s.value);
        expect(sortBy(mine.qdiscs, qdiscKey)).toEqual(sortBy(w.desired.qdiscs, qdiscKey));
        for (const q of w.desired.qdiscs)
          if (q.redirect !== undefined) expect(after.qdiscs.find((x) => qdiscKey(x) === qdiscKey(q))?.redirect).toBe(q.redirect);
        // Policy rules: exactly the desired ones, once each, with the preference asked for.
        const ruleView = (r: IpRule, want?: IpRule): string => `${ipRuleKey(r)} ${(want ?? r).priority ?? ''}`;
        const wantIR = new Map((w.desired.ipRules ?? []).map((r) => [ipRuleKey(r), r]));
        expect(
          sortBy(mine.ipRules ?? [], (r) =>
            ruleView(r, wantIR.get(ipRuleKey(r))?.priority === undefined ? { ...r, priority: undefined } : r),
          ),
        ).toEqual(sortBy(w.desired.ipRules ?? [], (r) => ruleView(r)));

        // Out of scope: untouched.
        expect(foreignView(after, owned, w.desired)).toEqual(foreignView(before, owned, w.desired));
        // No op names an object outside the scope unless it is desired.
        for (const o of ops) expect(touchesOnlyOwned(o, owned)).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('is deterministic and grouped by namespace (each namespace is one contiguous run, bar early deletions)', () => {
    fc.assert(
      fc.property(world, (w) => {
        const k = kernelOf(w);
        const seen = k.state();
        const a = plan(w.desired, seen, w.scope);
        expect(plan(w.desired, seen, w.scope)).toEqual(a);
        const runs = a
          .filter((o) => o.op !== 'link.del')
          .map(opNs)
          .filter((ns, i, xs) => i === 0 || xs[i - 1] !== ns);
        expect(new Set(runs).size).toBe(runs.length);
      }),
      { numRuns: RUNS },
    );
  });
});

/** The fields of `got` that `want` defines. */
function pickDefined<T extends object>(got: T, want: T): Partial<T> {
  return Object.fromEntries(Object.entries(got).filter(([k]) => (want as Record<string, unknown>)[k] !== undefined)) as Partial<T>;
}

function touchesOnlyOwned(o: Op, s: OwnershipScope): boolean {
  const links = new Set(s.links.map(linkKey));
  const devs = new Set([...s.links.map(linkKey), ...s.devices.map((d) => linkKey({ ns: d.ns, name: d.dev }))]);
  const chains = new Set(s.chains.map(chainKey));
  switch (o.op) {
    case 'link.del':
      return links.has(linkKey({ ns: o.ns, name: o.name }));
    case 'addr.del':
      return devs.has(linkKey({ ns: o.addr.ns, name: o.addr.dev }));
    case 'route.del':
      return o.route.dev !== undefined && devs.has(linkKey({ ns: o.route.ns, name: o.route.dev }));
    case 'neigh.del':
      return devs.has(linkKey({ ns: o.neigh.ns, name: o.neigh.dev }));
    case 'fdb.del':
      return devs.has(linkKey({ ns: o.fdb.ns, name: o.fdb.dev }));
    case 'qdisc.del':
      return devs.has(linkKey({ ns: o.qdisc.ns, name: o.qdisc.dev }));
    case 'chain.del':
      return chains.has(chainKey(o));
    case 'rule.del':
      return s.ruleMarkers.some((m) => chainKey(m) === chainKey(o.rule) && o.rule.rule.includes(m.marker));
    case 'iprule.del':
      return (s.ruleSrcs ?? []).some(
        (r) => r.ns === o.ipRule.ns && r.src === o.ipRule.src && (r.table === undefined || r.table === o.ipRule.table),
      );
    default:
      return true;
  }
}

// ------------------------------------------------------------------------------------------ seeded cases

const POD = '/var/run/netns/pod';
const st = (p: Partial<KernelState>): KernelState => ({ ...emptyKernelState(), ...p });
const scope = (p: Partial<OwnershipScope>): OwnershipScope => ({ links: [], devices: [], chains: [], ruleMarkers: [], ...p });

describe('felix-style seeded cases: correct already / needs change / must go / not ours', () => {
  const dev = {
    ns: HOST,
    name: 'flannel.1',
    kind: 'vxlan' as const,
    up: true,
    mtu: 1450,
    vxlan: { vni: 1, port: 8472, learning: false, gbp: false, local: '198.51.100.2' },
  };
  const other = { ns: HOST, name: 'eth0', kind: 'device' as const, up: true };
  const r = (dst: string, gw: string, devName = 'flannel.1'): Route => ({ ns: HOST, dst, gw, dev: devName, onlink: true });
  const n = (ip: string, mac: string, devName = 'flannel.1'): Neighbour => ({ ns: HOST, dev: devName, ip, lladdr: mac });
  const f = (mac: string, dst: string, devName = 'flannel.1'): Fdb => ({ ns: HOST, dev: devName, mac, dst });
  const sc = scope({ links: [{ ns: HOST, name: 'flannel.1' }], devices: [{ ns: HOST, dev: 'flannel.1' }] });

  const desired = st({
    links: [dev],
    routes: [r('10.244.1.0/24', '10.244.1.0'), r('10.244.2.0/24', '10.244.2.0')],
    neighbours: [n('10.244.1.0', '02:00:00:00:01:00'), n('10.244.2.0', '02:00:00:00:02:00')],
    fdb: [f('02:00:00:00:01:00', '198.51.100.3'), f('02:00:00:00:02:00', '198.51.100.4')],
  });
  const observed = st({
    links: [{ ...dev, master: null, promisc: false, hairpin: false, mac: '0a:00:00:00:00:01' }, other],
    routes: [
      r('10.244.1.0/24', '10.244.1.0'), // correct already
      r('10.244.2.0/24', '10.244.9.0'), // needs change
      r('10.244.3.0/24', '10.244.3.0'), // must go
      { ns: HOST, dst: '192.168.0.0/16', gw: '198.51.100.1', dev: 'eth0' }, // not ours
    ],
    neighbours: [
      n('10.244.1.0', '02:00:00:00:01:00'),
      n('10.244.2.0', '02:00:00:00:09:00'),
      n('10.244.3.0', '02:00:00:00:03:00'),
      n('198.51.100.1', '02:00:00:00:00:99', 'eth0'),
    ],
    fdb: [
      f('02:00:00:00:01:00', '198.51.100.3'),
      f('02:00:00:00:02:00', '198.51.100.9'),
      f('02:00:00:00:03:00', '198.51.100.5'),
      f('02:00:00:00:00:99', '198.51.100.1', 'eth0'),
    ],
  });

  it('plans exactly the changes, neighbour and fdb before the route', () => {
    expect(plan(desired, observed, sc).map(describeOp)).toEqual(expectedFlannelOps());
  });

  function expectedFlannelOps(): string[] {
    return [
      'delete route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink in the host namespace',
      'delete neighbour 10.244.3.0 dev flannel.1 in the host namespace',
      'add neighbour 10.244.2.0 lladdr 02:00:00:00:02:00 dev flannel.1 in the host namespace',
      'delete fdb entry 02:00:00:00:03:00 dst 198.51.100.5 dev flannel.1 in the host namespace',
      'add fdb entry 02:00:00:00:02:00 dst 198.51.100.4 dev flannel.1 in the host namespace',
      'add route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink in the host namespace',
    ];
  }

  it('applied to the twin, converges; a resync plans nothing; foreign entries stay', () => {
    const k = memoryKernel(observed);
    expect(E.isRight(k.applySync(plan(desired, observed, sc)))).toBe(true);
    const after = k.state();
    expect(plan(desired, after, sc)).toEqual([]);
    expect(after.routes.find((x) => x.dst === '192.168.0.0/16')).toBeDefined();
    expect(after.neighbours.find((x) => x.dev === 'eth0')).toBeDefined();
    expect(after.fdb.find((x) => x.dev === 'eth0')).toBeDefined();
    expect(after.routes.find((x) => x.dst === '10.244.3.0/24')).toBeUndefined();
  });

  it('drift names what is wrong, in words', () => {
    expect(drift(desired, observed, sc)).toEqual([
      'unexpected route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink in the host namespace',
      'unexpected neighbour 10.244.3.0 lladdr 02:00:00:00:03:00 on flannel.1 in the host namespace',
      'wrong neighbour 10.244.2.0 on flannel.1: lladdr 02:00:00:00:09:00, want 02:00:00:00:02:00 (in the host namespace)',
      'unexpected fdb entry 02:00:00:00:03:00 dst 198.51.100.5 on flannel.1 in the host namespace',
      'missing fdb entry 02:00:00:00:02:00 dst 198.51.100.4 on flannel.1 in the host namespace',
      'wrong route 10.244.2.0/24 via 10.244.9.0 dev flannel.1 onlink, want 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink in the host namespace',
    ]);
    expect(diffSummary(plan(desired, observed, sc))).toBe(
      '6 changes: 1 route.del, 1 neigh.del, 1 neigh.replace, 1 fdb.del, 1 fdb.replace, 1 route.replace',
    );
  });

  it('a vxlan with another VNI is deleted and re-added, and what was on it comes back', () => {
    const seen = { ...observed, links: [{ ...dev, vxlan: { ...dev.vxlan, vni: 2 } }, other] };
    const ops = plan(desired, seen, sc);
    expect(ops[0]).toEqual({ op: 'link.del', ns: HOST, name: 'flannel.1' });
    expect(ops[1]).toMatchObject({ op: 'link.add', link: { name: 'flannel.1' } });
    expect(ops.filter((o) => o.op === 'route.replace')).toHaveLength(2);
    expect(ops.filter((o) => o.op === 'neigh.replace')).toHaveLength(2);
    expect(ops.filter((o) => o.op === 'fdb.replace')).toHaveLength(2);
    expect(ops.some((o) => o.op.endsWith('.del') && o !== ops[0])).toBe(false);
    const k = memoryKernel(seen);
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(plan(desired, k.state(), sc)).toEqual([]);
  });

  it('link attributes left undefined are not managed', () => {
    const d = st({ links: [{ ns: HOST, name: 'cni0', kind: 'bridge', up: true }] });
    const o = st({
      links: [{ ns: HOST, name: 'cni0', kind: 'bridge', up: true, mtu: 1400, mac: '02:00:00:00:00:01', promisc: true, master: null }],
    });
    expect(plan(d, o, scope({ links: [{ ns: HOST, name: 'cni0' }] }))).toEqual([]);
    expect(plan({ ...d, links: [{ ...d.links[0]!, mtu: 1500 }] }, o, scope({}))).toEqual([
      { op: 'link.set', link: { ...d.links[0]!, mtu: 1500 }, changes: { mtu: 1500 } },
    ]);
    expect(drift({ ...d, links: [{ ...d.links[0]!, mtu: 1500 }] }, o, scope({}))).toEqual([
      'wrong MTU on cni0: 1400, want 1500 (in the host namespace)',
    ]);
  });

  it("never deletes loopback's own addresses, even when lo is owned", () => {
    const lo: Link = { ns: POD, name: 'lo', kind: 'loopback', up: true };
    const o = st({
      links: [lo],
      addresses: [
        { ns: POD, dev: 'lo', cidr: '127.0.0.1/8' },
        { ns: POD, dev: 'lo', cidr: '::1/128' },
        { ns: POD, dev: 'lo', cidr: '10.0.0.1/32' },
      ],
    });
    expect(plan(st({ links: [lo] }), o, scopeOf(st({ links: [lo] })))).toEqual([
      { op: 'addr.del', addr: { ns: POD, dev: 'lo', cidr: '10.0.0.1/32' } },
    ]);
  });

  it('never deletes what is not in scope, even when nothing is desired', () => {
    const o = st({
      links: [
        { ns: HOST, name: 'eth0', kind: 'device' },
        { ns: HOST, name: 'docker0', kind: 'bridge' },
      ],
      addresses: [{ ns: HOST, dev: 'eth0', cidr: '198.51.100.2/24' }],
      routes: [{ ns: HOST, dst: '0.0.0.0/0', gw: '198.51.100.1', dev: 'eth0' }],
      chains: [{ ns: HOST, family: 4, table: 'nat', chain: 'DOCKER', rules: ['-j RETURN'] }],
      rules: [{ ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE' }],
      sysctls: [{ ns: HOST, key: 'net.ipv4.ip_forward', value: '1' }],
    });
    const s = scope({ ruleMarkers: [{ ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', marker: 'CNI-' }] });
    expect(plan(emptyKernelState(), o, s)).toEqual([]);
  });
});

describe('veth pairs across namespaces', () => {
  const hostEnd: Link = { ns: HOST, name: 'veth1234', kind: 'veth', up: true, master: 'cni0', hairpin: true, mac: '02:00:00:00:00:aa' };
  const podEnd: Link = {
    ns: POD,
    name: 'eth0',
    kind: 'veth',
    up: true,
    mtu: 1500,
    mac: '0a:58:0a:16:00:05',
    veth: { peer: 'veth1234', peerNs: HOST },
  };
  const bridge: Link = { ns: HOST, name: 'cni0', kind: 'bridge', up: true };
  const lo: Link = { ns: POD, name: 'lo', kind: 'loopback', mtu: 65536, up: false, master: null };
  const desired = st({
    links: [bridge, hostEnd, podEnd],
    addresses: [
      { ns: HOST, dev: 'cni0', cidr: '10.22.0.1/16' },
      { ns: POD, dev: 'eth0', cidr: '10.22.0.5/16' },
    ],
    routes: [{ ns: POD, dst: '0.0.0.0/0', gw: '10.22.0.1', dev: 'eth0' }],
    sysctls: [{ ns: POD, key: 'net.ipv6.conf.eth0.accept_dad', value: '0' }],
  });
  const sc = scope({
    links: [
      { ns: HOST, name: 'veth1234' },
      { ns: POD, name: 'eth0' },
    ],
    devices: [
      { ns: HOST, dev: 'veth1234' },
      { ns: POD, dev: 'eth0' },
    ],
  });

  it('creates the pair from the host namespace (bridge before port), then configures the pod end in its own namespace', () => {
    const ops = plan(desired, st({ links: [lo] }), sc);
    expect(ops.map((o) => `${opNs(o) === HOST ? 'host' : 'pod'}: ${o.op}`)).toEqual([
      'host: link.add',
      'host: link.add',
      'host: addr.add',
      'pod: sysctl.set',
      'pod: link.set',
      'pod: addr.add',
      'pod: route.replace',
    ]);
    expect(ops[0]).toMatchObject({ op: 'link.add', link: { name: 'cni0' } });
    // The host end makes the pair (its peer spec built from the pod end, which names the pair), with its own settings.
    expect(ops[1]).toEqual({
      op: 'link.add',
      link: { ...hostEnd, veth: { peer: 'eth0', peerNs: POD, peerMac: '0a:58:0a:16:00:05' } },
    });
    // The pod end arrives down, without the MTU asked for: set in the pod namespace, after its sysctls.
    expect(ops[4]).toEqual({ op: 'link.set', link: podEnd, changes: { mtu: 1500, up: true } });
    const k = memoryKernel(st({ links: [lo] }));
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(plan(desired, k.state(), sc)).toEqual([]);
  });

  it('when only the host end names its peer, the host end creates the pair as it names it', () => {
    const d = {
      ...desired,
      links: [bridge, { ...hostEnd, veth: { peer: 'eth0', peerNs: POD } }, { ...podEnd, veth: undefined }].map((l) => {
        const { veth, ...rest } = l;
        return veth ? { ...rest, veth } : rest;
      }),
    };
    const ops = plan(d, st({ links: [lo] }), sc);
    expect(ops[1]).toMatchObject({ op: 'link.add', link: { ns: HOST, name: 'veth1234', veth: { peer: 'eth0', peerNs: POD } } });
    const k = memoryKernel(st({ links: [lo] }));
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(plan(d, k.state(), sc)).toEqual([]);
  });

  it('DEL: nothing desired removes both ends with one link.del (the first end seen), and leaves the shared bridge', () => {
    const k = memoryKernel(st({ links: [lo] }));
    k.applySync(plan(desired, k.state(), sc));
    const ops = plan(emptyKernelState(), k.state(), sc);
    expect(ops).toEqual([{ op: 'link.del', ns: HOST, name: 'veth1234' }]);
    k.applySync(ops);
    expect(
      k
        .state()
        .links.map((l) => l.name)
        .sort(),
    ).toEqual(['cni0', 'lo']);
    expect(k.state().addresses).toEqual([{ ns: HOST, dev: 'cni0', cidr: '10.22.0.1/16' }]);
  });

  it('a pod end whose host end vanished is recreated as a pair, and its address and route come back', () => {
    const k = memoryKernel(st({ links: [lo] }));
    k.applySync(plan(desired, k.state(), sc));
    // Someone moved the host end away (simulated: the pod end remains, paired with something else).
    const s = k.state();
    k.reset({
      ...s,
      links: s.links
        .filter((l) => l.name !== 'veth1234')
        .map((l) => (l.name === 'eth0' ? { ...l, veth: { peer: 'gone0', peerNs: HOST } } : l)),
    });
    const ops = plan(desired, k.state(), sc);
    expect(ops[0]).toEqual({ op: 'link.del', ns: POD, name: 'eth0' });
    expect(ops.map((o) => o.op)).toContain('addr.add');
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(plan(desired, k.state(), sc)).toEqual([]);
  });
});

describe('what address removal takes with it (as Linux does; test/adapters/kernel.test.ts checks the twin against it)', () => {
  const x = (name: string, extra: Partial<Link> = {}): Link => ({ ns: HOST, name, kind: 'bridge', up: true, ...extra });
  const converges = (desired: KernelState, before: KernelState, s: OwnershipScope): Op[] => {
    const k = memoryKernel(before);
    const ops = plan(desired, k.state(), s);
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(plan(desired, k.state(), s).map(describeOp)).toEqual([]);
    return ops;
  };

  it('regression (fast-check seed -589352814): a cross-namespace deletion runs before the address it frees is added elsewhere', () => {
    // x2 (host) is the peer of x0 in felt-a; deleting felt-a's x0 takes x2 and its fd00::1 along, while x0
    // (host) gets fd00::1. The deletion used to run after the host group, so the IPv6 route through x1 kept
    // its source and a second plan deleted it.
    const A = '/var/run/netns/felt-a';
    const desired = st({
      links: [
        { ns: HOST, name: 'x0', kind: 'veth', veth: { peer: 'x1', peerNs: HOST } },
        { ns: HOST, name: 'x1', kind: 'veth', mtu: 1400, up: true, mac: '02:00:00:00:00:02', master: null },
      ],
      addresses: [{ ns: HOST, dev: 'x0', cidr: 'fd00::1/64' }],
    });
    const previous = st({
      links: [
        ...desired.links,
        { ns: HOST, name: 'x2', kind: 'veth', veth: { peer: 'x0', peerNs: A } },
        { ns: A, name: 'x0', kind: 'veth', mtu: 1400, up: true, mac: '02:00:00:00:00:02', master: null },
      ],
      addresses: [{ ns: HOST, dev: 'x2', cidr: 'fd00::1/64' }],
      routes: [{ ns: HOST, dst: 'fd01::/64', dev: 'x1', src: 'fd00::1', mtu: 1400, scope: 'link' }],
    });
    const s = mergeScopes(scopeOf(previous), scopeOf(desired));
    const k = memoryKernel(base());
    expect(E.isRight(k.applySync(plan(previous, k.state(), s)))).toBe(true);
    const ops = plan(desired, k.state(), s);
    // x2 goes first (the end seen first: the pair was made from the host), taking x0 of felt-a with it.
    expect(ops[0]).toEqual({ op: 'link.del', ns: HOST, name: 'x2' });
    expect(ops.map(describeOp)).toContain('delete route fd01::/64 dev x1 scope link mtu 1400 in the host namespace');
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(plan(desired, k.state(), s).map(describeOp)).toEqual([]);
  });

  it('an IPv4 address that goes takes the IPv4 routes with that source; an IPv6 one only clears the source', () => {
    const before = st({
      links: [x('b0'), x('b1')],
      addresses: [
        { ns: HOST, dev: 'b0', cidr: '10.9.0.1/24' },
        { ns: HOST, dev: 'b0', cidr: 'fd00::1/64' },
        { ns: HOST, dev: 'b1', cidr: '10.10.0.1/24' },
      ],
      routes: [
        { ns: HOST, dst: '10.8.0.0/24', dev: 'b1', src: '10.9.0.1' },
        { ns: HOST, dst: 'fd01::/64', dev: 'b1', src: 'fd00::1' },
      ],
    });
    const desired = st({
      links: [x('b0'), x('b1')],
      addresses: [
        { ns: HOST, dev: 'b1', cidr: '10.10.0.1/24' },
        { ns: HOST, dev: 'b0', cidr: '10.9.0.2/24' },
      ],
    });
    const ops = converges(desired, before, scopeOf(before));
    // The IPv4 route went with its source: nothing to delete. The IPv6 one stayed (without a source): deleted.
    expect(ops.filter((o) => o.op === 'route.del').map(describeOp)).toEqual(['delete route fd01::/64 dev b1 in the host namespace']);
  });

  it('a device left without IPv4 addresses loses its IPv4 routes, which come back when desired', () => {
    const routes: Route[] = [
      { ns: HOST, dst: '10.7.0.0/24', dev: 'b0' },
      { ns: HOST, dst: 'fd07::/64', dev: 'b0' },
    ];
    const before = st({ links: [x('b0')], addresses: [{ ns: HOST, dev: 'b0', cidr: '10.9.0.1/24' }], routes });
    const desired = st({ links: [x('b0')], addresses: [{ ns: HOST, dev: 'b0', cidr: '10.9.0.2/24' }], routes });
    const ops = converges(desired, before, scopeOf(before));
    expect(ops.filter((o) => o.op === 'route.replace').map(describeOp)).toEqual(['add route 10.7.0.0/24 dev b0 in the host namespace']);
    const k = memoryKernel(before);
    k.applySync([{ op: 'addr.del', addr: { ns: HOST, dev: 'b0', cidr: '10.9.0.1/24' } }]);
    expect(k.state().routes).toEqual([routes[1]]);
  });
});

describe('iptables: owned chains, marked rules', () => {
  const chain: IptChain = {
    ns: HOST,
    family: 4,
    table: 'nat',
    chain: 'CNI-abc',
    rules: ['-d 10.22.0.0/16 -j ACCEPT', '! -d 224.0.0.0/4 -j MASQUERADE'],
  };
  const jump: IptRule = {
    ns: HOST,
    family: 4,
    table: 'nat',
    chain: 'POSTROUTING',
    rule: '-s 10.22.0.5/32 -m comment --comment "name: x" -j CNI-abc',
  };
  const sc = scope({
    chains: [{ ns: HOST, family: 4, table: 'nat', chain: 'CNI-abc' }],
    ruleMarkers: [{ ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', marker: '-j CNI-abc' }],
  });
  const foreignRule: IptRule = { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-s 172.17.0.0/16 -j MASQUERADE' };

  it('writes the chain before the jump into it', () => {
    expect(plan(st({ chains: [chain], rules: [jump] }), st({ rules: [foreignRule] }), sc).map((o) => o.op)).toEqual([
      'chain.sync',
      'rule.add',
    ]);
  });

  it('a chain that differs in one rule is rewritten whole', () => {
    const ops = plan(
      st({ chains: [chain], rules: [jump] }),
      st({ chains: [{ ...chain, rules: [chain.rules[0]!] }], rules: [foreignRule, jump] }),
      sc,
    );
    expect(ops).toEqual([{ op: 'chain.sync', chain }]);
  });

  it('removal: the jump goes before the chain; the foreign rule stays', () => {
    const k = memoryKernel(st({ chains: [chain], rules: [foreignRule, jump] }));
    const ops = plan(emptyKernelState(), k.state(), sc);
    expect(ops.map((o) => o.op)).toEqual(['rule.del', 'chain.del']);
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(k.state().rules).toEqual([foreignRule]);
    expect(k.state().chains).toEqual([]);
  });

  it('the twin refuses to delete a chain still jumped to, as the kernel does', () => {
    const k = memoryKernel(st({ chains: [chain], rules: [jump] }));
    const r = k.applySync([{ op: 'chain.del', ns: HOST, family: 4, table: 'nat', chain: 'CNI-abc' }]);
    expect(E.isLeft(r) && r.left.msg).toMatch(/failed to delete iptables chain nat\/CNI-abc in the host namespace: CHAIN_DEL failed/);
  });

  it('a desired rule that appears twice keeps one copy', () => {
    expect(plan(st({ chains: [chain], rules: [jump] }), st({ chains: [chain], rules: [jump, foreignRule, jump] }), sc)).toEqual([
      { op: 'rule.del', rule: jump },
    ]);
    expect(drift(st({ chains: [chain], rules: [jump] }), st({ chains: [chain] }), sc)).toEqual([
      'missing iptables rule in nat/POSTROUTING: -s 10.22.0.5/32 -m comment --comment "name: x" -j CNI-abc',
    ]);
  });
});

describe('ordering rules', () => {
  it('sysctls after links and before addresses; routes last; qdiscs after links', () => {
    const l: Link = { ns: HOST, name: 'br9', kind: 'bridge', up: true };
    const ops = plan(
      st({
        links: [l],
        addresses: [{ ns: HOST, dev: 'br9', cidr: 'fd00::1/64' }],
        routes: [{ ns: HOST, dst: 'fd01::/64', dev: 'br9' }],
        sysctls: [{ ns: HOST, key: 'net.ipv6.conf.br9.accept_dad', value: '0' }],
        qdiscs: [{ ns: HOST, dev: 'br9', kind: 'ingress' }],
      }),
      emptyKernelState(),
      scope({}),
    );
    expect(ops.map((o) => o.op)).toEqual(['link.add', 'sysctl.set', 'addr.add', 'route.replace', 'qdisc.replace']);
    const phases = ops.map((o) => PHASE[o.op]);
    expect([...phases].sort((a, b) => a - b)).toEqual(phases);
  });

  it('a link-scope route to the gateway comes before the default route through it', () => {
    const ops = plan(
      st({
        routes: [
          { ns: POD, dst: '0.0.0.0/0', gw: '10.1.0.1', dev: 'eth0' },
          { ns: POD, dst: '10.1.0.1/32', dev: 'eth0', scope: 'link' },
        ],
      }),
      emptyKernelState(),
      scope({}),
    );
    expect(ops.map((o) => (o.op === 'route.replace' ? o.route.dst : ''))).toEqual(['10.1.0.1/32', '0.0.0.0/0']);
  });

  it('the twin fails like the kernel on a missing device, naming the object', () => {
    const k = memoryKernel();
    const r = k.applySync([{ op: 'route.replace', route: { ns: POD, dst: '10.0.0.0/24', gw: '10.0.0.1', dev: 'eth0' } }]);
    expect(E.isLeft(r) && r.left.msg).toBe(
      'failed to add route 10.0.0.0/24 via 10.0.0.1 dev eth0 in /var/run/netns/pod: Cannot find device "eth0"',
    );
    const a = k.applySync([{ op: 'addr.add', addr: { ns: POD, dev: 'eth0', cidr: '10.0.0.2/24' } }]);
    expect(E.isLeft(a) && a.left.msg).toMatch(/^failed to add address 10.0.0.2\/24 to eth0 in \/var\/run\/netns\/pod: Cannot find device/);
  });
});

describe('the twin observes like the Linux adapter', () => {
  it('reads only the namespaces, iptables families, fdb and sysctls asked for', async () => {
    const k = memoryKernel(
      st({
        links: [
          { ns: HOST, name: 'vx', kind: 'vxlan', vxlan: { vni: 1, port: 8472, learning: false, gbp: false } },
          { ns: POD, name: 'eth0', kind: 'device' },
        ],
        fdb: [{ ns: HOST, dev: 'vx', mac: '02:00:00:00:00:01', dst: '198.51.100.3' }],
        rules: [{ ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-j MASQUERADE' }],
        sysctls: [{ ns: HOST, key: 'net.ipv4.ip_forward', value: '1' }],
      }),
    );
    const a = await k.observe({ namespaces: [HOST] })();
    expect(E.isRight(a) && a.right).toMatchObject({ fdb: [], rules: [], sysctls: [] });
    expect(E.isRight(a) && a.right.links.map((l) => l.name)).toEqual(['vx']);
    const b = await k.observe({ namespaces: [HOST, POD], fdb: true, iptables: [4], sysctls: [{ ns: HOST, key: 'net.ipv4.ip_forward' }] })();
    expect(E.isRight(b) && [b.right.links.length, b.right.fdb.length, b.right.rules.length, b.right.sysctls.length]).toEqual([2, 1, 1, 1]);
  });
});

describe('qdisc ownership and ingress redirects', () => {
  const veth: Link = { ns: HOST, name: 'veth1', kind: 'veth', veth: { peer: 'eth0', peerNs: POD } };
  const ifb: Link = { ns: HOST, name: 'bwp1', kind: 'ifb', up: true };
  const ingress: Qdisc = { ns: HOST, dev: 'veth1', kind: 'ingress', redirect: 'bwp1' };
  const tbf: Qdisc = { ns: HOST, dev: 'veth1', kind: 'tbf', rate: 1_000_000, burst: 12_500, latencyMs: 25 };
  const hostAddr: Address = { ns: HOST, dev: 'veth1', cidr: '10.0.0.1/32' };
  const qscope: OwnershipScope = {
    links: [{ ns: HOST, name: 'bwp1' }],
    devices: [{ ns: HOST, dev: 'bwp1' }],
    chains: [],
    ruleMarkers: [],
    qdiscDevices: [{ ns: HOST, dev: 'veth1' }],
  };

  it('qdiscDevices owns the qdiscs of a device and nothing else on it', () => {
    const seen = st({
      links: [veth, { ...veth, ns: POD, name: 'eth0', veth: { peer: 'veth1', peerNs: HOST } }, ifb],
      addresses: [hostAddr],
      qdiscs: [ingress, tbf],
    });
    const ops = plan(emptyKernelState(), seen, qscope);
    expect(ops.map(describeOp)).toEqual([
      // (the ifb goes in the same plan: the redirect is already dangling)
      'delete qdisc ingress on veth1 in the host namespace',
      'delete qdisc tbf rate 1000000bit burst 12500 latency 25ms on veth1 in the host namespace',
      'delete link bwp1 in the host namespace',
    ]);
  });

  it('a redirect differs when its target differs or was deleted; undefined does not manage it', () => {
    const k = memoryKernel(st({ links: [{ ...veth, veth: undefined, kind: 'device' }, ifb] }));
    const d = st({ links: [ifb], qdiscs: [ingress] });
    expect(E.isRight(k.applySync(plan(d, k.state(), qscope)))).toBe(true);
    expect(plan(d, k.state(), qscope)).toEqual([]);
    expect(plan(st({ links: [ifb], qdiscs: [{ ...ingress, redirect: undefined }] }), k.state(), qscope)).toEqual([]);
    // The ifb goes: the filter stays without a target, and the next plan puts it back.
    expect(E.isRight(k.applySync([{ op: 'link.del', ns: HOST, name: 'bwp1' }]))).toBe(true);
    expect(k.state().qdiscs).toEqual([{ ns: HOST, dev: 'veth1', kind: 'ingress' }]);
    expect(plan(d, k.state(), qscope).map((o) => o.op)).toEqual(['link.add', 'qdisc.replace']);
    // The twin refuses a redirect to a missing device, as tc does.
    const r = memoryKernel(st({ links: [{ ...veth, veth: undefined, kind: 'device' }] })).applySync([
      { op: 'qdisc.replace', qdisc: ingress },
    ]);
    expect(E.isLeft(r) && r.left.msg).toMatch(/Cannot find device "bwp1"/);
  });

  it('a tbf burst within what tc loses to psched ticks is the same burst', () => {
    const d = st({ qdiscs: [tbf] });
    expect(plan(d, st({ qdiscs: [{ ...tbf, burst: 12_499 }] }), qscope)).toEqual([]);
    expect(plan(d, st({ qdiscs: [{ ...tbf, burst: 12_400 }] }), qscope).map((o) => o.op)).toEqual(['qdisc.replace']);
    expect(plan(d, st({ qdiscs: [{ ...tbf, burst: 12_501 }] }), qscope).map((o) => o.op)).toEqual(['qdisc.replace']);
  });
});
