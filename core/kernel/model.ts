// The kernel as felt sees it: plain records for the objects felt owns, keyed so that desired and observed
// state can be diffed. Both `desired(...)` functions and the kernel adapters' observers produce a KernelState;
// `plan(desired, observed)` turns the difference into Ops that the adapters apply in batches.

/**
 * Which network namespace an object lives in. `HOST` is the namespace the felt process runs in (for a CNI
 * plugin: the runtime's host namespace; for feltd: the node's). Anything else is a path to a netns file
 * (CNI_NETNS), entered with `nsenter --net=PATH`.
 */
export type NsRef = string;
export const HOST: NsRef = '';

/** Every kind felt models: the keys of the one table of kinds (link-kinds.ts). */
export type { LinkKind } from './link-kinds.ts';
import type { LinkKind } from './link-kinds.ts';

interface VethSpec {
  /** The peer's name and namespace; the pair is created from this end's namespace. */
  readonly peer: string;
  readonly peerNs: NsRef;
  /** MAC for the peer end, when it must be fixed (e.g. the host end). */
  readonly peerMac?: string;
}

interface VxlanSpec {
  readonly vni: number;
  /** Local (underlay) address, dotted or IPv6. */
  readonly local?: string;
  readonly port: number;
  readonly learning: boolean;
  readonly gbp: boolean;
  /** Underlay device to bind to. */
  readonly dev?: string;
}

interface BridgeSpec {
  readonly vlanFiltering?: boolean;
}

export interface MacvlanSpec {
  readonly master: string;
  readonly mode: 'bridge' | 'private' | 'vepa' | 'passthru' | 'source';
  /**
   * Where the master is when it is not the link's own namespace (a CNI macvlan: master in the host, link in
   * the pod). The link is then created from the master's namespace straight into its own (`ip link add link M
   * name X netns NS type macvlan`), and configured there.
   */
  readonly masterNs?: NsRef;
}

/** An ipvlan on a lower device (the master); `masterNs` as for a macvlan. */
export interface IpvlanSpec {
  readonly master: string;
  readonly mode: 'l2' | 'l3' | 'l3s';
  readonly masterNs?: NsRef;
}

/** An 802.1Q vlan on a lower device (the master); `masterNs` as for a macvlan. */
interface VlanSpec {
  readonly master: string;
  /** 0-4094. */
  readonly id: number;
  readonly masterNs?: NsRef;
}

/**
 * A persistent tap device (the kernel's tun driver in tap mode), made with `ip tuntap add` in its own namespace.
 * Its flags are fixed at creation (a process attaching to it later may change them).
 */
export interface TapSpec {
  /** IFF_MULTI_QUEUE. */
  readonly multiQueue: boolean;
  /** IFF_VNET_HDR. */
  readonly vnetHdr: boolean;
  /** Packet information header (no IFF_NO_PI). */
  readonly pi: boolean;
  /** The uid / gid allowed to attach (TUNSETOWNER / TUNSETGROUP); undefined: anyone with CAP_NET_ADMIN. */
  readonly owner?: number;
  readonly group?: number;
  /**
   * The SELinux context the creating process runs under (the tun device's label): `ip tuntap add` runs under
   * `runcon`. Create-time only; the kernel does not report it.
   */
  readonly selinuxContext?: string;
}

/** A VRF device: its ports' routes live in `table`. */
interface VrfSpec {
  readonly table: number;
}

/** The lower device of a macvlan, ipvlan or vlan (the links the kernel deletes with their master). */
export const lowerOf = (l: Pick<Link, 'macvlan' | 'ipvlan' | 'vlan'>): { readonly master: string; readonly masterNs?: NsRef } | undefined =>
  l.macvlan ?? l.ipvlan ?? l.vlan;

/** The namespace a link is created from: its master's for a macvlan/ipvlan/vlan made across namespaces, else its own. */
export const createdFrom = (l: Pick<Link, 'ns' | 'macvlan' | 'ipvlan' | 'vlan'>): NsRef => lowerOf(l)?.masterNs ?? l.ns;

export interface Link {
  readonly ns: NsRef;
  readonly name: string;
  readonly kind: LinkKind;
  /** Attributes left undefined are not managed: plan never changes them. */
  readonly mtu?: number;
  readonly mac?: string;
  readonly up?: boolean;
  /** Bridge (or bond) this link is enslaved to; `null` means "must have no master". */
  readonly master?: string | null;
  readonly promisc?: boolean;
  /** IFF_ALLMULTI: receive all multicast packets (`ip link set ... allmulticast on`). */
  readonly allmulti?: boolean;
  /** Transmit queue length in packets (`txqueuelen`). */
  readonly txqlen?: number;
  /** Bridge-port hairpin mode (only meaningful for links with a bridge master). */
  readonly hairpin?: boolean;
  /** IFLA_IFALIAS (`ip link set ... alias A`); '' means none. host-device keeps a device's original name here. */
  readonly alias?: string;
  /**
   * This link is an existing device that is now at `from` (another namespace, another name): plan moves it
   * here (`link.move`: `ip link set dev N netns NS name X`) when it is not here yet. The kernel takes its
   * addresses, routes and per-device sysctls and sets it down on the way; the other attributes travel.
   */
  readonly from?: { readonly ns: NsRef; readonly name: string };
  readonly veth?: VethSpec;
  /**
   * Observed only: a veth whose peer is in a namespace that was not read, named in /run/netns: that name (what
   * `ip -d link show` tells with its link-netnsid). Never desired, never compared.
   */
  readonly peerNetns?: string;
  readonly vxlan?: VxlanSpec;
  readonly bridge?: BridgeSpec;
  readonly macvlan?: MacvlanSpec;
  readonly ipvlan?: IpvlanSpec;
  readonly vlan?: VlanSpec;
  readonly vrf?: VrfSpec;
  readonly tap?: TapSpec;
}

export interface Address {
  readonly ns: NsRef;
  readonly dev: string;
  /** Interface address with its prefix, e.g. "10.22.0.1/16" or "fd00::1/64". */
  readonly cidr: string;
  /** IPv6: skip duplicate address detection. */
  readonly nodad?: boolean;
  /** The kernel adds no prefix route for it (ptp routes through the gateway instead). */
  readonly noprefixroute?: boolean;
}

export interface Route {
  readonly ns: NsRef;
  /** "default" is written as 0.0.0.0/0 or ::/0. */
  readonly dst: string;
  readonly gw?: string;
  readonly dev?: string;
  readonly onlink?: boolean;
  readonly scope?: 'link' | 'host' | 'global';
  readonly table?: number;
  readonly metric?: number;
  readonly mtu?: number;
  readonly src?: string;
}

export interface Neighbour {
  readonly ns: NsRef;
  readonly dev: string;
  readonly ip: string;
  readonly lladdr: string;
}

export interface Fdb {
  readonly ns: NsRef;
  readonly dev: string;
  readonly mac: string;
  /** Remote VTEP address for vxlan devices. */
  readonly dst: string;
}

export type IptFamily = 4 | 6;
export type IptTable = 'filter' | 'nat' | 'mangle' | 'raw';

/**
 * A chain felt owns completely: its rules are exactly `rules`, in order. Rules are written in the canonical
 * form `iptables-save` prints (without the leading `-A CHAIN`), so observed and desired compare as strings.
 */
export interface IptChain {
  readonly ns: NsRef;
  readonly family: IptFamily;
  readonly table: IptTable;
  readonly chain: string;
  readonly rules: readonly string[];
  /**
   * A chain that several owners write into (portmap's CNI-HOSTPORT-DNAT): felt only needs it to exist, so plan
   * creates it with `chain.add` (`-N`, never a flush) when it is missing and never compares its rules (felt's
   * own rules in it are single marked IptRules). `rules` is then empty.
   */
  readonly shared?: boolean;
}

/**
 * A single rule felt owns inside a chain it does not own (e.g. the jump from POSTROUTING into a CNI- chain).
 * Identified by its exact text; placed at the end of the chain (or at the head when `position` is 'head').
 */
export interface IptRule {
  readonly ns: NsRef;
  readonly family: IptFamily;
  readonly table: IptTable;
  readonly chain: string;
  readonly rule: string;
  readonly position?: 'head' | 'tail';
  /**
   * The rule's `-j` target is a chain shared with others (e.g. the firewall plugin's CNI-ADMIN): plan creates
   * it empty when it is missing, and never flushes or deletes it. (A rule's own chain, when it is neither
   * builtin nor desired whole, is created the same way.)
   */
  readonly ensureTarget?: boolean;
}

export interface Sysctl {
  readonly ns: NsRef;
  /** Dotted key, e.g. "net.ipv4.ip_forward". */
  readonly key: string;
  readonly value: string;
}

export interface Qdisc {
  readonly ns: NsRef;
  readonly dev: string;
  readonly kind: 'tbf' | 'ingress';
  /** tbf: rate and burst in bits/bytes as tc takes them. */
  readonly rate?: number;
  readonly burst?: number;
  readonly latencyMs?: number;
  /**
   * ingress: the device (same namespace, e.g. an ifb) that one u32 filter (prio 1, all protocols, match
   * everything) redirects every packet to, `action mirred egress redirect dev X`. Undefined: filters are not
   * managed. Observed only on the devices of desired ingress qdiscs that name one (adapters/kernel/request.ts).
   */
  readonly redirect?: string;
}

/**
 * A policy routing rule (`ip rule`): traffic from `src` looks up `table`. felt makes only this kind (one source
 * selector, action "lookup"); the observer reports every rule, marking the others with `other`, so that a
 * table they use counts as used.
 */
export interface IpRule {
  readonly ns: NsRef;
  readonly family: IptFamily;
  /** Source prefix in canonical form, e.g. "10.22.0.5/32"; `from all` is "0.0.0.0/0" or "::/0". */
  readonly src: string;
  readonly table: number;
  /** The rule's preference. Left undefined in a desired rule: the kernel picks one, and plan does not manage it. */
  readonly priority?: number;
  /** Observed only: the rule has other selectors or another action (to, fwmark, iif, oif, goto ...). Never felt's. */
  readonly other?: boolean;
}

/** nftables: a table's family (`inet` serves IPv4 and IPv6 at once). */
export type NftFamily = 'ip' | 'ip6' | 'inet';

/** A JSON value as `nft -j` reads and prints it: a rule's expressions are kept in this form, never as text. */
export type NftJson = null | boolean | number | string | readonly NftJson[] | { readonly [k: string]: NftJson };

/** An nftables table felt needs to exist (shared: created when missing, never deleted unless owned). */
export interface NftTable {
  readonly ns: NsRef;
  readonly family: NftFamily;
  readonly name: string;
  readonly comment?: string;
}

/** A base chain's hook (`type nat hook postrouting priority 100; policy accept;`). */
export interface NftBase {
  readonly type: 'filter' | 'nat' | 'route';
  readonly hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
  readonly prio: number;
  readonly policy?: 'accept' | 'drop';
}

/** One rule's body: its expressions in `nft -j` form, and its comment. */
export interface NftRuleBody {
  readonly expr: readonly NftJson[];
  readonly comment?: string;
}

/**
 * An nftables chain. Owned (not `shared`): its rules are exactly `rules`, in order (written by add + flush +
 * add rule). Shared: others write into it too; felt only needs it to exist, and its own rules in it are single
 * NftRules. Observed chains carry their rules.
 */
export interface NftChain {
  readonly ns: NsRef;
  readonly family: NftFamily;
  readonly table: string;
  readonly name: string;
  readonly base?: NftBase;
  readonly comment?: string;
  readonly rules: readonly NftRuleBody[];
  readonly shared?: boolean;
}

/**
 * An nftables set of addresses (feltd's remote pod subnets): its elements are exactly `elements`, canonical
 * CIDRs, and change one by one (add element / delete element), never by rewriting the set.
 */
export interface NftSet {
  readonly ns: NsRef;
  readonly family: NftFamily;
  readonly table: string;
  readonly name: string;
  readonly type: 'ipv4_addr' | 'ipv6_addr';
  readonly flags: readonly 'interval'[];
  readonly elements: readonly string[];
}

/** A single rule felt owns in a shared chain, identified by its comment and expressions. */
export interface NftRule extends NftRuleBody {
  readonly ns: NsRef;
  readonly family: NftFamily;
  readonly table: string;
  readonly chain: string;
  /** Observed only: the kernel's handle, by which the rule is deleted. */
  readonly handle?: number;
}

/** Everything felt wants (or sees) in the kernel. Arrays are unordered sets except chain rules. */
export interface KernelState {
  readonly links: readonly Link[];
  readonly addresses: readonly Address[];
  readonly routes: readonly Route[];
  readonly neighbours: readonly Neighbour[];
  readonly fdb: readonly Fdb[];
  readonly chains: readonly IptChain[];
  readonly rules: readonly IptRule[];
  readonly sysctls: readonly Sysctl[];
  readonly qdiscs: readonly Qdisc[];
  /**
   * Policy routing rules. Optional: absent is none (a desired state without rules), and observers report them
   * only when asked (ObserveRequest.ipRules), so callers that never use rules pay nothing.
   */
  readonly ipRules?: readonly IpRule[];
  /**
   * nftables tables, chains and single rules. Optional: absent is none. Observers read the tables that the
   * desired state or the scope names (`nft -j list table`), and report every chain of them (with its rules)
   * and every rule (with its handle) in `nftRules`.
   */
  readonly nftTables?: readonly NftTable[];
  readonly nftChains?: readonly NftChain[];
  readonly nftRules?: readonly NftRule[];
  readonly nftSets?: readonly NftSet[];
}

export const emptyKernelState = (): KernelState => ({
  links: [],
  addresses: [],
  routes: [],
  neighbours: [],
  fdb: [],
  chains: [],
  rules: [],
  sysctls: [],
  qdiscs: [],
});

/**
 * What felt owns, i.e. which observed objects plan may change or delete. Anything outside the scope is left
 * alone even if it is not desired. Desired objects are always in scope.
 */
export interface OwnershipScope {
  /** Links felt owns, by namespace and name. */
  readonly links: readonly { ns: NsRef; name: string }[];
  /** Devices whose routes/addresses/neighbours/fdb entries felt owns entirely (all of them). */
  readonly devices: readonly { ns: NsRef; dev: string }[];
  /** Chains felt owns entirely. */
  readonly chains: readonly { ns: NsRef; family: IptFamily; table: IptTable; chain: string }[];
  /** Chains in which felt owns rules that jump to / mention a marker (e.g. comment or target prefix). */
  readonly ruleMarkers: readonly { ns: NsRef; family: IptFamily; table: IptTable; chain: string; marker: string }[];
  /**
   * Routes on `dev` whose destination lies inside the CIDR `within` (e.g. feltd's routes to remote pod subnets
   * on the underlay device), on a device felt does not otherwise own.
   */
  readonly routeDsts?: readonly { ns: NsRef; dev: string; within: string }[];
  /**
   * Devices whose root and ingress qdiscs (only) felt owns, e.g. the bandwidth plugin's on a host veth that
   * the bridge plugin owns.
   */
  readonly qdiscDevices?: readonly { ns: NsRef; dev: string }[];
  /**
   * Routes felt owns by identity (namespace, table, destination, metric: keys.ts routeKey), on whatever device:
   * exactly these, e.g. the main-table routes the sbr plugin moves into its own table.
   */
  readonly routeIds?: readonly RouteId[];
  /**
   * Policy rules felt owns: plain rules in `ns` from exactly `src` (canonical prefix), to `table` when given.
   * Other rules (the kernel's 0/32766/32767 defaults, anything with more selectors) are never felt's.
   */
  readonly ruleSrcs?: readonly { ns: NsRef; src: string; table?: number }[];
  /** nftables chains felt owns entirely (deleted when not desired). */
  readonly nftChains?: readonly NftChainRef[];
  /**
   * nftables rules felt owns in chains it does not own: those whose comment starts with `comment` (is exactly
   * `comment`, when `exact`: portmap's comment is the container id, a prefix of other ids).
   */
  readonly nftRuleMarkers?: readonly (NftChainRef & { readonly comment: string; readonly exact?: boolean })[];
  /** nftables tables felt owns entirely (deleted, with everything in them, when not desired). */
  readonly nftTables?: readonly { readonly ns: NsRef; readonly family: NftFamily; readonly name: string }[];
}

export interface NftChainRef {
  readonly ns: NsRef;
  readonly family: NftFamily;
  readonly table: string;
  readonly chain: string;
}

/** What identifies a route (keys.ts routeKey): table and metric default as the kernel's do. */
export type RouteId = Pick<Route, 'ns' | 'dst' | 'table' | 'metric'>;

export type Op =
  | { readonly op: 'link.add'; readonly link: Link }
  | { readonly op: 'link.set'; readonly link: Link; readonly changes: Partial<Link> }
  | { readonly op: 'link.del'; readonly ns: NsRef; readonly name: string }
  /** Move an existing link to another namespace under a new name (run in its current namespace). */
  | { readonly op: 'link.move'; readonly ns: NsRef; readonly name: string; readonly toNs: NsRef; readonly newName: string }
  | { readonly op: 'addr.add'; readonly addr: Address }
  | { readonly op: 'addr.del'; readonly addr: Address }
  | { readonly op: 'route.replace'; readonly route: Route }
  | { readonly op: 'route.del'; readonly route: Route }
  | { readonly op: 'neigh.replace'; readonly neigh: Neighbour }
  | { readonly op: 'neigh.del'; readonly neigh: Neighbour }
  | { readonly op: 'fdb.replace'; readonly fdb: Fdb }
  | { readonly op: 'fdb.del'; readonly fdb: Fdb }
  | { readonly op: 'chain.sync'; readonly chain: IptChain }
  | { readonly op: 'chain.del'; readonly ns: NsRef; readonly family: IptFamily; readonly table: IptTable; readonly chain: string }
  /** Create an empty chain that is missing (`-N`); a chain that exists meanwhile is left as it is. */
  | { readonly op: 'chain.add'; readonly ns: NsRef; readonly family: IptFamily; readonly table: IptTable; readonly chain: string }
  | { readonly op: 'rule.add'; readonly rule: IptRule }
  | { readonly op: 'rule.del'; readonly rule: IptRule }
  | { readonly op: 'sysctl.set'; readonly sysctl: Sysctl }
  | { readonly op: 'qdisc.replace'; readonly qdisc: Qdisc }
  | { readonly op: 'qdisc.del'; readonly qdisc: Qdisc }
  | { readonly op: 'iprule.add'; readonly ipRule: IpRule }
  | { readonly op: 'iprule.del'; readonly ipRule: IpRule }
  /** nftables (one `nft -j -f -` transaction per namespace group): create a table, or a chain, when missing. */
  | { readonly op: 'nft.table.add'; readonly table: NftTable }
  | { readonly op: 'nft.table.del'; readonly ns: NsRef; readonly family: NftFamily; readonly name: string }
  | { readonly op: 'nft.chain.add'; readonly chain: NftChain }
  /** Make the chain exist with exactly its rules (add chain, flush chain, add rules). */
  | { readonly op: 'nft.chain.sync'; readonly chain: NftChain }
  | { readonly op: 'nft.chain.del'; readonly ns: NsRef; readonly family: NftFamily; readonly table: string; readonly chain: string }
  | { readonly op: 'nft.rule.add'; readonly rule: NftRule }
  /** Create a set with its elements. */
  | { readonly op: 'nft.set.add'; readonly set: NftSet }
  /** Add and delete elements of an existing set (`set` carries the desired elements, for words). */
  | { readonly op: 'nft.set.elements'; readonly set: NftSet; readonly add: readonly string[]; readonly del: readonly string[] }
  /** Delete an observed rule by its handle. */
  | { readonly op: 'nft.rule.del'; readonly rule: NftRule & { readonly handle: number } };

export const opNs = (o: Op): NsRef => {
  switch (o.op) {
    case 'link.add':
      return createdFrom(o.link);
    case 'link.set':
      return o.link.ns;
    case 'link.del':
    case 'link.move':
    case 'chain.del':
    case 'chain.add':
      return o.ns;
    case 'addr.add':
    case 'addr.del':
      return o.addr.ns;
    case 'route.replace':
    case 'route.del':
      return o.route.ns;
    case 'neigh.replace':
    case 'neigh.del':
      return o.neigh.ns;
    case 'fdb.replace':
    case 'fdb.del':
      return o.fdb.ns;
    case 'chain.sync':
      return o.chain.ns;
    case 'rule.add':
    case 'rule.del':
      return o.rule.ns;
    case 'sysctl.set':
      return o.sysctl.ns;
    case 'qdisc.replace':
    case 'qdisc.del':
      return o.qdisc.ns;
    case 'iprule.add':
    case 'iprule.del':
      return o.ipRule.ns;
    case 'nft.table.add':
      return o.table.ns;
    case 'nft.set.add':
    case 'nft.set.elements':
      return o.set.ns;
    case 'nft.chain.add':
    case 'nft.chain.sync':
      return o.chain.ns;
    case 'nft.table.del':
    case 'nft.chain.del':
      return o.ns;
    case 'nft.rule.add':
    case 'nft.rule.del':
      return o.rule.ns;
    default: {
      const never: never = o;
      return never;
    }
  }
};
