// Subnet leases on the wire, byte-compatible with flanneld:
// - etcd keys (flannel-io/flannel pkg/subnet/subnet.go MakeSubnetKey/ParseSubnetKey; pkg/subnet/etcd/registry.go
//   path.Join(prefix, "subnets", key) and path.Join(prefix, "config")),
// - the lease value, flannel's LeaseAttrs JSON (pkg/lease/lease.go; vxlan BackendData from
//   pkg/backend/vxlan/vxlan_network.go vxlanLeaseAttrs {VNI, VtepMAC}),
// - subnet.env (pkg/subnet/subnet.go WriteSubnetFile), which the flannel CNI plugin reads.

import * as E from 'fp-ts/lib/Either.js';
import { parseSubnetEnvFile, type SubnetEnv } from '../cni/flannel.ts';
import { formatCIDR, formatIP, hasHostBits, networkOf, next, parseCIDR, parseIPv4, parseIPv6, type CIDR } from '../ip/ip.ts';
import { parseMac } from '../ip/mac.ts';
import { fields, isObject, parseJson, typeOf } from './json.ts';
import type { Lease, LeaseAttrs } from './types.ts';

export type { SubnetEnv } from '../cni/flannel.ts';

export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

// ---- keys ---------------------------------------------------------------------------------------------

export interface SubnetPair {
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
}

/** Go's path.Join for etcd keys: one slash between parts, none doubled, none trailing. */
const join = (...parts: string[]): string => {
  const j = parts
    .filter((p) => p !== '')
    .join('/')
    .replace(/\/+/g, '/');
  return j.length > 1 ? j.replace(/\/$/, '') : j;
};

const keyPart = (c: CIDR): string => `${formatIP(c.ip)}-${c.prefix}`;

/**
 * `10.244.3.0-24`, or `10.244.3.0-24&fd00:10:244:3::-64` for dual stack. An IPv6-only lease has an empty IPv4
 * subnet, which flannel writes as `0.0.0.0-0&...`.
 */
export function subnetKey(l: SubnetPair): string {
  const v4 = l.subnet ? parseCIDR(l.subnet) : undefined;
  const v6 = l.ipv6Subnet ? parseCIDR(l.ipv6Subnet) : undefined;
  const four = v4 ? keyPart(networkOf(v4)) : '0.0.0.0-0';
  return v6 ? `${four}&${keyPart(networkOf(v6))}` : four;
}

/** The inverse of subnetKey; the subnets come back as canonical CIDRs. */
export function parseSubnetKey(key: string): E.Either<string, SubnetPair> {
  // flannel's subnetRegex, anchored and with the dots escaped.
  const m = /^(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/.exec(key);
  if (!m) return E.left(`lease key "${key}": not of the form a.b.c.d-len or a.b.c.d-len&ipv6-len`);
  const v4 = parseCIDR(`${m[1]}/${m[2]}`);
  if (!v4 || v4.ip.family !== 4) return E.left(`lease key "${key}": ${m[1]}-${m[2]} is not an IPv4 subnet`);
  if (hasHostBits(v4)) return E.left(`lease key "${key}": ${m[1]} is not the first address of a /${m[2]}`);
  let v6: CIDR | undefined;
  if (m[3] !== undefined) {
    const a = parseIPv6(m[3]);
    v6 = a ? parseCIDR(`${formatIP(a)}/${m[4]}`) : undefined;
    if (!v6) return E.left(`lease key "${key}": ${m[3]}-${m[4]} is not an IPv6 subnet`);
    if (hasHostBits(v6)) return E.left(`lease key "${key}": ${m[3]} is not the first address of a /${m[4]}`);
  }
  const ipv4Empty = v4.ip.value === 0n && v4.prefix === 0;
  if (ipv4Empty && !v6) return E.left(`lease key "${key}": neither an IPv4 nor an IPv6 subnet`);
  return E.right({ ...(ipv4Empty ? {} : { subnet: formatCIDR(v4) }), ...(v6 ? { ipv6Subnet: formatCIDR(v6) } : {}) });
}

export const configKeyPath = (prefix: string = DEFAULT_ETCD_PREFIX): string => join(prefix, 'config');
/** The prefix to list and watch, with its trailing slash so `/subnets-old/...` does not match. */
export const subnetsKeyPrefix = (prefix: string = DEFAULT_ETCD_PREFIX): string => join(prefix, 'subnets') + '/';
export const leaseKeyPath = (prefix: string, l: SubnetPair): string => join(prefix, 'subnets', subnetKey(l));

/** The subnets of an etcd key under `<prefix>/subnets/`. */
export function parseLeaseKeyPath(prefix: string, path: string): E.Either<string, SubnetPair> {
  const dir = subnetsKeyPrefix(prefix);
  if (!path.startsWith(dir)) return E.left(`etcd key "${path}" is not under ${dir}`);
  return parseSubnetKey(path.slice(dir.length));
}

// ---- LeaseAttrs JSON ----------------------------------------------------------------------------------

/**
 * flannel's LeaseAttrs from its JSON. Keys are matched as Go does (any letter case). Missing fields are
 * tolerated the way Go's zero values are: no PublicIP is 0.0.0.0 (an IPv6-only node), no PublicIPv6 is null,
 * no BackendType is "".
 */
export function parseLeaseAttrs(json: string | unknown): E.Either<string, LeaseAttrs> {
  let v: unknown = json;
  if (typeof json === 'string') {
    const p = parseJson(json, 'lease');
    if (!p.ok) return E.left(p.error);
    v = p.value;
  }
  if (!isObject(v)) return E.left(`lease: must be a JSON object, got ${typeOf(v)}`);
  const f = fields(v);
  const pub = f.get('PublicIP');
  let publicIP = '0.0.0.0';
  if (pub !== undefined && pub !== null) {
    const a = typeof pub === 'string' ? parseIPv4(pub) : undefined;
    if (!a) return E.left(`lease: PublicIP: ${JSON.stringify(pub)} is not an IPv4 address`);
    publicIP = formatIP(a);
  }
  const pub6 = f.get('PublicIPv6');
  let publicIPv6: string | null = null;
  if (pub6 !== undefined && pub6 !== null) {
    const a = typeof pub6 === 'string' ? parseIPv6(pub6) : undefined;
    if (!a) return E.left(`lease: PublicIPv6: ${JSON.stringify(pub6)} is not an IPv6 address`);
    publicIPv6 = formatIP(a);
  }
  const bt = f.get('BackendType');
  if (bt !== undefined && bt !== null && typeof bt !== 'string') return E.left(`lease: BackendType: must be a string, got ${typeOf(bt)}`);
  const data = f.get('BackendData');
  const data6 = f.get('BackendV6Data');
  return E.right({
    PublicIP: publicIP,
    PublicIPv6: publicIPv6,
    BackendType: typeof bt === 'string' ? bt : '',
    ...(data !== undefined && data !== null ? { BackendData: data } : {}),
    ...(data6 !== undefined && data6 !== null ? { BackendV6Data: data6 } : {}),
  });
}

/**
 * The JSON flanneld writes: field order and omitempty as Go's encoder applies them to LeaseAttrs
 * (`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"..."}}`).
 */
export function serializeLeaseAttrs(a: LeaseAttrs): string {
  const o: Record<string, unknown> = { PublicIP: a.PublicIP, PublicIPv6: a.PublicIPv6 ?? null };
  if (a.BackendType) o['BackendType'] = a.BackendType;
  if (a.BackendData !== undefined && a.BackendData !== null) o['BackendData'] = a.BackendData;
  if (a.BackendV6Data !== undefined && a.BackendV6Data !== null) o['BackendV6Data'] = a.BackendV6Data;
  return JSON.stringify(o);
}

/** A lease from an etcd key (the part after `<prefix>/subnets/`), its value and its expiry. */
export function parseLease(key: string, value: string, expiration: string): E.Either<string, Lease> {
  const k = parseSubnetKey(key);
  if (E.isLeft(k)) return k;
  const attrs = parseLeaseAttrs(value);
  if (E.isLeft(attrs)) return E.left(`lease ${key}: ${attrs.left.replace(/^lease: /, '')}`);
  return E.right({ ...k.right, attrs: attrs.right, expiration });
}

// ---- vxlan BackendData --------------------------------------------------------------------------------

export interface VxlanBackendData {
  readonly VNI: number;
  readonly VtepMAC: string;
}

/** vxlan's BackendData, in the field order flannel marshals it. */
export const vxlanBackendData = (vni: number, vtepMac: string): VxlanBackendData => ({ VNI: vni, VtepMAC: vtepMac });

/** VNI and VtepMAC (lower-case, colon form) from a lease's BackendData or BackendV6Data. */
export function parseVxlanBackendData(data: unknown): E.Either<string, { vni: number; vtepMac: string }> {
  if (!isObject(data)) return E.left(`BackendData: must be an object with VNI and VtepMAC, got ${typeOf(data)}`);
  const f = fields(data);
  const vni = f.get('VNI');
  const mac = f.get('VtepMAC');
  if (vni !== undefined && vni !== null && (typeof vni !== 'number' || !Number.isInteger(vni) || vni < 0)) {
    return E.left(`BackendData.VNI: ${JSON.stringify(vni)} is not a VNI`);
  }
  const m = typeof mac === 'string' ? parseMac(mac) : undefined;
  if (!m) return E.left(`BackendData.VtepMAC: ${JSON.stringify(mac ?? null)} is not a MAC address`);
  return E.right({ vni: typeof vni === 'number' ? vni : 0, vtepMac: m });
}

// ---- subnet.env ---------------------------------------------------------------------------------------

/** The subnet with its first address instead of its network address: 10.244.3.0/24 -> 10.244.3.1/24. */
function firstHost(cidr: string): string {
  const c = parseCIDR(cidr);
  if (!c) return cidr;
  const n = networkOf(c);
  return formatCIDR({ ip: next(n.ip), prefix: n.prefix });
}

/** subnet.env exactly as flanneld's WriteSubnetFile writes it (same variables, order and formatting). */
export function renderSubnetEnv(env: SubnetEnv): string {
  let s = '';
  if (env.network && env.subnet) s += `FLANNEL_NETWORK=${env.network}\nFLANNEL_SUBNET=${firstHost(env.subnet)}\n`;
  if (env.ipv6Network && env.ipv6Subnet) s += `FLANNEL_IPV6_NETWORK=${env.ipv6Network}\nFLANNEL_IPV6_SUBNET=${firstHost(env.ipv6Subnet)}\n`;
  s += `FLANNEL_MTU=${env.mtu}\nFLANNEL_IPMASQ=${env.ipMasq ? 'true' : 'false'}\n`;
  return s;
}

/**
 * Read subnet.env as the flannel CNI plugin does (FLANNEL_MTU and FLANNEL_IPMASQ required, a subnet of some
 * family); subnets come back as network CIDRs (10.244.3.0/24), as Go's net.ParseCIDR returns them.
 */
export const parseSubnetEnv = (text: string, path = 'subnet.env'): E.Either<string, SubnetEnv> => parseSubnetEnvFile(text, path);

/**
 * The subnets a previous run leased, read leniently as flanneld does at start (ReadCIDRFromSubnetFile): a key
 * that is missing or unreadable is just absent.
 */
export function previousSubnets(text: string): SubnetPair & { readonly network?: string; readonly ipv6Network?: string } {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*(?:export\s+)?([A-Z0-9_]+)\s*=\s*"?([^"\s]*)"?\s*$/.exec(line);
    if (m) vars.set(m[1]!, m[2]!);
  }
  const cidr = (k: string, family: 4 | 6): string | undefined => {
    const v = vars.get(k);
    const c = v === undefined || v.includes(',') ? undefined : parseCIDR(v);
    return c && c.ip.family === family ? formatCIDR(networkOf(c)) : undefined;
  };
  const out: Record<string, string> = {};
  const put = (k: string, v: string | undefined) => {
    if (v) out[k] = v;
  };
  put('network', cidr('FLANNEL_NETWORK', 4));
  put('subnet', cidr('FLANNEL_SUBNET', 4));
  put('ipv6Network', cidr('FLANNEL_IPV6_NETWORK', 6));
  put('ipv6Subnet', cidr('FLANNEL_IPV6_SUBNET', 6));
  return out;
}
