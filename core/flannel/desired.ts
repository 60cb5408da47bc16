// What feltd wants in the node's (host) namespace, from its event-log state: the overlay for every remote
// lease, flannel's iptables chains, and subnet.env. `plan` diffs it against what the kernel has.
//
// flannel-io/flannel, as of this writing:
// - vxlan (pkg/backend/vxlan/vxlan.go, device.go, vxlan_network.go): device `flannel.<VNI>` (IPv6:
//   `flannel-v6.<VNI>`), local = the public IP, dev = the underlay interface, dstport, learning/gbp from the
//   config, MTU = (Backend.MTU or the underlay MTU) - 50, the VtepMAC, up, address `<subnet address>/32` (IPv6
//   /128). Per remote vxlan lease: a permanent neighbour (remote subnet address -> VtepMAC), an fdb entry (VtepMAC
//   -> remote public IP), then a route to the remote subnet via the remote subnet address, onlink, on the device
//   (plan orders neighbours and fdb entries before routes, as handleSubnetEvents does). DirectRouting: a plain
//   route via the remote public IP when it is directly reachable (here: inside the underlay CIDR), nothing on
//   the vxlan device. Leases of another backend type are ignored, as flanneld does.
// - host-gw (pkg/backend/hostgw/hostgw.go, route_network.go): a route per remote subnet via the remote public IP
//   on the underlay interface; MTU = the underlay MTU.
// - iptables (pkg/trafficmngr/iptables/iptables.go masqRules/masqIP6Rules/forwardRules, appended in order).
// - subnet.env: FLANNEL_MTU is the device MTU for vxlan, the underlay MTU for host-gw (network.MTU()).

import * as E from 'fp-ts/lib/Either.js';
import { quoteComment } from '../cni/masq.ts';
import { renderWith, type Renderers } from '../netfilter/backend.ts';
import { flannelNftScope, renderOverlayNft, type OverlayFamily, type OverlayRules } from '../netfilter/flannel.ts';
import { contains, formatCIDR, formatIP, overlaps, parseCIDR, parseIP, type CIDR, type Family, type IP } from '../ip/ip.ts';
import { parseMac } from '../ip/mac.ts';
import type { Address, Fdb, IptChain, IptRule, KernelState, Link, Neighbour, OwnershipScope, Route } from '../kernel/model.ts';
import { emptyKernelState, HOST } from '../kernel/model.ts';
import { parseVxlanBackendData, renderSubnetEnv, subnetKey } from './lease.ts';
import type { NodeState, RemoteLease } from './node.ts';
import type { Lease } from './types.ts';

/** vxlan's overhead over an IPv4 underlay, as flannel counts it (encapOverhead). */
const VXLAN_OVERHEAD = 50;
/** Over an IPv6 underlay the outer header is 20 bytes longer. */
const VXLAN_OVERHEAD_V6 = 70;
const KUBE_PROXY_MARK = '0x4000/0x4000';
const MASQ_CHAIN = 'FLANNEL-POSTRTG';
const FWD_CHAIN = 'FLANNEL-FWD';

export interface OverlayNode {
  /** The public IPv4 address (lease PublicIP), the vxlan local address; "0.0.0.0" (as flannel's lease has it) when IPv4 is off. */
  readonly publicIP: string;
  /** The public IPv6 address (lease PublicIPv6), flannel-v6.<VNI>'s local address; needed when IPv6 is on. */
  readonly publicIPv6?: string;
  /** The underlay interface and its subnets (e.g. 198.51.100.0/24, 2001:db8::/64): its L2 segment, per family. */
  readonly underlayDev: string;
  readonly underlayCidr?: string;
  readonly underlayCidrV6?: string;
  readonly underlayMtu: number;
  /** The stable VtepMAC of flannel.<VNI> (and flannel-v6.<VNI>). */
  readonly vtepMac: string;
  readonly vtepMacV6?: string;
  /** --ip-masq: FLANNEL-POSTRTG. */
  readonly ipMasq: boolean;
  /**
   * FLANNEL-FWD (flanneld's --iptables-forward-rules, which defaults to true there). Here it defaults to
   * `ipMasq`, so a daemon that observes iptables only with --ip-masq never wants chains it does not look at.
   */
  readonly forwardRules?: boolean;
  /** MASQUERADE with --random-fully (flanneld unless --ip-masq-fully-random-disable). Default true. */
  readonly randomFully?: boolean;
}

export interface Overlay {
  readonly kernel: KernelState;
  readonly scope: OwnershipScope;
  readonly subnetEnv: string;
  /** FLANNEL_MTU: the MTU pods get. */
  readonly mtu: number;
  /** Remote leases left out, and why (another backend type, no VtepMAC, a conflict...). */
  readonly ignored: readonly string[];
}

const vxlanName = (vni: number, family: Family): string => (family === 4 ? `flannel.${vni}` : `flannel-v6.${vni}`);

const masq = (comment: string): string => `-m comment --comment ${quoteComment(comment)}`;

/** flannel's nat rules for one family, as iptables-save prints them. */
function masqRules(cluster: string, pod: string, family: Family, randomFully = true): string[] {
  const c = masq('flanneld masq');
  const rf = randomFully ? ' --random-fully' : '';
  const multicast = family === 4 ? '224.0.0.0/4' : 'ff00::/8';
  return [
    `-m mark --mark ${KUBE_PROXY_MARK} ${c} -j RETURN`,
    `-s ${pod} -d ${cluster} ${c} -j RETURN`,
    `-s ${cluster} -d ${pod} ${c} -j RETURN`,
    `! -s ${cluster} -d ${pod} ${c} -j RETURN`,
    `-s ${cluster} ! -d ${multicast} ${c} -j MASQUERADE${rf}`,
    `! -s ${cluster} -d ${cluster} ${c} -j MASQUERADE${rf}`,
  ];
}

const masqJump = `${masq('flanneld masq')} -j ${MASQ_CHAIN}`;
const forwardJump = `${masq('flanneld forward')} -j ${FWD_CHAIN}`;

/** flannel's filter rules for one family. */
const forwardRules = (cluster: string): string[] => [
  `-s ${cluster} ${masq('flanneld forward')} -j ACCEPT`,
  `-d ${cluster} ${masq('flanneld forward')} -j ACCEPT`,
];

/** The overlay intent in iptables: per family FLANNEL-POSTRTG (--ip-masq) and FLANNEL-FWD, with their jumps. */
function renderOverlayIptables(o: OverlayRules): Pick<KernelState, 'chains' | 'rules'> {
  const chains: IptChain[] = [];
  const rules: IptRule[] = [];
  for (const f of o.families) {
    if (f.ipMasq) {
      chains.push({
        ns: o.ns,
        family: f.family,
        table: 'nat',
        chain: MASQ_CHAIN,
        rules: masqRules(f.cluster, f.pod, f.family, f.randomFully),
      });
      rules.push({ ns: o.ns, family: f.family, table: 'nat', chain: 'POSTROUTING', rule: masqJump });
    }
    if (f.forwardRules) {
      chains.push({ ns: o.ns, family: f.family, table: 'filter', chain: FWD_CHAIN, rules: forwardRules(f.cluster) });
      rules.push({ ns: o.ns, family: f.family, table: 'filter', chain: 'FORWARD', rule: forwardJump });
    }
  }
  return { chains, rules };
}

/** The overlay intent's renderers: every backend, compiler-checked. */
const OVERLAY_RENDERERS = {
  iptables: renderOverlayIptables,
  nftables: renderOverlayNft,
} satisfies Renderers<OverlayRules>;

interface FamilyView {
  readonly family: Family;
  readonly network: CIDR;
  readonly own: CIDR;
  readonly publicIP: string;
  readonly underlay: CIDR | undefined;
  readonly vtepMac: string | undefined;
}

const remoteSubnet = (r: RemoteLease, family: Family): CIDR | undefined => {
  const c = parseCIDR((family === 4 ? r.subnet : r.ipv6Subnet) ?? '');
  return c && c.ip.family === family ? c : undefined;
};
const remotePublic = (r: RemoteLease, family: Family): string | undefined => {
  const s = family === 4 ? r.attrs.PublicIP : (r.attrs.PublicIPv6 ?? undefined);
  const a = s ? parseIP(s) : undefined;
  return a && a.family === family && a.value !== 0n ? formatIP(a) : undefined;
};
/** What one remote lease says for one family, parsed once per lease object (see OverlayCache). */
interface RemoteView {
  readonly sn: CIDR | undefined;
  readonly pub: string | undefined;
  readonly pubIP: IP | undefined;
  readonly dst: string;
  readonly gw: string;
  readonly data: E.Either<string, { vni: number; vtepMac: string }>;
  /** Where the lease sits for one node context (see Placed): kept while the context stays the same. */
  placed?: Placed;
}
/**
 * What a remote lease gives in one context (backend, devices, network, own subnet, underlay segment): the
 * containment tests (BigInt arithmetic) and the kernel objects, made once and handed out again by every
 * later resync in that context, instead of 30,000 fresh objects per resync at 10,000 nodes.
 */
interface Placed {
  readonly ctx: string;
  readonly inNetwork: boolean;
  readonly inOwn: boolean;
  readonly onSegment: boolean;
  route?: Route;
  neighbour?: Neighbour;
  fdb?: Fdb;
}
/**
 * The parses and kernel objects of remote leases, by lease object. Lease objects are immutable and keep their
 * identity across states that did not change them (foldTable copies only the rows an event touches), so a
 * resync over 10,000 leases with one cache parses only the ones that changed. The caller owns it (feltd keeps
 * one for its life); without one, desiredOverlay starts from nothing.
 */
export interface OverlayCache {
  readonly leases: WeakMap<RemoteLease, { 4?: RemoteView; 6?: RemoteView }>;
}
export const overlayCache = (): OverlayCache => ({ leases: new WeakMap() });

function view(cache: OverlayCache, r: RemoteLease, family: Family): RemoteView {
  let byFamily = cache.leases.get(r);
  if (!byFamily) cache.leases.set(r, (byFamily = {}));
  const hit = byFamily[family];
  if (hit) return hit;
  const sn = remoteSubnet(r, family);
  const pub = remotePublic(r, family);
  const v: RemoteView = {
    sn,
    pub,
    pubIP: pub ? parseIP(pub) : undefined,
    dst: sn ? formatCIDR(sn) : '',
    gw: sn ? formatIP(sn.ip) : '',
    data: parseVxlanBackendData(family === 4 ? r.attrs.BackendData : r.attrs.BackendV6Data),
  };
  byFamily[family] = v;
  return v;
}

const who = (r: RemoteLease): string =>
  `node ${r.attrs.PublicIP !== '0.0.0.0' ? r.attrs.PublicIP : (r.attrs.PublicIPv6 ?? '?')} (lease ${r.key})`;

/** `xs` sorted by a string key computed once per element (not twice per comparison: 10,000 routes). */
function sortedBy<T>(xs: readonly T[], key: (x: T) => string): T[] {
  const keyed = xs.map((x) => ({ k: key(x), x }));
  keyed.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
  return keyed.map((e) => e.x);
}

/** The host-namespace state feltd wants for its lease and the remote leases it knows. */
export function desiredOverlay(state: NodeState, node: OverlayNode, cache: OverlayCache = overlayCache()): E.Either<string, Overlay> {
  const config = state.config;
  if (!config) return E.left('no network config loaded yet');
  const own = state.ownLease;
  if (!own) return E.left('no subnet lease held yet');
  const be = config.backend;
  const ignored: string[] = [];

  // Per family: the network, our subnet, our public address, the underlay segment.
  const families: FamilyView[] = [];
  for (const family of [4, 6] as const) {
    const enabled = family === 4 ? config.enableIPv4 : config.enableIPv6;
    if (!enabled) continue;
    const fam = family === 4 ? 'IPv4' : 'IPv6';
    const network = parseCIDR((family === 4 ? config.network : config.ipv6Network) ?? '');
    if (!network) return E.left(`network config: ${family === 4 ? 'Network' : 'IPv6Network'} is missing`);
    const ownText = family === 4 ? own.subnet : own.ipv6Subnet;
    const ownC = parseCIDR(ownText ?? '');
    if (!ownC) return E.left(`own lease ${own.key}: no ${fam} subnet although ${fam} is enabled`);
    const pubText = family === 4 ? node.publicIP : node.publicIPv6;
    const pub = pubText ? parseIP(pubText) : undefined;
    if (!pub || pub.family !== family)
      return E.left(`node: ${family === 4 ? 'publicIP' : 'publicIPv6'} ${JSON.stringify(pubText ?? null)} is not an ${fam} address`);
    const ulText = family === 4 ? node.underlayCidr : node.underlayCidrV6;
    const underlay = ulText ? parseCIDR(ulText) : undefined;
    if (ulText && (!underlay || underlay.ip.family !== family))
      return E.left(`node: ${family === 4 ? 'underlayCidr' : 'underlayCidrV6'} "${ulText}" is not an ${fam} CIDR`);
    const macText = family === 4 ? node.vtepMac : node.vtepMacV6;
    const vtepMac = macText ? parseMac(macText) : undefined;
    if (be.type === 'vxlan' && !vtepMac)
      return E.left(`node: ${family === 4 ? 'vtepMac' : 'vtepMacV6'} ${JSON.stringify(macText ?? null)} is not a MAC address`);
    families.push({ family, network, own: ownC, publicIP: formatIP(pub), underlay, vtepMac });
  }
  if (!Number.isInteger(node.underlayMtu) || node.underlayMtu <= 0)
    return E.left(`node: underlayMtu ${node.underlayMtu} is not a positive integer`);

  // Remote leases, newest first so that conflicts (one VtepMAC or subnet address claimed twice) keep the lease
  // renewed last; then in key order for stable output.
  const remotes = Object.values(state.remotes).sort((a, b) =>
    a.expiration > b.expiration ? -1 : a.expiration < b.expiration ? 1 : a.key < b.key ? -1 : 1,
  );

  const k: { links: Link[]; addresses: Address[]; routes: Route[]; neighbours: Neighbour[]; fdb: Fdb[] } = {
    links: [],
    addresses: [],
    routes: [],
    neighbours: [],
    fdb: [],
  };
  const scope: {
    links: { ns: string; name: string }[];
    devices: { ns: string; dev: string }[];
    routeDsts: { ns: string; dev: string; within: string }[];
  } = {
    links: [],
    devices: [],
    routeDsts: [],
  };
  const mtus: number[] = [];
  const overlay: OverlayFamily[] = [];

  for (const f of families) {
    const fam = f.family === 4 ? 'IPv4' : 'IPv6';
    scope.routeDsts.push({ ns: HOST, dev: node.underlayDev, within: formatCIDR(f.network) });
    const base = be.type === 'vxlan' ? (be.mtu ?? node.underlayMtu) : node.underlayMtu;
    const mtu = be.type === 'vxlan' ? base - (f.family === 4 ? VXLAN_OVERHEAD : VXLAN_OVERHEAD_V6) : base;
    mtus.push(mtu);
    const dev = be.type === 'vxlan' ? vxlanName(be.vni, f.family) : node.underlayDev;
    if (be.type === 'vxlan') {
      k.links.push({
        ns: HOST,
        name: dev,
        kind: 'vxlan',
        mtu,
        mac: f.vtepMac!,
        up: true,
        vxlan: { vni: be.vni, local: f.publicIP, port: be.port, learning: be.learning, gbp: be.gbp, dev: node.underlayDev },
      });
      k.addresses.push({
        ns: HOST,
        dev,
        cidr: `${formatIP(f.own.ip)}/${f.family === 4 ? 32 : 128}`,
        ...(f.family === 6 ? { nodad: true } : {}),
      });
    }
    const ctx = `${be.type}${be.type === 'vxlan' && be.directRouting ? '+direct' : ''} ${dev} ${node.underlayDev} ${formatCIDR(f.network)} ${formatCIDR(f.own)} ${f.underlay ? formatCIDR(f.underlay) : '-'}`;
    const usedNeigh = new Set<string>();
    const usedMac = new Map<string, string>();
    const usedDst = new Set<string>([formatCIDR(f.own)]);
    for (const r of remotes) {
      const v = view(cache, r, f.family);
      const sn = v.sn;
      if (!sn) continue; // a single-stack lease of the other family
      const pub = v.pub;
      const skip = (why: string) => ignored.push(`${who(r)}: ${fam}: ${why}`);
      if (r.attrs.BackendType !== be.type) {
        skip(`backend type "${r.attrs.BackendType}" is not ${be.type}`);
        continue;
      }
      if (!pub) {
        skip(`no public ${fam} address`);
        continue;
      }
      if (pub === f.publicIP) {
        skip(`holds this node's public IP ${pub}`);
        continue;
      }
      const len = f.family === 4 ? config.subnetLen : config.ipv6SubnetLen;
      if (sn.prefix !== len) {
        // Refused by the node Decider already (core/flannel/trust.ts); a log recorded before that check, or
        // under another config, may still hold one.
        skip(`${formatCIDR(sn)} is not a /${len}`);
        continue;
      }
      let p = v.placed;
      if (p?.ctx !== ctx) {
        p = {
          ctx,
          inNetwork: contains(f.network, sn.ip),
          inOwn: overlaps(sn, f.own),
          onSegment: !!f.underlay && contains(f.underlay, v.pubIP!),
        };
        v.placed = p;
      }
      if (!p.inNetwork || p.inOwn) {
        skip(`${formatCIDR(sn)} is ${p.inOwn ? "inside this node's subnet" : `outside the network ${formatCIDR(f.network)}`}`);
        continue;
      }
      const dst = v.dst;
      if (usedDst.has(dst)) {
        skip(`${dst} is claimed by a newer lease`);
        continue;
      }
      const onSegment = p.onSegment;
      if (be.type === 'host-gw') {
        if (!onSegment) {
          return E.left(
            `host-gw: ${who(r)} is not on this node's L2 segment ${f.underlay ? formatCIDR(f.underlay) : '(unknown)'} on ${node.underlayDev}; host-gw needs every node on one segment (use vxlan, with DirectRouting for the nodes that share one)`,
          );
        }
        usedDst.add(dst);
        k.routes.push((p.route ??= { ns: HOST, dst, gw: pub, dev: node.underlayDev }));
        continue;
      }
      if (be.directRouting && onSegment) {
        usedDst.add(dst);
        k.routes.push((p.route ??= { ns: HOST, dst, gw: pub, dev: node.underlayDev }));
        continue;
      }
      const data = v.data;
      if (E.isLeft(data)) {
        skip(data.left.replace(/^BackendData/, f.family === 4 ? 'BackendData' : 'BackendV6Data'));
        continue;
      }
      const mac = data.right.vtepMac;
      const gw = v.gw;
      if (usedNeigh.has(gw) || usedMac.has(mac)) {
        skip(
          usedMac.has(mac)
            ? `VtepMAC ${mac} is also claimed by the newer lease ${usedMac.get(mac)}`
            : `subnet address ${gw} is claimed by a newer lease`,
        );
        continue;
      }
      usedDst.add(dst);
      usedNeigh.add(gw);
      usedMac.set(mac, r.key);
      k.neighbours.push((p.neighbour ??= { ns: HOST, dev, ip: gw, lladdr: mac }));
      k.fdb.push((p.fdb ??= { ns: HOST, dev, mac, dst: pub }));
      k.routes.push((p.route ??= { ns: HOST, dst, gw, dev, onlink: true }));
    }

    // The family's masquerade and forward rules, rendered below in the configured backend.
    overlay.push({
      family: f.family,
      cluster: formatCIDR(f.network),
      pod: formatCIDR(f.own),
      ipMasq: node.ipMasq,
      randomFully: node.randomFully ?? true,
      forwardRules: node.forwardRules ?? node.ipMasq,
    });
  }
  // iptables, or flannel's nftables tables (EnableNFTables).
  const netfilter = renderWith(OVERLAY_RENDERERS, state.config.enableNFTables ? 'nftables' : 'iptables', {
    ns: HOST,
    families: overlay,
    remotes,
  });

  if (be.type === 'vxlan') {
    // Both device names are flannel's whether or not their family is on: a family turned off loses its device.
    for (const family of [4, 6] as const) {
      scope.links.push({ ns: HOST, name: vxlanName(be.vni, family) });
      scope.devices.push({ ns: HOST, dev: vxlanName(be.vni, family) });
    }
  }

  const kernel: KernelState = {
    ...emptyKernelState(),
    links: k.links,
    addresses: k.addresses,
    routes: sortedBy(k.routes, (r) => `${r.dst.includes(':') ? 6 : 4} ${r.dst}`),
    neighbours: sortedBy(k.neighbours, (n) => `${n.dev} ${n.ip}`),
    fdb: sortedBy(k.fdb, (x) => `${x.dev} ${x.mac}`),
    ...netfilter,
  };
  const fams = [4, 6] as const;
  const fullScope: OwnershipScope = {
    links: scope.links,
    devices: scope.devices,
    chains: fams.flatMap((family) => [
      { ns: HOST, family, table: 'nat' as const, chain: MASQ_CHAIN },
      { ns: HOST, family, table: 'filter' as const, chain: FWD_CHAIN },
    ]),
    ruleMarkers: fams.flatMap((family) => [
      { ns: HOST, family, table: 'nat' as const, chain: 'POSTROUTING', marker: '-j FLANNEL-' },
      { ns: HOST, family, table: 'filter' as const, chain: 'FORWARD', marker: '-j FLANNEL-' },
    ]),
    routeDsts: scope.routeDsts,
    // Both modes own both: switching EnableNFTables across a restart removes the other mode's rules.
    ...flannelNftScope(HOST),
  };
  const mtu = Math.min(...mtus);
  const v4 = families.find((f) => f.family === 4);
  const v6 = families.find((f) => f.family === 6);
  const subnetEnv = renderSubnetEnv({
    ...(v4 ? { network: formatCIDR(v4.network), subnet: formatCIDR(v4.own) } : {}),
    ...(v6 ? { ipv6Network: formatCIDR(v6.network), ipv6Subnet: formatCIDR(v6.own) } : {}),
    mtu,
    ipMasq: node.ipMasq,
  });
  return E.right({ kernel, scope: fullScope, subnetEnv, mtu, ignored });
}

/** What host-gw needs to know of a remote lease (a Lease, or a RemoteLease from the node state). */
export type HostGwLease = Pick<Lease, 'subnet' | 'ipv6Subnet' | 'attrs'> & { readonly key?: string };

/**
 * host-gw routes each remote subnet via the remote node's public IP, which only works when that IP is on this
 * node's L2 segment (flanneld does not check: its route add fails with "network is unreachable"). Left names
 * every node that is not, per family; leases of other backend types are not host-gw's concern and are skipped,
 * as flanneld's RouteNetwork ignores them.
 */
export function validateHostGw(leases: readonly HostGwLease[], underlayCidr: string, underlayCidrV6?: string): E.Either<string, void> {
  const seg4 = parseCIDR(underlayCidr);
  if (!seg4 || seg4.ip.family !== 4) return E.left(`underlayCidr: "${underlayCidr}" is not an IPv4 CIDR`);
  const seg6 = underlayCidrV6 === undefined ? undefined : parseCIDR(underlayCidrV6);
  if (underlayCidrV6 !== undefined && (!seg6 || seg6.ip.family !== 6))
    return E.left(`underlayCidrV6: "${underlayCidrV6}" is not an IPv6 CIDR`);
  const off: string[] = [];
  for (const l of leases) {
    if (l.attrs.BackendType !== 'host-gw') continue;
    const key = l.key ?? subnetKey(l);
    const check = (pubText: string | null | undefined, seg: CIDR | undefined, family: Family) => {
      const pub = pubText ? parseIP(pubText) : undefined;
      if (!seg) return;
      if (!pub || pub.family !== family || pub.value === 0n) {
        off.push(`node of lease ${key} has no public ${family === 4 ? 'IPv4' : 'IPv6'} address to route via`);
      } else if (!contains(seg, pub)) {
        off.push(`node ${formatIP(pub)} (lease ${key}) is not on this node's L2 segment ${formatCIDR(seg)}`);
      }
    };
    if (l.subnet) check(l.attrs.PublicIP, seg4, 4);
    if (l.ipv6Subnet) check(l.attrs.PublicIPv6, seg6, 6);
  }
  if (off.length === 0) return E.right(undefined);
  return E.left(
    `host-gw: ${off.join('; ')}; host-gw needs every node on one segment (use vxlan, with DirectRouting for the nodes that share one)`,
  );
}
