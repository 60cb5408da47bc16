// vrf: a chained plugin that puts the container interface (made by the plugin before it) into a VRF device in
// the pod, creating the VRF when it is missing, with the config's routing table or (as the reference) the
// lowest one no other VRF of the pod uses. Enslaving makes the kernel cycle the interface: its routes go and,
// without keep_addr_on_down, its IPv6 addresses; the desired state has the addresses as they were and the
// interface's routes moved into the VRF's table (newer reference releases move the universe-scope ones; 1.1.1
// none). DEL takes the interface out again and deletes the VRF when no other interface is left in it (as the
// reference), and moves the interface's routes back into the main table (the reference leaves it without
// them). Pure.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import { routeTable } from '../kernel/keys.ts';
import { emptyKernelState, type KernelState, type Link, type OwnershipScope, type Route } from '../kernel/model.ts';
import { linkNameProblem } from '../kernel/names.ts';

export interface VrfConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly vrfname: string;
  /** undefined: the existing VRF's, or the lowest free one. */
  readonly table?: number;
}

const MAIN = 254;
/** local (255), main (254) and default (253) are the kernel's own tables. */
const RESERVED: ReadonlySet<number> = new Set([253, 254, 255]);
const MAX_TABLE = 2 ** 32 - 1;

export function parseVrfConf(conf: NetConf): E.Either<CniError, VrfConf> {
  const o = conf.raw;
  const errs: string[] = [];
  const name = o['vrfname'];
  if (name === undefined || name === '') errs.push('vrfname: required (the VRF to put the interface in)');
  else {
    const p = typeof name === 'string' ? linkNameProblem(name) : 'must be a string';
    if (p) errs.push(`vrfname: ${JSON.stringify(name)} ${p}`);
  }
  const table = o['table'] ?? 0;
  if (typeof table !== 'number' || !Number.isInteger(table) || table < 0 || table > MAX_TABLE) {
    errs.push(`table: must be an integer between 0 and ${MAX_TABLE}, got ${JSON.stringify(table)}`);
  } else if (RESERVED.has(table)) errs.push(`table: ${table} is one of the kernel's own tables (local, main, default)`);
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({ name: conf.name, cniVersion: conf.cniVersion, vrfname: name as string, ...(table ? { table: table as number } : {}) });
}

/** What the pod has: the VRF (when it exists) and the container interface (when it exists). */
interface Pod {
  readonly vrf?: Link;
  readonly port?: Link;
}

function podOf(conf: VrfConf, seen: KernelState, ifname: string, netns: string): E.Either<CniError, Pod> {
  const vrf = seen.links.find((l) => l.ns === netns && l.name === conf.vrfname);
  if (vrf && vrf.kind !== 'vrf')
    return E.left(invalidConfig(`vrfname: "${conf.vrfname}" exists in ${netns} and is a ${vrf.kind}, not a VRF`));
  const port = seen.links.find((l) => l.ns === netns && l.name === ifname);
  return E.right({ ...(vrf ? { vrf } : {}), ...(port ? { port } : {}) });
}

/** The VRF's table: the existing VRF's (which a configured table must match), else the config's, else the lowest free. */
export function vrfTable(conf: VrfConf, seen: KernelState, netns: string): E.Either<CniError, number> {
  const vrfs = seen.links.filter((l) => l.ns === netns && l.kind === 'vrf');
  const existing = vrfs.find((l) => l.name === conf.vrfname);
  if (existing) {
    const t = existing.vrf?.table;
    if (t === undefined) return E.left(cniError(ErrCode.Kernel, `VRF ${conf.vrfname} in ${netns}: its table cannot be read`));
    if (conf.table !== undefined && conf.table !== t)
      return E.left(invalidConfig(`table: VRF ${conf.vrfname} already exists with table ${t}, not ${conf.table}`));
    return E.right(t);
  }
  if (conf.table !== undefined) return E.right(conf.table);
  const taken = new Set(vrfs.flatMap((l) => (l.vrf ? [l.vrf.table] : [])));
  let t = 1;
  while (taken.has(t) || RESERVED.has(t)) t++;
  return E.right(t);
}

/** Every route through the interface may change tables: the scope owns them (and the VRF when it may go). */
export const vrfScope = (vrfname: string | undefined, ifname: string, netns: string): OwnershipScope => ({
  links: vrfname ? [{ ns: netns, name: vrfname }] : [],
  devices: [],
  chains: [],
  ruleMarkers: [],
  routeDsts: [
    { ns: netns, dev: ifname, within: '0.0.0.0/0' },
    { ns: netns, dev: ifname, within: '::/0' },
  ],
});

/** The interface's addresses as they are, and its routes with the tables `move` gives them. */
function keep(seen: KernelState, ifname: string, netns: string, move: (r: Route) => Route): Pick<KernelState, 'addresses' | 'routes'> {
  return {
    addresses: seen.addresses.filter((a) => a.ns === netns && a.dev === ifname),
    routes: seen.routes.filter((r) => r.ns === netns && r.dev === ifname).map(move),
  };
}

const intoTable =
  (t: number) =>
  (r: Route): Route =>
    routeTable(r) === MAIN ? { ...r, table: t } : r;
const intoMain =
  (t: number) =>
  (r: Route): Route => {
    if (routeTable(r) !== t) return r;
    const { table: _t, ...rest } = r;
    return rest;
  };

export interface VrfAttachment {
  readonly conf: VrfConf;
  readonly ifname: string;
  readonly netns: string;
  /** The pod as observed before anything changed. */
  readonly seen: KernelState;
}

/** ADD: the VRF, the interface in it, its addresses kept and its main-table routes in the VRF's table. */
export function vrfAddState(a: VrfAttachment): E.Either<CniError, { kernel: KernelState; scope: OwnershipScope; table: number }> {
  const { conf, ifname, netns, seen } = a;
  const pod = podOf(conf, seen, ifname, netns);
  if (E.isLeft(pod)) return pod;
  const { port } = pod.right;
  if (!port)
    return E.left(cniError(ErrCode.InvalidEnvironment, `CNI_IFNAME: no interface "${ifname}" in ${netns} to put in VRF ${conf.vrfname}`));
  if (port.master && port.master !== conf.vrfname) {
    return E.left(cniError(ErrCode.InvalidEnvironment, `CNI_IFNAME: interface ${ifname} has already a master set: ${port.master}`));
  }
  const table = vrfTable(conf, seen, netns);
  if (E.isLeft(table)) return table;
  const t = table.right;
  const links: Link[] = [
    { ns: netns, name: conf.vrfname, kind: 'vrf', up: true, vrf: { table: t } },
    { ns: netns, name: ifname, kind: 'device', master: conf.vrfname },
  ];
  return E.right({
    kernel: { ...emptyKernelState(), links, ...keep(seen, ifname, netns, intoTable(t)) },
    scope: vrfScope(conf.vrfname, ifname, netns),
    table: t,
  });
}

/**
 * "Not attached" after a failed ADD, from what the pod had before it: the interface with its old master, its
 * addresses and routes as they were, and the VRF gone when this ADD made it.
 */
export function vrfRollbackState(a: VrfAttachment): { kernel: KernelState; scope: OwnershipScope } {
  const { conf, ifname, netns, seen } = a;
  const port = seen.links.find((l) => l.ns === netns && l.name === ifname);
  const made = !seen.links.some((l) => l.ns === netns && l.name === conf.vrfname);
  const links: Link[] = port ? [{ ns: netns, name: ifname, kind: 'device', master: port.master ?? null }] : [];
  return {
    kernel: { ...emptyKernelState(), links, ...keep(seen, ifname, netns, (r) => r) },
    scope: vrfScope(made ? conf.vrfname : undefined, ifname, netns),
  };
}

/**
 * DEL: the interface out of the VRF with its routes back in the main table; the VRF deleted when no other
 * interface is left in it. Undefined when there is nothing to do (no such VRF, as the reference).
 */
export function vrfDelState(a: VrfAttachment): E.Either<CniError, { kernel: KernelState; scope: OwnershipScope } | undefined> {
  const { conf, ifname, netns, seen } = a;
  const vrf = seen.links.find((l) => l.ns === netns && l.name === conf.vrfname);
  if (!vrf || vrf.kind !== 'vrf') return E.right(undefined);
  const port = seen.links.find((l) => l.ns === netns && l.name === ifname);
  const others = seen.links.some((l) => l.ns === netns && l.name !== ifname && l.master === conf.vrfname);
  const inIt = port?.master === conf.vrfname;
  const links: Link[] = port && inIt ? [{ ns: netns, name: ifname, kind: 'device', master: null }] : [];
  const t = vrf.vrf?.table;
  const moved = port && inIt && t !== undefined ? keep(seen, ifname, netns, intoMain(t)) : keep(seen, ifname, netns, (r) => r);
  return E.right({ kernel: { ...emptyKernelState(), links, ...moved }, scope: vrfScope(others ? undefined : conf.vrfname, ifname, netns) });
}

/** CHECK: the VRF exists (with the configured table, when one is) and the interface is in it. */
export function vrfCheckState(a: VrfAttachment): E.Either<CniError, { kernel: KernelState; scope: OwnershipScope }> {
  const { conf, ifname, netns, seen } = a;
  const pod = podOf(conf, seen, ifname, netns);
  if (E.isLeft(pod)) return pod;
  const table = conf.table ?? pod.right.vrf?.vrf?.table ?? 0;
  const links: Link[] = [
    { ns: netns, name: conf.vrfname, kind: 'vrf', up: true, vrf: { table } },
    { ns: netns, name: ifname, kind: 'device', master: conf.vrfname },
  ];
  return E.right({ kernel: { ...emptyKernelState(), links }, scope: { links: [], devices: [], chains: [], ruleMarkers: [] } });
}
