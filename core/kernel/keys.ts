// Identity of kernel objects: two records with the same key are "the same object" to plan, the memory twin
// and drift reports. Keys are strings so they can index Maps; the separator cannot occur in names.

import type { NftRule } from './model.ts';
import type {
  Address,
  Fdb,
  IpRule,
  IptFamily,
  IptRule,
  IptTable,
  KernelState,
  Neighbour,
  NsRef,
  Qdisc,
  Route,
  RouteId,
  Sysctl,
} from './model.ts';
import { HOST } from './model.ts';

const SEP = '\u0000';

export const devKey = (ns: NsRef, dev: string): string => `${ns}${SEP}${dev}`;
export const linkKey = (l: { readonly ns: NsRef; readonly name: string }): string => devKey(l.ns, l.name);
export const addrKey = (a: Address): string => `${devKey(a.ns, a.dev)}${SEP}${a.cidr}`;

const isV6 = (s: string): boolean => s.includes(':');

/** The kernel's metric when none is given: 0 for IPv4, 1024 for IPv6. */
export const routeMetric = (r: RouteId): number => r.metric ?? (isV6(r.dst) ? 1024 : 0);
/** The main table (254) when none is given. */
export const routeTable = (r: RouteId): number => r.table ?? 254;
/** A route is (ns, table, dst, metric), as the kernel's FIB sees it: `route replace` swaps the rest. */
export const routeKey = (r: RouteId): string => `${r.ns}${SEP}${routeTable(r)}${SEP}${r.dst}${SEP}${routeMetric(r)}`;

export const neighKey = (n: Neighbour): string => `${devKey(n.ns, n.dev)}${SEP}${n.ip}`;
/** flannel semantics: one entry per VTEP MAC on a device; a different dst is a replace. */
export const fdbKey = (f: Fdb): string => `${devKey(f.ns, f.dev)}${SEP}${f.mac.toLowerCase()}`;

export interface ChainRef {
  readonly ns: NsRef;
  readonly family: IptFamily;
  readonly table: IptTable;
  readonly chain: string;
}
export const chainKey = (c: ChainRef): string => `${c.ns}${SEP}${c.family}${SEP}${c.table}${SEP}${c.chain}`;
export const ruleKey = (r: IptRule): string => `${chainKey(r)}${SEP}${r.rule}`;
export const sysctlKey = (s: Pick<Sysctl, 'ns' | 'key'>): string => `${s.ns}${SEP}${s.key}`;
/** A policy rule is (ns, family, source, table); its preference is compared only when a desired rule gives one. */
export const ipRuleKey = (r: IpRule): string => `${r.ns}${SEP}${r.family}${SEP}${r.src}${SEP}${r.table}`;
/** JSON with object keys sorted: two expressions compare equal exactly when they say the same. */
const canonicalJson = (v: unknown): string =>
  v === null || typeof v !== 'object'
    ? JSON.stringify(v ?? null)
    : Array.isArray(v)
      ? `[${v.map(canonicalJson).join(',')}]`
      : `{${Object.keys(v as object)
          .sort()
          .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
          .join(',')}}`;
export const nftTableKey = (t: { readonly ns: NsRef; readonly family: string; readonly name: string }): string =>
  `${t.ns}${SEP}${t.family}${SEP}${t.name}`;
export const nftChainKey = (c: { readonly ns: NsRef; readonly family: string; readonly table: string; readonly chain: string }): string =>
  `${c.ns}${SEP}${c.family}${SEP}${c.table}${SEP}${c.chain}`;
/** A rule body: its comment and its expressions. */
export const nftBodyKey = (r: { readonly expr: readonly unknown[]; readonly comment?: string }): string =>
  `${r.comment ?? ''}${SEP}${canonicalJson(r.expr)}`;
export const nftSetKey = (x: { readonly ns: NsRef; readonly family: string; readonly table: string; readonly name: string }): string =>
  `${x.ns}${SEP}${x.family}${SEP}${x.table}${SEP}${x.name}`;
export const nftRuleKey = (r: NftRule): string => `${nftChainKey(r)}${SEP}${nftBodyKey(r)}`;
export const qdiscKey = (q: Qdisc): string => `${devKey(q.ns, q.dev)}${SEP}${q.kind}`;

export const BUILTIN_CHAINS: ReadonlySet<string> = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

/** The chain a rule jumps or goes to (`-j X` / `-g X`), if any. */
export function ruleTarget(rule: string): string | undefined {
  const m = /(?:^|\s)-[jg]\s+(\S+)/.exec(rule);
  return m ? m[1] : undefined;
}

/**
 * sysctl(8) convention: a dotted key whose path segments may contain dots written as '/' (a device
 * `flannel.1` is `net.ipv4.conf.flannel/1.forwarding`). Returns the /proc/sys path.
 */
export const sysctlPath = (key: string): string =>
  '/proc/sys/' +
  key
    .split('.')
    .map((seg) => seg.replace(/\//g, '.'))
    .join('/');

/** A per-device sysctl key, e.g. devSysctl('net.ipv6.conf', 'eth0.5', 'accept_dad') = net.ipv6.conf.eth0/5.accept_dad. */
export const devSysctl = (prefix: `net.ipv${4 | 6}.${'conf' | 'neigh'}`, dev: string, leaf: string): string =>
  `${prefix}.${dev.replace(/\./g, '/')}.${leaf}`;

/** The device a per-device sysctl belongs to (net.ipv{4,6}.{conf,neigh}.DEV.x), or undefined. */
export function sysctlDevice(key: string): string | undefined {
  const seg = key.split('.');
  if (seg.length < 5 || seg[0] !== 'net' || (seg[1] !== 'ipv4' && seg[1] !== 'ipv6')) return undefined;
  if (seg[2] !== 'conf' && seg[2] !== 'neigh') return undefined;
  const dev = seg[3]!.replace(/\//g, '.');
  return dev === 'all' || dev === 'default' ? undefined : dev;
}

/** Where a namespace is, in words. */
export const where = (ns: NsRef): string => (ns === HOST ? 'the host namespace' : ns);

/**
 * The observed state as an interface plugin's CHECK should see it when plugins chained after it may have moved
 * its routes into other tables (sbr moves the container interface's routes into a table of its own): in
 * `ns`, a route of another table that a desired main-table route describes counts as that main-table route,
 * and the other tables' routes are not this plugin's business.
 */
export function routesOfAnyTable(observed: KernelState, desired: KernelState, ns: NsRef): KernelState {
  const main = (r: Route): boolean => routeTable(r) === 254;
  const want = desired.routes.filter((r) => r.ns === ns && main(r));
  const seenMain = new Set(observed.routes.filter((r) => r.ns === ns && main(r)).map((r) => routeKey(r)));
  const moved: Route[] = [];
  for (const d of want) {
    if (seenMain.has(routeKey(d))) continue;
    const o = observed.routes.find(
      (r) => r.ns === ns && !main(r) && r.dst === d.dst && (r.gw ?? '') === (d.gw ?? '') && (d.dev === undefined || r.dev === d.dev),
    );
    if (o) {
      const { table: _t, metric: _m, ...rest } = o;
      moved.push({ ...rest, ...(d.metric !== undefined ? { metric: d.metric } : {}) });
    }
  }
  return { ...observed, routes: [...observed.routes.filter((r) => r.ns !== ns || main(r)), ...moved] };
}
