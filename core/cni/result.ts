// CNI results. Plugins build the current (1.1.0) shape; `convertResult` writes it in the version the
// network config asked for, as the spec's conversion rules say.

import * as E from 'fp-ts/lib/Either.js';
import { formatCIDR, formatIP, networkOf, parseCIDR, parseIP } from '../ip/ip.ts';
import { parseMac } from '../ip/mac.ts';
import { linkNameProblem } from '../kernel/names.ts';

export const CURRENT_VERSION = '1.1.0';
/** Versions felt accepts in a network config. */
export const PLUGIN_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
/** IPAM plugins also answer the legacy 0.1.0/0.2.0 form. */
export const IPAM_VERSIONS = ['0.1.0', '0.2.0', ...PLUGIN_VERSIONS] as const;

export interface Interface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface IPConfig {
  /** CIDR with the host address, e.g. "10.22.0.5/16". */
  address: string;
  gateway?: string;
  interface?: number;
}

export interface Route {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface DNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface Result {
  cniVersion: string;
  interfaces?: Interface[];
  ips?: IPConfig[];
  routes?: Route[];
  dns?: DNS;
}

const isEmptyDNS = (d: DNS | undefined): boolean => !d || (!d.nameservers?.length && !d.domain && !d.search?.length && !d.options?.length);

/** Compare dotted versions numerically: -1, 0, 1. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

const cleanDNS = (d: DNS | undefined): DNS | undefined => {
  if (isEmptyDNS(d) || !d) return undefined;
  const out: DNS = {};
  if (d.nameservers?.length) out.nameservers = d.nameservers;
  if (d.domain) out.domain = d.domain;
  if (d.search?.length) out.search = d.search;
  if (d.options?.length) out.options = d.options;
  return out;
};

/** Route fields that exist only from 1.1.0 on (mtu, advmss, priority, table, scope). */
const legacyRoute = (r: Route): Route => (r.gw ? { dst: r.dst, gw: r.gw } : { dst: r.dst });

/** Interface fields before 1.1.0: name, mac, sandbox. */
const legacyInterface = (i: Interface): Interface => strip({ name: i.name, mac: i.mac, sandbox: i.sandbox });

const familyOf = (cidr: string): '4' | '6' => (cidr.includes(':') ? '6' : '4');

/**
 * Write `r` in `version`. 1.x keeps everything (1.0.0 drops the 1.1-only route fields); 0.3.x/0.4.0 add
 * `ips[].version`; 0.1.0/0.2.0 use the `ip4`/`ip6` form with the first address of each family.
 */
export function convertResult(r: Result, version: string): Record<string, unknown> {
  const dns = cleanDNS(r.dns);
  if (compareVersions(version, '1.1.0') >= 0) {
    return strip({ cniVersion: version, interfaces: r.interfaces, ips: r.ips, routes: r.routes, dns });
  }
  if (compareVersions(version, '1.0.0') >= 0) {
    return strip({
      cniVersion: version,
      interfaces: r.interfaces?.map(legacyInterface),
      ips: r.ips,
      routes: r.routes?.map(legacyRoute),
      dns,
    });
  }
  if (compareVersions(version, '0.3.0') >= 0) {
    const ips = r.ips?.map((i) => strip({ version: familyOf(i.address), ...i }));
    const interfaces = r.interfaces?.map(legacyInterface);
    return strip({ cniVersion: version, interfaces, ips, routes: r.routes?.map(legacyRoute), dns });
  }
  // 0.1.0 / 0.2.0
  const pick = (fam: '4' | '6'): Record<string, unknown> | undefined => {
    const first = r.ips?.find((i) => familyOf(i.address) === fam);
    if (!first) return undefined;
    const routes = (r.routes ?? []).filter((rt) => familyOf(rt.dst) === fam).map(legacyRoute);
    return strip({ ip: first.address, gateway: first.gateway, routes: routes.length ? routes : undefined });
  };
  return strip({ cniVersion: version, ip4: pick('4'), ip6: pick('6'), dns });
}

/**
 * Read a result printed in any supported version (a prevResult, or a delegate's stdout) into the 1.1.0 shape.
 * Untrusted: every address, prefix, MAC and number is parsed and written back in canonical form (so no text
 * of the producer's own reaches the kernel), and anything else is an error naming the field, e.g.
 * `ips[0].gateway: "10.0.0.1\nx" is not an IP address`.
 */
export function readResult(raw: unknown): E.Either<string, Result> {
  const o = obj(raw);
  if (!o) return E.left('must be a JSON object');
  const errs: string[] = [];
  const version = o['cniVersion'] === undefined ? '0.1.0' : o['cniVersion'];
  if (typeof version !== 'string' || !/^\d+\.\d+\.\d+$/.test(version)) return E.left(`cniVersion: ${show(version)} is not a version`);
  const res: Result = { cniVersion: CURRENT_VERSION };
  if (compareVersions(version, '0.3.0') < 0) {
    const ips: IPConfig[] = [];
    const routes: Route[] = [];
    for (const k of ['ip4', 'ip6'] as const) {
      if (o[k] === undefined || o[k] === null) continue;
      const v = obj(o[k]);
      if (!v) {
        errs.push(`${k}: must be an object`);
        continue;
      }
      const address = hostCidr(v['ip'], `${k}.ip`, errs);
      const gateway = v['gateway'] === undefined ? undefined : ipText(v['gateway'], `${k}.gateway`, errs);
      if (address) ips.push(gateway ? { address, gateway } : { address });
      routes.push(...list(v['routes'], `${k}.routes`, errs).flatMap((r, i) => readRoute(r, `${k}.routes[${i}]`, errs)));
    }
    res.ips = ips;
    res.routes = routes;
  } else {
    if (o['interfaces'] !== undefined) {
      res.interfaces = list(o['interfaces'], 'interfaces', errs).flatMap((x, i) => readInterface(x, `interfaces[${i}]`, errs));
    }
    if (o['ips'] !== undefined) {
      res.ips = list(o['ips'], 'ips', errs).flatMap((x, i) => {
        const f = `ips[${i}]`;
        const v = obj(x);
        if (!v) return (errs.push(`${f}: must be an object`), []);
        const address = hostCidr(v['address'], `${f}.address`, errs);
        const gateway = v['gateway'] === undefined ? undefined : ipText(v['gateway'], `${f}.gateway`, errs);
        const iface = v['interface'] === undefined ? undefined : int(v['interface'], `${f}.interface`, errs, 0, 1 << 20);
        if (!address) return [];
        return [{ address, ...(gateway ? { gateway } : {}), ...(iface !== undefined ? { interface: iface } : {}) }];
      });
    }
    if (o['routes'] !== undefined) res.routes = list(o['routes'], 'routes', errs).flatMap((r, i) => readRoute(r, `routes[${i}]`, errs));
  }
  if (o['dns'] !== undefined && o['dns'] !== null) {
    const d = readDNS(o['dns'], errs);
    if (d) res.dns = d;
  }
  return errs.length ? E.left(errs.join('; ')) : E.right(res);
}

/** readResult without the reason: undefined when the result does not parse. */
export const parseResult = (raw: unknown): Result | undefined => {
  const r = readResult(raw);
  return E.isRight(r) ? r.right : undefined;
};

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);
const show = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 80);

function list(v: unknown, field: string, errs: string[]): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) return (errs.push(`${field}: must be a list`), []);
  return v;
}

function hostCidr(v: unknown, field: string, errs: string[]): string | undefined {
  const c = typeof v === 'string' ? parseCIDR(v) : undefined;
  if (!c) return (errs.push(`${field}: ${show(v)} is not an address with a prefix length (e.g. 10.22.0.5/16)`), undefined);
  return formatCIDR(c);
}

function prefixText(v: unknown, field: string, errs: string[]): string | undefined {
  const c = typeof v === 'string' ? parseCIDR(v) : undefined;
  if (!c) return (errs.push(`${field}: ${show(v)} is not a prefix (e.g. 10.22.0.0/16)`), undefined);
  return formatCIDR(networkOf(c));
}

function ipText(v: unknown, field: string, errs: string[]): string | undefined {
  const a = typeof v === 'string' ? parseIP(v) : undefined;
  if (!a) return (errs.push(`${field}: ${show(v)} is not an IP address`), undefined);
  return formatIP(a);
}

function int(v: unknown, field: string, errs: string[], min: number, max: number): number | undefined {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    return (errs.push(`${field}: must be an integer between ${min} and ${max}, got ${show(v)}`), undefined);
  }
  return v;
}

function str(v: unknown, field: string, errs: string[]): string | undefined {
  if (typeof v !== 'string' || /[\x00-\x1f\x7f]/.test(v))
    return (errs.push(`${field}: must be a string without control characters`), undefined);
  return v;
}

function readRoute(x: unknown, f: string, errs: string[]): Route[] {
  const v = obj(x);
  if (!v) return (errs.push(`${f}: must be an object`), []);
  const dst = prefixText(v['dst'], `${f}.dst`, errs);
  const gw = v['gw'] === undefined || v['gw'] === '' ? undefined : ipText(v['gw'], `${f}.gw`, errs);
  const r: Route = { dst: dst ?? '' };
  if (gw) r.gw = gw;
  for (const [k, max] of [
    ['mtu', 65535],
    ['advmss', 65535],
    ['priority', 2 ** 32 - 1],
    ['table', 2 ** 32 - 1],
    ['scope', 255],
  ] as const) {
    if (v[k] === undefined) continue;
    const n = int(v[k], `${f}.${k}`, errs, 0, max);
    if (n !== undefined) r[k] = n;
  }
  return dst ? [r] : [];
}

function readInterface(x: unknown, f: string, errs: string[]): Interface[] {
  const v = obj(x);
  if (!v) return (errs.push(`${f}: must be an object`), []);
  const problem = typeof v['name'] === 'string' ? linkNameProblem(v['name']) : 'must be a string';
  if (problem) return (errs.push(`${f}.name: ${show(v['name'])} ${problem}`), []);
  const i: Interface = { name: v['name'] as string };
  if (v['mac'] !== undefined && v['mac'] !== '') {
    const m = typeof v['mac'] === 'string' ? parseMac(v['mac']) : undefined;
    if (!m) errs.push(`${f}.mac: ${show(v['mac'])} is not a MAC address`);
    else i.mac = m;
  }
  if (v['mtu'] !== undefined) {
    const n = int(v['mtu'], `${f}.mtu`, errs, 0, 65535);
    if (n !== undefined) i.mtu = n;
  }
  for (const k of ['sandbox', 'socketPath', 'pciID'] as const) {
    if (v[k] === undefined || v[k] === '') continue;
    const s = str(v[k], `${f}.${k}`, errs);
    if (s !== undefined) i[k] = s;
  }
  return [i];
}

function readDNS(x: unknown, errs: string[]): DNS | undefined {
  const v = obj(x);
  if (!v) return (errs.push('dns: must be an object'), undefined);
  const d: DNS = {};
  const strs = (k: 'nameservers' | 'search' | 'options'): string[] =>
    list(v[k], `dns.${k}`, errs).flatMap((s, i) => {
      const t = str(s, `dns.${k}[${i}]`, errs);
      return t === undefined ? [] : [t];
    });
  const ns = strs('nameservers');
  if (ns.length) d.nameservers = ns;
  if (v['domain'] !== undefined && v['domain'] !== '') {
    const t = str(v['domain'], 'dns.domain', errs);
    if (t !== undefined) d.domain = t;
  }
  const search = strs('search');
  if (search.length) d.search = search;
  const options = strs('options');
  if (options.length) d.options = options;
  return d;
}

function strip<T extends Record<string, unknown>>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as T;
}
