// static IPAM: the addresses, routes and DNS the config names, as the reference plugin gives them. Nothing is
// allocated or remembered, so DEL has nothing to do. Address sources, later ones replacing earlier ones as the
// reference does: `ipam.addresses` (plus CNI_ARGS `IP=` appended, with `GATEWAY=` set on the addresses that
// contain it), then `args.cni.ips`, then `runtimeConfig.ips`.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import { compareVersions, readResult, type DNS, type IPConfig, type Result, type Route } from '../cni/result.ts';
import { contains, formatCIDR, formatIP, parseCIDR, parseIP, type CIDR, type IP } from '../ip/ip.ts';
import { parseRoutes } from './config.ts';

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);
const show = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

interface StaticAddress {
  readonly address: CIDR;
  readonly gateway?: IP;
}

export interface StaticConf {
  readonly cniVersion: string;
  readonly addresses: readonly StaticAddress[];
  readonly routes: readonly Route[];
  readonly dns?: DNS;
}

/** The IPv4-mapped form of an IPv4 address is IPv4 (Go's To4). */
const cidr = (s: unknown): CIDR | undefined => (typeof s === 'string' ? parseCIDR(s.trim()) : undefined);

function addressList(v: unknown, label: string, errs: string[], what: string): StaticAddress[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) return (errs.push(`${label}: must be a list`), []);
  return v.flatMap((x: unknown, i: number): StaticAddress[] => {
    const s = typeof x === 'string' ? x : obj(x)?.['address'];
    const c = cidr(s);
    if (!c)
      return (
        errs.push(
          `${label}[${i}]${typeof x === 'string' ? '' : '.address'}: ${what} is expected to be in CIDR notation, got ${JSON.stringify(show(s))}`,
        ),
        []
      );
    const g = typeof x === 'string' ? undefined : obj(x)?.['gateway'];
    if (g === undefined || g === null || g === '') return [{ address: c }];
    const gw = typeof g === 'string' ? parseIP(g.trim()) : undefined;
    if (!gw) return (errs.push(`${label}[${i}].gateway: invalid IP address ${JSON.stringify(show(g))}`), []);
    return [{ address: c, gateway: gw }];
  });
}

export function parseStaticConf(conf: NetConf, cniArgs: Readonly<Record<string, string>>): E.Either<CniError, StaticConf> {
  const o = conf.raw;
  const ipam = obj(o['ipam']);
  if (!ipam) return E.left(invalidConfig(o['ipam'] === undefined ? "ipam: IPAM config missing 'ipam' key" : 'ipam: must be an object'));
  const errs: string[] = [];
  let addresses = addressList(ipam['addresses'], 'ipam.addresses', errs, "the 'address' field");

  // CNI_ARGS IP=a,b and GATEWAY=g,h (the gateway goes to every address whose subnet contains it).
  if (cniArgs['IP'] !== undefined && cniArgs['IP'] !== '') {
    cniArgs['IP'].split(',').forEach((item, i) => {
      const c = cidr(item);
      if (!c) errs.push(`CNI_ARGS IP[${i}]: the 'ip' field is expected to be in CIDR notation, got ${JSON.stringify(item.trim())}`);
      else addresses.push({ address: c });
    });
  }
  if (cniArgs['GATEWAY'] !== undefined && cniArgs['GATEWAY'] !== '') {
    for (const item of cniArgs['GATEWAY'].split(',')) {
      const gw = parseIP(item.trim());
      if (!gw) {
        errs.push(`CNI_ARGS GATEWAY: invalid gateway address ${JSON.stringify(item.trim())}`);
        continue;
      }
      addresses = addresses.map((a) => (contains(a.address, gw) ? { ...a, gateway: gw } : a));
    }
  }
  const fromArgs = obj(obj(o['args'])?.['cni'])?.['ips'];
  if (Array.isArray(fromArgs) && fromArgs.length) addresses = addressList(fromArgs, 'args.cni.ips', errs, "an entry in the 'ips' field");
  const rc = obj(o['runtimeConfig']);
  if (Array.isArray(rc?.['ips']) && (rc['ips'] as unknown[]).length)
    addresses = addressList(rc['ips'], 'runtimeConfig.ips', errs, "an entry in the 'ips' field");

  const routes = parseRoutes(ipam['routes'], errs);
  let dns: DNS | undefined;
  if (ipam['dns'] !== undefined && ipam['dns'] !== null) {
    const r = readResult({ cniVersion: '1.0.0', dns: ipam['dns'] });
    if (E.isLeft(r)) errs.push(`ipam.${r.left}`);
    else if (r.right.dns) dns = r.right.dns;
  }
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  for (const fam of [4, 6] as const) {
    if (addresses.filter((a) => a.address.ip.family === fam).length > 1 && compareVersions(conf.cniVersion, '0.3.0') < 0) {
      return E.left(invalidConfig(`ipam.addresses: CNI version ${conf.cniVersion} does not support more than 1 address per family`));
    }
  }
  return E.right({ cniVersion: conf.cniVersion, addresses, routes, ...(dns ? { dns } : {}) });
}

export function staticResult(c: StaticConf): Result {
  const ips: IPConfig[] = c.addresses.map((a) => ({
    address: formatCIDR(a.address),
    ...(a.gateway ? { gateway: formatIP(a.gateway) } : {}),
  }));
  // Empty lists are left out, as the reference's omitempty does.
  return {
    cniVersion: c.cniVersion,
    ...(ips.length ? { ips } : {}),
    ...(c.routes.length ? { routes: [...c.routes] } : {}),
    ...(c.dns ? { dns: c.dns } : {}),
  };
}

/**
 * CHECK as the reference: every configured address found in prevResult must carry the configured gateway
 * (an address missing from prevResult is not an error, as in the reference).
 */
export function checkStatic(c: StaticConf, prev: Result): string | undefined {
  for (const a of c.addresses) {
    const ip = formatIP(a.address.ip);
    const found = (prev.ips ?? []).find((p) => p.address.split('/')[0] === ip);
    if (!found || !a.gateway) continue;
    if (found.gateway !== formatIP(a.gateway))
      return `static: address ${ip} has gateway ${found.gateway ?? 'none'} in prevResult, want ${formatIP(a.gateway)}`;
  }
  return undefined;
}
