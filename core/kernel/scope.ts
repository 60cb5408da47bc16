// Ownership: which observed objects felt may change or delete. An object is felt's when it is desired, when
// its link is in `scope.links`, when its device is in `scope.devices` (addresses, routes, neighbours, fdb
// entries, qdiscs and per-device sysctls on it), when it is a qdisc on a `scope.qdiscDevices` device, when its chain is in `scope.chains`, or when it is a rule in a
// `scope.ruleMarkers` chain whose text contains the marker, or when it is a route whose destination lies
// inside a `scope.routeDsts` CIDR on that device, or a route named by `scope.routeIds`, or a plain policy rule
// from a `scope.ruleSrcs` source. Everything else is foreign and plan never touches it.

import { contains, formatCIDR, parseCIDR } from '../ip/ip.ts';
import type { Address, IpRule, IptRule, KernelState, NftChainRef, NftRule, NsRef, OwnershipScope, Route } from './model.ts';
import { chainKey, devKey, linkKey, nftChainKey, nftTableKey, routeKey, sysctlDevice, type ChainRef } from './keys.ts';
import { emptyKernelState } from './model.ts';

export const emptyScope = (): OwnershipScope => ({ links: [], devices: [], chains: [], ruleMarkers: [] });

// A state and a scope split in two: the netfilter part (iptables chains and rules, nftables) and the rest.
// Neither needs the other in the kernel, so a plugin may plan and apply them apart (bridge's ADD does).

/** The netfilter objects of `s`, nothing else. */
export const netfilterState = (s: KernelState): KernelState => ({
  ...emptyKernelState(),
  chains: s.chains,
  rules: s.rules,
  ...(s.nftTables ? { nftTables: s.nftTables, nftChains: s.nftChains ?? [], nftRules: s.nftRules ?? [], nftSets: s.nftSets ?? [] } : {}),
});

/** `s` without its netfilter objects. */
export const withoutNetfilterState = (s: KernelState): KernelState => ({
  ...s,
  chains: [],
  rules: [],
  nftTables: [],
  nftChains: [],
  nftRules: [],
  nftSets: [],
});

/** What `sc` owns of netfilter, nothing else. */
export const netfilterScope = (sc: OwnershipScope): OwnershipScope => ({
  ...emptyScope(),
  chains: sc.chains,
  ruleMarkers: sc.ruleMarkers,
  ...(sc.nftRuleMarkers ? { nftRuleMarkers: sc.nftRuleMarkers } : {}),
  ...(sc.nftChains ? { nftChains: sc.nftChains } : {}),
  ...(sc.nftTables ? { nftTables: sc.nftTables } : {}),
});

/** `sc` without what it owns of netfilter. */
export const withoutNetfilterScope = (sc: OwnershipScope): OwnershipScope => {
  const { nftRuleMarkers: _r, nftChains: _c, nftTables: _t, ...rest } = sc;
  return { ...rest, chains: [], ruleMarkers: [] };
};

export function mergeScopes(...scopes: readonly OwnershipScope[]): OwnershipScope {
  const routeDsts = scopes.flatMap((s) => s.routeDsts ?? []);
  const qdiscDevices = scopes.flatMap((s) => s.qdiscDevices ?? []);
  const routeIds = scopes.flatMap((s) => s.routeIds ?? []);
  const ruleSrcs = scopes.flatMap((s) => s.ruleSrcs ?? []);
  const nftChains = scopes.flatMap((s) => s.nftChains ?? []);
  const nftRuleMarkers = scopes.flatMap((s) => s.nftRuleMarkers ?? []);
  const nftTables = scopes.flatMap((s) => s.nftTables ?? []);
  return {
    links: scopes.flatMap((s) => s.links),
    devices: scopes.flatMap((s) => s.devices),
    chains: scopes.flatMap((s) => s.chains),
    ruleMarkers: scopes.flatMap((s) => s.ruleMarkers),
    ...(routeDsts.length ? { routeDsts } : {}),
    ...(qdiscDevices.length ? { qdiscDevices } : {}),
    ...(routeIds.length ? { routeIds } : {}),
    ...(ruleSrcs.length ? { ruleSrcs } : {}),
    ...(nftChains.length ? { nftChains } : {}),
    ...(nftRuleMarkers.length ? { nftRuleMarkers } : {}),
    ...(nftTables.length ? { nftTables } : {}),
  };
}

/** Everything a desired state names, as a scope: what a "remove all of this" plan would delete. */
export function scopeOf(desired: KernelState): OwnershipScope {
  return {
    links: desired.links.map((l) => ({ ns: l.ns, name: l.name })),
    devices: desired.links.map((l) => ({ ns: l.ns, dev: l.name })),
    chains: desired.chains.map((c) => ({ ns: c.ns, family: c.family, table: c.table, chain: c.chain })),
    ruleMarkers: desired.rules.map((r) => ({ ns: r.ns, family: r.family, table: r.table, chain: r.chain, marker: r.rule })),
    ...(desired.ipRules?.length ? { ruleSrcs: desired.ipRules.map((r) => ({ ns: r.ns, src: r.src, table: r.table })) } : {}),
    ...(desired.nftChains?.some((c) => !c.shared)
      ? {
          nftChains: desired.nftChains.filter((c) => !c.shared).map((c) => ({ ns: c.ns, family: c.family, table: c.table, chain: c.name })),
        }
      : {}),
    ...(desired.nftRules?.length
      ? {
          nftRuleMarkers: desired.nftRules.map((r) => ({
            ns: r.ns,
            family: r.family,
            table: r.table,
            chain: r.chain,
            comment: r.comment ?? '',
            exact: true,
          })),
        }
      : {}),
  };
}

/** Fast membership tests for one scope. */
export interface Owner {
  link(ns: NsRef, name: string): boolean;
  /** Addresses, routes, neighbours, fdb entries, qdiscs on this device. */
  device(ns: NsRef, dev: string | undefined): boolean;
  /** Qdiscs on this device: an owned device, or one of `scope.qdiscDevices`. */
  qdisc(ns: NsRef, dev: string): boolean;
  chain(c: ChainRef): boolean;
  /** A rule in a chain felt does not own, carrying one of felt's markers. */
  markedRule(r: IptRule): boolean;
  /** A route on an owned device, or inside a `scope.routeDsts` CIDR on its device. */
  route(r: Route): boolean;
  /** An address on an owned device, unless the kernel made it (loopback's 127.0.0.1/8 and ::1/128). */
  address(a: Address): boolean;
  /** A plain policy rule from one of `scope.ruleSrcs` (to its table, when one is given). */
  ipRule(r: IpRule): boolean;
  /** An nftables chain felt owns whole (directly, or by owning its table). */
  nftChain(c: NftChainRef): boolean;
  /** An nftables rule in a chain felt does not own whose comment starts with one of felt's markers. */
  nftRule(r: NftRule): boolean;
  nftTable(t: { ns: NsRef; family: string; name: string }): boolean;
}

/** A prefix in canonical form (as the observer writes it), or the text itself when it does not parse. */
const canonical = (cidr: string): string => {
  const c = parseCIDR(cidr);
  return c ? formatCIDR(c) : cidr;
};

/** Addresses the kernel puts on loopback when it comes up: never felt's to remove. */
const KERNEL_MADE_ADDRESSES: ReadonlySet<string> = new Set(['127.0.0.1/8', '::1/128']);

export function owner(scope: OwnershipScope): Owner {
  const links = new Set(scope.links.map(linkKey));
  const devices = new Set([...scope.links.map(linkKey), ...scope.devices.map((d) => devKey(d.ns, d.dev))]);
  const chains = new Set(scope.chains.map((c) => chainKey(c)));
  const markers = new Map<string, string[]>();
  for (const m of scope.ruleMarkers) {
    const k = chainKey(m);
    markers.set(k, [...(markers.get(k) ?? []), m.marker]);
  }
  const device = (ns: NsRef, dev: string | undefined): boolean => dev !== undefined && devices.has(devKey(ns, dev));
  const qdiscDevs = new Set((scope.qdiscDevices ?? []).map((d) => devKey(d.ns, d.dev)));
  const within = (scope.routeDsts ?? []).map((w) => ({ key: devKey(w.ns, w.dev), cidr: parseCIDR(w.within) }));
  const insideOwned = (r: Route): boolean => {
    if (within.length === 0 || r.dev === undefined) return false;
    const dst = parseCIDR(r.dst);
    const k = devKey(r.ns, r.dev);
    return !!dst && within.some((w) => w.key === k && !!w.cidr && dst.prefix >= w.cidr.prefix && contains(w.cidr, dst.ip));
  };
  const routeIds = new Set((scope.routeIds ?? []).map(routeKey));
  const ruleSrcs = new Map<string, (number | undefined)[]>();
  for (const s of scope.ruleSrcs ?? []) {
    const k = devKey(s.ns, canonical(s.src));
    ruleSrcs.set(k, [...(ruleSrcs.get(k) ?? []), s.table]);
  }
  const nftTables = new Set((scope.nftTables ?? []).map(nftTableKey));
  const nftChains = new Set((scope.nftChains ?? []).map(nftChainKey));
  const nftMarkers = new Map<string, { comment: string; exact: boolean }[]>();
  for (const m of scope.nftRuleMarkers ?? [])
    nftMarkers.set(nftChainKey(m), [...(nftMarkers.get(nftChainKey(m)) ?? []), { comment: m.comment, exact: !!m.exact }]);
  const nftTable = (t: { ns: NsRef; family: string; name: string }): boolean => nftTables.has(nftTableKey(t));
  return {
    nftTable,
    nftChain: (c) => nftChains.has(nftChainKey(c)) || nftTable({ ns: c.ns, family: c.family, name: c.table }),
    nftRule: (r) =>
      nftTable({ ns: r.ns, family: r.family, name: r.table }) ||
      (r.comment !== undefined &&
        (nftMarkers.get(nftChainKey(r)) ?? []).some((m) => (m.exact ? r.comment === m.comment : r.comment!.startsWith(m.comment)))),
    link: (ns, name) => links.has(devKey(ns, name)),
    device,
    qdisc: (ns, dev) => device(ns, dev) || qdiscDevs.has(devKey(ns, dev)),
    route: (r) => device(r.ns, r.dev) || insideOwned(r) || routeIds.has(routeKey(r)),
    ipRule: (r) => !r.other && (ruleSrcs.get(devKey(r.ns, canonical(r.src))) ?? []).some((t) => t === undefined || t === r.table),
    address: (a) => device(a.ns, a.dev) && !KERNEL_MADE_ADDRESSES.has(a.cidr),
    chain: (c) => chains.has(chainKey(c)),
    markedRule: (r) => (markers.get(chainKey(r)) ?? []).some((m) => r.rule.includes(m)),
  };
}

/**
 * The part of a state a scope owns (plus nothing else): what tests compare after an apply, and what a
 * twin or observer may restrict itself to. Sysctls are kept when they are per-device sysctls of an owned
 * device; global sysctls are not owned by any scope (they are only ever set, never removed).
 */
export function restrict(state: KernelState, scope: OwnershipScope): KernelState {
  const o = owner(scope);
  return {
    links: state.links.filter((l) => o.link(l.ns, l.name)),
    addresses: state.addresses.filter((a) => o.address(a)),
    routes: state.routes.filter((r) => o.route(r)),
    neighbours: state.neighbours.filter((n) => o.device(n.ns, n.dev)),
    fdb: state.fdb.filter((f) => o.device(f.ns, f.dev)),
    chains: state.chains.filter((c) => o.chain(c)),
    rules: state.rules.filter((r) => o.markedRule(r)),
    sysctls: state.sysctls.filter((s) => o.device(s.ns, sysctlDevice(s.key))),
    qdiscs: state.qdiscs.filter((q) => o.qdisc(q.ns, q.dev)),
    ...(state.ipRules ? { ipRules: state.ipRules.filter((r) => o.ipRule(r)) } : {}),
    ...(state.nftTables ? { nftTables: state.nftTables.filter((t) => o.nftTable(t)) } : {}),
    ...(state.nftChains ? { nftChains: state.nftChains.filter((c) => o.nftChain({ ...c, chain: c.name })) } : {}),
    ...(state.nftRules ? { nftRules: state.nftRules.filter((r) => o.nftRule(r)) } : {}),
    ...(state.nftSets ? { nftSets: state.nftSets.filter((x) => o.nftTable({ ns: x.ns, family: x.family, name: x.table })) } : {}),
  };
}

/** The complement of `restrict`: what plan must leave exactly as it was. */
export function foreign(state: KernelState, scope: OwnershipScope): KernelState {
  const o = owner(scope);
  return {
    links: state.links.filter((l) => !o.link(l.ns, l.name)),
    addresses: state.addresses.filter((a) => !o.address(a)),
    routes: state.routes.filter((r) => !o.route(r)),
    neighbours: state.neighbours.filter((n) => !o.device(n.ns, n.dev)),
    fdb: state.fdb.filter((f) => !o.device(f.ns, f.dev)),
    chains: state.chains.filter((c) => !o.chain(c)),
    rules: state.rules.filter((r) => !o.markedRule(r)),
    sysctls: state.sysctls.filter((s) => !o.device(s.ns, sysctlDevice(s.key))),
    qdiscs: state.qdiscs.filter((q) => !o.qdisc(q.ns, q.dev)),
    ...(state.ipRules ? { ipRules: state.ipRules.filter((r) => !o.ipRule(r)) } : {}),
    ...(state.nftTables ? { nftTables: state.nftTables.filter((t) => !o.nftTable(t)) } : {}),
    ...(state.nftChains ? { nftChains: state.nftChains.filter((c) => !o.nftChain({ ...c, chain: c.name })) } : {}),
    ...(state.nftRules ? { nftRules: state.nftRules.filter((r) => !o.nftRule(r)) } : {}),
    ...(state.nftSets ? { nftSets: state.nftSets.filter((x) => !o.nftTable({ ns: x.ns, family: x.family, name: x.table })) } : {}),
  };
}
