// What win-bridge and win-overlay share, as the reference's pkg/hns/netconf_windows.go has it: the config
// (apiVersion 1 = HNS v1, 2 = HCN v2; endpoint policies; runtimeConfig's DNS and port mappings; loopbackDSR) and
// the policy edits (an OutBoundNAT exception, a loopback DSR destination, the provider address, port mappings),
// each for either API's policy shape, keeping a policy the config already has. Pure.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { DNS } from '../cni/result.ts';
import { parseCIDR, parseIP } from '../ip/ip.ts';
import { obj } from '../l2/attachment.ts';

export type ApiVersion = 1 | 2;

/** One entry of `policies`: only those named EndpointPolicy (any case) reach an endpoint. */
export interface Policy {
  readonly name: string;
  /** The policy document as the config has it (JSON). */
  readonly value: unknown;
}

export interface PortMapEntry {
  readonly hostPort: number;
  readonly containerPort: number;
  readonly protocol: string;
  readonly hostIP?: string;
}

export interface HnsNetConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly apiVersion: ApiVersion;
  readonly policies: readonly Policy[];
  readonly loopbackDSR: boolean;
  readonly dns: DNS;
  readonly runtimeDns: { readonly servers: readonly string[]; readonly searches: readonly string[] };
  readonly portMappings: readonly PortMapEntry[];
  /** '' means none. */
  readonly ipamType: string;
}

/** The Windows socket protocol numbers the reference knows by name. */
const PROTOCOLS: Readonly<Record<string, number>> = { icmpv4: 1, igmp: 2, tcp: 6, udp: 17, icmpv6: 58 };

/** As Go's strconv.ParseUint(s, 0, 10): decimal, 0x, 0o/0 or 0b, below 1024. */
function parseUint10(s: string): number | undefined {
  const m = /^(?:0x([0-9a-f_]+)|0b([01_]+)|0o?([0-7_]+)|([1-9][0-9_]*|0))$/i.exec(s);
  if (!m || s.includes('_')) return undefined;
  const n =
    m[1] !== undefined
      ? parseInt(m[1], 16)
      : m[2] !== undefined
        ? parseInt(m[2], 2)
        : m[3] !== undefined
          ? parseInt(m[3], 8)
          : parseInt(m[4]!, 10);
  return n < 1024 ? n : undefined;
}

/** The protocol of a port mapping as a number (a number given as text, or a name), or undefined. */
export function protocolEnum(p: string): number | undefined {
  return parseUint10(p) ?? PROTOCOLS[p.toLowerCase()];
}

const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

/** Parse the options both Windows plugins take, pushing what is wrong to `errs`. */
export function parseHnsNetConf(conf: NetConf, errs: string[]): HnsNetConf {
  const o = conf.raw;
  const api = o['apiVersion'] ?? 0;
  if (api !== 0 && api !== 1 && api !== 2) errs.push(`apiVersion: must be 1 (HNS) or 2 (HCN), got ${JSON.stringify(api)}`);
  const policies: Policy[] = [];
  if (o['policies'] !== undefined && o['policies'] !== null) {
    if (!Array.isArray(o['policies'])) errs.push('policies: must be a list');
    else
      o['policies'].forEach((p, i) => {
        const po = obj(p);
        if (!po || typeof po['name'] !== 'string') errs.push(`policies[${i}].name: must be a string`);
        else if (po['value'] === undefined) errs.push(`policies[${i}].value: required`);
        else policies.push({ name: po['name'], value: po['value'] });
      });
  }
  const dsr = o['loopbackDSR'] ?? false;
  if (typeof dsr !== 'boolean') errs.push('loopbackDSR: must be true or false');
  let dns: DNS = {};
  if (o['dns'] !== undefined && o['dns'] !== null) {
    const d = obj(o['dns']);
    if (!d) errs.push('dns: must be an object');
    else {
      for (const k of ['nameservers', 'search', 'options'] as const)
        if (d[k] !== undefined && !strings(d[k])) errs.push(`dns.${k}: must be a list of strings`);
      if (d['domain'] !== undefined && typeof d['domain'] !== 'string') errs.push('dns.domain: must be a string');
      dns = d as DNS;
    }
  }
  const rc = o['runtimeConfig'] === undefined || o['runtimeConfig'] === null ? {} : obj(o['runtimeConfig']);
  if (!rc) errs.push('runtimeConfig: must be an object');
  const rdns = rc?.['dns'] === undefined || rc['dns'] === null ? {} : obj(rc['dns']);
  if (!rdns) errs.push('runtimeConfig.dns: must be an object');
  for (const k of ['servers', 'searches'] as const)
    if (rdns?.[k] !== undefined && rdns[k] !== null && !strings(rdns[k])) errs.push(`runtimeConfig.dns.${k}: must be a list of strings`);
  const portMappings: PortMapEntry[] = [];
  const pm = rc?.['portMappings'];
  if (pm !== undefined && pm !== null) {
    if (!Array.isArray(pm)) errs.push('runtimeConfig.portMappings: must be a list');
    else
      pm.forEach((m, i) => {
        const f = `runtimeConfig.portMappings[${i}]`;
        const e = obj(m);
        if (!e) return void errs.push(`${f}: must be an object`);
        const port = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535;
        if (!port(e['hostPort'])) errs.push(`${f}.hostPort: must be a port number, got ${JSON.stringify(e['hostPort'])}`);
        if (!port(e['containerPort'])) errs.push(`${f}.containerPort: must be a port number, got ${JSON.stringify(e['containerPort'])}`);
        // The reference skips a mapping with an unknown protocol; felt says so.
        if (typeof e['protocol'] !== 'string' || protocolEnum(e['protocol']) === undefined) {
          errs.push(
            `${f}.protocol: ${JSON.stringify(e['protocol'])} is not a protocol (${Object.keys(PROTOCOLS).join(', ')} or a number below 1024)`,
          );
        }
        if (e['hostIP'] !== undefined && e['hostIP'] !== '' && (typeof e['hostIP'] !== 'string' || !parseIP(e['hostIP'])))
          errs.push(`${f}.hostIP: ${JSON.stringify(e['hostIP'])} is not an IP address`);
        portMappings.push({
          hostPort: e['hostPort'] as number,
          containerPort: e['containerPort'] as number,
          protocol: e['protocol'] as string,
          ...(typeof e['hostIP'] === 'string' && e['hostIP'] !== '' ? { hostIP: e['hostIP'] } : {}),
        });
      });
  }
  let ipamType = '';
  if (o['ipam'] !== undefined && o['ipam'] !== null) {
    const ipam = obj(o['ipam']);
    if (!ipam) errs.push('ipam: must be an object');
    else if (ipam['type'] !== undefined && typeof ipam['type'] !== 'string') errs.push('ipam.type: must be a string');
    else ipamType = (ipam['type'] as string | undefined) ?? '';
  }
  return {
    name: conf.name,
    cniVersion: conf.cniVersion,
    apiVersion: api === 2 ? 2 : 1,
    policies,
    loopbackDSR: dsr === true,
    dns,
    runtimeDns: {
      servers: strings(rdns?.['servers']) ? (rdns['servers'] as string[]) : [],
      searches: strings(rdns?.['searches']) ? (rdns['searches'] as string[]) : [],
    },
    portMappings,
    ipamType,
  };
}

/** A CIDR option (win-bridge's ipMasqNetwork) pushing a problem to `errs`; '' is none. */
export function cidrOption(o: Readonly<Record<string, unknown>>, field: string, errs: string[]): string {
  const v = o[field];
  if (v === undefined || v === null || v === '') return '';
  if (typeof v !== 'string' || !parseCIDR(v)) {
    errs.push(`${field}: ${JSON.stringify(v)} is not a CIDR`);
    return '';
  }
  return v;
}

export const done = <C>(errs: readonly string[], c: C): E.Either<CniError, C> =>
  errs.length ? E.left(invalidConfig(errs.join('; '))) : E.right(c);

/** The DNS of the endpoint: the config's, with runtimeConfig's servers and searches over it (GetDNS). */
export function endpointDns(c: HnsNetConf): DNS {
  return {
    ...c.dns,
    ...(c.runtimeDns.servers.length ? { nameservers: [...c.runtimeDns.servers] } : {}),
    ...(c.runtimeDns.searches.length ? { search: [...c.runtimeDns.searches] } : {}),
  };
}

// ------------------------------------------------------------------------------------------- policies

const isEndpointPolicy = (p: Policy): boolean => p.name.toLowerCase() === 'endpointpolicy';
const field = (v: unknown, ...path: string[]): unknown => path.reduce<unknown>((x, k) => obj(x)?.[k], v);
/** jsonparser.GetUnsafeString(value, "Type"): the Type string, exactly. */
const typeOf = (v: unknown): unknown => field(v, 'Type');
const listHas = (v: unknown, s: string): boolean => Array.isArray(v) && v.some((x) => typeof x === 'string' && x !== '' && x === s);
const add = (ps: readonly Policy[], value: unknown): Policy[] => [...ps, { name: 'EndpointPolicy', value }];

/** ApplyOutboundNatPolicy: `cidr` as an exception of an OutBoundNAT policy, unless one lists it already. */
export function withOutboundNatException(ps: readonly Policy[], api: ApiVersion, cidr: string): readonly Policy[] {
  if (cidr === '') return ps;
  const found = ps.some(
    (p) =>
      isEndpointPolicy(p) &&
      typeOf(p.value) === 'OutBoundNAT' &&
      listHas(api === 2 ? field(p.value, 'Settings', 'Exceptions') : field(p.value, 'ExceptionList'), cidr),
  );
  if (found) return ps;
  return add(ps, api === 2 ? { Type: 'OutBoundNAT', Settings: { Exceptions: [cidr] } } : { Type: 'OutBoundNAT', ExceptionList: [cidr] });
}

/** ApplyLoopbackDSRPolicy: `ip` as a destination of an OutBoundNAT policy (when HNS supports DSR), unless listed. */
export function withLoopbackDsr(ps: readonly Policy[], api: ApiVersion, ip: string | undefined, dsrSupported: boolean): readonly Policy[] {
  if (!dsrSupported || !ip) return ps;
  const found = ps.some(
    (p) =>
      isEndpointPolicy(p) &&
      typeOf(p.value) === 'OutBoundNAT' &&
      listHas(api === 2 ? field(p.value, 'Settings', 'Destinations') : field(p.value, 'Destinations'), ip),
  );
  if (found) return ps;
  return add(ps, api === 2 ? { Type: 'OutBoundNAT', Settings: { Destinations: [ip] } } : { Type: 'OutBoundNAT', Destinations: [ip] });
}

/** ApplyDefaultPAPolicy: the provider address policy for `address`, unless one names it. */
export function withProviderAddress(ps: readonly Policy[], api: ApiVersion, address: string): readonly Policy[] {
  if (address === '') return ps;
  const found = ps.some((p) => {
    if (!isEndpointPolicy(p) || (typeOf(p.value) !== 'PA' && typeOf(p.value) !== 'ProviderAddress')) return false;
    return (api === 2 ? field(p.value, 'Settings', 'ProviderAddress') : field(p.value, 'PA')) === address;
  });
  if (found) return ps;
  return add(ps, api === 2 ? { Type: 'ProviderAddress', Settings: { ProviderAddress: address } } : { Type: 'PA', PA: address });
}

/** ApplyPortMappingPolicy: one NAT (v1) / PortMapping (v2) policy per mapping with a known protocol. */
export function withPortMappings(ps: readonly Policy[], api: ApiVersion, maps: readonly PortMapEntry[]): readonly Policy[] {
  let out = ps;
  for (const m of maps) {
    const proto = protocolEnum(m.protocol);
    if (proto === undefined) continue;
    out = add(
      out,
      api === 2
        ? {
            Type: 'PortMapping',
            Settings: { InternalPort: m.containerPort, ExternalPort: m.hostPort, Protocol: proto, VIP: m.hostIP ?? '' },
          }
        : { Type: 'NAT', InternalPort: m.containerPort, ExternalPort: m.hostPort, Protocol: m.protocol },
    );
  }
  return out;
}

/** GetHNSEndpointPolicies: the values of the EndpointPolicy entries, as they are. */
export const hnsEndpointPolicies = (ps: readonly Policy[]): unknown[] => ps.filter(isEndpointPolicy).map((p) => p.value);

export interface HcnEndpointPolicy {
  readonly Type: string;
  readonly Settings?: unknown;
}

/** GetHostComputeEndpointPolicies: EndpointPolicy entries read as {Type, Settings} (keys in any case, as Go's JSON); others skipped. */
export function hcnEndpointPolicies(ps: readonly Policy[]): HcnEndpointPolicy[] {
  const out: HcnEndpointPolicy[] = [];
  for (const p of ps.filter(isEndpointPolicy)) {
    const v = obj(p.value);
    if (!v) continue;
    const key = (k: string): string | undefined => Object.keys(v).find((x) => x.toLowerCase() === k);
    const t = key('type') === undefined ? '' : v[key('type')!];
    if (typeof t !== 'string') continue;
    const s = key('settings') === undefined ? undefined : v[key('settings')!];
    out.push({ Type: t, ...(s !== undefined && s !== null ? { Settings: s } : {}) });
  }
  return out;
}
