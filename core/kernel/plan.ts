// plan(desired, observed, scope): the ops that turn what the kernel has into what felt wants, touching only
// what felt owns (felix's delta tracker, as one pure function). plan(d, d, s) = [].
//
// How it works:
//  1. Links to delete, to a fixed point: owned links that are not desired, links of the wrong kind (or with
//     vxlan/macvlan settings that cannot be changed in place), and veth ends whose pair is broken. Deleting a
//     link takes the kernel's side effects with it: its veth peer, macvlans/vxlans on it, everything on those
//     devices (addresses, routes, neighbours, fdb entries, qdiscs, per-device sysctls) and bridge membership
//     of its ports. Those are removed from the "effective" observation, so what must come back is re-created.
//  2. Diff desired against that effective observation, per object type, by identity (core/kernel/keys.ts).
//  3. Order (see `order`): by namespace, then by phase, so the kernel accepts every step.

import type {
  Address,
  Fdb,
  IpRule,
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
import { createdFrom, HOST, lowerOf, opNs } from './model.ts';
import {
  addrKey,
  BUILTIN_CHAINS,
  chainKey,
  devKey,
  fdbKey,
  ipRuleKey,
  linkKey,
  neighKey,
  qdiscKey,
  routeKey,
  routeMetric,
  routeTable,
  ruleKey,
  ruleTarget,
  sysctlDevice,
  sysctlKey,
  where,
} from './keys.ts';
import { owner } from './scope.ts';

export { routeKey, routeMetric } from './keys.ts';

// ------------------------------------------------------------------------------------------- comparison

const lower = (s: string | undefined): string | undefined => s?.toLowerCase();
const ipOf = (cidr: string): string => cidr.slice(0, cidr.indexOf('/') < 0 ? cidr.length : cidr.indexOf('/'));
const isV6 = (cidrOrIp: string): boolean => cidrOrIp.includes(':');
const withoutSrc = (r: Route): Route => {
  const { src: _gone, ...rest } = r;
  return rest;
};
const normSysctl = (v: string): string => v.trim().split(/\s+/).join(' ');

/** Does an existing link satisfy the desired kind and its fixed (create-time) settings? */
function compatible(d: Link, o: Link): boolean {
  if (d.kind === 'device') return true; // "whatever is there": felt cannot create it, so never replaces it
  if (d.kind === 'loopback') return o.kind === 'loopback' || o.kind === 'device';
  if (d.kind !== o.kind) return false;
  if (d.vxlan && o.vxlan) {
    const a = d.vxlan;
    const b = o.vxlan;
    if (a.vni !== b.vni || a.port !== b.port || a.learning !== b.learning || a.gbp !== b.gbp) return false;
    if (a.local !== undefined && lower(a.local) !== lower(b.local)) return false;
    if (a.dev !== undefined && b.dev !== undefined && a.dev !== b.dev) return false;
  }
  // A macvlan whose master is in another namespace is seen without its master's name: only the mode counts.
  if (d.macvlan && o.macvlan && ((d.macvlan.masterNs === undefined && d.macvlan.master !== o.macvlan.master) || d.macvlan.mode !== o.macvlan.mode)) return false;
  // The same for ipvlans (mode) and vlans (id); a VRF's table is fixed at creation.
  if (d.ipvlan && o.ipvlan && ((d.ipvlan.masterNs === undefined && d.ipvlan.master !== o.ipvlan.master) || d.ipvlan.mode !== o.ipvlan.mode)) return false;
  if (d.vlan && o.vlan && ((d.vlan.masterNs === undefined && d.vlan.master !== o.vlan.master) || d.vlan.id !== o.vlan.id)) return false;
  if (d.vrf && o.vrf && d.vrf.table !== o.vrf.table) return false;
  // A tap's flags, owner and group are fixed at creation (owner and group count when the kernel reports numbers).
  if (d.tap && o.tap) {
    const a = d.tap;
    const b = o.tap;
    if (a.multiQueue !== b.multiQueue || a.vnetHdr !== b.vnetHdr || a.pi !== b.pi) return false;
    if (a.owner !== undefined && b.owner !== undefined && a.owner !== b.owner) return false;
    if (a.group !== undefined && b.group !== undefined && a.group !== b.group) return false;
  }
  return true;
}

const MANAGED = ['mtu', 'mac', 'up', 'master', 'promisc', 'hairpin', 'allmulti', 'txqlen', 'alias'] as const;
type Managed = (typeof MANAGED)[number];

function norm(k: Managed, v: unknown): unknown {
  switch (k) {
    case 'master':
      return v ?? null;
    case 'up':
    case 'promisc':
    case 'hairpin':
    case 'allmulti':
      return !!v;
    case 'mac':
      return typeof v === 'string' ? v.toLowerCase() : v;
    case 'alias':
      return v ?? '';
    case 'mtu':
    case 'txqlen':
      return v;
  }
}

/** The managed attributes of `d` that `o` does not have. Attributes undefined in `d` are not managed. */
function linkChanges(d: Link, o: Link): Partial<Link> {
  const changes: { -readonly [K in keyof Link]?: Link[K] } = {};
  for (const k of MANAGED) {
    const want = d[k];
    if (want === undefined) continue;
    if (norm(k, want) !== norm(k, o[k])) (changes as Record<string, unknown>)[k] = want;
  }
  // Enslaving to another bridge makes a new bridge port, with hairpin off.
  if (changes.master !== undefined && changes.master !== null && d.hairpin === true) changes.hairpin = true;
  const vf = d.bridge?.vlanFiltering;
  if (vf !== undefined && vf !== !!o.bridge?.vlanFiltering) changes.bridge = { ...d.bridge, vlanFiltering: vf };
  return changes;
}

/** What `ip link add ... type veth peer name P [address M]` leaves the peer end with. */
const createdPeer = (d: Link, creator: Link): Link => ({
  ns: d.ns,
  name: d.name,
  kind: 'veth',
  ...(creator.veth?.peerMac !== undefined ? { mac: creator.veth.peerMac } : {}),
  up: false,
  master: null,
  promisc: false,
  hairpin: false,
  allmulti: false,
});

/** What `ip link set dev N netns NS name X` leaves a moved link with: down, without a master, the rest kept. */
const movedLink = (d: Link, source: Link | undefined): Link => ({
  ...(source ?? { kind: d.kind }),
  ns: d.ns,
  name: d.name,
  up: false,
  master: null,
  hairpin: false,
});

/** The desired links that plan moves: `from` set, not at their place yet. By the source's key. */
function movesOf(links: readonly Link[], seen: ReadonlyMap<string, Link>): Map<string, Link> {
  const out = new Map<string, Link>();
  for (const d of links) {
    if (!d.from || seen.has(linkKey(d)) || linkKey(d.from) === linkKey(d)) continue;
    out.set(linkKey(d.from), d);
  }
  return out;
}

/** What `ip link add link M name X netns NS type macvlan [address A] [mtu N]` leaves the new link with. */
const createdAcross = (d: Link): Link => ({
  ns: d.ns,
  name: d.name,
  kind: d.kind,
  ...(d.mac !== undefined ? { mac: d.mac } : {}),
  ...(d.mtu !== undefined ? { mtu: d.mtu } : {}),
  up: false,
  master: null,
  promisc: false,
  hairpin: false,
});

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

/** First of each identity wins; later duplicates are ignored (desired arrays are sets). */
function uniq<T>(xs: readonly T[], key: (x: T) => string): T[] {
  const seen = new Set<string>();
  return xs.filter((x) => {
    const k = key(x);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

// ------------------------------------------------------------------------------------------------ links

interface VethPairs {
  /** End key → the other end's key, for desired ends that have a desired partner. */
  readonly partner: ReadonlyMap<string, string>;
  /** Creating end key → the link its link.add carries (with a veth spec naming the other end). */
  readonly creates: ReadonlyMap<string, Link>;
  /** Peer end key → the link whose link.add creates it. */
  readonly createdBy: ReadonlyMap<string, Link>;
  /** Peer ends that are not themselves desired (still must not be deleted). */
  readonly implied: ReadonlySet<string>;
}

/**
 * Which end of each desired veth pair creates it. When only one end is desired, that end. When both are: the
 * end that is not in the host namespace (a CNI plugin creates the pair inside the container and moves the host
 * end out), else the end with the smaller key; if the chosen end does not name its peer, its link.add gets
 * a veth spec built from the other end. So veth creation always goes from a container namespace towards the
 * host (or from the smaller namespace towards the larger), and namespace order has no cycles.
 */
function vethPairs(links: readonly Link[], want: ReadonlyMap<string, Link>): VethPairs {
  const partner = new Map<string, string>();
  const creates = new Map<string, Link>();
  const createdBy = new Map<string, Link>();
  const implied = new Set<string>();
  const done = new Set<string>();
  for (const l of links) {
    const k = linkKey(l);
    if (!l.veth || done.has(k)) continue;
    const pk = devKey(l.veth.peerNs, l.veth.peer);
    if (done.has(pk) || pk === k) continue;
    done.add(k);
    done.add(pk);
    const p = want.get(pk);
    if (!p || p.kind !== 'veth') {
      creates.set(k, l);
      createdBy.set(pk, l);
      if (!p) implied.add(pk);
      continue;
    }
    const pFirst = l.ns === HOST && p.ns !== HOST ? true : p.ns === HOST && l.ns !== HOST ? false : pk < k;
    const [c, ck, other, ok] = pFirst ? [p, pk, l, k] : [l, k, p, pk];
    const creator: Link =
      c.veth && devKey(c.veth.peerNs, c.veth.peer) === ok
        ? c
        : { ...c, veth: { peer: other.name, peerNs: other.ns, ...(other.mac !== undefined ? { peerMac: other.mac } : {}) } };
    creates.set(ck, creator);
    createdBy.set(ok, creator);
    partner.set(k, pk);
    partner.set(pk, k);
  }
  return { partner, creates, createdBy, implied };
}

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

// ------------------------------------------------------------------------------------------------- plan

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
  };
  const own = owner(scope);
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
  for (let before = -1; before !== gone.size; ) {
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
    if (o.op === 'link.set' && o.changes.master !== undefined && (isVrf(o.link.ns, o.changes.master) || isVrf(o.link.ns, left.get(linkKey(o.link))?.master))) {
      cycled.add(linkKey(o.link));
    }
  }
  for (const o of observed.links) if (!gone.has(linkKey(o)) && o.master && isGone(o.ns, o.master) && isVrf(o.ns, o.master)) cycled.add(linkKey(o));

  // 3. Addresses. An address leaving takes IPv4 routes with that source address with it.
  const addrsLeft = observed.addresses.filter((a) => !isGone(a.ns, a.dev) && !(isV6(a.cidr) && cycled.has(devKey(a.ns, a.dev))));
  const wantA = new Set(desired.addresses.map(addrKey));
  const haveA = new Set(addrsLeft.map(addrKey));
  for (const a of desired.addresses) if (!haveA.has(addrKey(a))) ops.push({ op: 'addr.add', addr: a });
  const removedAddrs: Address[] = observed.addresses.filter((a) => isGone(a.ns, a.dev));
  const keptAddrs: Address[] = [];
  for (const a of addrsLeft) {
    if (own.address(a) && !wantA.has(addrKey(a))) {
      ops.push({ op: 'addr.del', addr: a });
      removedAddrs.push(a);
    } else keptAddrs.push(a);
  }
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
  const haveR = new Map(routesLeft.map((r) => [routeKey(r), r]));
  const wantR = new Set(desired.routes.map(routeKey));
  for (const r of desired.routes) {
    const o = haveR.get(routeKey(r));
    if (!o || !sameRoute(r, o)) ops.push({ op: 'route.replace', route: r });
  }
  for (const r of routesLeft) if (own.route(r) && !wantR.has(routeKey(r))) ops.push({ op: 'route.del', route: r });

  // 5. Permanent neighbours by (ns, dev, ip); fdb entries by (ns, dev, mac) with one dst each.
  const neighLeft = observed.neighbours.filter((n) => !isGone(n.ns, n.dev));
  const haveN = new Map(neighLeft.map((n) => [neighKey(n), n]));
  const wantN = new Set(desired.neighbours.map(neighKey));
  for (const n of desired.neighbours) {
    if (lower(haveN.get(neighKey(n))?.lladdr) !== lower(n.lladdr)) ops.push({ op: 'neigh.replace', neigh: n });
  }
  for (const n of neighLeft) if (own.device(n.ns, n.dev) && !wantN.has(neighKey(n))) ops.push({ op: 'neigh.del', neigh: n });

  const fdbLeft = observed.fdb.filter((f) => !isGone(f.ns, f.dev));
  const haveF = new Map<string, Fdb[]>();
  for (const f of fdbLeft) haveF.set(fdbKey(f), [...(haveF.get(fdbKey(f)) ?? []), f]);
  const wantF = new Set(desired.fdb.map(fdbKey));
  for (const f of desired.fdb) {
    const group = haveF.get(fdbKey(f)) ?? [];
    const ok = group.some((g) => lower(g.dst) === lower(f.dst));
    // One remote per MAC: extra remotes go; a single wrong one is replaced in place (flannel's way).
    for (const g of group) if (lower(g.dst) !== lower(f.dst) && (ok || group.length > 1)) ops.push({ op: 'fdb.del', fdb: g });
    if (!ok) ops.push({ op: 'fdb.replace', fdb: f });
  }
  for (const f of fdbLeft) if (own.device(f.ns, f.dev) && !wantF.has(fdbKey(f))) ops.push({ op: 'fdb.del', fdb: f });

  // 6. iptables. Owned chains are rewritten whole when they differ; single rules are added or removed.
  const wantC = new Map(desired.chains.map((c) => [chainKey(c), c]));
  const haveC = new Map(observed.chains.map((c) => [chainKey(c), c]));
  for (const c of desired.chains) {
    const o = haveC.get(chainKey(c));
    // A shared chain (others write into it) is only made to exist: created empty when missing, never rewritten.
    if (c.shared) {
      if (!o) ops.push({ op: 'chain.add', ns: c.ns, family: c.family, table: c.table, chain: c.chain });
      continue;
    }
    if (!o || !sameRules(o.rules, c.rules)) ops.push({ op: 'chain.sync', chain: c });
  }
  for (const c of observed.chains) {
    if (own.chain(c) && !wantC.has(chainKey(c))) ops.push({ op: 'chain.del', ns: c.ns, family: c.family, table: c.table, chain: c.chain });
  }
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
  const known = new Set([...haveC.keys(), ...wantC.keys(), ...ruleLists.keys()]);
  for (const r of desired.rules) {
    for (const chain of [r.chain, ...(r.ensureTarget ? [ruleTarget(r.rule)] : [])]) {
      if (chain === undefined || BUILTIN_CHAINS.has(chain)) continue;
      const k = chainKey({ ns: r.ns, family: r.family, table: r.table, chain });
      if (known.has(k)) continue;
      known.add(k);
      ops.push({ op: 'chain.add', ns: r.ns, family: r.family, table: r.table, chain });
    }
  }
  const wantRule = new Set(desired.rules.map(ruleKey));
  for (const r of desired.rules) {
    if (!ruleLists.get(chainKey(r))?.rules.includes(r.rule)) ops.push({ op: 'rule.add', rule: r });
  }
  for (const { ref, rules } of ruleLists.values()) {
    const counted = new Map<string, number>();
    for (const rule of rules) {
      const r: IptRule = { ns: ref.ns, family: ref.family, table: ref.table, chain: ref.chain, rule };
      const n = (counted.get(rule) ?? 0) + 1;
      counted.set(rule, n);
      const wanted = wantRule.has(ruleKey(r));
      // A marked rule that is not desired goes; a desired one that appears twice keeps one copy.
      if ((own.markedRule(r) && !wanted) || (wanted && n > 1)) ops.push({ op: 'rule.del', rule: r });
    }
  }

  // 7. Sysctls are settings: set when different, never removed. Per-device ones vanish with the device.
  const haveS = new Map(
    observed.sysctls.filter((s) => !isGone(s.ns, sysctlDevice(s.key))).map((s) => [sysctlKey(s), s.value] as const),
  );
  for (const s of desired.sysctls) {
    const v = haveS.get(sysctlKey(s));
    if (v === undefined || normSysctl(v) !== normSysctl(s.value)) ops.push({ op: 'sysctl.set', sysctl: s });
  }

  // 8. Qdiscs. A redirect to a device that goes stays as a filter without a target (tc shows `to_dev *`).
  const qLeft = observed.qdiscs
    .filter((q) => !isGone(q.ns, q.dev))
    .map((q) => {
      if (q.redirect === undefined || !isGone(q.ns, q.redirect)) return q;
      const { redirect: _dangling, ...rest } = q;
      return rest;
    });
  const haveQ = new Map(qLeft.map((q) => [qdiscKey(q), q]));
  const wantQ = new Set(desired.qdiscs.map(qdiscKey));
  for (const q of desired.qdiscs) {
    const o = haveQ.get(qdiscKey(q));
    if (!o || !sameQdisc(q, o)) ops.push({ op: 'qdisc.replace', qdisc: q });
  }
  for (const q of qLeft) if (own.qdisc(q.ns, q.dev) && !wantQ.has(qdiscKey(q))) ops.push({ op: 'qdisc.del', qdisc: q });

  // 9. Policy rules, by (ns, family, src, table); the preference only when the desired rule gives one. An
  // observed rule that satisfies a desired one is kept (the first of several: the rest go); owned rules that
  // satisfy none go. Rules name no device, so deleting links takes none with it.
  const wantIR = new Map((desired.ipRules ?? []).map((r) => [ipRuleKey(r), r]));
  const keptIR = new Set<string>();
  const satisfies = (d: IpRule | undefined, o: IpRule): boolean => !!d && !o.other && (d.priority === undefined || d.priority === o.priority);
  for (const o of observed.ipRules ?? []) {
    const k = ipRuleKey(o);
    const d = wantIR.get(k);
    if (satisfies(d, o) && !keptIR.has(k)) keptIR.add(k);
    else if (!o.other && (own.ipRule(o) || d)) ops.push({ op: 'iprule.del', ipRule: o });
  }
  for (const [k, d] of wantIR) if (!keptIR.has(k)) ops.push({ op: 'iprule.add', ipRule: d });

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

// ------------------------------------------------------------------------------------------------ order

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
export function namespaceOrder(ops: readonly Op[]): NsRef[] {
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
    const next = all.find((ns) => !placed.has(ns) && [...before.get(ns)!].every((p) => placed.has(p))) ?? all.find((ns) => !placed.has(ns))!;
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
  // A sysctl of a device this plan creates waits for it; every other sysctl goes first in its namespace, so
  // that the namespace's ip changes stay one batch.
  const created = new Set<string>();
  for (const o of ops) {
    if (o.op !== 'link.add') continue;
    created.add(linkKey(o.link));
    if (o.link.veth) created.add(devKey(o.link.veth.peerNs, o.link.veth.peer));
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

// ------------------------------------------------------------------------------------------------ words

export function describeRoute(r: Route): string {
  return [
    r.dst,
    r.gw ? `via ${r.gw}` : '',
    r.dev ? `dev ${r.dev}` : '',
    r.onlink ? 'onlink' : '',
    r.scope ? `scope ${r.scope}` : '',
    routeTable(r) !== 254 ? `table ${routeTable(r)}` : '',
    r.metric !== undefined ? `metric ${r.metric}` : '',
    r.mtu !== undefined ? `mtu ${r.mtu}` : '',
    r.src ? `src ${r.src}` : '',
  ]
    .filter(Boolean)
    .join(' ');
}

const describeLink = (l: Link): string => {
  const extra: string[] = [];
  if (l.veth) extra.push(`peer ${l.veth.peer}${l.veth.peerNs !== l.ns ? ` in ${where(l.veth.peerNs)}` : ''}`);
  if (l.vxlan) extra.push(`vni ${l.vxlan.vni}${l.vxlan.local ? ` local ${l.vxlan.local}` : ''} port ${l.vxlan.port}`);
  if (l.macvlan) extra.push(`on ${l.macvlan.master} mode ${l.macvlan.mode}`);
  if (l.ipvlan) extra.push(`on ${l.ipvlan.master} mode ${l.ipvlan.mode}`);
  if (l.vlan) extra.push(`on ${l.vlan.master} id ${l.vlan.id}`);
  if (l.vrf) extra.push(`table ${l.vrf.table}`);
  if (l.tap) extra.push(['tap', l.tap.multiQueue ? 'multi_queue' : '', l.tap.vnetHdr ? 'vnet_hdr' : '', l.tap.pi ? 'pi' : ''].filter(Boolean).join(' '));
  return `${l.kind} ${l.name}${extra.length ? ` (${extra.join(', ')})` : ''}`;
};

const describeChanges = (c: Partial<Link>): string =>
  Object.entries(c)
    .map(([k, v]) =>
      k === 'up'
        ? v
          ? 'up'
          : 'down'
        : k === 'master'
          ? v === null
            ? 'nomaster'
            : `master ${String(v)}`
          : k === 'alias' && v === ''
            ? 'no alias'
            : k === 'bridge'
            ? `vlan_filtering ${(v as { vlanFiltering?: boolean }).vlanFiltering ? 1 : 0}`
            : typeof v === 'boolean'
              ? `${k} ${v ? 'on' : 'off'}`
              : `${k} ${String(v)}`,
    )
    .join(' ');

const describeIpRule = (r: IpRule): string =>
  `rule from ${r.src} table ${r.table}${r.priority !== undefined ? ` priority ${r.priority}` : ''}${r.family === 6 ? ' (IPv6)' : ''}`;

const chainName = (c: { table: string; chain: string; family: number }): string => `${c.table}/${c.chain}${c.family === 6 ? ' (IPv6)' : ''}`;
const qdiscText = (q: Qdisc): string =>
  q.kind === 'tbf'
    ? `tbf rate ${q.rate ?? 0}bit burst ${q.burst ?? 0}${q.latencyMs !== undefined ? ` latency ${q.latencyMs}ms` : ''} on ${q.dev}`
    : `ingress on ${q.dev}${q.redirect !== undefined ? ` redirecting to ${q.redirect}` : ''}`;

/** One op in words: what it does, to which object, where (`failed to ${describeOp(op)}: ${why}`). */
export function describeOp(o: Op): string {
  switch (o.op) {
    case 'link.add':
      return `add ${describeLink(o.link)} in ${where(o.link.ns)}`;
    case 'link.set':
      return `set ${describeChanges(o.changes)} on ${o.link.name} in ${where(o.link.ns)}`;
    case 'link.del':
      return `delete link ${o.name} in ${where(o.ns)}`;
    case 'link.move':
      return `move link ${o.name} from ${where(o.ns)} to ${where(o.toNs)} as ${o.newName}`;
    case 'addr.add':
      return `add address ${o.addr.cidr} to ${o.addr.dev} in ${where(o.addr.ns)}`;
    case 'addr.del':
      return `delete address ${o.addr.cidr} from ${o.addr.dev} in ${where(o.addr.ns)}`;
    case 'route.replace':
      return `add route ${describeRoute(o.route)} in ${where(o.route.ns)}`;
    case 'route.del':
      return `delete route ${describeRoute(o.route)} in ${where(o.route.ns)}`;
    case 'neigh.replace':
      return `add neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} dev ${o.neigh.dev} in ${where(o.neigh.ns)}`;
    case 'neigh.del':
      return `delete neighbour ${o.neigh.ip} dev ${o.neigh.dev} in ${where(o.neigh.ns)}`;
    case 'fdb.replace':
      return `add fdb entry ${o.fdb.mac} dst ${o.fdb.dst} dev ${o.fdb.dev} in ${where(o.fdb.ns)}`;
    case 'fdb.del':
      return `delete fdb entry ${o.fdb.mac} dst ${o.fdb.dst} dev ${o.fdb.dev} in ${where(o.fdb.ns)}`;
    case 'chain.sync':
      return `write iptables chain ${chainName(o.chain)} (${o.chain.rules.length} rules) in ${where(o.chain.ns)}`;
    case 'chain.del':
      return `delete iptables chain ${chainName(o)} in ${where(o.ns)}`;
    case 'chain.add':
      return `create iptables chain ${chainName(o)} in ${where(o.ns)}`;
    case 'rule.add':
      return `add iptables rule in ${chainName(o.rule)} in ${where(o.rule.ns)}: ${o.rule.rule}`;
    case 'rule.del':
      return `delete iptables rule in ${chainName(o.rule)} in ${where(o.rule.ns)}: ${o.rule.rule}`;
    case 'sysctl.set':
      return `set sysctl ${o.sysctl.key}=${o.sysctl.value} in ${where(o.sysctl.ns)}`;
    case 'qdisc.replace':
      return `set qdisc ${qdiscText(o.qdisc)} in ${where(o.qdisc.ns)}`;
    case 'qdisc.del':
      return `delete qdisc ${qdiscText(o.qdisc)} in ${where(o.qdisc.ns)}`;
    case 'iprule.add':
      return `add ${describeIpRule(o.ipRule)} in ${where(o.ipRule.ns)}`;
    case 'iprule.del':
      return `delete ${describeIpRule(o.ipRule)} in ${where(o.ipRule.ns)}`;
  }
}

/** A count of ops by kind, e.g. "3 changes: 1 link.add, 2 route.replace" (or "no changes"). */
export function diffSummary(ops: readonly Op[]): string {
  if (ops.length === 0) return 'no changes';
  const counts = new Map<string, number>();
  for (const o of ops) counts.set(o.op, (counts.get(o.op) ?? 0) + 1);
  return `${ops.length} change${ops.length === 1 ? '' : 's'}: ${[...counts].map(([k, n]) => `${n} ${k}`).join(', ')}`;
}

const FIELD: Record<string, string> = {
  mtu: 'MTU',
  mac: 'MAC address',
  master: 'master',
  promisc: 'promiscuous mode',
  hairpin: 'hairpin mode',
  allmulti: 'all-multicast mode',
  txqlen: 'transmit queue length',
  alias: 'alias',
};
const show = (k: string, v: unknown): string =>
  k === 'master' || k === 'alias' ? (v === null || v === undefined || v === '' ? 'none' : String(v)) : typeof v === 'boolean' || v === undefined ? (v ? 'on' : 'off') : String(v);

/**
 * What differs between the kernel and what felt wants, in words (CNI CHECK, `felt` drift reports), e.g.
 * "missing route 0.0.0.0/0 via 10.22.0.1 dev eth0 in /var/run/netns/x", "wrong MTU on eth0: 1400, want 1500
 * (in /var/run/netns/x)", "missing iptables rule in nat/POSTROUTING: -s ...". Empty when nothing drifted.
 */
export function drift(desired: KernelState, observed: KernelState, scope: OwnershipScope): string[] {
  const ops = plan(desired, observed, scope);
  const links = new Map(observed.links.map((l) => [linkKey(l), l]));
  const routes = new Map(observed.routes.map((r) => [routeKey(r), r]));
  const neigh = new Map(observed.neighbours.map((n) => [neighKey(n), n]));
  const sysctls = new Map(observed.sysctls.map((s) => [sysctlKey(s), s.value]));
  const chains = new Map(observed.chains.map((c) => [chainKey(c), c]));
  const qdiscs = new Map(observed.qdiscs.map((q) => [qdiscKey(q), q]));
  const added = new Set(ops.flatMap((o) => (o.op === 'link.add' ? [linkKey(o.link)] : [])));
  const deleted = new Set(ops.flatMap((o) => (o.op === 'link.del' ? [devKey(o.ns, o.name)] : [])));
  const moved = new Set(ops.flatMap((o) => (o.op === 'link.move' ? [devKey(o.toNs, o.newName)] : [])));
  const out: string[] = [];
  for (const o of ops) {
    switch (o.op) {
      case 'link.del': {
        const k = devKey(o.ns, o.name);
        const have = links.get(k);
        const d = desired.links.find((l) => linkKey(l) === k);
        if (d && have && have.kind !== d.kind) out.push(`${o.name} in ${where(o.ns)} is a ${have.kind}, want ${d.kind}`);
        else if (d) out.push(`${describeLink(d)} in ${where(o.ns)} has the wrong settings or peer`);
        else out.push(`unexpected ${have ? have.kind : 'link'} ${o.name} in ${where(o.ns)}`);
        break;
      }
      case 'link.add':
        if (!deleted.has(linkKey(o.link))) out.push(`missing ${o.link.kind} ${o.link.name} in ${where(o.link.ns)}`);
        break;
      case 'link.move':
        out.push(`missing ${o.newName} in ${where(o.toNs)}${links.has(devKey(o.ns, o.name)) ? ` (it is ${o.name} in ${where(o.ns)})` : ''}`);
        break;
      case 'link.set': {
        const k = linkKey(o.link);
        const have = links.get(k);
        if (moved.has(k)) break; // the move says it
        if (!have || deleted.has(k) || added.has(k)) {
          if (!deleted.has(k)) out.push(`missing ${o.link.kind} ${o.link.name} in ${where(o.link.ns)}`);
          break;
        }
        for (const [f, v] of Object.entries(o.changes)) {
          if (f === 'up') out.push(`${o.link.name} is ${have.up ? 'up' : 'down'}, want ${v ? 'up' : 'down'} (in ${where(o.link.ns)})`);
          else if (f === 'bridge') out.push(`wrong vlan_filtering on ${o.link.name} (in ${where(o.link.ns)})`);
          else out.push(`wrong ${FIELD[f] ?? f} on ${o.link.name}: ${show(f, have[f as keyof Link])}, want ${show(f, v)} (in ${where(o.link.ns)})`);
        }
        break;
      }
      case 'addr.add':
        out.push(`missing address ${o.addr.cidr} on ${o.addr.dev} in ${where(o.addr.ns)}`);
        break;
      case 'addr.del':
        out.push(`unexpected address ${o.addr.cidr} on ${o.addr.dev} in ${where(o.addr.ns)}`);
        break;
      case 'route.replace': {
        const have = routes.get(routeKey(o.route));
        out.push(
          have
            ? `wrong route ${describeRoute(have)}, want ${describeRoute(o.route)} in ${where(o.route.ns)}`
            : `missing route ${describeRoute(o.route)} in ${where(o.route.ns)}`,
        );
        break;
      }
      case 'route.del':
        out.push(`unexpected route ${describeRoute(o.route)} in ${where(o.route.ns)}`);
        break;
      case 'neigh.replace': {
        const have = neigh.get(neighKey(o.neigh));
        out.push(
          have
            ? `wrong neighbour ${o.neigh.ip} on ${o.neigh.dev}: lladdr ${have.lladdr}, want ${o.neigh.lladdr} (in ${where(o.neigh.ns)})`
            : `missing neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} on ${o.neigh.dev} in ${where(o.neigh.ns)}`,
        );
        break;
      }
      case 'neigh.del':
        out.push(`unexpected neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} on ${o.neigh.dev} in ${where(o.neigh.ns)}`);
        break;
      case 'fdb.replace':
        out.push(`missing fdb entry ${o.fdb.mac} dst ${o.fdb.dst} on ${o.fdb.dev} in ${where(o.fdb.ns)}`);
        break;
      case 'fdb.del':
        out.push(`unexpected fdb entry ${o.fdb.mac} dst ${o.fdb.dst} on ${o.fdb.dev} in ${where(o.fdb.ns)}`);
        break;
      case 'chain.sync': {
        const have = chains.get(chainKey(o.chain));
        out.push(
          have
            ? `iptables chain ${chainName(o.chain)} differs: ${have.rules.length} rules, want ${o.chain.rules.length} (in ${where(o.chain.ns)})`
            : `missing iptables chain ${chainName(o.chain)} in ${where(o.chain.ns)}`,
        );
        break;
      }
      case 'chain.del':
        out.push(`unexpected iptables chain ${chainName(o)} in ${where(o.ns)}`);
        break;
      case 'chain.add':
        out.push(`missing iptables chain ${chainName(o)} in ${where(o.ns)}`);
        break;
      case 'rule.add':
        out.push(`missing iptables rule in ${chainName(o.rule)}${o.rule.ns === HOST ? '' : ` of ${o.rule.ns}`}: ${o.rule.rule}`);
        break;
      case 'rule.del':
        out.push(`unexpected iptables rule in ${chainName(o.rule)}${o.rule.ns === HOST ? '' : ` of ${o.rule.ns}`}: ${o.rule.rule}`);
        break;
      case 'sysctl.set': {
        const have = sysctls.get(sysctlKey(o.sysctl));
        out.push(`sysctl ${o.sysctl.key} is ${have === undefined ? 'unknown' : have}, want ${o.sysctl.value} (in ${where(o.sysctl.ns)})`);
        break;
      }
      case 'qdisc.replace':
        out.push(`${qdiscs.has(qdiscKey(o.qdisc)) ? 'wrong' : 'missing'} qdisc ${qdiscText(o.qdisc)} in ${where(o.qdisc.ns)}`);
        break;
      case 'qdisc.del':
        out.push(`unexpected qdisc ${qdiscText(o.qdisc)} in ${where(o.qdisc.ns)}`);
        break;
      case 'iprule.add':
        out.push(`missing ${describeIpRule(o.ipRule)} in ${where(o.ipRule.ns)}`);
        break;
      case 'iprule.del':
        out.push(`unexpected ${describeIpRule(o.ipRule)} in ${where(o.ipRule.ns)}`);
        break;
    }
  }
  return out;
}

