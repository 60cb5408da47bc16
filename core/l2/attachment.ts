// What ipvlan and vlan share: a container interface made on a lower device (the master), from the host straight
// into the pod under its final name (or inside the pod with `linkInContainer`), configured with the addresses
// and routes of an IPAM result (or, chained, of prevResult) the way the reference's ipam.ConfigureIface does:
// a route without a gateway goes via the first gateway of its family. Pure.

import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import type { DNS, IPConfig, Result } from '../cni/result.ts';
import { formatCIDR, networkOf, parseCIDR, parseIP } from '../ip/ip.ts';
import { devSysctl } from '../kernel/keys.ts';
import type { Address, OwnershipScope, Route, Sysctl } from '../kernel/model.ts';
import { linkNameProblem } from '../kernel/names.ts';

export type Raw = Readonly<Record<string, unknown>>;
export const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);

/** The options every lower-device plugin takes. */
export interface LowerLinkConf {
  readonly name: string;
  readonly cniVersion: string;
  /** undefined: found by the app (ipvlan: prevResult's interface or the default route's). */
  readonly master?: string;
  /** 0: the kernel's default (the master's). */
  readonly mtu: number;
  readonly linkInContainer: boolean;
  readonly dns?: DNS;
  /** '' means no IPAM plugin. */
  readonly ipamType: string;
}

/** Parse `master`, `mtu`, `linkInContainer`, `ipam.type` and `dns`, pushing what is wrong to `errs`. */
export function parseLowerLinkConf(o: Raw, name: string, cniVersion: string, errs: string[]): LowerLinkConf {
  let master: string | undefined;
  if (o['master'] !== undefined && o['master'] !== '') {
    const p = typeof o['master'] === 'string' ? linkNameProblem(o['master']) : 'must be a string';
    if (p) errs.push(`master: ${JSON.stringify(o['master'])} ${p}`);
    else master = o['master'] as string;
  }
  const mtu = o['mtu'] ?? 0;
  if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 0 || mtu > 65535)
    errs.push(`mtu: must be an integer between 0 and 65535, got ${JSON.stringify(mtu)}`);
  const lic = o['linkInContainer'] ?? false;
  if (typeof lic !== 'boolean') errs.push('linkInContainer: must be true or false');
  let ipamType = '';
  if (o['ipam'] !== undefined && o['ipam'] !== null) {
    const ipam = obj(o['ipam']);
    if (!ipam) errs.push('ipam: must be an object');
    else if (ipam['type'] !== undefined && typeof ipam['type'] !== 'string') errs.push('ipam.type: must be a string');
    else ipamType = (ipam['type'] as string | undefined) ?? '';
    // dhcp talks on the interface, which these plugins make only once IPAM answered: not supported (yet).
    if (ipamType === 'dhcp')
      errs.push(
        "ipam.type: dhcp is not supported with felt's ipvlan and vlan (it needs the interface before IPAM runs; bridge and macvlan order themselves for it)",
      );
  }
  let dns: DNS | undefined;
  if (o['dns'] !== undefined && o['dns'] !== null) {
    const d = obj(o['dns']);
    if (!d) errs.push('dns: must be an object');
    else if (Object.keys(d).length) dns = d as DNS;
  }
  return {
    name,
    cniVersion,
    ...(master ? { master } : {}),
    mtu: typeof mtu === 'number' ? mtu : 0,
    linkInContainer: lic === true,
    ...(dns ? { dns } : {}),
    ipamType,
  };
}

/** Where the container's addresses come from: an IPAM plugin's result, or (chained) prevResult's. */
export interface Addressing {
  /** Names the source in messages: the IPAM plugin's type, or "prevResult". */
  readonly source: string;
  readonly result: Pick<Result, 'ips' | 'routes' | 'dns'>;
}

export interface IfaceConfig {
  readonly ips: IPConfig[];
  readonly addresses: Address[];
  readonly routes: Route[];
  readonly sysctls: Sysctl[];
}

/**
 * The addresses, routes and sysctls of the container interface: every address on it (result `interface: 0`),
 * every route through it, `disable_ipv6` 0 when it has IPv6 addresses (as ConfigureIface).
 */
export function ifaceConfig(a: Addressing, ifname: string, netns: string): E.Either<CniError, IfaceConfig> {
  // prevResult is part of the config (code 7); an IPAM plugin's result is the delegate's fault (code 105).
  const bad = (what: string): E.Either<CniError, never> =>
    E.left(a.source === 'prevResult' ? invalidConfig(`prevResult: ${what}`) : cniError(ErrCode.Delegate, `${a.source}: ${what}`));
  if (!a.result.ips?.length) return bad('IPAM plugin returned missing IP config');
  const ips: IPConfig[] = [];
  const addresses: Address[] = [];
  const routes: Route[] = [];
  const gwOf: { 4?: string; 6?: string } = {};
  for (const ipc of a.result.ips) {
    const c = parseCIDR(ipc.address);
    if (!c) return bad(`invalid address ${JSON.stringify(ipc.address)}`);
    ips.push({ ...ipc, interface: 0 });
    addresses.push({ ns: netns, dev: ifname, cidr: formatCIDR(c) });
    const gw = ipc.gateway ? parseIP(ipc.gateway) : undefined;
    if (gw) gwOf[gw.family] ??= ipc.gateway;
  }
  for (const r of a.result.routes ?? []) {
    const dst = parseCIDR(r.dst);
    if (!dst) return bad(`invalid route destination ${JSON.stringify(r.dst)}`);
    const gw = r.gw ?? gwOf[dst.ip.family];
    routes.push({ ns: netns, dst: formatCIDR(networkOf(dst)), dev: ifname, ...(gw ? { gw } : {}) });
  }
  const sysctls: Sysctl[] = [];
  if (ips.some((i) => i.address.includes(':')))
    sysctls.push({ ns: netns, key: devSysctl('net.ipv6.conf', ifname, 'disable_ipv6'), value: '0' });
  return E.right({ ips, addresses, routes, sysctls });
}

/**
 * `ifaceConfig` of an interface plugin's IPAM result (or, in CHECK, prevResult in its place), its problems the
 * IPAM plugin's (code 105); nothing without an IPAM plugin (`ipamType` '').
 */
export function ipamIfaceConfig(
  ipamType: string,
  result: Addressing['result'] | undefined,
  ifname: string,
  netns: string,
): E.Either<CniError, IfaceConfig> {
  return ipamType === ''
    ? E.right({ ips: [], addresses: [], routes: [], sysctls: [] })
    : ifaceConfig({ source: ipamType, result: result ?? {} }, ifname, netns);
}

/** The master's MTU bounds the container's (the kernel refuses more for ipvlans and vlans). */
export function mtuProblem(mtu: number, masterMtu: number | undefined): CniError | undefined {
  return masterMtu !== undefined && mtu > masterMtu
    ? invalidConfig(`mtu: invalid MTU ${mtu}, must be [0, master MTU(${masterMtu})]`)
    : undefined;
}

/** One attachment owns its interface in the pod and everything on it; never the master. */
export const lowerLinkScope = (ifname: string, netns: string): OwnershipScope => ({
  links: netns ? [{ ns: netns, name: ifname }] : [],
  devices: netns ? [{ ns: netns, dev: ifname }] : [],
  chains: [],
  ruleMarkers: [],
});
