// Per kind of kernel object: its identity (keys.ts), when an observed entry satisfies a desired one, and
// which observed entries felt owns. plan (diff.ts) runs the one keyed delta (delta.ts) with these.

import type {
  Address,
  Fdb,
  IpRule,
  IptChain,
  IptRule,
  Neighbour,
  NftChain,
  NftRule,
  NftSet,
  NftTable,
  Qdisc,
  Route,
  Sysctl,
} from './model.ts';
import type { DeltaKind } from './delta.ts';
import type { Owner } from './scope.ts';
import {
  addrKey,
  chainKey,
  fdbKey,
  ipRuleKey,
  neighKey,
  nftBodyKey,
  nftChainKey,
  nftRuleKey,
  nftSetKey,
  nftTableKey,
  qdiscKey,
  routeKey,
  ruleKey,
  sysctlKey,
} from './keys.ts';

const lower = (s: string | undefined): string | undefined => s?.toLowerCase();

function sameRoute(d: Route, o: Route): boolean {
  return (
    lower(d.gw) === lower(o.gw) &&
    (d.dev === undefined || d.dev === o.dev) &&
    !!d.onlink === !!o.onlink &&
    (d.scope === undefined || d.scope === (o.scope ?? 'global')) &&
    (d.mtu === undefined || d.mtu === o.mtu) &&
    (d.src === undefined || lower(d.src) === lower(o.src))
  );
}

/**
 * tc reports a tbf's burst recomputed from the kernel's buffer (in psched ticks): the byte count given is
 * first turned into whole microseconds at the rate, then into ticks and back, so up to 2 µs at the rate
 * (and a byte of rounding) can be lost. Anything within that is the burst that was asked for.
 */
const sameBurst = (want: number | undefined, have: number | undefined, rateBits: number | undefined): boolean => {
  if (want === undefined || have === undefined || want === have) return want === have;
  const slack = Math.ceil((2 * (rateBits ?? 0)) / 8 / 1e6) + 1;
  return have < want && have >= want - slack;
};

const sameQdisc = (a: Qdisc, b: Qdisc): boolean =>
  a.kind === 'ingress'
    ? a.redirect === undefined || a.redirect === b.redirect
    : a.rate === b.rate && sameBurst(a.burst, b.burst, a.rate) && (a.latencyMs === undefined || a.latencyMs === b.latencyMs);

const sameRules = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((r, i) => r === b[i]);
const sameBodies = (a: NftChain['rules'], b: NftChain['rules']): boolean =>
  a.length === b.length && a.every((r, i) => nftBodyKey(r) === nftBodyKey(b[i]!));
/** The chain's hook as nft -j reports it: a base chain's type, hook, priority and policy. */
const sameBase = (d: NftChain, o: NftChain): boolean =>
  d.base === undefined
    ? o.base === undefined
    : o.base !== undefined &&
      d.base.type === o.base.type &&
      d.base.hook === o.base.hook &&
      d.base.prio === o.base.prio &&
      (d.base.policy ?? 'accept') === (o.base.policy ?? 'accept');
const normSysctl = (v: string): string => v.trim().split(/\s+/).join(' ');

/** Every kind but links (links.ts: kinds, pairs and moves need more than a keyed delta). */
export const kinds = (own: Owner) =>
  ({
    addresses: { key: addrKey, same: () => true, owned: (a) => own.address(a) } satisfies DeltaKind<Address>,
    routes: { key: routeKey, same: sameRoute, owned: (r) => own.route(r) } satisfies DeltaKind<Route>,
    neighbours: {
      key: neighKey,
      same: (d, o) => lower(d.lladdr) === lower(o.lladdr),
      owned: (n) => own.device(n.ns, n.dev),
    } satisfies DeltaKind<Neighbour>,
    /** One remote per VTEP MAC (flannel's semantics): the key is the MAC, the remote must match. */
    fdb: { key: fdbKey, same: (d, o) => lower(d.dst) === lower(o.dst), owned: (f) => own.device(f.ns, f.dev) } satisfies DeltaKind<Fdb>,
    /** A shared chain (others write into it) is only made to exist; an owned one has exactly its rules. */
    chains: {
      key: chainKey,
      same: (d, o) => !!d.shared || sameRules(o.rules, d.rules),
      owned: (c) => own.chain(c),
    } satisfies DeltaKind<IptChain>,
    rules: { key: ruleKey, same: () => true, owned: (r) => own.markedRule(r) } satisfies DeltaKind<IptRule>,
    /** Settings: set when different, never removed. */
    sysctls: {
      key: sysctlKey,
      same: (d, o) => normSysctl(d.value) === normSysctl(o.value),
      owned: () => false,
    } satisfies DeltaKind<Sysctl>,
    qdiscs: { key: qdiscKey, same: sameQdisc, owned: (q) => own.qdisc(q.ns, q.dev) } satisfies DeltaKind<Qdisc>,
    /** The preference only counts when the desired rule gives one; rules with other selectors never satisfy. */
    ipRules: {
      key: ipRuleKey,
      same: (d, o) => !o.other && (d.priority === undefined || d.priority === o.priority),
      owned: (r) => own.ipRule(r),
    } satisfies DeltaKind<IpRule>,
    nftTables: { key: nftTableKey, same: () => true, owned: (t) => own.nftTable(t) } satisfies DeltaKind<NftTable>,
    /** As iptables chains: a shared one only needs to exist; an owned one has exactly its hook and rules. */
    nftChains: {
      key: (c) => nftChainKey({ ...c, chain: c.name }),
      same: (d, o) => !!d.shared || (sameBase(d, o) && sameBodies(d.rules, o.rules)),
      owned: (c) => own.nftChain({ ...c, chain: c.name }),
    } satisfies DeltaKind<NftChain>,
    nftRules: { key: nftRuleKey, same: () => true, owned: (r) => own.nftRule(r) } satisfies DeltaKind<NftRule>,
    /** A set is satisfied when its elements are; sets go only with their (owned) table. */
    nftSets: {
      key: nftSetKey,
      same: (d, o) => {
        if (d.type !== o.type || d.elements.length !== o.elements.length) return false;
        const have = new Set(o.elements);
        return have.size === d.elements.length && d.elements.every((e) => have.has(e));
      },
      owned: () => false,
    } satisfies DeltaKind<NftSet>,
    /** Elements of one set: identity only. */
    nftElements: { key: (e: string) => e, same: () => true, owned: () => true } satisfies DeltaKind<string>,
  }) as const;
