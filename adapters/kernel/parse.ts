// What iproute2, bridge, tc and iptables-save print, as model records. Pure functions of the text, so they are
// tested without a kernel (test/core/kernel-parse.test.ts).

import type {
  Address,
  Fdb,
  IpRule,
  IptChain,
  IptFamily,
  IptRule,
  IptTable,
  Link,
  LinkKind,
  IpvlanSpec,
  MacvlanSpec,
  Neighbour,
  NsRef,
  Qdisc,
  Route,
} from '../../core/kernel/model.ts';
import { BUILTIN_CHAINS } from '../../core/kernel/keys.ts';
import { kindOfInfo } from '../../core/kernel/link-kinds.ts';
import { formatCIDR, parseCIDR } from '../../core/ip/ip.ts';

interface IpLink {
  ifindex?: number;
  link_index?: number;
  ifname: string;
  flags?: string[];
  mtu?: number;
  txqlen?: number;
  address?: string;
  master?: string;
  ifalias?: string;
  /** Same-namespace peer (veth) or lower device (macvlan, vlan). */
  link?: string;
  link_netnsid?: number;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_kind?: string;
    info_slave_data?: { hairpin?: boolean };
  };
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string; nodad?: boolean; noprefixroute?: boolean }[];
}

interface IpRoute {
  type?: string;
  dst: string;
  gateway?: string;
  via?: { family?: string; host?: string };
  dev?: string;
  protocol?: string;
  scope?: string;
  table?: string;
  metric?: number;
  prefsrc?: string;
  flags?: string[];
  metrics?: { mtu?: number }[];
  pref?: string;
}

interface IpNeigh {
  dst: string;
  dev: string;
  lladdr?: string;
  state?: string[];
}

const IPVLAN_MODES: ReadonlySet<string> = new Set(['l2', 'l3', 'l3s']);
const MACVLAN_MODES: ReadonlySet<string> = new Set(['bridge', 'private', 'vepa', 'passthru', 'source']);

export function toLink(ns: NsRef, l: IpLink): Link {
  const flags = l.flags ?? [];
  const k = l.linkinfo?.info_kind;
  const d = l.linkinfo?.info_data ?? {};
  const kind: LinkKind = kindOfInfo(k, d['type']) ?? (flags.includes('LOOPBACK') ? 'loopback' : 'device');
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  const mode = str(d['mode']);
  return {
    ns,
    name: l.ifname,
    kind,
    ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
    ...(l.address ? { mac: l.address.toLowerCase() } : {}),
    up: flags.includes('UP'),
    master: l.master ?? null,
    promisc: flags.includes('PROMISC'),
    allmulti: flags.includes('ALLMULTI'),
    ...(l.txqlen !== undefined ? { txqlen: l.txqlen } : {}),
    ...(l.ifalias ? { alias: l.ifalias } : {}),
    hairpin: l.linkinfo?.info_slave_data?.hairpin === true,
    // The peer is known only when it is in the same namespace (otherwise ip prints link_netnsid).
    ...(kind === 'veth' && l.link && l.link_netnsid === undefined ? { veth: { peer: l.link, peerNs: ns } } : {}),
    ...(kind === 'vxlan'
      ? {
          vxlan: {
            vni: Number(d['id']),
            ...((str(d['local']) ?? str(d['local6'])) ? { local: (str(d['local']) ?? str(d['local6']))! } : {}),
            port: Number(d['port'] ?? 8472),
            learning: d['learning'] === true,
            gbp: d['gbp'] === true,
            ...(str(d['link']) ? { dev: str(d['link'])! } : {}),
          },
        }
      : {}),
    ...(kind === 'bridge' ? { bridge: { vlanFiltering: d['vlan_filtering'] === 1 } } : {}),
    ...(kind === 'macvlan' && l.link && mode && MACVLAN_MODES.has(mode)
      ? { macvlan: { master: l.link, mode: mode as MacvlanSpec['mode'] } }
      : {}),
    // iproute2 prints an ipvlan's mode as "l2"/"l3"/"l3s", a vlan's id and a VRF's table as numbers.
    ...(kind === 'ipvlan' && l.link && mode && IPVLAN_MODES.has(mode)
      ? { ipvlan: { master: l.link, mode: mode as IpvlanSpec['mode'] } }
      : {}),
    ...(kind === 'vlan' && l.link && typeof d['id'] === 'number' ? { vlan: { master: l.link, id: d['id'] } } : {}),
    ...(kind === 'vrf' && typeof d['table'] === 'number' ? { vrf: { table: d['table'] } } : {}),
    // ip prints the owner and group as names when the host's passwd/group files have them: only numbers are kept.
    ...(kind === 'tap'
      ? {
          tap: {
            multiQueue: d['multi_queue'] === true,
            vnetHdr: d['vnet_hdr'] === true,
            pi: d['pi'] === true,
            ...(typeof d['user'] === 'number' ? { owner: d['user'] } : {}),
            ...(typeof d['group'] === 'number' ? { group: d['group'] } : {}),
          },
        }
      : {}),
  };
}

const TABLES: Readonly<Record<string, number>> = { main: 254, default: 253, local: 255 };
const SKIP_PROTO = new Set(['kernel', 'ra', 'redirect']);

/**
 * A route as the model has it, or undefined for routes nobody manages (kernel-made, local, multicast...).
 * `kernel`: keep the kernel-made (`proto kernel`) ones (ObserveRequest.kernelRoutes).
 */
function toRoute(ns: NsRef, r: IpRoute, kernel = false): Route | undefined {
  const skipped = r.protocol !== undefined && SKIP_PROTO.has(r.protocol) && !(kernel && r.protocol === 'kernel');
  if (skipped || (r.type !== undefined && r.type !== 'unicast') || r.table === 'local') return undefined;
  const gw = r.gateway ?? r.via?.host;
  const v6 = r.pref !== undefined || r.dst.includes(':') || (gw ?? '').includes(':');
  const dst = r.dst === 'default' ? (v6 ? '::/0' : '0.0.0.0/0') : r.dst.includes('/') ? r.dst : `${r.dst}/${v6 ? 128 : 32}`;
  const table = r.table === undefined ? 254 : (TABLES[r.table] ?? Number(r.table));
  const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
  const defaultMetric = v6 ? 1024 : 0;
  // Built field by field rather than with conditional spreads: a resync at 10,000 nodes parses 10,000 routes.
  const out: { -readonly [K in keyof Route]: Route[K] } = { ns, dst };
  if (gw) out.gw = gw;
  if (r.dev) out.dev = r.dev;
  if (r.flags?.includes('onlink')) out.onlink = true;
  if (r.scope === 'link' || r.scope === 'host') out.scope = r.scope;
  if (table !== 254 && !Number.isNaN(table)) out.table = table;
  if (r.metric !== undefined && r.metric !== defaultMetric) out.metric = r.metric;
  if (mtu !== undefined) out.mtu = mtu;
  if (r.prefsrc) out.src = r.prefsrc;
  return out;
}

export interface IpState {
  readonly links: Link[];
  readonly addresses: Address[];
  readonly routes: Route[];
  readonly neighbours: Neighbour[];
  /** What pairs veth ends across namespaces: ifindexes, and this namespace's ids for its peers' namespaces. */
  readonly veths: readonly VethEnd[];
  /** nsid (as this namespace numbers other namespaces) → /run/netns name, from `netns list-id`. */
  readonly nsids: ReadonlyMap<number, string>;
}

interface VethEnd {
  readonly name: string;
  readonly ifindex: number;
  readonly peerIndex: number;
  readonly peerNsid?: number;
}

/** The lines `parseIpBatch` expects on ip's stdin (netns list-id last: listing links allocates the ids). */
export const IP_READ = 'link show\naddr show\nroute show table all\nneigh show nud permanent\nnetns list-id\n';

/**
 * The output of `ip -json -d -batch -` fed IP_READ: one JSON array per line, in that order.
 */
export function parseIpBatch(ns: NsRef, stdout: string, kernelRoutes = false): IpState | string {
  let parts: unknown[][];
  try {
    parts = stdout
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as unknown[]);
  } catch (e) {
    return `cannot parse ip -json output: ${(e as Error).message}`;
  }
  if (parts.length !== 5) return `ip -json printed ${parts.length} results, want 5`;
  const [linksJ, addrsJ, routesJ, neighJ, idsJ] = parts as [IpLink[], IpLink[], IpRoute[], IpNeigh[], { nsid: number; name?: string }[]];
  const links = linksJ.map((l) => toLink(ns, l));
  const addresses: Address[] = [];
  for (const l of addrsJ) {
    for (const a of l.addr_info ?? []) {
      // Kernel-made IPv6 link-local addresses are nobody's to manage. (Loopback's 127.0.0.1/8 and ::1 are
      // reported: the loopback plugin reads them.)
      if (a.family === 'inet6' && a.scope === 'link') continue;
      addresses.push({
        ns,
        dev: l.ifname,
        cidr: `${a.local}/${a.prefixlen}`,
        ...(a.nodad ? { nodad: true } : {}),
        ...(a.noprefixroute ? { noprefixroute: true } : {}),
      });
    }
  }
  const routes: Route[] = [];
  for (const r of routesJ) {
    const route = toRoute(ns, r, kernelRoutes);
    if (route) routes.push(route);
  }
  const neighbours: Neighbour[] = [];
  for (const n of neighJ) {
    if (n.lladdr && (n.state === undefined || n.state.includes('PERMANENT')))
      neighbours.push({ ns, dev: n.dev, ip: n.dst, lladdr: n.lladdr.toLowerCase() });
  }
  const veths = linksJ
    .filter((l) => l.linkinfo?.info_kind === 'veth' && l.ifindex !== undefined && l.link_index !== undefined)
    .map((l) => ({
      name: l.ifname,
      ifindex: l.ifindex!,
      peerIndex: l.link_index!,
      ...(l.link_netnsid !== undefined ? { peerNsid: l.link_netnsid } : {}),
    }));
  const nsids = new Map(idsJ.filter((x) => x.name).map((x) => [x.nsid, x.name!] as const));
  return { links, addresses, routes, neighbours, veths, nsids };
}

/**
 * Veth pairs across the observed namespaces. A veth end whose peer is elsewhere shows the peer's ifindex and
 * the peer namespace's id (link_netnsid); `netns list-id` names that id when the namespace is in /run/netns.
 * `nameOf` gives the /run/netns name of each observed namespace (undefined for an unnamed one, e.g. the host);
 * a pair is found from whichever end can name the other's namespace, and both ends get their veth spec.
 */
export function pairVeths(seen: readonly { ns: NsRef; state: IpState }[], nameOf: (ns: NsRef) => string | undefined): Map<NsRef, Link[]> {
  const byName = new Map<string, NsRef>();
  for (const { ns } of seen) {
    const n = nameOf(ns);
    if (n !== undefined) byName.set(n, ns);
  }
  const index = new Map(seen.map(({ ns, state }) => [ns, new Map(state.veths.map((v) => [v.ifindex, v]))] as const));
  const peer = new Map<string, { ns: NsRef; name: string }>();
  for (const { ns, state } of seen) {
    for (const v of state.veths) {
      if (v.peerNsid === undefined) continue;
      const name = state.nsids.get(v.peerNsid);
      const other = name === undefined ? undefined : byName.get(name);
      const p = other === undefined ? undefined : index.get(other)?.get(v.peerIndex);
      // Both ends must point at each other (ifindexes are per namespace).
      if (other === undefined || !p || p.peerIndex !== v.ifindex) continue;
      peer.set(`${ns}\u0000${v.name}`, { ns: other, name: p.name });
      peer.set(`${other}\u0000${p.name}`, { ns, name: v.name });
    }
  }
  return new Map(
    seen.map(({ ns, state }) => {
      // A peer in a namespace that was not read: its /run/netns name, when it has one.
      const elsewhere = new Map(
        state.veths.flatMap((v) => {
          const name = v.peerNsid === undefined ? undefined : state.nsids.get(v.peerNsid);
          return name !== undefined && !byName.has(name) ? [[v.name, name] as const] : [];
        }),
      );
      return [
        ns,
        state.links.map((l) => {
          if (l.kind !== 'veth' || l.veth) return l;
          const p = peer.get(`${ns}\u0000${l.name}`);
          if (p) return { ...l, veth: { peer: p.name, peerNs: p.ns } };
          const away = elsewhere.get(l.name);
          return away !== undefined ? { ...l, peerNetns: away } : l;
        }),
      ];
    }),
  );
}

/** What `ip -json rule show` prints for a rule that only selects by source and looks up a table. */
const PLAIN_RULE_KEYS: ReadonlySet<string> = new Set(['priority', 'src', 'srclen', 'table', 'protocol']);

/**
 * `ip -json rule show` (or `ip -6 ...`): every rule, those with other selectors or actions marked `other`
 * (their table still counts as used). `from all` is 0.0.0.0/0 or ::/0; tables by number.
 */
export function parseIpRules(ns: NsRef, family: IptFamily, stdout: string): IpRule[] | string {
  let rs: Record<string, unknown>[];
  try {
    rs = JSON.parse(stdout.trim() || '[]') as typeof rs;
  } catch (e) {
    return `cannot parse ip -json rule output: ${(e as Error).message}`;
  }
  if (!Array.isArray(rs)) return 'ip -json rule printed something that is not a list';
  const all = family === 4 ? '0.0.0.0/0' : '::/0';
  const out: IpRule[] = [];
  for (const r of rs) {
    const src = typeof r['src'] === 'string' ? r['src'] : 'all';
    const len = typeof r['srclen'] === 'number' ? r['srclen'] : family === 4 ? 32 : 128;
    const t = typeof r['table'] === 'string' ? r['table'] : undefined;
    const table = t === undefined ? NaN : (TABLES[t] ?? Number(t));
    const other = Object.keys(r).some((k) => !PLAIN_RULE_KEYS.has(k)) || Number.isNaN(table);
    const cidr = parseCIDR(`${src}/${len}`);
    out.push({
      ns,
      family,
      src: src === 'all' ? all : cidr ? formatCIDR(cidr) : `${src}/${len}`,
      table: Number.isNaN(table) ? 0 : table,
      ...(typeof r['priority'] === 'number' ? { priority: r['priority'] } : {}),
      ...(other ? { other: true } : {}),
    });
  }
  return out;
}

/** `bridge -json fdb show`: the permanent entries with a remote (vxlan VTEPs). */
export function parseFdb(ns: NsRef, stdout: string): Fdb[] | string {
  let entries: { mac: string; ifname?: string; dst?: string; state?: string }[];
  try {
    entries = JSON.parse(stdout.trim() || '[]') as typeof entries;
  } catch (e) {
    return `cannot parse bridge -json output: ${(e as Error).message}`;
  }
  const out: Fdb[] = [];
  for (const e of entries)
    if (e.dst && e.ifname && e.state === 'permanent') out.push({ ns, dev: e.ifname, mac: e.mac.toLowerCase(), dst: e.dst });
  return out;
}

/** `tc -json qdisc show`: root tbf and ingress qdiscs (tc prints tbf rate in bytes/s and latency in µs). */
export function parseQdiscs(ns: NsRef, stdout: string): Qdisc[] | string {
  let qs: { kind: string; dev: string; root?: boolean; options?: { rate?: number; burst?: number; lat?: number } }[];
  try {
    qs = JSON.parse(stdout.trim() || '[]') as typeof qs;
  } catch (e) {
    return `cannot parse tc -json output: ${(e as Error).message}`;
  }
  const out: Qdisc[] = [];
  for (const q of qs) {
    if (q.kind === 'ingress') out.push({ ns, dev: q.dev, kind: 'ingress' });
    else if (q.kind === 'tbf' && q.root) {
      const o = q.options ?? {};
      out.push({
        ns,
        dev: q.dev,
        kind: 'tbf',
        ...(o.rate !== undefined ? { rate: o.rate * 8 } : {}),
        ...(o.burst !== undefined ? { burst: o.burst } : {}),
        ...(o.lat !== undefined ? { latencyMs: Math.round(o.lat / 1000) } : {}),
      });
    }
  }
  return out;
}

/**
 * `tc -json filter show dev X ingress`: where the ingress qdisc's u32 filter at prio 1 redirects packets to
 * (the first action's `mirred egress redirect` target), or undefined when there is none or its device is gone
 * (tc prints `to_dev: "*"`).
 */
export function parseRedirect(stdout: string): string | undefined | { error: string } {
  let fs: {
    kind?: string;
    pref?: number;
    options?: { actions?: { kind?: string; mirred_action?: string; direction?: string; to_dev?: string }[] };
  }[];
  try {
    fs = JSON.parse(stdout.trim() || '[]') as typeof fs;
  } catch (e) {
    return { error: `cannot parse tc -json output: ${(e as Error).message}` };
  }
  for (const f of fs) {
    if (f.kind !== 'u32' || f.pref !== 1) continue;
    const a = f.options?.actions?.[0];
    if (a?.kind === 'mirred' && a.mirred_action === 'redirect' && a.direction === 'egress' && a.to_dev && a.to_dev !== '*') return a.to_dev;
  }
  return undefined;
}

/**
 * `iptables-save` output: user chains whole (IptChain), rules of the builtin chains one by one (IptRule).
 * Only the given tables when `tables` is non-empty.
 */
export function parseIptablesSave(
  ns: NsRef,
  family: IptFamily,
  text: string,
  tables: readonly IptTable[] = [],
): { chains: IptChain[]; rules: IptRule[] } {
  const chains: IptChain[] = [];
  const rules: IptRule[] = [];
  let table: IptTable | undefined;
  let user = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      const t = line.slice(1).trim() as IptTable;
      table = tables.length === 0 || tables.includes(t) ? t : undefined;
      user = new Map();
    } else if (!table) {
      continue;
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0]!;
      if (!BUILTIN_CHAINS.has(name)) user.set(name, []);
    } else if (line.startsWith('-A ')) {
      const rest = line.slice(3);
      const sp = rest.indexOf(' ');
      const chain = sp < 0 ? rest : rest.slice(0, sp);
      const rule = sp < 0 ? '' : rest.slice(sp + 1);
      const list = user.get(chain);
      if (list) list.push(rule);
      else rules.push({ ns, family, table, chain, rule });
    } else if (line.startsWith('COMMIT')) {
      for (const [chain, rs] of user) chains.push({ ns, family, table, chain, rules: rs });
      table = undefined;
    }
  }
  return { chains, rules };
}
