// The sbr plugin's configuration: the reference's options (`table` from v1.6, `gateways` and `addSourceHints`
// from its main branch, 2025) and the prevResult it chains on, validated up front so that bad input changes
// nothing. Messages name the field.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import { readResult, type IPConfig, type Result } from '../cni/result.ts';
import { formatIP, parseCIDR, parseIP, type Family } from '../ip/ip.ts';

export interface SbrConf {
  /** Put every address's rule to this table and do nothing else (the reference's `table`). */
  readonly table?: number;
  /** Gateways overriding prevResult's, at most one per family (the reference's `gateways`). */
  readonly gateways: Readonly<Partial<Record<Family, string>>>;
  /** Keep the addresses' prefix routes in the main table, with the address as source hint. */
  readonly addSourceHints: boolean;
}

type Raw = Readonly<Record<string, unknown>>;
const show = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 80);

/** Table ids the kernel reserves: unspec (0), default (253), main (254), local (255). */
export const RESERVED_TABLES: ReadonlySet<number> = new Set([0, 253, 254, 255]);

export function parseSbrConf(conf: NetConf): E.Either<CniError, SbrConf> {
  const o: Raw = conf.raw;
  const errs: string[] = [];
  let table: number | undefined;
  if (o['table'] !== undefined && o['table'] !== null) {
    const t = o['table'];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 2 ** 32 - 1 || RESERVED_TABLES.has(t)) {
      errs.push(`table: must be an integer between 1 and 4294967295 other than 253, 254 and 255, got ${show(t)}`);
    } else table = t;
  }
  const gateways: Partial<Record<Family, string>> = {};
  const gw = o['gateways'];
  if (gw !== undefined && gw !== null) {
    if (!Array.isArray(gw)) errs.push(`gateways: must be a list of IP addresses, got ${show(gw)}`);
    else if (gw.length > 2) errs.push('gateways: at most 2 entries (one IPv4, one IPv6)');
    else
      gw.forEach((g: unknown, i) => {
        const a = typeof g === 'string' ? parseIP(g) : undefined;
        if (!a) errs.push(`gateways[${i}]: ${show(g)} is not an IP address`);
        else if (gateways[a.family] !== undefined)
          errs.push(`gateways[${i}]: a second IPv${a.family} gateway (${formatIP(a)}); one per family`);
        else gateways[a.family] = formatIP(a);
      });
  }
  const hints = o['addSourceHints'];
  if (hints !== undefined && hints !== null && typeof hints !== 'boolean')
    errs.push(`addSourceHints: must be true or false, got ${show(hints)}`);
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({ ...(table !== undefined ? { table } : {}), gateways, addSourceHints: hints === true });
}

/** prevResult, required (sbr only makes sense chained after the plugin that made the interface). */
export function prevResultOf(conf: NetConf): E.Either<CniError, Result> {
  const raw = conf.raw['prevResult'];
  if (raw === undefined || raw === null)
    return E.left(invalidConfig('prevResult: required (sbr must be chained after the plugin that made the interface)'));
  const r = readResult(raw);
  return E.isLeft(r) ? E.left(invalidConfig(`prevResult: ${r.left}`)) : E.right(r.right);
}

/** One address of the interface: its CIDR as prevResult gives it and its gateway. */
export interface SbrAddress {
  readonly family: Family;
  /** The host address, e.g. "10.22.0.5". */
  readonly ip: string;
  /** With its prefix, e.g. "10.22.0.5/16". */
  readonly cidr: string;
  readonly gateway?: string;
}

/**
 * The addresses of `ifname` in prevResult, as the reference's getIPCfgs picks them: an IP without an
 * interface index, or with an index out of range, counts as the interface's.
 */
export function addressesOf(prev: Result, ifname: string): SbrAddress[] {
  const ifs = prev.interfaces ?? [];
  return (prev.ips ?? [])
    .filter((x: IPConfig) => x.interface === undefined || x.interface >= ifs.length || ifs[x.interface]!.name === ifname)
    .flatMap((x) => {
      const c = parseCIDR(x.address);
      if (!c) return [];
      return [{ family: c.ip.family, ip: formatIP(c.ip), cidr: x.address, ...(x.gateway !== undefined ? { gateway: x.gateway } : {}) }];
    });
}

/** The addresses of `ifname`, or an error naming the field when there is none. */
export function requireAddresses(prev: Result, ifname: string): E.Either<CniError, SbrAddress[]> {
  const a = addressesOf(prev, ifname);
  return a.length ? E.right(a) : E.left(invalidConfig(`prevResult.ips: no address on interface "${ifname}"`));
}
