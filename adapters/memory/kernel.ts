// The in-memory twin of the kernel adapter: a KernelState (foreign objects welcome) that `apply` changes with
// the kernel's semantics and `observe` reads back the way the Linux adapter does. Where it is cheap, it fails
// like the kernel would (an address on a missing device, a route via a missing device, a veth peer name that
// is taken, a chain still referenced); deletions of things already gone succeed, as in the Linux adapter.
//
// Kernel side effects it models: deleting a link deletes its veth peer, macvlans, ipvlans, vlans and vxlans on
// it, and every address, route, neighbour, fdb entry, qdisc and per-device sysctl on those devices (a redirect
// to one is left without a target); ports of a deleted bridge lose their master (and hairpin); an IPv4/IPv6
// address leaving takes routes with that source address. A route through a device that is down is refused
// ("Nexthop device is not up"); taking a link down flushes its routes; entering or leaving a VRF cycles a link
// (routes and IPv6 addresses go). Policy rules: adding one that exists (same source, table and preference) is
// refused as the kernel does ("File exists"); one without a preference gets the kernel's (one below the lowest
// non-zero preference, 32765 when there is none). Not modelled: gateway reachability, bridge MTU/MAC
// inheritance, and the routes the kernel makes itself (an address's prefix route): tests seed those.

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import type {
  Address,
  Fdb,
  IpRule,
  IptFamily,
  IptTable,
  KernelState,
  Link,
  NsRef,
  Op,
  Qdisc,
  Route,
  Sysctl,
  Neighbour,
  TapSpec,
  NftChain,
  NftRule,
  NftSet,
  NftTable,
} from '../../core/kernel/model.ts';
import { createdFrom, emptyKernelState, lowerOf } from '../../core/kernel/model.ts';
import { LINK_KINDS } from '../../core/kernel/link-kinds.ts';
import {
  addrKey,
  BUILTIN_CHAINS,
  chainKey,
  devKey,
  ipRuleKey,
  nftChainKey,
  nftSetKey,
  nftTableKey,
  linkKey,
  neighKey,
  qdiscKey,
  routeKey,
  ruleTarget,
  sysctlDevice,
  sysctlKey,
  type ChainRef,
} from '../../core/kernel/keys.ts';
import { describeOp } from '../../core/kernel/plan.ts';
import { readsFor } from '../kernel/request.ts';
import type { Kernel, KernelError, ObserveRequest } from '../kernel/types.ts';

/** Targets that are not chains (iptables extensions); a jump to anything else must name an existing chain. */
const TARGETS = new Set([
  'ACCEPT',
  'DROP',
  'RETURN',
  'REJECT',
  'QUEUE',
  'NFQUEUE',
  'MASQUERADE',
  'SNAT',
  'DNAT',
  'REDIRECT',
  'NETMAP',
  'MARK',
  'CONNMARK',
  'LOG',
  'NFLOG',
  'NOTRACK',
  'CT',
  'TPROXY',
  'CHECKSUM',
  'TCPMSS',
  'TRACE',
  'CLASSIFY',
  'DSCP',
  'TOS',
  'TTL',
  'HL',
  'AUDIT',
  'SET',
]);

interface ChainRec {
  readonly ref: ChainRef;
  readonly builtin: boolean;
  rules: string[];
}

export interface MemoryKernel extends Kernel {
  /** Everything, as an observer reading all namespaces, tables, the fdb, qdiscs and known sysctls would. */
  state(): KernelState;
  /** Replace the whole state (seed drift, foreign objects). */
  reset(s: KernelState): void;
  /** Apply without the TaskEither wrapper (property tests). Stops at the first failing op, like the adapter. */
  applySync(ops: readonly Op[]): E.Either<KernelError, void>;
  /** Ops applied successfully so far, in order. */
  readonly applied: readonly Op[];
  /** Calls to apply/applySync and to observe, for tests that count round trips. */
  readonly calls: { apply: number; observe: number };
}

class Twin {
  links = new Map<string, Link>();
  addresses = new Map<string, Address>();
  routes = new Map<string, Route>();
  neighbours = new Map<string, Neighbour>();
  fdb: Fdb[] = [];
  chains = new Map<string, ChainRec>();
  sysctls = new Map<string, Sysctl>();
  qdiscs = new Map<string, Qdisc>();
  ipRules: IpRule[] = [];
  /** nftables: tables by key; chains by key, each with its rules (with handles) in order. */
  nftTables = new Map<string, NftTable>();
  nftChains = new Map<string, { chain: NftChain; rules: NftRule[] }>();
  nftSets = new Map<string, NftSet>();
  private nftHandle = 0;
  private macs = 0;

  constructor(s: KernelState) {
    for (const l of s.links) this.links.set(linkKey(l), l);
    for (const a of s.addresses) this.addresses.set(addrKey(a), a);
    for (const r of s.routes) this.routes.set(routeKey(r), r);
    for (const n of s.neighbours) this.neighbours.set(neighKey(n), n);
    this.fdb = [...s.fdb];
    for (const c of s.chains) this.chains.set(chainKey(c), { ref: refOf(c), builtin: BUILTIN_CHAINS.has(c.chain), rules: [...c.rules] });
    for (const r of s.rules) this.chain(refOf(r), true)!.rules.push(r.rule);
    for (const x of s.sysctls) this.sysctls.set(sysctlKey(x), x);
    for (const q of s.qdiscs) this.qdiscs.set(qdiscKey(q), q);
    this.ipRules = [...(s.ipRules ?? [])];
    for (const t of s.nftTables ?? []) this.nftTables.set(nftTableKey(t), t);
    for (const c of s.nftChains ?? []) {
      this.nftChains.set(nftChainKey({ ...c, chain: c.name }), {
        chain: { ...c, rules: [] },
        rules: c.rules.map((r) => ({ ns: c.ns, family: c.family, table: c.table, chain: c.name, ...r, handle: ++this.nftHandle })),
      });
    }
    for (const x of s.nftSets ?? []) this.nftSets.set(nftSetKey(x), x);
    for (const r of s.nftRules ?? []) {
      const rec = this.nftChains.get(nftChainKey(r));
      if (rec && !rec.rules.some((x) => x.handle === r.handle)) rec.rules.push({ ...r, handle: r.handle ?? ++this.nftHandle });
    }
  }

  snapshot(): KernelState {
    const chains = [...this.chains.values()];
    return {
      links: [...this.links.values()],
      addresses: [...this.addresses.values()],
      routes: [...this.routes.values()],
      neighbours: [...this.neighbours.values()],
      fdb: [...this.fdb],
      chains: chains.filter((c) => !c.builtin).map((c) => ({ ...c.ref, rules: [...c.rules] })),
      rules: chains.filter((c) => c.builtin).flatMap((c) => c.rules.map((rule) => ({ ...c.ref, rule }))),
      sysctls: [...this.sysctls.values()],
      qdiscs: [...this.qdiscs.values()],
      // Optional in KernelState: present when the twin holds policy rules.
      ...(this.ipRules.length ? { ipRules: [...this.ipRules] } : {}),
      ...(this.nftTables.size ? this.nftState() : {}),
    };
  }

  private nftState(): Required<Pick<KernelState, 'nftTables' | 'nftChains' | 'nftRules' | 'nftSets'>> {
    const chains = [...this.nftChains.values()];
    return {
      nftTables: [...this.nftTables.values()].map((t) => ({ ns: t.ns, family: t.family, name: t.name })),
      nftChains: chains.map(({ chain, rules }) => {
        const { comment: _c, shared: _s, ...c } = chain;
        return { ...c, rules: rules.map((r) => ({ expr: r.expr, ...(r.comment !== undefined ? { comment: r.comment } : {}) })) };
      }),
      nftRules: chains.flatMap(({ rules }) => rules),
      nftSets: [...this.nftSets.values()],
    };
  }

  /** An nftables step: the chain record, created (in an existing table) when `create`. */
  private nftChain(c: NftChain, create: boolean): { chain: NftChain; rules: NftRule[] } | string {
    if (!this.nftTables.has(nftTableKey({ ns: c.ns, family: c.family, name: c.table })))
      return 'Error: Could not process rule: No such file or directory';
    const k = nftChainKey({ ...c, chain: c.name });
    const rec = this.nftChains.get(k);
    if (rec || !create) return rec ?? 'Error: Could not process rule: No such file or directory';
    const made = { chain: { ...c, rules: [] }, rules: [] };
    this.nftChains.set(k, made);
    return made;
  }

  private nftJumps(ref: { ns: NsRef; family: string; table: string }, expr: readonly unknown[]): string | undefined {
    for (const e of expr) {
      const t =
        (e as { jump?: { target?: string }; goto?: { target?: string } })?.jump?.target ??
        (e as { goto?: { target?: string } })?.goto?.target;
      if (t !== undefined && !this.nftChains.has(nftChainKey({ ...ref, chain: t })))
        return 'Error: Could not process rule: No such file or directory';
    }
    return undefined;
  }

  private mac(): string {
    const n = ++this.macs;
    return `02:fe:00:00:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`;
  }

  /** A chain record; builtin chains exist implicitly. */
  private chain(ref: ChainRef, create = false): ChainRec | undefined {
    const k = chainKey(ref);
    const c = this.chains.get(k);
    if (c || !create) return c ?? (BUILTIN_CHAINS.has(ref.chain) ? this.chain(ref, true) : undefined);
    const rec: ChainRec = { ref: refOf(ref), builtin: BUILTIN_CHAINS.has(ref.chain), rules: [] };
    this.chains.set(k, rec);
    return rec;
  }

  private hasLink = (ns: NsRef, name: string | undefined): boolean => name !== undefined && this.links.has(devKey(ns, name));

  private checkTargets(ref: ChainRef, rules: readonly string[], self?: string): string | undefined {
    for (const r of rules) {
      const t = ruleTarget(r);
      if (t === undefined || TARGETS.has(t) || BUILTIN_CHAINS.has(t)) continue;
      if (t === self) return `line 1 failed: Loop detected in chain ${t}`;
      if (!this.chains.has(chainKey({ ...ref, chain: t }))) return `Couldn't load target \`${t}':No such file or directory`;
    }
    return undefined;
  }

  /** Delete a link and everything the kernel deletes with it. */
  private dropLink(ns: NsRef, name: string): void {
    const k = devKey(ns, name);
    const l = this.links.get(k);
    if (!l) return;
    this.links.delete(k);
    const lost: Address[] = [];
    for (const [ak, a] of this.addresses) if (a.ns === ns && a.dev === name) (lost.push(a), this.addresses.delete(ak));
    for (const [rk, r] of this.routes) if (r.ns === ns && r.dev === name) this.routes.delete(rk);
    for (const [nk, n] of this.neighbours) if (n.ns === ns && n.dev === name) this.neighbours.delete(nk);
    this.fdb = this.fdb.filter((f) => !(f.ns === ns && f.dev === name));
    for (const [qk, q] of this.qdiscs) if (q.ns === ns && q.dev === name) this.qdiscs.delete(qk);
    // A redirect to the device stays as a filter without a target.
    for (const [qk, q] of this.qdiscs) {
      if (q.ns === ns && q.redirect === name) {
        const { redirect: _dangling, ...rest } = q;
        this.qdiscs.set(qk, rest);
      }
    }
    for (const [sk, s] of this.sysctls) if (s.ns === ns && sysctlDevice(s.key) === name) this.sysctls.delete(sk);
    this.lostAddresses(lost);
    for (const [pk, p] of this.links) {
      if (p.ns !== ns || p.master !== name) continue;
      this.links.set(pk, { ...p, master: null, hairpin: false });
      // A VRF's ports leave it as they do by `nomaster`: cycled (see link.set).
      if (l.kind === 'vrf') this.cycle(p);
    }
    if (l.veth) this.dropLink(l.veth.peerNs, l.veth.peer);
    for (const x of [...this.links.values()]) {
      if (x.veth && x.veth.peerNs === ns && x.veth.peer === name) this.dropLink(x.ns, x.name);
      const lower = lowerOf(x);
      if (x.ns === ns && (lower?.master === name || x.vxlan?.dev === name) && lower?.masterNs === undefined) this.dropLink(x.ns, x.name);
      if (lower?.masterNs === ns && lower.master === name) this.dropLink(x.ns, x.name);
    }
  }

  /** A link taken down and up by the kernel (entering or leaving a VRF): its routes and IPv6 addresses go. */
  private cycle(l: Link): void {
    for (const [rk, r] of this.routes) if (r.ns === l.ns && r.dev === l.name) this.routes.delete(rk);
    for (const [ak, a] of this.addresses) if (a.ns === l.ns && a.dev === l.name && a.cidr.includes(':')) this.addresses.delete(ak);
  }

  /**
   * `ip link set dev N netns NS name X`: the link arrives down, without a master; what was on it (addresses,
   * routes, neighbours, fdb entries, qdiscs, per-device sysctls) and its bridge ports stay behind and go. Its
   * veth peer now names it in its new place.
   */
  private moveLink(ns: NsRef, name: string, toNs: NsRef, newName: string): string | undefined {
    const k = devKey(ns, name);
    const l = this.links.get(k);
    if (!l) return `Cannot find device "${name}"`;
    if (l.kind === 'loopback') return 'RTNETLINK answers: Invalid argument';
    if (this.hasLink(toNs, newName) && devKey(toNs, newName) !== k) return 'RTNETLINK answers: File exists';
    const lost: Address[] = [];
    for (const [ak, a] of this.addresses) if (a.ns === ns && a.dev === name) (lost.push(a), this.addresses.delete(ak));
    for (const [rk, r] of this.routes) if (r.ns === ns && r.dev === name) this.routes.delete(rk);
    for (const [nk, n] of this.neighbours) if (n.ns === ns && n.dev === name) this.neighbours.delete(nk);
    this.fdb = this.fdb.filter((f) => !(f.ns === ns && f.dev === name));
    for (const [qk, q] of this.qdiscs) if (q.ns === ns && q.dev === name) this.qdiscs.delete(qk);
    for (const [sk, s] of this.sysctls) if (s.ns === ns && sysctlDevice(s.key) === name) this.sysctls.delete(sk);
    this.lostAddresses(lost);
    for (const [pk, p] of this.links) if (p.ns === ns && p.master === name) this.links.set(pk, { ...p, master: null, hairpin: false });
    this.links.delete(k);
    this.links.set(devKey(toNs, newName), { ...l, ns: toNs, name: newName, up: false, master: null, hairpin: false });
    for (const [pk, p] of this.links) {
      if (p.veth && p.veth.peerNs === ns && p.veth.peer === name)
        this.links.set(pk, { ...p, veth: { ...p.veth, peerNs: toNs, peer: newName } });
    }
    return undefined;
  }

  /**
   * What Linux (6.x, checked with iproute2) does when addresses go: an IPv4 address that is on no device of
   * its namespace any more takes the IPv4 routes with that source address with it; an IPv6 one only clears
   * that source from its routes. A device left without IPv4 addresses loses its IPv4 routes (`devs`: the
   * devices that lost addresses and still exist).
   */
  private lostAddresses(lost: readonly Address[], devs: readonly string[] = []): void {
    const ipOf = (cidr: string): string => cidr.split('/')[0]!.toLowerCase();
    for (const a of lost) {
      const ip = ipOf(a.cidr);
      const still = [...this.addresses.values()].some((b) => b.ns === a.ns && ipOf(b.cidr) === ip);
      if (still) continue;
      for (const [rk, r] of this.routes) {
        if (r.ns !== a.ns || r.src?.toLowerCase() !== ip) continue;
        if (!ip.includes(':')) this.routes.delete(rk);
        else {
          const { src: _cleared, ...rest } = r;
          this.routes.set(rk, rest);
        }
      }
    }
    for (const a of lost) {
      if (a.cidr.includes(':') || !devs.includes(a.dev)) continue;
      const v4 = [...this.addresses.values()].some((b) => b.ns === a.ns && b.dev === a.dev && !b.cidr.includes(':'));
      if (v4) continue;
      for (const [rk, r] of this.routes) if (r.ns === a.ns && r.dev === a.dev && !r.dst.includes(':')) this.routes.delete(rk);
    }
  }

  /** One op; a string is the kernel's complaint. */
  step(o: Op): string | undefined {
    switch (o.op) {
      case 'link.add': {
        const l = o.link;
        if (this.hasLink(l.ns, l.name)) return 'RTNETLINK answers: File exists';
        if (!LINK_KINDS[l.kind].creatable) return `cannot create a link of kind ${l.kind}`;
        if ((l.kind === 'ipvlan' || l.kind === 'vlan') && (!l[l.kind] || !this.hasLink(createdFrom(l), lowerOf(l)!.master)))
          return `Cannot find device "${lowerOf(l)?.master ?? ''}"`;
        if (l.kind === 'vlan' && !(Number.isInteger(l.vlan!.id) && l.vlan!.id >= 0 && l.vlan!.id <= 4094))
          return `Error: argument "${l.vlan!.id}" is wrong: invalid VLAN id`;
        if (l.kind === 'vrf' && !l.vrf) return 'Error: VRF table id is missing.';
        if (l.kind === 'tap' && !l.tap) return 'tap without tap settings';
        if (l.kind === 'veth') {
          if (!l.veth) return 'veth without a peer';
          if (this.hasLink(l.veth.peerNs, l.veth.peer)) return 'RTNETLINK answers: File exists';
        }
        if (l.kind === 'macvlan' && (!l.macvlan || !this.hasLink(createdFrom(l), l.macvlan.master)))
          return `Cannot find device "${l.macvlan?.master ?? ''}"`;
        if (l.kind === 'vxlan' && (!l.vxlan || (l.vxlan.dev !== undefined && !this.hasLink(l.ns, l.vxlan.dev))))
          return `Cannot find device "${l.vxlan?.dev ?? ''}"`;
        // Made across namespaces, a link has only its create-time settings (as `ip link add ... netns`).
        const across = createdFrom(l) !== l.ns;
        const err = across ? undefined : this.checkMaster(l.ns, l.master, l.hairpin);
        if (err) return err;
        const lowerLink = l.kind === 'ipvlan' || l.kind === 'vlan' ? this.links.get(devKey(createdFrom(l), lowerOf(l)!.master)) : undefined;
        const base: Link = {
          ns: l.ns,
          name: l.name,
          kind: l.kind,
          // An ipvlan or vlan has its master's MTU and MAC unless told otherwise.
          mtu: l.mtu ?? lowerLink?.mtu ?? (l.kind === 'vxlan' ? 1450 : 1500),
          mac: (l.mac ?? lowerLink?.mac ?? this.mac()).toLowerCase(),
          up: !across && !!l.up,
          master: across ? null : (l.master ?? null),
          promisc: !across && !!l.promisc,
          allmulti: !across && !!l.allmulti,
          txqlen: l.txqlen ?? 1000,
          hairpin: !across && !!l.hairpin && !!l.master,
          ...(l.alias && !across ? { alias: l.alias } : {}),
          ...(l.veth ? { veth: { peer: l.veth.peer, peerNs: l.veth.peerNs } } : {}),
          ...(l.vxlan ? { vxlan: l.vxlan } : {}),
          ...(l.kind === 'bridge' ? { bridge: { vlanFiltering: !!l.bridge?.vlanFiltering } } : {}),
          ...(l.macvlan ? { macvlan: l.macvlan } : {}),
          ...(l.ipvlan ? { ipvlan: l.ipvlan } : {}),
          ...(l.vlan ? { vlan: l.vlan } : {}),
          ...(l.vrf ? { vrf: l.vrf } : {}),
          // The kernel does not report the label a tap was made under.
          ...(l.tap ? { tap: tapAsSeen(l.tap) } : {}),
        };
        this.links.set(linkKey(l), base);
        if (l.veth) {
          const peer: Link = {
            ns: l.veth.peerNs,
            name: l.veth.peer,
            kind: 'veth',
            mtu: 1500,
            mac: (l.veth.peerMac ?? this.mac()).toLowerCase(),
            up: false,
            master: null,
            promisc: false,
            allmulti: false,
            txqlen: 1000,
            hairpin: false,
            veth: { peer: l.name, peerNs: l.ns },
          };
          this.links.set(linkKey(peer), peer);
        }
        return undefined;
      }
      case 'link.set': {
        const k = linkKey(o.link);
        const l = this.links.get(k);
        if (!l) return `Cannot find device "${o.link.name}"`;
        const c = o.changes;
        const master = c.master !== undefined ? c.master : l.master;
        const reenslaved = c.master !== undefined && (c.master ?? null) !== (l.master ?? null);
        const hairpin = c.hairpin !== undefined ? c.hairpin : reenslaved ? false : l.hairpin;
        if (c.master !== undefined) {
          const err = this.checkMaster(l.ns, c.master, false);
          if (err) return err;
        }
        if (hairpin && !master) return 'Error: hairpin mode needs a bridge port';
        if (c.bridge !== undefined && l.kind !== 'bridge') return `${l.name} is not a bridge`;
        const { alias: _old, ...rest } = l;
        const alias = c.alias !== undefined ? c.alias : l.alias;
        this.links.set(k, {
          ...rest,
          ...(alias ? { alias } : {}),
          ...(c.mtu !== undefined ? { mtu: c.mtu } : {}),
          ...(c.mac !== undefined ? { mac: c.mac.toLowerCase() } : {}),
          ...(c.up !== undefined ? { up: c.up } : {}),
          ...(c.promisc !== undefined ? { promisc: c.promisc } : {}),
          ...(c.allmulti !== undefined ? { allmulti: c.allmulti } : {}),
          ...(c.txqlen !== undefined ? { txqlen: c.txqlen } : {}),
          ...(c.bridge !== undefined ? { bridge: { vlanFiltering: !!c.bridge.vlanFiltering } } : {}),
          master: master ?? null,
          hairpin: !!hairpin && !!master,
        });
        // Taking a link down flushes the routes through it. Entering or leaving a VRF cycles the link: its routes
        // go, and so do its IPv6 addresses (keep_addr_on_down is off by default).
        const isVrf = (m: string | null | undefined): boolean => !!m && this.links.get(devKey(l.ns, m))?.kind === 'vrf';
        if (reenslaved && (isVrf(c.master) || isVrf(l.master))) this.cycle(l);
        else if (c.up === false && l.up) for (const [rk, r] of this.routes) if (r.ns === l.ns && r.dev === l.name) this.routes.delete(rk);
        return undefined;
      }
      case 'link.move':
        return this.moveLink(o.ns, o.name, o.toNs, o.newName);
      case 'link.del':
        if (this.links.get(devKey(o.ns, o.name))?.kind === 'loopback') return 'RTNETLINK answers: Operation not supported';
        this.dropLink(o.ns, o.name);
        return undefined;
      case 'addr.add':
        if (!this.hasLink(o.addr.ns, o.addr.dev)) return `Cannot find device "${o.addr.dev}"`;
        if (!this.addresses.has(addrKey(o.addr))) this.addresses.set(addrKey(o.addr), o.addr);
        return undefined;
      case 'addr.del':
        if (this.addresses.delete(addrKey(o.addr))) this.lostAddresses([o.addr], [o.addr.dev]);
        return undefined;
      case 'route.replace':
        if (o.route.dev !== undefined) {
          const dev = this.links.get(devKey(o.route.ns, o.route.dev));
          if (!dev) return `Cannot find device "${o.route.dev}"`;
          if (!dev.up) return 'Error: Nexthop device is not up.';
        }
        this.routes.set(routeKey(o.route), o.route);
        return undefined;
      case 'route.del':
        this.routes.delete(routeKey(o.route));
        return undefined;
      case 'neigh.replace':
        if (!this.hasLink(o.neigh.ns, o.neigh.dev)) return `Cannot find device "${o.neigh.dev}"`;
        this.neighbours.set(neighKey(o.neigh), o.neigh);
        return undefined;
      case 'neigh.del':
        this.neighbours.delete(neighKey(o.neigh));
        return undefined;
      case 'fdb.replace': {
        const f = o.fdb;
        if (!this.hasLink(f.ns, f.dev)) return `Cannot find device "${f.dev}"`;
        const i = this.fdb.findIndex((g) => g.ns === f.ns && g.dev === f.dev && g.mac.toLowerCase() === f.mac.toLowerCase());
        if (i >= 0) this.fdb[i] = f;
        else this.fdb.push(f);
        return undefined;
      }
      case 'fdb.del': {
        const f = o.fdb;
        const i = this.fdb.findIndex(
          (g) =>
            g.ns === f.ns && g.dev === f.dev && g.mac.toLowerCase() === f.mac.toLowerCase() && g.dst.toLowerCase() === f.dst.toLowerCase(),
        );
        if (i >= 0) this.fdb.splice(i, 1);
        return undefined;
      }
      case 'chain.sync': {
        const c = o.chain;
        if (BUILTIN_CHAINS.has(c.chain)) return `cannot rewrite builtin chain ${c.chain}`;
        const rec = this.chain(c, true)!;
        const err = this.checkTargets(c, c.rules, c.chain);
        if (err) return err;
        rec.rules = [...c.rules];
        return undefined;
      }
      case 'chain.del': {
        const k = chainKey(o);
        const rec = this.chains.get(k);
        if (!rec) return undefined;
        if (rec.builtin) return `cannot delete builtin chain ${o.chain}`;
        for (const [ck, c] of this.chains) {
          if (ck === k || c.ref.ns !== o.ns || c.ref.family !== o.family || c.ref.table !== o.table) continue;
          if (c.rules.some((r) => ruleTarget(r) === o.chain)) return `CHAIN_DEL failed (Device or resource busy): chain ${o.chain}`;
        }
        this.chains.delete(k);
        return undefined;
      }
      case 'chain.add':
        // iptables-restore fails on `-N` of an existing chain and the adapter runs it again without: a no-op.
        this.chain(o, true);
        return undefined;
      case 'rule.add': {
        const rec = this.chain(o.rule);
        if (!rec) return 'No chain/target/match by that name.';
        const err = this.checkTargets(o.rule, [o.rule.rule], o.rule.chain);
        if (err) return err;
        if (o.rule.position === 'head') rec.rules.unshift(o.rule.rule);
        else rec.rules.push(o.rule.rule);
        return undefined;
      }
      case 'rule.del': {
        const rec = this.chains.get(chainKey(o.rule));
        const i = rec ? rec.rules.indexOf(o.rule.rule) : -1;
        if (rec && i >= 0) rec.rules.splice(i, 1);
        return undefined;
      }
      case 'sysctl.set': {
        const dev = sysctlDevice(o.sysctl.key);
        if (dev !== undefined && !this.hasLink(o.sysctl.ns, dev)) return `sh: can't create ${o.sysctl.key}: No such file or directory`;
        this.sysctls.set(sysctlKey(o.sysctl), o.sysctl);
        return undefined;
      }
      case 'qdisc.replace':
        if (!this.hasLink(o.qdisc.ns, o.qdisc.dev)) return `Cannot find device "${o.qdisc.dev}"`;
        if (o.qdisc.redirect !== undefined && !this.hasLink(o.qdisc.ns, o.qdisc.redirect))
          return `Cannot find device "${o.qdisc.redirect}"`;
        this.qdiscs.set(qdiscKey(o.qdisc), o.qdisc);
        return undefined;
      case 'qdisc.del':
        this.qdiscs.delete(qdiscKey(o.qdisc));
        return undefined;
      case 'iprule.add': {
        const r = o.ipRule;
        const same = this.ipRules.filter((x) => x.ns === r.ns && x.family === r.family);
        const lowest = Math.min(...same.map((x) => x.priority ?? 0).filter((p) => p > 0));
        const priority = r.priority ?? (Number.isFinite(lowest) ? lowest - 1 : 32765);
        if (same.some((x) => !x.other && ipRuleKey(x) === ipRuleKey(r) && x.priority === priority)) return 'RTNETLINK answers: File exists';
        this.ipRules.push({ ns: r.ns, family: r.family, src: r.src, table: r.table, priority });
        return undefined;
      }
      case 'iprule.del': {
        const r = o.ipRule;
        const i = this.ipRules.findIndex(
          (x) => !x.other && ipRuleKey(x) === ipRuleKey(r) && (r.priority === undefined || x.priority === r.priority),
        );
        if (i >= 0) this.ipRules.splice(i, 1);
        return undefined;
      }
      case 'nft.table.add': {
        const k = nftTableKey(o.table);
        if (!this.nftTables.has(k)) this.nftTables.set(k, o.table);
        return undefined;
      }
      case 'nft.table.del': {
        const t = { ns: o.ns, family: o.family, name: o.name };
        this.nftTables.delete(nftTableKey(t));
        for (const [k, c] of this.nftChains)
          if (c.chain.ns === o.ns && c.chain.family === o.family && c.chain.table === o.name) this.nftChains.delete(k);
        for (const [k, x] of this.nftSets) if (x.ns === o.ns && x.family === o.family && x.table === o.name) this.nftSets.delete(k);
        return undefined;
      }
      case 'nft.set.add': {
        if (!this.nftTables.has(nftTableKey({ ns: o.set.ns, family: o.set.family, name: o.set.table })))
          return 'Error: Could not process rule: No such file or directory';
        const had = this.nftSets.get(nftSetKey(o.set));
        this.nftSets.set(nftSetKey(o.set), { ...o.set, elements: [...new Set([...(had?.elements ?? []), ...o.set.elements])] });
        return undefined;
      }
      case 'nft.set.elements': {
        const had = this.nftSets.get(nftSetKey(o.set));
        if (!had) return 'Error: Could not process rule: No such file or directory';
        const del = new Set(o.del);
        this.nftSets.set(nftSetKey(o.set), { ...had, elements: [...new Set([...had.elements.filter((e) => !del.has(e)), ...o.add])] });
        return undefined;
      }
      case 'nft.chain.add': {
        const rec = this.nftChain(o.chain, true);
        return typeof rec === 'string' ? rec : undefined;
      }
      case 'nft.chain.sync': {
        for (const r of o.chain.rules) {
          const bad = this.nftJumps(o.chain, r.expr);
          if (bad) return bad;
        }
        const rec = this.nftChain(o.chain, true);
        if (typeof rec === 'string') return rec;
        rec.chain = { ...o.chain, rules: [] };
        rec.rules = o.chain.rules.map((r) => ({
          ns: o.chain.ns,
          family: o.chain.family,
          table: o.chain.table,
          chain: o.chain.name,
          ...r,
          handle: ++this.nftHandle,
        }));
        return undefined;
      }
      case 'nft.chain.del': {
        const k = nftChainKey(o);
        if (!this.nftChains.has(k)) return undefined;
        for (const c of this.nftChains.values())
          if (c.rules.some((r) => this.jumpsTo(r, o.chain) && r.table === o.table && r.ns === o.ns))
            return 'Error: Could not process rule: Device or resource busy';
        this.nftChains.delete(k);
        return undefined;
      }
      case 'nft.rule.add': {
        const rec = this.nftChain({ ns: o.rule.ns, family: o.rule.family, table: o.rule.table, name: o.rule.chain, rules: [] }, false);
        if (typeof rec === 'string') return rec;
        const bad = this.nftJumps(o.rule, o.rule.expr);
        if (bad) return bad;
        const { handle: _h, ...r } = o.rule;
        rec.rules.push({ ...r, handle: ++this.nftHandle });
        return undefined;
      }
      case 'nft.rule.del': {
        const rec = this.nftChains.get(nftChainKey(o.rule));
        const i = rec ? rec.rules.findIndex((r) => r.handle === o.rule.handle) : -1;
        if (rec && i >= 0) rec.rules.splice(i, 1);
        return undefined;
      }
    }
  }

  private jumpsTo(r: NftRule, chain: string): boolean {
    return r.expr.some((e) => {
      const x = e as { jump?: { target?: string }; goto?: { target?: string } } | null;
      return x?.jump?.target === chain || x?.goto?.target === chain;
    });
  }

  private checkMaster(ns: NsRef, master: string | null | undefined, hairpin: boolean | undefined): string | undefined {
    if (master === undefined || master === null) return hairpin ? 'Error: hairpin mode needs a bridge port' : undefined;
    const m = this.links.get(devKey(ns, master));
    if (!m) return `Cannot find device "${master}"`;
    if (m.kind !== 'bridge' && m.kind !== 'vrf') return `Error: Device does not allow enslaving to a master (${master} is a ${m.kind}).`;
    return undefined;
  }
}

const refOf = (c: ChainRef): ChainRef => ({ ns: c.ns, family: c.family, table: c.table, chain: c.chain });

export function memoryKernel(initial: KernelState = emptyKernelState()): MemoryKernel {
  let twin = new Twin(initial);
  const applied: Op[] = [];
  const calls = { apply: 0, observe: 0 };

  const applySync = (ops: readonly Op[]): E.Either<KernelError, void> => {
    calls.apply++;
    for (const o of ops) {
      const why = twin.step(o);
      if (why !== undefined) return E.left({ kind: 'kernel', msg: `failed to ${describeOp(o)}: ${why}` });
      applied.push(o);
    }
    return E.right(undefined);
  };

  const observe = (req: ObserveRequest): KernelState => {
    calls.observe++;
    const s = twin.snapshot();
    const reads = new Map(readsFor(req).map((r) => [r.ns, r]));
    const inNs = <T extends { ns: NsRef }>(xs: readonly T[]): T[] => xs.filter((x) => reads.has(x.ns));
    const nftRead = (ns: NsRef, family: string, name: string): boolean =>
      !!reads.get(ns)?.nftTables.some((t) => t.family === family && t.name === name);
    const tableRead = (x: { ns: NsRef; family: IptFamily; table: IptTable }): boolean => {
      const tables = reads.get(x.ns)?.iptables.get(x.family);
      return tables !== undefined && (tables.length === 0 || tables.includes(x.table));
    };
    return {
      links: inNs(s.links),
      addresses: inNs(s.addresses),
      routes: inNs(s.routes),
      neighbours: inNs(s.neighbours),
      fdb: s.fdb.filter((f) => reads.get(f.ns)?.fdb),
      chains: s.chains.filter(tableRead),
      rules: s.rules.filter(tableRead),
      sysctls: s.sysctls.filter((x) => reads.get(x.ns)?.sysctls.includes(x.key)),
      // Redirects are read only on the devices asked for, as the Linux adapter does.
      qdiscs: s.qdiscs
        .filter((q) => reads.get(q.ns)?.qdiscs)
        .map((q) => {
          if (q.redirect === undefined || reads.get(q.ns)?.filters.includes(q.dev)) return q;
          const { redirect: _unread, ...rest } = q;
          return rest;
        }),
      ...([...reads.values()].some((r) => r.ipRules) ? { ipRules: (s.ipRules ?? []).filter((r) => reads.get(r.ns)?.ipRules) } : {}),
      ...([...reads.values()].some((r) => r.nftTables.length)
        ? {
            nftTables: (s.nftTables ?? []).filter((t) => nftRead(t.ns, t.family, t.name)),
            nftChains: (s.nftChains ?? []).filter((c) => nftRead(c.ns, c.family, c.table)),
            nftRules: (s.nftRules ?? []).filter((r) => nftRead(r.ns, r.family, r.table)),
            nftSets: (s.nftSets ?? []).filter((x) => nftRead(x.ns, x.family, x.table)),
          }
        : {}),
    };
  };

  return {
    observe:
      (req): TE.TaskEither<KernelError, KernelState> =>
      () =>
        Promise.resolve(E.right(observe(req))),
    apply:
      (ops): TE.TaskEither<KernelError, void> =>
      () =>
        Promise.resolve(applySync(ops)),
    // Each part alone, in order: what the Linux adapter's one batch amounts to, part by part.
    applyParts: (parts) => () => Promise.resolve(parts.map(applySync)),
    applySync,
    state: () => twin.snapshot(),
    reset: (s) => {
      twin = new Twin(s);
    },
    applied,
    calls,
  };
}

const tapAsSeen = (t: TapSpec): TapSpec => {
  const { selinuxContext: _unreported, ...rest } = t;
  return rest;
};
