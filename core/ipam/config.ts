// host-local's configuration, parsed and validated up front (so a bad config changes nothing), with the
// reference's defaults: rangeStart = subnet + 1, rangeEnd = broadcast - 1 (IPv4) or the last address (IPv6),
// gateway = subnet + 1. Unknown keys are ignored, as the reference does. Messages name the field, from the
// root of the network config: `ipam.ranges[0][0].subnet: 10.0.0.5/24 has host bits set`.
//
// The effective range sets are, in order: runtimeConfig.ipRanges, the legacy top-level ipam.subnet range,
// ipam.ranges (the reference prepends the first two). Requested addresses come from CNI_ARGS `IP` (a comma
// list), `args.cni.ips` and `runtimeConfig.ips`.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import { compareVersions, type Route } from '../cni/result.ts';
import {
  bits,
  cmpIP,
  contains,
  firstIP,
  formatCIDR,
  formatIP,
  hasHostBits,
  lastIP,
  networkOf,
  next,
  parseCIDR,
  parseIP,
  prev,
  type CIDR,
  type IP,
} from '../ip/ip.ts';
import { describeRange, rangesOverlap, type Range, type RangeSet } from './range.ts';

export const DEFAULT_DATA_DIR = '/var/lib/felt';

export interface RequestedIP {
  readonly ip: IP;
  /** Where it was asked for: `CNI_ARGS IP`, `args.cni.ips[0]`, `runtimeConfig.ips[1]`. */
  readonly source: string;
}

export interface Attachment {
  readonly containerId: string;
  readonly ifname: string;
}

export interface IpamConf {
  readonly network: string;
  readonly cniVersion: string;
  readonly dataDir: string;
  readonly rangeSets: readonly RangeSet[];
  readonly routes: readonly Route[];
  /** Path of a resolv.conf whose content becomes the result's `dns`; the app reads it. */
  readonly resolvConf?: string;
  readonly requested: readonly RequestedIP[];
  /** `cni.dev/valid-attachments` (GC only). */
  readonly validAttachments?: readonly Attachment[];
}

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);
const show = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

/** Network names become stream names (`ipam/<name>`): the libcni rule. */
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** IPv4-mapped IPv6 addresses are IPv4 addresses (Go's canonicalizeIP). */
const canonical = (a: IP): IP => (a.family === 6 && a.value >> 32n === 0xffffn ? { family: 4, value: a.value & 0xffffffffn } : a);

const parseAddr = (s: unknown): IP | undefined => (typeof s === 'string' ? mapIP(parseIP(s.trim())) : undefined);
const mapIP = (a: IP | undefined): IP | undefined => (a ? canonical(a) : undefined);

/** Go's UnmarshallableBool, used for IgnoreUnknown. */
const truthy = (s: string): boolean | undefined => {
  const l = s.toLowerCase();
  return l === '1' || l === 'true' ? true : l === '0' || l === 'false' ? false : undefined;
};

/** CNI_ARGS: host-local knows `IP` and `IgnoreUnknown`; anything else is refused unless IgnoreUnknown is set. */
function parseEnvArgs(args: Readonly<Record<string, string>>): E.Either<CniError, RequestedIP[]> {
  const bad = (msg: string) => E.left(cniError(ErrCode.InvalidEnvironment, `CNI_ARGS: ${msg}`));
  const ignore = args['IgnoreUnknown'] === undefined ? false : truthy(args['IgnoreUnknown']);
  if (ignore === undefined) return bad(`IgnoreUnknown: invalid boolean "${args['IgnoreUnknown']}"`);
  const unknown = Object.keys(args).filter((k) => k !== 'IP' && k !== 'IgnoreUnknown');
  if (unknown.length && !ignore) {
    return bad(`unknown args [${unknown.map((k) => JSON.stringify(`${k}=${args[k]}`)).join(' ')}] (set IgnoreUnknown=1 to ignore them)`);
  }
  const out: RequestedIP[] = [];
  const ip = args['IP'];
  if (ip !== undefined && ip !== '') {
    for (const s of ip.split(',')) {
      const a = parseAddr(s);
      if (!a) return bad(`IP: invalid IP address "${s}"`);
      out.push({ ip: a, source: 'CNI_ARGS IP' });
    }
  }
  return E.right(out);
}

function parseRange(o: unknown, label: string, errs: string[]): Range | undefined {
  const r = obj(o);
  if (!r) {
    errs.push(`${label}: must be an object with a subnet`);
    return undefined;
  }
  const f = (k: string) => `${label}.${k}`;
  if (r['subnet'] === undefined || r['subnet'] === '') {
    errs.push(`${f('subnet')}: missing`);
    return undefined;
  }
  const c = typeof r['subnet'] === 'string' ? parseCIDR(r['subnet'].trim()) : undefined;
  if (!c) {
    errs.push(`${f('subnet')}: invalid CIDR address ${show(r['subnet'])}`);
    return undefined;
  }
  const subnet: CIDR = c;
  const fam = subnet.ip.family;
  if (hasHostBits(subnet)) {
    errs.push(`${f('subnet')}: ${formatCIDR(subnet)} has host bits set (the network address is ${formatCIDR(networkOf(subnet))})`);
    return undefined;
  }
  // Nothing to allocate from a /31 or /32 (/127, /128): the reference's rule, prefix > bits - 2.
  if (subnet.prefix > bits(fam) - 2) {
    errs.push(`${f('subnet')}: ${formatCIDR(subnet)} is too small to allocate from (at most /${bits(fam) - 2})`);
    return undefined;
  }
  const network = firstIP(subnet);
  const broadcast = lastIP(subnet);
  const lowest = next(network);
  const highest = fam === 4 ? prev(broadcast) : broadcast;
  const addr = (k: 'rangeStart' | 'rangeEnd' | 'gateway', dflt: IP): IP | undefined => {
    if (r[k] === undefined || r[k] === null || r[k] === '') return dflt;
    const a = parseAddr(r[k]);
    if (!a) {
      errs.push(`${f(k)}: invalid IP address ${show(r[k])}`);
      return undefined;
    }
    if (!contains(subnet, a)) {
      errs.push(`${f(k)}: ${formatIP(a)} is not in subnet ${formatCIDR(subnet)}`);
      return undefined;
    }
    if (k !== 'gateway' && (cmpIP(a, lowest) < 0 || cmpIP(a, highest) > 0)) {
      const what = cmpIP(a, lowest) < 0 ? 'the network address' : 'the broadcast address';
      errs.push(`${f(k)}: ${formatIP(a)} is ${what} of ${formatCIDR(subnet)}, which is never allocated`);
      return undefined;
    }
    return a;
  };
  const rangeStart = addr('rangeStart', lowest);
  const rangeEnd = addr('rangeEnd', highest);
  const gateway = addr('gateway', lowest);
  if (!rangeStart || !rangeEnd || !gateway) return undefined;
  if (cmpIP(rangeStart, rangeEnd) > 0) {
    errs.push(`${f('rangeEnd')}: ${formatIP(rangeEnd)} is before rangeStart ${formatIP(rangeStart)}`);
    return undefined;
  }
  return { subnet, rangeStart, rangeEnd, gateway, label };
}

function parseRangeSets(v: unknown, label: string, first: number, errs: string[]): RangeSet[] {
  if (!Array.isArray(v)) {
    errs.push(`${label}: must be an array of range sets (arrays of {subnet, rangeStart, rangeEnd, gateway})`);
    return [];
  }
  const sets: RangeSet[] = [];
  v.forEach((rs: unknown, i: number) => {
    const setLabel = `${label}[${i}]`;
    if (!Array.isArray(rs)) {
      errs.push(`${setLabel}: must be an array of ranges`);
      return;
    }
    if (rs.length === 0) {
      errs.push(`${setLabel}: empty range set`);
      return;
    }
    const before = errs.length;
    const ranges = rs.map((r: unknown, j: number) => parseRange(r, `${setLabel}[${j}]`, errs));
    if (errs.length > before) return;
    const ok = ranges as Range[];
    const fam = ok[0]!.subnet.ip.family;
    const other = ok.find((r) => r.subnet.ip.family !== fam);
    if (other) {
      errs.push(`${setLabel}: mixed address families (${ok[0]!.label} is IPv${fam}, ${other.label} is IPv${other.subnet.ip.family})`);
      return;
    }
    sets.push({ index: first + sets.length, label: setLabel, family: fam, ranges: ok });
  });
  return sets;
}

export function parseRoutes(v: unknown, errs: string[]): Route[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    errs.push('ipam.routes: must be an array of {dst, gw}');
    return [];
  }
  const out: Route[] = [];
  v.forEach((x: unknown, i: number) => {
    const label = `ipam.routes[${i}]`;
    const r = obj(x);
    if (!r) return void errs.push(`${label}: must be an object with dst`);
    const dst = typeof r['dst'] === 'string' ? parseCIDR(r['dst'].trim()) : undefined;
    if (!dst) return void errs.push(`${label}.dst: invalid CIDR address ${show(r['dst'])}`);
    const route: Route = { dst: formatCIDR(dst) };
    if (r['gw'] !== undefined && r['gw'] !== null && r['gw'] !== '') {
      const gw = parseAddr(r['gw']);
      if (!gw) return void errs.push(`${label}.gw: invalid IP address ${show(r['gw'])}`);
      route.gw = formatIP(gw);
    }
    for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
      const n = r[k];
      if (n === undefined || n === null) continue;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) return void errs.push(`${label}.${k}: must be a non-negative integer`);
      route[k] = n;
    }
    out.push(route);
  });
  return out;
}

function parseIPList(v: unknown, label: string, cidrOk: boolean, errs: string[]): RequestedIP[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    errs.push(`${label}: must be an array of IP addresses`);
    return [];
  }
  const out: RequestedIP[] = [];
  v.forEach((s: unknown, i: number) => {
    // runtimeConfig.ips may carry a prefix ("10.0.0.5/24"); the address is what counts.
    const c = cidrOk && typeof s === 'string' && s.includes('/') ? parseCIDR(s.trim()) : undefined;
    const a = c ? canonical(c.ip) : parseAddr(s);
    if (!a) errs.push(`${label}[${i}]: invalid IP address ${show(s)}`);
    else out.push({ ip: a, source: `${label}[${i}]` });
  });
  return out;
}

export function parseAttachments(v: unknown, errs: string[]): Attachment[] | undefined {
  const label = 'cni.dev/valid-attachments';
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) {
    errs.push(`${label}: must be an array of {containerID, ifname}`);
    return undefined;
  }
  const out: Attachment[] = [];
  v.forEach((x: unknown, i: number) => {
    const a = obj(x);
    if (!a || typeof a['containerID'] !== 'string' || typeof a['ifname'] !== 'string') {
      errs.push(`${label}[${i}]: must be {"containerID": string, "ifname": string}`);
    } else out.push({ containerId: a['containerID'], ifname: a['ifname'] });
  });
  return out;
}

/** dataDir is a directory path: absolute, without control characters and without '.' or '..' components. */
export function dataDirProblem(p: string): string | undefined {
  if (!p.startsWith('/')) return 'is not an absolute path';
  if (/[\x00-\x1f\x7f]/.test(p)) return 'contains control characters';
  if (p.split('/').some((seg) => seg === '.' || seg === '..')) return "has a '.' or '..' component";
  return undefined;
}

/** Parse the `ipam` section of a network config (plus runtimeConfig/args and CNI_ARGS). */
export function parseIpamConf(conf: NetConf, cniArgs: Readonly<Record<string, string>>): E.Either<CniError, IpamConf> {
  const envIPs = parseEnvArgs(cniArgs);
  if (E.isLeft(envIPs)) return envIPs;
  if (!NETWORK_NAME.test(conf.name)) return E.left(invalidConfig(`name: invalid characters found in network name "${conf.name}"`));
  const o = conf.raw;
  const ipam = obj(o['ipam']);
  if (!ipam) return E.left(invalidConfig(o['ipam'] === undefined ? "ipam: IPAM config missing 'ipam' key" : 'ipam: must be an object'));
  const errs: string[] = [];

  const dataDir = ipam['dataDir'] === undefined || ipam['dataDir'] === null || ipam['dataDir'] === '' ? DEFAULT_DATA_DIR : ipam['dataDir'];
  if (typeof dataDir !== 'string') errs.push('ipam.dataDir: must be a path');
  else {
    const problem = dataDirProblem(dataDir);
    if (problem) errs.push(`ipam.dataDir: ${JSON.stringify(dataDir)} ${problem}`);
  }
  const resolvConf = ipam['resolvConf'];
  if (resolvConf !== undefined && resolvConf !== null && typeof resolvConf !== 'string') errs.push('ipam.resolvConf: must be a path');

  const rc = o['runtimeConfig'] === undefined || o['runtimeConfig'] === null ? {} : obj(o['runtimeConfig']);
  if (!rc) errs.push('runtimeConfig: must be an object');
  const rt = rc ?? {};
  const argsCni = obj(obj(o['args'])?.['cni']);
  const requested = [
    ...envIPs.right,
    ...parseIPList(argsCni?.['ips'], 'args.cni.ips', false, errs),
    ...parseIPList(rt['ips'], 'runtimeConfig.ips', true, errs),
  ];

  const sets: RangeSet[] = [];
  if (rt['ipRanges'] !== undefined && rt['ipRanges'] !== null) {
    sets.push(...parseRangeSets(rt['ipRanges'], 'runtimeConfig.ipRanges', sets.length, errs));
  }
  if (ipam['subnet'] !== undefined && ipam['subnet'] !== null && ipam['subnet'] !== '') {
    // The legacy single range: its fields sit directly in `ipam`.
    const r = parseRange(
      { subnet: ipam['subnet'], rangeStart: ipam['rangeStart'], rangeEnd: ipam['rangeEnd'], gateway: ipam['gateway'] },
      'ipam',
      errs,
    );
    if (r) sets.push({ index: sets.length, label: 'ipam.subnet', family: r.subnet.ip.family, ranges: [r] });
  }
  if (ipam['ranges'] !== undefined && ipam['ranges'] !== null) {
    sets.push(...parseRangeSets(ipam['ranges'], 'ipam.ranges', sets.length, errs));
  }
  const routes = parseRoutes(ipam['routes'], errs);
  const validAttachments = parseAttachments(o['cni.dev/valid-attachments'], errs);
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  if (sets.length === 0) return E.left(invalidConfig('ipam: no IP ranges specified (set ipam.ranges or ipam.subnet)'));

  // No two ranges anywhere may share an address: within a set, or across sets.
  const all = sets.flatMap((s) => s.ranges);
  for (let i = 0; i < all.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = all[i]!;
      const b = all[j]!;
      if (rangesOverlap(a, b)) errs.push(`${a.label} ${describeRange(a)} overlaps ${b.label} ${describeRange(b)}`);
    }
  }
  // CNI 0.1.0/0.2.0 results hold one address per family.
  if (compareVersions(conf.cniVersion, '0.3.0') < 0) {
    for (const fam of [4, 6] as const) {
      const n = sets.filter((s) => s.family === fam).length;
      if (n > 1)
        errs.push(
          `ipam.ranges: CNI version ${conf.cniVersion} does not support more than 1 address per family (${n} IPv${fam} range sets)`,
        );
    }
  }
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));

  return E.right({
    network: conf.name,
    cniVersion: conf.cniVersion,
    dataDir: dataDir as string,
    rangeSets: sets,
    routes,
    ...(typeof resolvConf === 'string' && resolvConf !== '' ? { resolvConf } : {}),
    requested,
    ...(validAttachments ? { validAttachments } : {}),
  });
}
