// plan(desired, observed, scope): the ops that turn what the kernel has into what felt wants, touching only
// what felt owns (felix's delta tracker, as one pure function). plan(d, d, s) = [].
//
// How it works:
//  1. Links to delete, to a fixed point: owned links that are not desired, links of the wrong kind (or with
//     vxlan/macvlan settings that cannot be changed in place), and veth ends whose pair is broken. Deleting a
//     link takes the kernel's side effects with it: its veth peer, macvlans/vxlans on it, everything on those
//     devices (addresses, routes, neighbours, fdb entries, qdiscs, per-device sysctls) and bridge membership
//     of its ports. Those are removed from the "effective" observation, so what must come back is re-created.
//  2. Diff desired against that effective observation, per object kind, with the one keyed delta (delta.ts)
//     and each kind's identity and comparison (kinds.ts).
//  3. Order (order.ts): by namespace, then by phase, so the kernel accepts every step.

import type { Address, IptChain, IptRule, KernelState, Link, NftRule, NsRef, Op, OwnershipScope, Route } from './model.ts';
import { createdFrom, lowerOf, opNs } from './model.ts';
import {
  addrKey,
  BUILTIN_CHAINS,
  chainKey,
  devKey,
  fdbKey,
  ipRuleKey,
  linkKey,
  neighKey,
  nftChainKey,
  nftRuleKey,
  nftSetKey,
  nftTableKey,
  qdiscKey,
  routeKey,
  ruleKey,
  ruleTarget,
  sysctlDevice,
  sysctlKey,
} from './keys.ts';
import { owner } from './scope.ts';
import { delta, missing, uniq } from './delta.ts';
import { kinds } from './kinds.ts';
import { compatible, createdAcross, createdPeer, linkChanges, movedLink, movesOf, vethPairs } from './links.ts';
import { order } from './order.ts';

const lower = (s: string | undefined): string | undefined => s?.toLowerCase();
const ipOf = (cidr: string): string => cidr.slice(0, cidr.indexOf('/') < 0 ? cidr.length : cidr.indexOf('/'));
const isV6 = (cidrOrIp: string): boolean => cidrOrIp.includes(':');
const withoutSrc = (r: Route): Route => {
  const { src: _gone, ...rest } = r;
  return rest;
};

export function plan(desiredIn: KernelState, observed: KernelState, scope: OwnershipScope): Op[] {
  const desired: KernelState = {
    links: uniq(desiredIn.links, linkKey),
    addresses: uniq(desiredIn.addresses, addrKey),
    routes: uniq(desiredIn.routes, routeKey),
    neighbours: uniq(desiredIn.neighbours, neighKey),
    fdb: uniq(desiredIn.fdb, fdbKey),
    chains: uniq(desiredIn.chains, chainKey),
    rules: uniq(desiredIn.rules, ruleKey),
    sysctls: uniq(desiredIn.sysctls, sysctlKey),
    qdiscs: uniq(desiredIn.qdiscs, qdiscKey),
    ...(desiredIn.ipRules ? { ipRules: uniq(desiredIn.ipRules, ipRuleKey) } : {}),
    ...(desiredIn.nftTables ? { nftTables: uniq(desiredIn.nftTables, nftTableKey) } : {}),
    ...(desiredIn.nftChains ? { nftChains: uniq(desiredIn.nftChains, (c) => nftChainKey({ ...c, chain: c.name })) } : {}),
    ...(desiredIn.nftRules ? { nftRules: uniq(desiredIn.nftRules, nftRuleKey) } : {}),
    ...(desiredIn.nftSets ? { nftSets: uniq(desiredIn.nftSets, nftSetKey) } : {}),
  };
  const own = owner(scope);
  const kind = kinds(own);
  const ops: Op[] = [];

  // 1. Links to delete, with everything that goes with them.
  const want = new Map(desired.links.map((l) => [linkKey(l), l]));
  const seen = new Map(observed.links.map((l) => [linkKey(l), l]));
  const pairs = vethPairs(desired.links, want);
  // Devices to move here from elsewhere (host-device): their source is not deleted, only moved.
  const moves = movesOf(desired.links, seen);
  // Observed veth ends by their peer's key (either end may carry the pairing).
  const vethOf = new Map<string, string[]>();
  for (const o of observed.links) {
    if (!o.veth) continue;
    const pk = devKey(o.veth.peerNs, o.veth.peer);
    vethOf.set(pk, [...(vethOf.get(pk) ?? []), linkKey(o)]);
    vethOf.set(linkKey(o), [...(vethOf.get(linkKey(o)) ?? []), pk]);
  }
  const gone = new Set<string>();
  // For each link.del: the links it takes down (its own, a veth peer, macvlans/vxlans on it).
  const takes = new Map<Op, string[]>();
  let taking: string[] = [];
  const markGone = (k: string): void => {
    if (gone.has(k) || !seen.has(k)) return;
    gone.add(k);
    taking.push(k);
    const o = seen.get(k)!;
    for (const pk of vethOf.get(k) ?? []) markGone(pk);
    for (const x of observed.links) {
      if (x.ns === o.ns && (lowerOf(x)?.master === o.name || x.vxlan?.dev === o.name)) markGone(linkKey(x));
    }
  };
  const remove = (o: Link): void => {
    if (gone.has(linkKey(o))) return;
    const del: Op = { op: 'link.del', ns: o.ns, name: o.name };
    ops.push(del);
    taking = [];
    markGone(linkKey(o));
    takes.set(del, taking);
  };
  for (let before = -1; before !== gone.size;) {
    before = gone.size;
    for (const o of observed.links) {
      const k = linkKey(o);
      if (gone.has(k)) continue;
      const d = want.get(k);
      if (!d) {
        // Loopback cannot be deleted (the kernel refuses); an owned one not desired is simply left.
        if (own.link(o.ns, o.name) && !pairs.implied.has(k) && !moves.has(k) && o.kind !== 'loopback') remove(o);
        continue;
      }
      if (!compatible(d, o)) {
        remove(o);
        continue;
      }
      const pk = pairs.partner.get(k);
      if (pk !== undefined) {
        const p = seen.get(pk);
        const paired = !o.veth || devKey(o.veth.peerNs, o.veth.peer) === pk;
        if (!p || gone.has(pk) || p.kind !== 'veth' || !paired) remove(o);
      }
    }
  }
  // A moved device leaves its addresses, routes, neighbours, sysctls and bridge behind, as a deleted one does.
  const movedAway = new Set([...moves.keys()].filter((fk) => seen.has(fk) && !gone.has(fk)));
  for (const fk of movedAway) gone.add(fk);
  const isGone = (ns: NsRef, dev: string | undefined): boolean => dev !== undefined && gone.has(devKey(ns, dev));

  // 2. Links to create or change, against what is left.
  const left = new Map<string, Link>();
  for (const o of observed.links) {
    if (gone.has(linkKey(o))) continue;
    left.set(linkKey(o), o.master && isGone(o.ns, o.master) ? { ...o, master: null, hairpin: false } : o);
  }
  for (const d of desired.links) {
    const k = linkKey(d);
    const e = left.get(k);
    const creator = pairs.createdBy.get(k);
    if (e) {
      const changes = linkChanges(d, e);
      if (Object.keys(changes).length) ops.push({ op: 'link.set', link: d, changes });
    } else if (d.from && linkKey(d.from) !== k) {
      // Moved from where it is now under its new name; a source that is not there fails in the kernel, by name.
      ops.push({ op: 'link.move', ns: d.from.ns, name: d.from.name, toNs: d.ns, newName: d.name });
      const src = movedAway.has(linkKey(d.from)) ? seen.get(linkKey(d.from)) : undefined;
      const changes = linkChanges(d, movedLink(d, src));
      if (Object.keys(changes).length) ops.push({ op: 'link.set', link: d, changes });
    } else if (creator) {
      const changes = linkChanges(d, createdPeer(d, creator));
      if (Object.keys(changes).length) ops.push({ op: 'link.set', link: d, changes });
    } else if (createdFrom(d) !== d.ns) {
      // Made from the master's namespace with its fixed settings only; the rest is set where it lands.
      ops.push({ op: 'link.add', link: d });
      const changes = linkChanges(d, createdAcross(d));
      if (Object.keys(changes).length) ops.push({ op: 'link.set', link: d, changes });
    } else {
      ops.push({ op: 'link.add', link: pairs.creates.get(k) ?? d });
    }
  }

  // A link entering or leaving a VRF (also by the VRF's deletion) is taken down and up by the kernel: it loses
  // its routes and (without keep_addr_on_down) its IPv6 addresses, which come back below when desired.
  const isVrf = (ns: NsRef, name: string | null | undefined): boolean =>
    !!name && (want.get(devKey(ns, name))?.kind === 'vrf' || seen.get(devKey(ns, name))?.kind === 'vrf');
  const cycled = new Set<string>();
  for (const o of ops) {
    if (
      o.op === 'link.set' &&
      o.changes.master !== undefined &&
      (isVrf(o.link.ns, o.changes.master) || isVrf(o.link.ns, left.get(linkKey(o.link))?.master))
    ) {
      cycled.add(linkKey(o.link));
    }
  }
  for (const o of observed.links)
    if (!gone.has(linkKey(o)) && o.master && isGone(o.ns, o.master) && isVrf(o.ns, o.master)) cycled.add(linkKey(o));

  // 3. Addresses. An address leaving takes IPv4 routes with that source address with it.
  const addrsLeft = observed.addresses.filter((a) => !isGone(a.ns, a.dev) && !(isV6(a.cidr) && cycled.has(devKey(a.ns, a.dev))));
  const addrs = delta(desired.addresses, addrsLeft, kind.addresses);
  for (const a of missing(addrs)) ops.push({ op: 'addr.add', addr: a });
  const dropped = new Set(addrs.unwanted);
  for (const a of addrs.unwanted) ops.push({ op: 'addr.del', addr: a });
  const removedAddrs: Address[] = [...observed.addresses.filter((a) => isGone(a.ns, a.dev)), ...addrs.unwanted];
  const keptAddrs: Address[] = addrsLeft.filter((a) => !dropped.has(a));
  // What the kernel does when addresses go (deletions run before additions: see `order`), as checked on
  // Linux 6.x: an IPv4 address no longer on any device of its namespace takes the IPv4 routes with that
  // source address with it; an IPv6 one only clears that source from its routes, which stay; and a device
  // left without any IPv4 address loses all its IPv4 routes.
  const stillThere = new Set(keptAddrs.map((a) => devKey(a.ns, lower(ipOf(a.cidr))!)));
  const lostIPs = new Set(removedAddrs.map((a) => devKey(a.ns, lower(ipOf(a.cidr))!)).filter((k) => !stillThere.has(k)));
  const keepsV4 = new Set(keptAddrs.filter((a) => !isV6(a.cidr)).map((a) => devKey(a.ns, a.dev)));
  const noV4 = new Set(removedAddrs.filter((a) => !isV6(a.cidr) && !keepsV4.has(devKey(a.ns, a.dev))).map((a) => devKey(a.ns, a.dev)));
  const srcLost = (r: Route): boolean => r.src !== undefined && lostIPs.has(devKey(r.ns, lower(r.src)!));

  // 4. Routes, by (ns, table, dst, metric).
  // Taking a link down flushes its routes too; so does moving it into or out of a VRF (the kernel cycles it).
  const goingDown = new Set([...cycled, ...ops.flatMap((o) => (o.op === 'link.set' && o.changes.up === false ? [linkKey(o.link)] : []))]);
  const routesLeft = observed.routes
    .filter(
      (r) =>
        !isGone(r.ns, r.dev) &&
        !(r.dev !== undefined && goingDown.has(devKey(r.ns, r.dev))) &&
        (isV6(r.dst) || (!srcLost(r) && !(r.dev !== undefined && noV4.has(devKey(r.ns, r.dev))))),
    )
    .map((r) => (isV6(r.dst) && srcLost(r) ? withoutSrc(r) : r));
  const routes = delta(desired.routes, routesLeft, kind.routes);
  for (const r of missing(routes)) ops.push({ op: 'route.replace', route: r });
  for (const r of routes.unwanted) ops.push({ op: 'route.del', route: r });

  // 5. Permanent neighbours by (ns, dev, ip); fdb entries by (ns, dev, mac) with one dst each.
  const neighs = delta(
    desired.neighbours,
    observed.neighbours.filter((n) => !isGone(n.ns, n.dev)),
    kind.neighbours,
  );
  for (const n of missing(neighs)) ops.push({ op: 'neigh.replace', neigh: n });
  for (const n of neighs.unwanted) ops.push({ op: 'neigh.del', neigh: n });

  const fdb = delta(
    desired.fdb,
    observed.fdb.filter((f) => !isGone(f.ns, f.dev)),
    kind.fdb,
  );
  for (const m of fdb.matches) {
    // One remote per MAC: extra remotes go; a single wrong one is replaced in place (flannel's way).
    if (m.have !== undefined || m.stale.length > 1) for (const g of m.stale) ops.push({ op: 'fdb.del', fdb: g });
    if (m.have === undefined) ops.push({ op: 'fdb.replace', fdb: m.want });
  }
  for (const f of fdb.unwanted) ops.push({ op: 'fdb.del', fdb: f });

  // 6. iptables. Owned chains are rewritten whole when they differ (a shared one is only created when
  // missing); single rules are added or removed.
  const chains = delta(desired.chains, observed.chains, kind.chains);
  for (const { want: c, have } of chains.matches) {
    if (have !== undefined) continue;
    ops.push(c.shared ? { op: 'chain.add', ns: c.ns, family: c.family, table: c.table, chain: c.chain } : { op: 'chain.sync', chain: c });
  }
  for (const c of chains.unwanted) ops.push({ op: 'chain.del', ns: c.ns, family: c.family, table: c.table, chain: c.chain });
  const wantC = new Map(desired.chains.map((c) => [chainKey(c), c]));
  // Rules as observed, per chain: the builtin chains' rules, and whole chains felt does not own (shared ones too).
  const ruleLists = new Map<string, { ref: IptChain; rules: string[] }>();
  for (const r of observed.rules) {
    const k = chainKey(r);
    const entry = ruleLists.get(k) ?? { ref: { ns: r.ns, family: r.family, table: r.table, chain: r.chain, rules: [] }, rules: [] };
    entry.rules.push(r.rule);
    ruleLists.set(k, entry);
  }
  for (const c of observed.chains) {
    const k = chainKey(c);
    if (!ruleLists.has(k) && !own.chain(c) && (!wantC.has(k) || wantC.get(k)!.shared)) ruleLists.set(k, { ref: c, rules: [...c.rules] });
  }
  // Shared chains: a desired rule's own chain and (ensureTarget) its jump target must exist. A missing one is
  // created empty, never synced: other attachments' rules live in it.
  const known = new Set([...observed.chains.map(chainKey), ...wantC.keys(), ...ruleLists.keys()]);
  for (const r of desired.rules) {
    for (const chain of [r.chain, ...(r.ensureTarget ? [ruleTarget(r.rule)] : [])]) {
      if (chain === undefined || BUILTIN_CHAINS.has(chain)) continue;
      const k = chainKey({ ns: r.ns, family: r.family, table: r.table, chain });
      if (known.has(k)) continue;
      known.add(k);
      ops.push({ op: 'chain.add', ns: r.ns, family: r.family, table: r.table, chain });
    }
  }
  const seenRules: IptRule[] = [...ruleLists.values()].flatMap(({ ref, rules }) =>
    rules.map((rule) => ({ ns: ref.ns, family: ref.family, table: ref.table, chain: ref.chain, rule })),
  );
  const rules = delta(desired.rules, seenRules, kind.rules);
  for (const r of missing(rules)) ops.push({ op: 'rule.add', rule: r });
  // A marked rule that is not desired goes; a desired one that appears twice keeps one copy. In observed order.
  const dropRules = new Set([...rules.matches.flatMap((m) => m.extra), ...rules.unwanted]);
  for (const r of seenRules) if (dropRules.has(r)) ops.push({ op: 'rule.del', rule: r });

  // 6b. nftables. Tables are made to exist (an owned one that is not desired goes, with everything in it);
  // owned chains are rewritten whole when their hook or rules differ, shared ones created when missing; single
  // rules in chains felt does not own whole are added, or deleted by handle.
  const nftTables = delta(desired.nftTables ?? [], observed.nftTables ?? [], kind.nftTables);
  for (const t of missing(nftTables)) ops.push({ op: 'nft.table.add', table: t });
  for (const t of nftTables.unwanted) ops.push({ op: 'nft.table.del', ns: t.ns, family: t.family, name: t.name });
  const tableGone = new Set(nftTables.unwanted.map(nftTableKey));
  const inGoneTable = (x: { ns: NsRef; family: string; table: string }): boolean =>
    tableGone.has(nftTableKey({ ns: x.ns, family: x.family, name: x.table }));
  // Sets: made with their elements when missing, else changed element by element.
  const sets = delta(
    desired.nftSets ?? [],
    (observed.nftSets ?? []).filter((x) => !inGoneTable(x)),
    kind.nftSets,
  );
  for (const { want, have, stale } of sets.matches) {
    if (have !== undefined) continue;
    const o = stale[0];
    if (o === undefined) {
      ops.push({ op: 'nft.set.add', set: want });
      continue;
    }
    const els = delta(want.elements, o.elements, kind.nftElements);
    const add = missing(els);
    const del = [...els.unwanted, ...els.matches.flatMap((m) => m.extra)];
    if (add.length || del.length) ops.push({ op: 'nft.set.elements', set: want, add, del });
  }
  const seenNftChains = (observed.nftChains ?? []).filter((c) => !inGoneTable(c));
  const nftChains = delta(desired.nftChains ?? [], seenNftChains, kind.nftChains);
  for (const { want: c, have } of nftChains.matches)
    if (have === undefined) ops.push({ op: c.shared ? 'nft.chain.add' : 'nft.chain.sync', chain: c });
  for (const c of nftChains.unwanted) ops.push({ op: 'nft.chain.del', ns: c.ns, family: c.family, table: c.table, chain: c.name });
  const whole = new Set(
    [...(desired.nftChains ?? []).filter((c) => !c.shared), ...seenNftChains.filter((c) => own.nftChain({ ...c, chain: c.name }))].map(
      (c) => nftChainKey({ ...c, chain: c.name }),
    ),
  );
  const seenNftRules = (observed.nftRules ?? []).filter((r) => !inGoneTable(r) && !whole.has(nftChainKey(r)));
  const nftRules = delta(desired.nftRules ?? [], seenNftRules, kind.nftRules);
  for (const r of missing(nftRules)) ops.push({ op: 'nft.rule.add', rule: r });
  const dropNft = new Set<NftRule>([...nftRules.matches.flatMap((m) => m.extra), ...nftRules.unwanted]);
  for (const r of seenNftRules)
    if (dropNft.has(r) && r.handle !== undefined) ops.push({ op: 'nft.rule.del', rule: { ...r, handle: r.handle } });

  // 7. Sysctls are settings: set when different, never removed. Per-device ones vanish with the device.
  const sysctls = delta(
    desired.sysctls,
    observed.sysctls.filter((s) => !isGone(s.ns, sysctlDevice(s.key))),
    kind.sysctls,
  );
  for (const s of missing(sysctls)) ops.push({ op: 'sysctl.set', sysctl: s });

  // 8. Qdiscs. A redirect to a device that goes stays as a filter without a target (tc shows `to_dev *`).
  const qLeft = observed.qdiscs
    .filter((q) => !isGone(q.ns, q.dev))
    .map((q) => {
      if (q.redirect === undefined || !isGone(q.ns, q.redirect)) return q;
      const { redirect: _dangling, ...rest } = q;
      return rest;
    });
  const qdiscs = delta(desired.qdiscs, qLeft, kind.qdiscs);
  for (const q of missing(qdiscs)) ops.push({ op: 'qdisc.replace', qdisc: q });
  for (const q of qdiscs.unwanted) ops.push({ op: 'qdisc.del', qdisc: q });

  // 9. Policy rules, by (ns, family, src, table); the preference only when the desired rule gives one. An
  // observed rule that satisfies a desired one is kept (the first of several: the rest go); owned rules that
  // satisfy none go, and so do plain rules with a desired key that do not satisfy it. Rules name no device, so
  // deleting links takes none with it.
  const seenIR = observed.ipRules ?? [];
  const ipRules = delta(desired.ipRules ?? [], seenIR, kind.ipRules);
  const dropIR = new Set([...ipRules.matches.flatMap((m) => [...m.stale, ...m.extra]), ...ipRules.unwanted]);
  for (const o of seenIR) if (dropIR.has(o) && !o.other) ops.push({ op: 'iprule.del', ipRule: o });
  for (const d of missing(ipRules)) ops.push({ op: 'iprule.add', ipRule: d });

  // A deletion that frees a name another namespace is about to use (a veth peer in the host going with its
  // container end) must run before that namespace's group: it goes first. So does one that takes links of
  // another namespace with it (and their addresses, and the routes those addresses take along): every
  // deletion then happens before any namespace adds addresses, which is what steps 3 and 4 assume.
  const neededBy = new Map<string, NsRef>();
  for (const o of ops) {
    if (o.op !== 'link.add') continue;
    // Where the add runs: a macvlan/ipvlan/vlan made from the host into a pod needs its pod name free first.
    neededBy.set(linkKey(o.link), opNs(o));
    if (o.link.veth) neededBy.set(devKey(o.link.veth.peerNs, o.link.veth.peer), opNs(o));
  }
  const early = new Set<Op>();
  for (const [del, keys] of takes) {
    if (keys.some((k) => (neededBy.has(k) && neededBy.get(k) !== opNs(del)) || seen.get(k)?.ns !== opNs(del))) early.add(del);
  }
  return order(ops, { desired, observed, early });
}
