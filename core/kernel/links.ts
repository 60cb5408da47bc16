// Links: when an existing link satisfies a desired one, which managed attributes differ, what creating or
// moving a link leaves it with, and which end of a veth pair creates it. Used by plan's link step (diff.ts).

import type { Link } from './model.ts';
import { HOST } from './model.ts';
import { devKey, linkKey } from './keys.ts';

const lower = (s: string | undefined): string | undefined => s?.toLowerCase();

/** Does an existing link satisfy the desired kind and its fixed (create-time) settings? */
export function compatible(d: Link, o: Link): boolean {
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
  if (
    d.macvlan &&
    o.macvlan &&
    ((d.macvlan.masterNs === undefined && d.macvlan.master !== o.macvlan.master) || d.macvlan.mode !== o.macvlan.mode)
  )
    return false;
  // The same for ipvlans (mode) and vlans (id); a VRF's table is fixed at creation.
  if (d.ipvlan && o.ipvlan && ((d.ipvlan.masterNs === undefined && d.ipvlan.master !== o.ipvlan.master) || d.ipvlan.mode !== o.ipvlan.mode))
    return false;
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
export function linkChanges(d: Link, o: Link): Partial<Link> {
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
export const createdPeer = (d: Link, creator: Link): Link => ({
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
export const movedLink = (d: Link, source: Link | undefined): Link => ({
  ...(source ?? { kind: d.kind }),
  ns: d.ns,
  name: d.name,
  up: false,
  master: null,
  hairpin: false,
});

/** The desired links that plan moves: `from` set, not at their place yet. By the source's key. */
export function movesOf(links: readonly Link[], seen: ReadonlyMap<string, Link>): Map<string, Link> {
  const out = new Map<string, Link>();
  for (const d of links) {
    if (!d.from || seen.has(linkKey(d)) || linkKey(d.from) === linkKey(d)) continue;
    out.set(linkKey(d.from), d);
  }
  return out;
}

/** What `ip link add link M name X netns NS type macvlan [address A] [mtu N]` leaves the new link with. */
export const createdAcross = (d: Link): Link => ({
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

export interface VethPairs {
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
 * end in the host namespace (`ip link add vethX type veth peer name eth0 netns POD` makes the container's end
 * right where it belongs, and the host's batch, shared by the concurrent ADDs of a wave, makes every pair
 * with no process entering a container), else the end with the smaller key; if the chosen end does not name
 * its peer, its link.add gets a veth spec built from the other end. So veth creation always goes from the
 * host towards a container (or from the smaller namespace towards the larger), and namespace order has no
 * cycles.
 */
export function vethPairs(links: readonly Link[], want: ReadonlyMap<string, Link>): VethPairs {
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
    const pFirst = p.ns === HOST && l.ns !== HOST ? true : l.ns === HOST && p.ns !== HOST ? false : pk < k;
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
