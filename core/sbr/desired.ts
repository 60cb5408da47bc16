// The desired state of source-based routing for one interface, as a pure function of what the pod namespace
// holds (observed with its policy rules and the kernel's own routes) and of the interface's addresses.
//
// ADD, per address, in prevResult's order (reference: plugins/meta/sbr, v1.1.1):
//  - a table: the one a plain rule from the address already uses (so ADD again, and CHECK, see the same), else
//    the first table >= 100 that no rule and no route of the namespace uses, the next address after that one;
//  - a rule `from <ip>/32|128 lookup <table>`;
//  - in that table: the interface's main-table routes that belong to the address (same family, and a source
//    or gateway inside the address's subnet, or neither), the address's prefix route, and a default route via
//    the gateway (`gateways` overrides prevResult's; a moved default route wins over prevResult's gateway, a
//    configured one over both);
//  - those main-table routes are owned (by identity, scope.routeIds) and not desired: they move. With
//    `addSourceHints`, the main table keeps each address's prefix route, with the address as source hint.
// With `table` set, only the rules, to that table.
//
// DEL: the plain rules from the interface's addresses (as it has them now, and as prevResult lists them) go;
// without `table`, so do the interface's routes in those rules' tables, and the ones that came from the main
// table go back there (a default route only when prevResult lists one, since ADD made it from the gateway, and
// via prevResult's gateway).

import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, type CniError } from '../cni/errors.ts';
import type { Route as CniRoute } from '../cni/result.ts';
import { contains, formatCIDR, networkOf, parseCIDR, parseIP, bits, type Family } from '../ip/ip.ts';
import { routeKey, routeTable } from '../kernel/keys.ts';
import type { IpRule, KernelState, NsRef, OwnershipScope, Route, RouteId } from '../kernel/model.ts';
import { emptyKernelState } from '../kernel/model.ts';
import { RESERVED_TABLES, type SbrAddress, type SbrConf } from './config.ts';

const FIRST_TABLE = 100;
const MAIN = 254;

export interface SbrDesired {
  readonly kernel: KernelState;
  readonly scope: OwnershipScope;
  /** The table each address's rule points to, in address order. */
  readonly tables: readonly { readonly ip: string; readonly table: number }[];
  /**
   * ADD only: the way back to the namespace as it was observed (its main-table routes of the interface, no
   * rules from the addresses, nothing in the tables), with the scope that owns everything ADD touches. A
   * failed ADD applies it: an ip batch runs to its end, so a refused route leaves the rest of the changes.
   */
  readonly undo?: { readonly kernel: KernelState; readonly scope: OwnershipScope };
}

export interface SbrAttachment {
  readonly conf: SbrConf;
  readonly netns: NsRef;
  readonly ifname: string;
  readonly addresses: readonly SbrAddress[];
  /** The pod namespace, read with its policy rules and kernel-made routes. */
  readonly observed: KernelState;
}

/** `from` for one address: the host prefix. */
const hostPrefix = (a: Pick<SbrAddress, 'family' | 'ip'>): string => `${a.ip}/${bits(a.family)}`;
const defaultDst = (f: Family): string => (f === 4 ? '0.0.0.0/0' : '::/0');
const familyOfDst = (dst: string): Family => (dst.includes(':') ? 6 : 4);
const LINK_LOCAL6 = parseCIDR('fe80::/10')!;

function uniqRoutes(rs: readonly Route[]): Route[] {
  const seen = new Set<string>();
  return rs.filter((r) => (seen.has(routeKey(r)) ? false : (seen.add(routeKey(r)), true)));
}

/** Does a main-table route of the interface belong to this address (the reference's test, per family)? */
function belongs(a: SbrAddress, r: Route): boolean {
  if (familyOfDst(r.dst) !== a.family) return false;
  const dst = parseCIDR(r.dst);
  if (a.family === 6 && dst && dst.prefix >= LINK_LOCAL6.prefix && contains(LINK_LOCAL6, dst.ip)) return false; // fe80::/64 stays
  const subnet = parseCIDR(a.cidr);
  const inside = (s: string | undefined): boolean => {
    const ip = s === undefined ? undefined : parseIP(s);
    return !!ip && !!subnet && contains(subnet, ip);
  };
  return inside(r.src) || inside(r.gw) || (r.src === undefined && r.gw === undefined);
}

/** The route the kernel makes for an address: IPv4 `dev X scope link src IP`, IPv6 `dev X metric 256`. */
function prefixRoute(ns: NsRef, dev: string, a: SbrAddress, table: number | undefined): Route | undefined {
  const c = parseCIDR(a.cidr);
  if (!c || c.prefix >= bits(a.family)) return undefined;
  const dst = formatCIDR(networkOf(c));
  const t = table === undefined ? {} : { table };
  return a.family === 4 ? { ns, dst, dev, scope: 'link', src: a.ip, ...t } : { ns, dst, dev, metric: 256, ...t };
}

const plainRule = (r: IpRule): boolean => !r.other && !RESERVED_TABLES.has(r.table);

export function sbrAdd(a: SbrAttachment): E.Either<CniError, SbrDesired> {
  const { conf, netns: ns, ifname } = a;
  const rulesSeen = (a.observed.ipRules ?? []).filter((r) => r.ns === ns);
  const routesSeen = a.observed.routes.filter((r) => r.ns === ns);
  const rule = (x: SbrAddress, table: number): IpRule => ({ ns, family: x.family, src: hostPrefix(x), table });

  if (conf.table !== undefined) {
    const t = conf.table;
    const ipRules = a.addresses.map((x) => rule(x, t));
    return E.right({
      kernel: { ...emptyKernelState(), ipRules },
      scope: { links: [], devices: [], chains: [], ruleMarkers: [], ruleSrcs: ipRules.map((r) => ({ ns, src: r.src, table: t })) },
      tables: a.addresses.map((x) => ({ ip: x.ip, table: t })),
    });
  }

  if (!a.observed.links.some((l) => l.ns === ns && l.name === ifname)) {
    return E.left(cniError(ErrCode.InvalidEnvironment, `CNI_IFNAME: no interface "${ifname}" in ${ns}`));
  }
  const used = new Set<number>([...rulesSeen.map((r) => r.table), ...routesSeen.map(routeTable)]);
  // With addSourceHints the main table keeps each address's prefix route, with the address as source hint:
  // those stay where they are (and are not copied: the table gets the kernel's form of the prefix route).
  const hints: Route[] = [];
  if (conf.addSourceHints) {
    for (const x of a.addresses) {
      const hint = prefixRoute(ns, ifname, x, undefined);
      if (hint) hints.push(x.family === 4 ? hint : { ns, dst: hint.dst, dev: ifname, src: x.ip });
    }
  }
  const hinted = new Set(hints.map(routeKey));
  const main = routesSeen.filter((r) => r.dev === ifname && routeTable(r) === MAIN && !hinted.has(routeKey(r)));
  const tables: { ip: string; table: number }[] = [];
  const ipRules: IpRule[] = [];
  const copies: Route[] = [];
  const moved: Route[] = [];
  const kept: Route[] = [];
  let candidate = FIRST_TABLE;
  for (const x of a.addresses) {
    const mine = rulesSeen.find((r) => plainRule(r) && r.family === x.family && r.src === hostPrefix(x));
    let table = mine?.table;
    if (table === undefined) {
      while (used.has(candidate) || RESERVED_TABLES.has(candidate)) candidate++;
      table = candidate;
    }
    used.add(table);
    candidate = table + 1;
    tables.push({ ip: x.ip, table });
    ipRules.push(rule(x, table));
    const t = table;
    const mineMain = main.filter((r) => belongs(x, r));
    moved.push(...mineMain);
    // What an earlier ADD moved already stays where it is.
    const there = mine ? routesSeen.filter((r) => r.dev === ifname && routeTable(r) === t) : [];
    kept.push(...there);
    const fixed = conf.gateways[x.family];
    const gw = fixed ?? x.gateway;
    const prefix = prefixRoute(ns, ifname, x, t);
    const dflt: Route[] = gw ? [{ ns, dst: defaultDst(x.family), gw, dev: ifname, table: t }] : [];
    // A moved default route replaces the one made from prevResult's gateway (the reference's order: add, then
    // copy with replace); a configured gateway wins over both.
    copies.push(
      ...(fixed ? dflt : []),
      ...mineMain.map((r) => ({ ...r, table: t })),
      ...there,
      ...(prefix ? [prefix] : []),
      ...(fixed ? [] : dflt),
    );
  }
  const idOf = (r: Route): RouteId => ({
    ns: r.ns,
    dst: r.dst,
    ...(r.table !== undefined ? { table: r.table } : {}),
    ...(r.metric !== undefined ? { metric: r.metric } : {}),
  });
  const routeIds: RouteId[] = [...moved, ...kept].map(idOf);
  const routes = uniqRoutes([...copies, ...hints]);
  const scope: OwnershipScope = {
    links: [],
    devices: [],
    chains: [],
    ruleMarkers: [],
    ruleSrcs: ipRules.map((r) => ({ ns, src: r.src })),
    ...(routeIds.length ? { routeIds } : {}),
  };
  const before = routesSeen.filter((r) => r.dev === ifname && routeTable(r) === MAIN);
  return E.right({
    kernel: { ...emptyKernelState(), routes, ipRules },
    scope,
    tables,
    undo: {
      kernel: { ...emptyKernelState(), routes: before },
      scope: { ...scope, routeIds: [...routeIds, ...routes.map(idOf), ...before.map(idOf)] },
    },
  });
}

export interface SbrRemoval {
  readonly conf: SbrConf;
  readonly netns: NsRef;
  readonly ifname: string;
  /** prevResult's addresses of the interface (none without a prevResult). */
  readonly addresses: readonly SbrAddress[];
  /** prevResult's routes; undefined without a prevResult. */
  readonly prevRoutes?: readonly CniRoute[];
  readonly observed: KernelState;
}

export function sbrDel(a: SbrRemoval): SbrDesired {
  const { conf, netns: ns, ifname } = a;
  const onIf = a.observed.addresses.filter((x) => x.ns === ns && x.dev === ifname);
  const hostIPs = new Set(a.observed.addresses.filter((x) => x.ns === ns).map((x) => x.cidr.split('/')[0]!.toLowerCase()));
  const srcs = new Set<string>(a.addresses.map(hostPrefix));
  for (const x of onIf) {
    const c = parseCIDR(x.cidr);
    if (c) srcs.add(`${formatCIDR({ ip: c.ip, prefix: bits(c.ip.family) })}`);
  }
  const ruleSrcs = [...srcs].map((src) => ({ ns, src, ...(conf.table !== undefined ? { table: conf.table } : {}) }));
  const scope: OwnershipScope = { links: [], devices: [], chains: [], ruleMarkers: [], ...(ruleSrcs.length ? { ruleSrcs } : {}) };
  if (conf.table !== undefined) return { kernel: emptyKernelState(), scope, tables: [] };

  const going = (a.observed.ipRules ?? []).filter((r) => r.ns === ns && plainRule(r) && srcs.has(r.src));
  const tables = new Set(going.map((r) => r.table));
  const inTables = a.observed.routes.filter((r) => r.ns === ns && r.dev === ifname && tables.has(routeTable(r)));
  const mainSeen = new Set(a.observed.routes.filter((r) => r.ns === ns && routeTable(r) === MAIN).map(routeKey));
  const listed = (r: Route): CniRoute | undefined => a.prevRoutes?.find((p) => p.dst === r.dst);
  const isDefault = (r: Route): boolean => r.dst === defaultDst(familyOfDst(r.dst));
  const back = uniqRoutes(
    inTables
      .filter(
        (r) => (!isDefault(r) || a.prevRoutes === undefined || listed(r)) && (r.src === undefined || hostIPs.has(r.src.toLowerCase())),
      )
      .map((r) => {
        const { table: _moved, ...rest } = r;
        // A default route goes back via the gateway prevResult names (ADD may have used `gateways` instead).
        const gw = isDefault(r) ? listed(r)?.gw : undefined;
        return gw ? { ...rest, gw } : rest;
      }),
  ).filter((r) => !mainSeen.has(routeKey(r)));
  const routeIds: RouteId[] = inTables.map((r) => ({
    ns,
    dst: r.dst,
    table: routeTable(r),
    ...(r.metric !== undefined ? { metric: r.metric } : {}),
  }));
  return {
    kernel: { ...emptyKernelState(), routes: back },
    scope: { ...scope, ...(routeIds.length ? { routeIds } : {}) },
    tables: going.map((r) => ({ ip: r.src.split('/')[0]!, table: r.table })),
  };
}
