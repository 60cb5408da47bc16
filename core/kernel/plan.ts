// plan(desired, observed, scope): the ops that turn what the kernel has into what felt wants, touching only
// what felt owns (felix's delta tracker, as a pure function). plan(d, d, s) = [].

import type {
  Address,
  Fdb,
  IptChain,
  IptRule,
  KernelState,
  Link,
  Neighbour,
  NsRef,
  Op,
  OwnershipScope,
  Qdisc,
  Route,
} from './model.ts';
import { HOST, opNs } from './model.ts';

const dk = (ns: NsRef, dev: string): string => `${ns}\u0000${dev}`;
const linkKey = (l: { ns: NsRef; name: string }): string => dk(l.ns, l.name);
const addrKey = (a: Address): string => `${dk(a.ns, a.dev)}\u0000${a.cidr}`;
const isV6 = (s: string): boolean => s.includes(':');
/** The kernel's metric when none is given: 0 for IPv4, 1024 for IPv6. */
export const routeMetric = (r: Route): number => r.metric ?? (isV6(r.dst) ? 1024 : 0);
export const routeKey = (r: Route): string => `${r.ns}\u0000${r.table ?? 254}\u0000${r.dst}\u0000${routeMetric(r)}`;
const neighKey = (n: Neighbour): string => `${dk(n.ns, n.dev)}\u0000${n.ip}`;
const fdbKey = (f: Fdb): string => `${dk(f.ns, f.dev)}\u0000${f.mac}`;
const chainKey = (c: { ns: NsRef; family: number; table: string; chain: string }): string =>
  `${c.ns}\u0000${c.family}\u0000${c.table}\u0000${c.chain}`;
const ruleKey = (r: IptRule): string => `${chainKey(r)}\u0000${r.rule}`;
const qdiscKey = (q: Qdisc): string => `${dk(q.ns, q.dev)}\u0000${q.kind}`;

const sameRoute = (a: Route, b: Route): boolean =>
  a.gw === b.gw &&
  (a.dev === undefined || a.dev === b.dev) &&
  !!a.onlink === !!b.onlink &&
  (a.scope === undefined || a.scope === b.scope) &&
  (a.mtu === undefined || a.mtu === b.mtu) &&
  (a.src === undefined || a.src === b.src);

const sameQdisc = (a: Qdisc, b: Qdisc): boolean => a.rate === b.rate && a.burst === b.burst && a.latencyMs === b.latencyMs;

const MANAGED: readonly (keyof Link)[] = ['mtu', 'mac', 'up', 'master', 'promisc', 'hairpin'];

function linkChanges(d: Link, o: Link): Partial<Link> {
  const changes: Record<string, unknown> = {};
  for (const k of MANAGED) {
    const want = d[k];
    if (want === undefined) continue;
    const have = o[k];
    const norm = (v: unknown): unknown => (k === 'master' ? v ?? null : k === 'hairpin' || k === 'promisc' ? !!v : v);
    if (norm(want) !== norm(have)) changes[k] = want;
  }
  return changes as Partial<Link>;
}

/** Devices whose addresses, routes, neighbours, fdb entries and qdiscs felt owns. */
function ownedDevices(scope: OwnershipScope, desired: KernelState): Set<string> {
  const s = new Set<string>();
  for (const l of scope.links) s.add(linkKey(l));
  for (const d of scope.devices) s.add(dk(d.ns, d.dev));
  for (const l of desired.links) s.add(linkKey(l));
  return s;
}

const PHASE: Record<Op['op'], number> = {
  'rule.del': 0,
  'chain.del': 1,
  'qdisc.del': 2,
  'link.del': 3,
  'link.add': 4,
  'link.set': 5,
  'sysctl.set': 6,
  'addr.del': 7,
  'addr.add': 8,
  'route.del': 9,
  'neigh.del': 10,
  'neigh.replace': 10,
  'fdb.del': 11,
  'fdb.replace': 11,
  'route.replace': 12,
  'chain.sync': 13,
  'rule.add': 14,
  'qdisc.replace': 15,
};

/**
 * Namespaces in apply order: one that creates a veth whose peer lands in another namespace goes before that
 * namespace (so the pair exists when the other side is configured); otherwise the host first.
 */
function nsOrder(ops: readonly Op[]): NsRef[] {
  const all = [...new Set(ops.map(opNs))];
  const creators = new Set(
    ops.flatMap((o) => (o.op === 'link.add' && o.link.veth && o.link.veth.peerNs !== o.link.ns ? [o.link.ns] : [])),
  );
  const rank = (ns: NsRef): number => (creators.has(ns) ? 0 : ns === HOST ? 1 : 2);
  return all.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** Within link.set: bridges (masters) before the links enslaved to them. */
const setRank = (o: Op): number => (o.op === 'link.set' && o.changes.master ? 1 : 0);

export function order(ops: readonly Op[]): Op[] {
  const nsRank = new Map(nsOrder(ops).map((ns, i) => [ns, i]));
  return ops
    .map((o, i) => ({ o, i }))
    .sort(
      (a, b) =>
        (nsRank.get(opNs(a.o)) ?? 0) - (nsRank.get(opNs(b.o)) ?? 0) ||
        PHASE[a.o.op] - PHASE[b.o.op] ||
        setRank(a.o) - setRank(b.o) ||
        a.i - b.i,
    )
    .map((x) => x.o);
}

export function plan(desired: KernelState, observed: KernelState, scope: OwnershipScope): Op[] {
  const ops: Op[] = [];
  const owned = ownedDevices(scope, desired);

  // Links.
  const seenLinks = new Map(observed.links.map((l) => [linkKey(l), l]));
  const wantLinks = new Map(desired.links.map((l) => [linkKey(l), l]));
  // Veth ends created together with their peer: the pair is one link.add on the creating side.
  const createdAsPeer = new Set(
    desired.links.flatMap((l) => (l.veth && !seenLinks.has(linkKey(l)) ? [dk(l.veth.peerNs, l.veth.peer)] : [])),
  );
  const deletedLinks = new Set<string>();
  for (const d of desired.links) {
    const o = seenLinks.get(linkKey(d));
    if (o && o.kind !== d.kind && !(d.kind === 'loopback' || o.kind === 'loopback')) {
      ops.push({ op: 'link.del', ns: o.ns, name: o.name });
      ops.push({ op: 'link.add', link: d });
      continue;
    }
    if (!o) {
      if (createdAsPeer.has(linkKey(d))) {
        // Created by its peer's link.add; only the attributes the creation cannot carry remain.
        const changes = linkChanges(d, { ns: d.ns, name: d.name, kind: d.kind, ...(d.mtu ? { mtu: d.mtu } : {}), ...(d.mac ? { mac: d.mac } : {}) });
        if (Object.keys(changes).length) ops.push({ op: 'link.set', link: d, changes });
      } else {
        ops.push({ op: 'link.add', link: d });
      }
      continue;
    }
    const changes = linkChanges(d, o);
    if (Object.keys(changes).length) ops.push({ op: 'link.set', link: d, changes });
  }
  const linkOwned = new Set(scope.links.map(linkKey));
  for (const o of observed.links) {
    const k = linkKey(o);
    if (linkOwned.has(k) && !wantLinks.has(k)) {
      ops.push({ op: 'link.del', ns: o.ns, name: o.name });
      deletedLinks.add(k);
    }
  }
  // Objects on a link being deleted go with it.
  const goesWithLink = (ns: NsRef, dev: string | undefined): boolean => dev !== undefined && deletedLinks.has(dk(ns, dev));

  // Addresses.
  const seenAddrs = new Set(observed.addresses.map(addrKey));
  const wantAddrs = new Set(desired.addresses.map(addrKey));
  for (const a of desired.addresses) if (!seenAddrs.has(addrKey(a))) ops.push({ op: 'addr.add', addr: a });
  for (const a of observed.addresses) {
    if (owned.has(dk(a.ns, a.dev)) && !wantAddrs.has(addrKey(a)) && !goesWithLink(a.ns, a.dev)) ops.push({ op: 'addr.del', addr: a });
  }

  // Routes.
  const seenRoutes = new Map(observed.routes.map((r) => [routeKey(r), r]));
  const wantRoutes = new Set(desired.routes.map(routeKey));
  for (const r of desired.routes) {
    const o = seenRoutes.get(routeKey(r));
    if (!o || !sameRoute(r, o)) ops.push({ op: 'route.replace', route: r });
  }
  for (const r of observed.routes) {
    if (r.dev !== undefined && owned.has(dk(r.ns, r.dev)) && !wantRoutes.has(routeKey(r)) && !goesWithLink(r.ns, r.dev)) {
      ops.push({ op: 'route.del', route: r });
    }
  }

  // Neighbours and fdb entries.
  const seenNeigh = new Map(observed.neighbours.map((n) => [neighKey(n), n]));
  const wantNeigh = new Set(desired.neighbours.map(neighKey));
  for (const n of desired.neighbours) {
    if (seenNeigh.get(neighKey(n))?.lladdr !== n.lladdr) ops.push({ op: 'neigh.replace', neigh: n });
  }
  for (const n of observed.neighbours) {
    if (owned.has(dk(n.ns, n.dev)) && !wantNeigh.has(neighKey(n)) && !goesWithLink(n.ns, n.dev)) ops.push({ op: 'neigh.del', neigh: n });
  }
  const seenFdb = new Map(observed.fdb.map((f) => [fdbKey(f), f]));
  const wantFdb = new Set(desired.fdb.map(fdbKey));
  for (const f of desired.fdb) if (seenFdb.get(fdbKey(f))?.dst !== f.dst) ops.push({ op: 'fdb.replace', fdb: f });
  for (const f of observed.fdb) {
    if (owned.has(dk(f.ns, f.dev)) && !wantFdb.has(fdbKey(f)) && !goesWithLink(f.ns, f.dev)) ops.push({ op: 'fdb.del', fdb: f });
  }

  // iptables: owned chains are rewritten whole when they differ; single rules are added or removed.
  const seenChains = new Map(observed.chains.map((c) => [chainKey(c), c]));
  const wantChains = new Map(desired.chains.map((c) => [chainKey(c), c]));
  for (const c of desired.chains) {
    const o = seenChains.get(chainKey(c));
    if (!o || o.rules.length !== c.rules.length || o.rules.some((r, i) => r !== c.rules[i])) ops.push({ op: 'chain.sync', chain: c });
  }
  for (const c of scope.chains) {
    if (seenChains.has(chainKey(c)) && !wantChains.has(chainKey(c))) {
      ops.push({ op: 'chain.del', ns: c.ns, family: c.family, table: c.table, chain: c.chain });
    }
  }
  const seenRules = new Set(observed.rules.map(ruleKey));
  const wantRules = new Set(desired.rules.map(ruleKey));
  for (const r of desired.rules) if (!seenRules.has(ruleKey(r))) ops.push({ op: 'rule.add', rule: r });
  for (const r of observed.rules) {
    const marked = scope.ruleMarkers.some((m) => chainKey(m) === chainKey(r) && r.rule.includes(m.marker));
    if (marked && !wantRules.has(ruleKey(r))) ops.push({ op: 'rule.del', rule: r });
  }

  // Sysctls are settings: set when different, never removed.
  const seenSysctl = new Map(observed.sysctls.map((s) => [`${s.ns}\u0000${s.key}`, s.value]));
  for (const s of desired.sysctls) if (seenSysctl.get(`${s.ns}\u0000${s.key}`) !== s.value) ops.push({ op: 'sysctl.set', sysctl: s });

  // Qdiscs.
  const seenQ = new Map(observed.qdiscs.map((q) => [qdiscKey(q), q]));
  const wantQ = new Set(desired.qdiscs.map(qdiscKey));
  for (const q of desired.qdiscs) {
    const o = seenQ.get(qdiscKey(q));
    if (!o || !sameQdisc(q, o)) ops.push({ op: 'qdisc.replace', qdisc: q });
  }
  for (const q of observed.qdiscs) {
    if (owned.has(dk(q.ns, q.dev)) && !wantQ.has(qdiscKey(q)) && !goesWithLink(q.ns, q.dev)) ops.push({ op: 'qdisc.del', qdisc: q });
  }

  return order(ops);
}

const where = (ns: NsRef): string => (ns === HOST ? 'the host namespace' : ns);

export function describeRoute(r: Route): string {
  return [
    r.dst,
    r.gw ? `via ${r.gw}` : '',
    r.dev ? `dev ${r.dev}` : '',
    r.onlink ? 'onlink' : '',
    r.table !== undefined && r.table !== 254 ? `table ${r.table}` : '',
    r.metric !== undefined ? `metric ${r.metric}` : '',
  ]
    .filter(Boolean)
    .join(' ');
}

/** One op in words: what it will do, to which object, where. */
export function describeOp(o: Op): string {
  switch (o.op) {
    case 'link.add':
      return `add ${o.link.kind} ${o.link.name} in ${where(o.link.ns)}`;
    case 'link.set':
      return `set ${Object.entries(o.changes).map(([k, v]) => `${k} ${String(v)}`).join(', ')} on ${o.link.name} in ${where(o.link.ns)}`;
    case 'link.del':
      return `delete link ${o.name} in ${where(o.ns)}`;
    case 'addr.add':
      return `add address ${o.addr.cidr} to ${o.addr.dev} in ${where(o.addr.ns)}`;
    case 'addr.del':
      return `delete address ${o.addr.cidr} from ${o.addr.dev} in ${where(o.addr.ns)}`;
    case 'route.replace':
      return `route ${describeRoute(o.route)} in ${where(o.route.ns)}`;
    case 'route.del':
      return `delete route ${describeRoute(o.route)} in ${where(o.route.ns)}`;
    case 'neigh.replace':
      return `neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} dev ${o.neigh.dev} in ${where(o.neigh.ns)}`;
    case 'neigh.del':
      return `delete neighbour ${o.neigh.ip} dev ${o.neigh.dev} in ${where(o.neigh.ns)}`;
    case 'fdb.replace':
      return `fdb ${o.fdb.mac} dev ${o.fdb.dev} dst ${o.fdb.dst} in ${where(o.fdb.ns)}`;
    case 'fdb.del':
      return `delete fdb ${o.fdb.mac} dev ${o.fdb.dev} in ${where(o.fdb.ns)}`;
    case 'chain.sync':
      return `write iptables chain ${o.chain.table}/${o.chain.chain} (IPv${o.chain.family}, ${o.chain.rules.length} rules) in ${where(o.chain.ns)}`;
    case 'chain.del':
      return `delete iptables chain ${o.table}/${o.chain} (IPv${o.family}) in ${where(o.ns)}`;
    case 'rule.add':
      return `add iptables rule in ${o.rule.table}/${o.rule.chain}: ${o.rule.rule}`;
    case 'rule.del':
      return `delete iptables rule in ${o.rule.table}/${o.rule.chain}: ${o.rule.rule}`;
    case 'sysctl.set':
      return `sysctl ${o.sysctl.key}=${o.sysctl.value} in ${where(o.sysctl.ns)}`;
    case 'qdisc.replace':
      return `qdisc ${o.qdisc.kind} on ${o.qdisc.dev} in ${where(o.qdisc.ns)}`;
    case 'qdisc.del':
      return `delete qdisc ${o.qdisc.kind} on ${o.qdisc.dev} in ${where(o.qdisc.ns)}`;
  }
}

/** What differs between the kernel and what felt wants, in words (CNI CHECK, `felt` drift reports). */
export function drift(desired: KernelState, observed: KernelState, scope: OwnershipScope): string[] {
  const seenLinks = new Map(observed.links.map((l) => [linkKey(l), l]));
  const seenRoutes = new Map(observed.routes.map((r) => [routeKey(r), r]));
  return plan(desired, observed, scope).map((o) => {
    switch (o.op) {
      case 'link.add':
        return `missing ${o.link.kind} ${o.link.name} in ${where(o.link.ns)}`;
      case 'link.set': {
        const have = seenLinks.get(linkKey(o.link));
        if (!have) return `missing ${o.link.kind} ${o.link.name} in ${where(o.link.ns)}`;
        return Object.entries(o.changes)
          .map(([k, v]) => `wrong ${k === 'mtu' ? 'MTU' : k} on ${o.link.name}: ${String(have[k as keyof Link] ?? 'none')}, want ${String(v)}`)
          .join('; ');
      }
      case 'addr.add':
        return `missing address ${o.addr.cidr} on ${o.addr.dev} in ${where(o.addr.ns)}`;
      case 'route.replace':
        return seenRoutes.has(routeKey(o.route))
          ? `wrong route ${describeRoute(seenRoutes.get(routeKey(o.route))!)}, want ${describeRoute(o.route)} in ${where(o.route.ns)}`
          : `missing route ${describeRoute(o.route)} in ${where(o.route.ns)}`;
      case 'neigh.replace':
        return `missing neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} on ${o.neigh.dev} in ${where(o.neigh.ns)}`;
      case 'fdb.replace':
        return `missing fdb entry ${o.fdb.mac} dst ${o.fdb.dst} on ${o.fdb.dev} in ${where(o.fdb.ns)}`;
      case 'chain.sync':
        return `iptables chain ${o.chain.table}/${o.chain.chain} missing or different (want ${o.chain.rules.length} rules)`;
      case 'rule.add':
        return `missing iptables rule in ${o.rule.table}/${o.rule.chain}: ${o.rule.rule}`;
      case 'sysctl.set':
        return `sysctl ${o.sysctl.key} is not ${o.sysctl.value} in ${where(o.sysctl.ns)}`;
      case 'qdisc.replace':
        return `missing or different qdisc ${o.qdisc.kind} on ${o.qdisc.dev} in ${where(o.qdisc.ns)}`;
      default:
        return `unexpected: ${describeOp(o).replace(/^delete /, '')}`;
    }
  });
}
