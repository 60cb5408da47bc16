// Why does this kernel object (an address, a route, a neighbour, an fdb entry, an iptables chain or rule, a
// CNI attachment) exist? The answer is a fold of the event log: which allocation, attachment or lease put it
// there, and since when; and, given what the kernel holds now, whether it is there (`felt why`, alias
// `felt explain`). Pure: states and events in, sentences out.

import type { AttachmentDesired } from './audit/attachment.ts';
import type { AttachmentRecord } from './bridge/attachments.ts';
import type { StoredEvent } from './events.ts';
import type { IpamState } from './ipam/decider.ts';
import type { NodeState } from './flannel/node.ts';
import { contains, formatCIDR, formatIP, networkOf, parseCIDR, parseIP, type CIDR } from './ip/ip.ts';
import { parseMac } from './ip/mac.ts';
import { describeRoute, plan } from './kernel/plan.ts';
import { emptyKernelState, type KernelState } from './kernel/model.ts';
import { emptyScope } from './kernel/scope.ts';
import { where } from './kernel/keys.ts';

export interface Views {
  readonly ipam: readonly { readonly network: string; readonly state: IpamState }[];
  readonly nodes: readonly { readonly stream: string; readonly state: NodeState }[];
  /** Recorded bridge attachments, with their desired state when the log gives one (core/audit/attachment.ts). */
  readonly attachments?: readonly { readonly network: string; readonly record: AttachmentRecord; readonly desired?: AttachmentDesired }[];
  /** feltd's desired overlay per node stream, when it can be computed (core/audit/overlay.ts). */
  readonly overlays?: readonly { readonly stream: string; readonly desired: KernelState }[];
}

/** A desired kernel state with a name, for `matchObjects`: "overlay node/198.51.100.11", "attachment mynet c1/eth0". */
export interface Source {
  readonly id: string;
  readonly state: KernelState;
}

const vtepOf = (data: unknown): string | undefined => {
  const m = (data as { VtepMAC?: unknown } | undefined)?.VtepMAC;
  return typeof m === 'string' ? parseMac(m) : undefined;
};

interface Target {
  readonly ip?: CIDR;
  readonly mac?: string;
  /** An iptables chain (CNI-..., FLANNEL-...). */
  readonly chain?: string;
  /** (Part of) an iptables rule as iptables-save prints it: "-s 10.22.0.5/32 ... -j CNI-...". */
  readonly rule?: string;
  /** An nftables table felt writes (flannel-ipv4, cni_plugins_masquerade, ...). */
  readonly nftTable?: string;
  /** A container id, or container/ifname, that an attachment record names. */
  readonly container?: { readonly id: string; readonly ifname?: string };
}

const CHAIN = /^(?:CNI|FLANNEL)-[A-Za-z0-9_-]+$/;
/** The nftables tables felt writes: feltd's (flannel's names) and the plugins' (the reference's, felt's firewall). */
const NFT_TABLES = /^(?:flannel-ipv[46]|cni_plugins_masquerade|cni_hostport|cni_firewall)$/;
const NFT_PLUGIN_TABLES: Readonly<Record<string, string>> = {
  cni_plugins_masquerade:
    "is bridge's and ptp's masquerade with ipMasqBackend nftables (the reference's table): one rule per pod address in masq_checks, its comment the hash of network, ifname and container id",
  cni_hostport:
    "is portmap's with backend nftables (the reference's table): one DNAT rule per mapping in hostports, its comment the container id",
  cni_firewall:
    "is the firewall plugin's with backend nftables (felt's own): the pod's accept rules in pods carry its address prefix as comment",
};
const squash = (s: string): string => s.trim().replace(/\s+/g, ' ');

/** What the object is, in the terms the log speaks: an address, a prefix, a MAC, a chain, a rule, a container. */
function target(object: string, views: Views): Target | undefined {
  const mac = parseMac(object);
  if (mac) return { mac };
  const c = parseCIDR(object);
  if (c) return { ip: c };
  const ip = parseIP(object);
  if (ip) return { ip: { ip, prefix: ip.family === 4 ? 32 : 128 } };
  if (CHAIN.test(object)) return { chain: object };
  if (NFT_TABLES.test(object)) return { nftTable: object };
  if (/^!?\s*-/.test(object.trim()) && object.trim().length > 2) return { rule: squash(object) };
  const [id, ifname] = object.split('/');
  if (id && (views.attachments ?? []).some((a) => a.record.containerId === id && (ifname === undefined || a.record.ifname === ifname))) {
    return { container: { id, ...(ifname !== undefined ? { ifname } : {}) } };
  }
  return undefined;
}

const addrOf = (cidr: string): string => cidr.split('/')[0]!;
const sameIP = (a: string, b: CIDR['ip']): boolean => {
  const x = parseIP(a);
  return !!x && x.family === b.family && x.value === b.value;
};

/** The objects of a desired state that `t` names. */
function matching(t: Target, k: KernelState): KernelState {
  const hostIP = t.ip && t.ip.prefix === (t.ip.ip.family === 4 ? 32 : 128);
  const prefix = t.ip ? formatCIDR(networkOf(t.ip)) : undefined;
  // A host address names itself; a prefix (other than a default route's) names what lies inside it.
  const ipHits = (ip: string): boolean => {
    if (!t.ip) return false;
    if (hostIP) return sameIP(ip, t.ip.ip);
    const a = parseIP(ip);
    return t.ip.prefix > 0 && !!a && a.family === t.ip.ip.family && contains(networkOf(t.ip), a);
  };
  // An interface address is named by itself, or by its subnet (10.22.0.0/24 names 10.22.0.2/24).
  const addrHits = (cidr: string): boolean => {
    if (!t.ip) return false;
    if (hostIP) return sameIP(addrOf(cidr), t.ip.ip);
    const c = parseCIDR(cidr);
    // ...and the vxlan device's address (the subnet's .0 as a /32) by the subnet.
    return !!c && (formatCIDR(networkOf(c)) === prefix || (t.ip.prefix > 0 && sameIP(addrOf(cidr), networkOf(t.ip).ip)));
  };
  const inRule = (r: string): boolean =>
    (!!t.ip && hostIP && new RegExp(`(^| )-[sd] ${formatIP(t.ip.ip).replace(/[.:]/g, (x) => `\\${x}`)}/`).test(r)) ||
    (!!t.chain && new RegExp(`-j ${t.chain}( |$)`).test(r)) ||
    (!!t.rule && squash(r).includes(t.rule.replace(/^-A \S+ /, '')));
  if (t.container) return k;
  const neighbours = k.neighbours.filter((n) => ipHits(n.ip) || (!!t.mac && n.lladdr.toLowerCase() === t.mac));
  // The fdb entry that carries a matched neighbour's MAC to its node belongs to the same remote subnet.
  const viaMac = new Set(neighbours.map((n) => n.lladdr.toLowerCase()));
  return {
    ...emptyKernelState(),
    links: k.links.filter((l) => !!t.mac && l.mac?.toLowerCase() === t.mac),
    addresses: k.addresses.filter((a) => addrHits(a.cidr)),
    routes: k.routes.filter((r) => (!!prefix && r.dst === prefix) || (!!t.ip && hostIP && !!r.gw && sameIP(r.gw, t.ip.ip))),
    neighbours,
    fdb: k.fdb.filter(
      (f) => viaMac.has(f.mac.toLowerCase()) || (!!t.mac && f.mac.toLowerCase() === t.mac) || (!!t.ip && hostIP && sameIP(f.dst, t.ip.ip)),
    ),
    chains: k.chains.filter((c) => c.chain === t.chain || (!!t.rule && c.rules.some(inRule))),
    rules: k.rules.filter((r) => inRule(r.rule)),
  };
}

const isEmpty = (k: KernelState): boolean => Object.values(k).every((v) => !Array.isArray(v) || v.length === 0);

/** The desired objects `object` names, per source (only sources that have some). */
export function matchObjects(object: string, views: Views, sources: readonly Source[]): Source[] {
  const t = target(object, views);
  if (!t) return [];
  return sources
    .filter(
      (s) =>
        !t.container ||
        s.id.endsWith(` ${t.container.id}/${t.container.ifname ?? ''}`) ||
        (!t.container.ifname && s.id.includes(` ${t.container.id}/`)),
    )
    .map((s) => ({ id: s.id, state: matching(t, s.state) }))
    .filter((s) => !isEmpty(s.state));
}

/** Each object of `wanted` in words, with whether the kernel (`observed`) has it now. */
export function presence(wanted: KernelState, observed: KernelState): string[] {
  const out: string[] = [];
  const one = (words: string, ns: string, k: Partial<KernelState>): void => {
    const ops = plan({ ...emptyKernelState(), ...k }, observed, emptyScope());
    out.push(
      ops.length === 0
        ? `the kernel has ${words} now (in ${where(ns)})`
        : `the kernel does NOT have ${words} now (in ${where(ns)}): felt would ${ops.length === 1 ? 'make it' : 'change it'} on a repair`,
    );
  };
  for (const l of wanted.links) one(`${l.kind} ${l.name}${l.mac ? ` with MAC ${l.mac}` : ''}`, l.ns, { links: [l] });
  for (const a of wanted.addresses) one(`address ${a.cidr} on ${a.dev}`, a.ns, { addresses: [a] });
  for (const r of wanted.routes) one(`route ${describeRoute(r)}`, r.ns, { routes: [r] });
  for (const n of wanted.neighbours) one(`neighbour ${n.ip} lladdr ${n.lladdr} on ${n.dev}`, n.ns, { neighbours: [n] });
  for (const f of wanted.fdb) one(`fdb entry ${f.mac} dst ${f.dst} on ${f.dev}`, f.ns, { fdb: [f] });
  for (const c of wanted.chains)
    one(
      `iptables chain ${c.table}/${c.chain}${c.family === 6 ? ' (IPv6)' : ''} with its ${c.rules.length} rule${c.rules.length === 1 ? '' : 's'}`,
      c.ns,
      { chains: [c] },
    );
  for (const r of wanted.rules)
    one(`iptables rule ${r.table}/${r.chain}${r.family === 6 ? ' (IPv6)' : ''} ${r.rule}`, r.ns, { rules: [r] });
  return out;
}

export function explain(object: string, views: Views, history: readonly StoredEvent[]): string[] {
  const t = target(object, views);
  if (!t)
    return [
      `"${object}" is not an IP address, prefix or MAC address, an iptables chain or rule, one of felt's nftables tables, or a container with a recorded attachment`,
    ];
  const out: string[] = [];
  const covers = (cidr: string | undefined): boolean => {
    const c = cidr ? parseCIDR(cidr) : undefined;
    return !!c && !!t.ip && contains(networkOf(c), t.ip.ip) && t.ip.prefix >= c.prefix;
  };

  for (const { network, state } of views.ipam) {
    for (const a of Object.values(state.allocations)) {
      if (t.ip && parseIP(a.ip) && formatIP(parseIP(a.ip)!) === formatIP(t.ip.ip)) {
        out.push(
          `${a.ip} is allocated to container ${a.containerId} interface ${a.ifname} on network "${network}" since ${a.since} (event #${a.position}): the bridge plugin put it on the container interface, with its routes and masquerade chain`,
        );
      }
    }
  }

  for (const { stream, state } of views.nodes) {
    const own = state.ownLease;
    const node = stream.replace(/^node\//, '');
    if (own && (covers(own.subnet) || covers(own.ipv6Subnet))) {
      out.push(
        `${own.subnet ?? own.ipv6Subnet} is this node's (${node}) pod subnet, leased since ${own.since} until ${own.expiration}: pods here get addresses from it; its .0 address sits on the vxlan device`,
      );
    }
    if (own && t.mac && own.vtepMac && parseMac(own.vtepMac) === t.mac) {
      out.push(`${t.mac} is the VtepMAC of this node's (${node}) vxlan device, announced in its lease`);
    }
    for (const r of Object.values(state.remotes)) {
      const mac = vtepOf(r.attrs.BackendData);
      const sub = r.subnet ?? r.ipv6Subnet ?? '';
      const by = `node ${r.attrs.PublicIP} (lease ${r.key}, seen since ${r.since}, last changed ${r.changed})`;
      if (covers(r.subnet) || covers(r.ipv6Subnet)) {
        out.push(
          `on ${node}: the route to ${sub}${mac ? `, the neighbour ${sub.split('/')[0]} -> ${mac} and the fdb entry ${mac} -> ${r.attrs.PublicIP}` : ` via ${r.attrs.PublicIP}`} exist because ${by} holds ${sub}`,
        );
      } else if (t.mac && mac === t.mac) {
        out.push(
          `on ${node}: the fdb entry ${mac} -> ${r.attrs.PublicIP} and the neighbour ${sub.split('/')[0]} -> ${mac} exist because ${by} announces this VtepMAC`,
        );
      } else if (t.ip && t.ip.prefix >= 32 && formatIP(t.ip.ip) === r.attrs.PublicIP) {
        out.push(`on ${node}: ${r.attrs.PublicIP} is the public address of ${by}; fdb entries and routes for ${sub} point at it`);
      }
    }
  }
  out.push(...explainAttachments(t, views, history));
  out.push(...explainOverlayRules(t, views));
  if (out.length === 0 && t.chain && /^CNI-(?:HOSTPORT|DN|SN|MASQ)/.test(t.chain)) {
    out.push(`${t.chain} is written by the portmap plugin, which keeps nothing in felt's log: felt cannot say which attachment it serves`);
  }
  if (out.length === 0) out.push(`nothing in the log accounts for ${object}: felt did not make it (or it was removed)`);

  const needle = t.mac ?? (t.ip ? formatIP(t.ip.ip) : (t.chain ?? t.nftTable ?? t.container?.id ?? object));
  const mentions = history.filter((e) => JSON.stringify(e.data).toLowerCase().includes(needle.toLowerCase()));
  if (mentions.length) {
    out.push('history:');
    for (const e of mentions) out.push(`  #${e.position} ${e.time} ${e.stream} ${e.type}`);
  }
  return out;
}

const recorded = (rec: AttachmentRecord, history: readonly StoredEvent[]): string => {
  const e = [...history]
    .reverse()
    .find((x) => x.type === 'AttachmentRecorded' && (x.data as { hostVeth?: string } | null)?.hostVeth === rec.hostVeth);
  return e ? `, recorded at ${e.time} (event #${e.position})` : '';
};

/** Attachments, their addresses, routes and masquerade chains and rules. */
function explainAttachments(t: Target, views: Views, history: readonly StoredEvent[]): string[] {
  const out: string[] = [];
  for (const { network, record: r, desired: d } of views.attachments ?? []) {
    const who = `container ${r.containerId} interface ${r.ifname} on network "${network}"`;
    const how = `the bridge plugin attached it: veth ${r.hostVeth}${d ? ` on bridge ${d.bridge}` : ''} to ${r.ifname} in ${r.netns}${r.hostNs ? ` (host side in network namespace ${r.hostNs})` : ''}${recorded(r, history)}`;
    if (t.container && t.container.id === r.containerId && (t.container.ifname === undefined || t.container.ifname === r.ifname)) {
      const addrs = d ? d.own.addresses.map((a) => a.cidr) : [];
      out.push(
        `${who}: ${how}${addrs.length ? `; addresses ${addrs.join(', ')}` : ''}${d ? '' : ' (its desired state is not in the log)'}`,
      );
      continue;
    }
    if (!d) continue;
    const m = matching(t, d.own);
    const sh = matching(t, d.shared);
    if (t.ip && m.addresses.length) out.push(`${m.addresses.map((a) => a.cidr).join(', ')} is the address of ${who}: ${how}`);
    for (const rt of m.routes)
      out.push(
        `the route ${describeRoute(rt)} in ${r.netns} is one of ${who}'s routes (ipam routes, or the gateway of isDefaultGateway): ${how}`,
      );
    if (t.ip && sh.addresses.length)
      out.push(
        `${sh.addresses.map((a) => a.cidr).join(', ')} on bridge ${d.bridge} is the gateway address of network "${network}" (isGateway), wanted by ${who} and every other attachment of the network`,
      );
    for (const c of m.chains)
      out.push(
        `the ${c.table} chain ${c.chain}${c.family === 6 ? ' (IPv6)' : ''} is the masquerade chain of ${who} (bridge ipMasq): ${c.rules.map((x) => `[${x}]`).join(' ')}; ${how}`,
      );
    for (const x of m.rules)
      out.push(
        `the ${x.table}/${x.chain} rule "${x.rule}"${x.family === 6 ? ' (IPv6)' : ''} sends traffic from ${who} to its masquerade chain (bridge ipMasq): ${how}`,
      );
  }
  return out;
}

/** feltd's own chains and rules (flannel's FLANNEL-POSTRTG, FLANNEL-FWD and the jumps to them). */
function explainOverlayRules(t: Target, views: Views): string[] {
  if (t.nftTable) {
    const out: string[] = [];
    for (const { stream, desired } of views.overlays ?? []) {
      const node = stream.replace(/^node\//, '');
      for (const x of (desired.nftTables ?? []).filter((x) => x.name === t.nftTable)) {
        const chains = (desired.nftChains ?? []).filter((c) => c.table === x.name).map((c) => `${c.name} (${c.rules.length} rules)`);
        const sets = (desired.nftSets ?? [])
          .filter((c) => c.table === x.name)
          .map((c) => `${c.name} (${c.elements.length} remote pod subnets)`);
        out.push(
          `on ${node}: the nftables table ${x.family} ${x.name} is feltd's (EnableNFTables, flannel's table): ${[...chains, ...sets].join(', ') || 'no chains'}; postrtg masquerades pod traffic leaving the cluster network, forward accepts forwarded pod traffic, the set follows the remote leases`,
        );
      }
    }
    if (out.length === 0 && NFT_PLUGIN_TABLES[t.nftTable]) out.push(`the nftables table ${t.nftTable} ${NFT_PLUGIN_TABLES[t.nftTable]}`);
    return out;
  }
  if (!t.chain && !t.rule) return [];
  const out: string[] = [];
  for (const { stream, desired } of views.overlays ?? []) {
    const m = matching(t, desired);
    const node = stream.replace(/^node\//, '');
    const what = (chain: string): string =>
      chain === 'FLANNEL-POSTRTG'
        ? "masquerades pod traffic leaving the cluster network (feltd --ip-masq, flannel's masqRules)"
        : "accepts forwarded pod traffic (flannel's forward rules)";
    for (const c of m.chains)
      out.push(
        `on ${node}: the ${c.table} chain ${c.chain}${c.family === 6 ? ' (IPv6)' : ''} is feltd's: it ${what(c.chain)}; its rules come from the network config and this node's lease`,
      );
    for (const r of m.rules)
      out.push(
        `on ${node}: the ${r.table}/${r.chain} rule "${r.rule}"${r.family === 6 ? ' (IPv6)' : ''} is feltd's jump into ${r.rule.split('-j ').pop()}`,
      );
  }
  return out;
}
