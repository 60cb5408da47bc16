// Apply order for ops: by namespace (veth creators before the namespaces their peers land in), then by phase
// within a namespace, so that the kernel accepts every step. Pure; plan (diff.ts) and feltd's delta use it.

import type { IptChain, Link, NsRef, Op } from './model.ts';
import type { KernelState } from './model.ts';
import { createdFrom, HOST, lowerOf, opNs } from './model.ts';
import { BUILTIN_CHAINS, chainKey, devKey, linkKey, ruleTarget, sysctlDevice } from './keys.ts';

/** Dependency depth among links of one namespace: masters and lower devices before the links that use them. */
function linkDepths(links: readonly Link[]): Map<string, number> {
  const byKey = new Map(links.map((l) => [linkKey(l), l]));
  const depth = new Map<string, number>();
  const visit = (l: Link, path: Set<string>): number => {
    const k = linkKey(l);
    const known = depth.get(k);
    if (known !== undefined) return known;
    if (path.has(k)) return 0;
    path.add(k);
    const deps = [l.master ?? undefined, lowerOf(l)?.master, l.vxlan?.dev].filter((x): x is string => !!x);
    let d = 0;
    for (const name of deps) {
      const dep = byKey.get(devKey(l.ns, name));
      if (dep) d = Math.max(d, 1 + visit(dep, path));
    }
    path.delete(k);
    depth.set(k, d);
    return d;
  };
  for (const l of links) visit(l, new Set());
  return depth;
}

/**
 * Phases within one namespace. Sysctls that do not wait for a device created here come first (see order).
 * Then iptables, as one block (one iptables-restore per family): removed jumps
 * before the chains they jump to are deleted, chains written before the rules that jump to them. Then the
 * links (deleted, created, changed: masters before ports), sysctls (a per-device sysctl needs its device;
 * forwarding/accept_dad must be set before addresses), addresses, neighbour and fdb entries, and routes last
 * (flannel's vxlan rule: neighbour and fdb first, then the route that uses them). Qdiscs after their links.
 */
export const PHASE: Readonly<Record<Op['op'], number>> = {
  'rule.del': 0,
  'chain.add': 1,
  'chain.sync': 1,
  'chain.del': 2,
  'rule.add': 3,
  'qdisc.del': 4,
  'link.del': 5,
  'link.move': 5,
  'link.add': 6,
  'link.set': 7,
  'sysctl.set': 8,
  'addr.del': 9,
  'addr.add': 10,
  'route.del': 11,
  'neigh.del': 12,
  'neigh.replace': 13,
  'fdb.del': 14,
  'fdb.replace': 15,
  'route.replace': 16,
  'qdisc.replace': 17,
  // Policy rules name no device: removed early, added once the addresses they select are there (fractional so
  // that the phases above keep their numbers).
  'iprule.del': 4.5,
  'iprule.add': 10.5,
  // nftables: one transaction per namespace, beside iptables: rules deleted, tables and chains made, chains
  // deleted, rules added; whole tables deleted last.
  'nft.rule.del': 0.1,
  'nft.table.add': 0.2,
  'nft.set.add': 0.25,
  'nft.set.elements': 0.26,
  'nft.chain.add': 0.3,
  // The same phase: chains are made in desired order (so `nft list` shows them as the reference makes them),
  // and a desired state names the chains a chain jumps to before it.
  'nft.chain.sync': 0.3,
  'nft.chain.del': 2.1,
  'nft.rule.add': 3.1,
  'nft.table.del': 3.2,
};

/** Chains of one table by how deep their jumps go into the given set: targets have depth 0. */
function chainDepths(chains: readonly { key: string; ref: IptChain }[]): Map<string, number> {
  const byKey = new Map(chains.map((c) => [c.key, c.ref]));
  const depth = new Map<string, number>();
  const visit = (k: string, path: Set<string>): number => {
    const known = depth.get(k);
    if (known !== undefined) return known;
    const c = byKey.get(k);
    if (!c || path.has(k)) return 0;
    path.add(k);
    let d = 0;
    for (const r of c.rules) {
      const t = ruleTarget(r);
      if (t === undefined || BUILTIN_CHAINS.has(t)) continue;
      const tk = chainKey({ ns: c.ns, family: c.family, table: c.table, chain: t });
      if (byKey.has(tk) && tk !== k) d = Math.max(d, 1 + visit(tk, path));
    }
    path.delete(k);
    depth.set(k, d);
    return d;
  };
  for (const c of chains) visit(c.key, new Set());
  return depth;
}

/**
 * Namespaces in apply order: a namespace that creates a veth whose peer lands in another namespace goes
 * before that namespace (so the pair exists when the other side is configured); otherwise the host first,
 * then the others by name. A cycle (each creates into the other) falls back to that order.
 */
function namespaceOrder(ops: readonly Op[]): NsRef[] {
  const all = [...new Set(ops.map(opNs))].sort((a, b) => (a === HOST ? -1 : b === HOST ? 1 : a < b ? -1 : a > b ? 1 : 0));
  const before = new Map<NsRef, Set<NsRef>>(all.map((ns) => [ns, new Set()]));
  for (const o of ops) {
    if (o.op === 'link.add' && o.link.veth && o.link.veth.peerNs !== o.link.ns && before.has(o.link.veth.peerNs)) {
      before.get(o.link.veth.peerNs)!.add(o.link.ns);
    }
    // A link made from another namespace (a macvlan on a host master) exists before its own namespace's ops.
    if (o.op === 'link.add' && createdFrom(o.link) !== o.link.ns && before.has(o.link.ns)) before.get(o.link.ns)!.add(createdFrom(o.link));
    // A link moved into a namespace arrives before that namespace configures it.
    if (o.op === 'link.move' && o.toNs !== o.ns && before.has(o.toNs)) before.get(o.toNs)!.add(o.ns);
  }
  const out: NsRef[] = [];
  const placed = new Set<NsRef>();
  while (out.length < all.length) {
    const next =
      all.find((ns) => !placed.has(ns) && [...before.get(ns)!].every((p) => placed.has(p))) ?? all.find((ns) => !placed.has(ns))!;
    out.push(next);
    placed.add(next);
  }
  return out;
}

export interface OrderContext {
  readonly desired?: KernelState;
  readonly observed?: KernelState;
  /** link.del ops that must run before every namespace group (see plan). */
  readonly early?: ReadonlySet<Op>;
}

/** Deterministic apply order for ops (see PHASE and namespaceOrder). Ties keep their input order. */
export function order(ops: readonly Op[], ctx: OrderContext = {}): Op[] {
  const nsOrder = namespaceOrder(ops);
  const nsRank = new Map(nsOrder.map((ns, i) => [ns, i]));
  // A link a veth creation elsewhere needs gone (same name as the new peer) is deleted before everything.
  const early = new Set<Op>(ctx.early ?? []);
  for (const o of ops) {
    if (o.op !== 'link.add' || !o.link.veth) continue;
    const { peer, peerNs } = o.link.veth;
    if (peerNs === o.link.ns) continue;
    for (const x of ops) if (x.op === 'link.del' && x.ns === peerNs && x.name === peer) early.add(x);
  }
  // So is one that frees the name a moved link takes.
  for (const o of ops) {
    if (o.op !== 'link.move' || o.toNs === o.ns) continue;
    for (const x of ops) if (x.op === 'link.del' && x.ns === o.toNs && x.name === o.newName) early.add(x);
  }
  const linkDepth = linkDepths(ctx.desired?.links ?? ops.flatMap((o) => (o.op === 'link.add' || o.op === 'link.set' ? [o.link] : [])));
  const synced = ops.flatMap((o) => (o.op === 'chain.sync' ? [{ key: chainKey(o.chain), ref: o.chain }] : []));
  const syncDepth = chainDepths(synced);
  const seenChains = new Map((ctx.observed?.chains ?? []).map((c) => [chainKey(c), c]));
  const dropped = ops.flatMap((o) =>
    o.op === 'chain.del' ? [{ key: chainKey(o), ref: seenChains.get(chainKey(o)) ?? { ...o, rules: [] } }] : [],
  );
  const dropDepth = chainDepths(dropped);
  // A sysctl of a device this plan creates in the sysctl's own namespace waits for it; every other sysctl goes
  // first in its namespace, so that the namespace's ip changes stay one batch. A veth end made from another
  // namespace (the pod's end of a pair the host makes) is there before its namespace's turn, so its sysctls
  // (accept_dad, arp_notify) are set before it comes up and gets its addresses.
  const created = new Set<string>();
  for (const o of ops) {
    if (o.op !== 'link.add') continue;
    if (createdFrom(o.link) === o.link.ns) created.add(linkKey(o.link));
    if (o.link.veth && o.link.veth.peerNs === o.link.ns) created.add(devKey(o.link.veth.peerNs, o.link.veth.peer));
  }
  const phase = (o: Op): number => {
    if (o.op !== 'sysctl.set') return PHASE[o.op];
    const dev = sysctlDevice(o.sysctl.key);
    return dev !== undefined && created.has(devKey(o.sysctl.ns, dev)) ? PHASE['sysctl.set'] : -1;
  };
  const sub = (o: Op): number => {
    switch (o.op) {
      case 'link.add':
      case 'link.set':
        return linkDepth.get(linkKey(o.link)) ?? 0;
      case 'route.replace':
        return o.route.gw ? 1 : 0; // direct (link-scope) routes before routes via gateways they make reachable
      case 'route.del':
        return o.route.gw ? 0 : 1;
      case 'chain.sync':
        return syncDepth.get(chainKey(o.chain)) ?? 0;
      case 'chain.del':
        return -(dropDepth.get(chainKey(o)) ?? 0); // referrers before the chains they jump to
      default:
        return 0;
    }
  };
  return ops
    .map((o, i) => ({ o, i, early: early.has(o) ? 0 : 1, ns: nsRank.get(opNs(o)) ?? 0, phase: phase(o), sub: sub(o) }))
    .sort((a, b) => a.early - b.early || a.ns - b.ns || a.phase - b.phase || a.sub - b.sub || a.i - b.i)
    .map((x) => x.o);
}
