// net-conf.json as flanneld reads it (flannel-io/flannel pkg/subnet/config.go: ParseConfig, then
// CheckNetworkConfig; pkg/backend/vxlan/vxlan.go: parseVXLANConfig). Keys are matched case-insensitively, as Go's
// encoding/json does, and a JSON null leaves the default in place, as it does for Go's non-pointer fields.
//
// Where felt differs from flanneld, on purpose:
// - no `Backend` means vxlan (flanneld falls back to the long-gone udp backend), with a notice saying so;
// - keys flanneld would silently ignore are reported as notices, and an IPv6Network without EnableIPv6 too;
// - a config with both families disabled, and SubnetMin above SubnetMax, are refused instead of failing later.

import * as E from 'fp-ts/lib/Either.js';
import {
  bits,
  cmpIP,
  contains,
  formatCIDR,
  formatIP,
  hasHostBits,
  lastIP,
  mask,
  networkOf,
  parseCIDR,
  parseIP,
  size,
  type CIDR,
  type Family,
  type IP,
} from '../ip/ip.ts';
import { fields, isObject, parseJson, typeOf, type Fields } from './json.ts';
import type { BackendConfig, NetConfig } from './types.ts';

const DEFAULT_VNI = 1;
/** The port Linux uses for vxlan when none is given, and flannel's default. */
const DEFAULT_VXLAN_PORT = 8472;
const MAX_VNI = 0xffffff;

export interface ParsedNetConfig {
  readonly config: NetConfig;
  /** Things worth telling the operator that do not make the config invalid. */
  readonly notices: string[];
}

const TOP_KEYS = [
  'EnableIPv4',
  'EnableIPv6',
  'EnableNFTables',
  'Network',
  'IPv6Network',
  'SubnetMin',
  'SubnetMax',
  'IPv6SubnetMin',
  'IPv6SubnetMax',
  'SubnetLen',
  'IPv6SubnetLen',
  'Backend',
] as const;
const VXLAN_KEYS = ['Type', 'VNI', 'Port', 'MTU', 'GBP', 'Learning', 'DirectRouting'] as const;
const HOSTGW_KEYS = ['Type'] as const;

type R<T> = E.Either<string, T>;

/** Each family's keys, whether it is on without its Enable key, its default subnet length, an example network. */
const FAMILY_KEYS = {
  4: {
    enable: 'EnableIPv4',
    enabledByDefault: true,
    network: 'Network',
    len: 'SubnetLen',
    min: 'SubnetMin',
    max: 'SubnetMax',
    defaultLen: 24,
    example: '10.244.0.0/16',
  },
  6: {
    enable: 'EnableIPv6',
    enabledByDefault: false,
    network: 'IPv6Network',
    len: 'IPv6SubnetLen',
    min: 'IPv6SubnetMin',
    max: 'IPv6SubnetMax',
    defaultLen: 64,
    example: 'fd00:10:244::/56',
  },
} as const;

/** A present, non-null value, or undefined. */
const given = (f: Fields, k: string): unknown => {
  const v = f.get(k);
  return v === null ? undefined : v;
};

function bool(f: Fields, key: string, label: string, dflt: boolean): R<boolean> {
  const v = given(f, key);
  if (v === undefined) return E.right(dflt);
  return typeof v === 'boolean' ? E.right(v) : E.left(`${label}: must be true or false, got ${typeOf(v)} ${JSON.stringify(v)}`);
}

/** A non-negative integer no larger than `max`; undefined when absent. */
function uint(f: Fields, key: string, label: string, max: number): R<number | undefined> {
  const v = given(f, key);
  if (v === undefined) return E.right(undefined);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    return E.left(`${label}: must be a non-negative integer, got ${typeOf(v)} ${JSON.stringify(v)}`);
  }
  if (v > max) return E.left(`${label}: ${v} is too large (at most ${max})`);
  return E.right(v);
}

function str(f: Fields, key: string, label: string): R<string | undefined> {
  const v = given(f, key);
  if (v === undefined || v === '') return E.right(undefined);
  return typeof v === 'string' ? E.right(v) : E.left(`${label}: must be a string, got ${typeOf(v)} ${JSON.stringify(v)}`);
}

function network(f: Fields, key: string, family: Family, notices: string[]): R<CIDR | undefined> {
  const s = str(f, key, key);
  if (E.isLeft(s) || s.right === undefined) return s as R<undefined>;
  const c = parseCIDR(s.right);
  const fam = family === 4 ? 'IPv4' : 'IPv6';
  if (!c || c.ip.family !== family) return E.left(`${key}: "${s.right}" is not an ${fam} CIDR`);
  if (c.prefix === 0) {
    // Every address, the default route and the underlay too: masquerade and routes would swallow the host's traffic.
    return E.left(
      `${key}: "${s.right}" covers every ${fam} address (the default route, the underlay); give the pod network's own range, e.g. ${family === 4 ? '"10.244.0.0/16"' : '"fd00:10:244::/56"'}`,
    );
  }
  if (hasHostBits(c)) {
    // Go's net.ParseCIDR keeps only the network; say so rather than silently.
    const n = networkOf(c);
    notices.push(`${key}: "${s.right}" has host bits set: using ${formatCIDR(n)}`);
    return E.right(n);
  }
  return E.right(c);
}

function address(f: Fields, key: string, family: Family): R<IP | undefined> {
  const s = str(f, key, key);
  if (E.isLeft(s) || s.right === undefined) return s as R<undefined>;
  const a = parseIP(s.right);
  if (!a || a.family !== family) return E.left(`${key}: "${s.right}" is not an ${family === 4 ? 'IPv4' : 'IPv6'} address`);
  return E.right(a);
}

interface FamilyConf {
  readonly network: CIDR;
  readonly subnetLen: number;
  readonly min: IP;
  readonly max: IP;
}

/**
 * The subnet length and SubnetMin/SubnetMax of one family, with flannel's defaults and checks
 * (CheckNetworkConfig). `keys` names the config keys of that family, for messages.
 */
function familyConf(
  net: CIDR,
  lenGiven: number | undefined,
  minGiven: IP | undefined,
  maxGiven: IP | undefined,
  keys: { readonly network: string; readonly len: string; readonly min: string; readonly max: string; readonly defaultLen: number },
): R<FamilyConf> {
  const family = net.ip.family;
  const top = bits(family) - 2; // a subnet needs at least four addresses: /30, /126
  let subnetLen: number;
  const netText = formatCIDR(net);
  if (lenGiven !== undefined && lenGiven > 0) {
    if (lenGiven > top)
      return E.left(`${keys.len}: ${lenGiven} is too long; at most ${top} (a subnet needs a tunnel and a bridge address)`);
    if (lenGiven < net.prefix + 2) {
      return E.left(
        `${keys.len}: ${lenGiven} does not fit ${keys.network} ${netText} at least four times; it must be at least ${net.prefix + 2}`,
      );
    }
    subnetLen = lenGiven;
  } else {
    // flannel: a /<defaultLen> per host when the network holds at least four of them, else a quarter of it.
    if (net.prefix > top - 2) {
      return E.left(`${keys.network}: ${netText} is too small; the smallest useful network is a /${top - 2}`);
    }
    subnetLen = net.prefix <= keys.defaultLen - 2 ? keys.defaultLen : net.prefix + 2;
  }
  const sub = (a: IP): CIDR => ({ ip: a, prefix: subnetLen });
  const step = size(sub(net.ip));
  const aligned = (a: IP): boolean => (a.value & mask(family, subnetLen)) === a.value;
  const check = (a: IP | undefined, key: string, dflt: IP): R<IP> => {
    if (a === undefined) return E.right(dflt);
    if (!contains(net, a)) return E.left(`${key}: ${formatIP(a)} is not in ${keys.network} ${netText}`);
    if (!aligned(a)) return E.left(`${key}: ${formatIP(a)} is not on a /${subnetLen} boundary (${keys.len})`);
    return E.right(a);
  };
  // The first subnet is skipped: its first address would be the network's own address.
  const min = check(minGiven, keys.min, { family, value: net.ip.value + step });
  if (E.isLeft(min)) return min;
  const max = check(maxGiven, keys.max, { family, value: lastIP(net).value + 1n - step });
  if (E.isLeft(max)) return max;
  if (cmpIP(min.right, max.right) > 0) {
    return E.left(`${keys.min}: ${formatIP(min.right)} is above ${keys.max} ${formatIP(max.right)}: no subnet can be leased`);
  }
  return E.right({ network: net, subnetLen, min: min.right, max: max.right });
}

function backend(raw: unknown, notices: string[]): R<BackendConfig> {
  if (raw === undefined || raw === null) {
    notices.push('no Backend given: using vxlan');
    return E.right({ type: 'vxlan', vni: DEFAULT_VNI, port: DEFAULT_VXLAN_PORT, directRouting: false, gbp: false, learning: false });
  }
  if (!isObject(raw)) return E.left(`Backend: must be an object, got ${typeOf(raw)} ${JSON.stringify(raw)}`);
  const f = fields(raw);
  const type = given(f, 'Type');
  if (type === undefined || type === '') return E.left('Backend.Type: missing; felt supports "vxlan" and "host-gw"');
  if (typeof type !== 'string') return E.left(`Backend.Type: must be a string, got ${typeOf(type)} ${JSON.stringify(type)}`);
  const unknown = (known: readonly string[]) => {
    for (const k of f.unknown(known)) notices.push(`Backend.${k}: not a ${type} setting, ignored`);
  };
  switch (type) {
    case 'vxlan': {
      unknown(VXLAN_KEYS);
      const vni = uint(f, 'VNI', 'Backend.VNI', MAX_VNI);
      const port = uint(f, 'Port', 'Backend.Port', 65535);
      const mtu = uint(f, 'MTU', 'Backend.MTU', 65535);
      const gbp = bool(f, 'GBP', 'Backend.GBP', false);
      const learning = bool(f, 'Learning', 'Backend.Learning', false);
      const directRouting = bool(f, 'DirectRouting', 'Backend.DirectRouting', false);
      for (const x of [vni, port, mtu, gbp, learning, directRouting]) if (E.isLeft(x)) return x;
      const get = <T>(x: R<T>): T => (x as E.Right<T>).right;
      const m = get(mtu);
      // The device MTU is this minus the 50 bytes of vxlan overhead; below 68+50 IPv4 itself breaks.
      if (m !== undefined && m !== 0 && m < 118)
        return E.left(`Backend.MTU: ${m} is too small; the vxlan device gets MTU - 50 and IPv4 needs 68`);
      return E.right({
        type: 'vxlan',
        // flannel sets the default before decoding, so only an absent VNI is 1; an explicit 0 stays 0.
        vni: get(vni) ?? DEFAULT_VNI,
        // Port 0 lets the kernel choose, and Linux's vxlan default is 8472: say so explicitly.
        port: get(port) || DEFAULT_VXLAN_PORT,
        ...(m ? { mtu: m } : {}),
        directRouting: get(directRouting),
        gbp: get(gbp),
        learning: get(learning),
      });
    }
    case 'host-gw':
      unknown(HOSTGW_KEYS);
      return E.right({ type: 'host-gw' });
    default:
      return E.left(`Backend.Type: "${type}" is not supported; felt supports "vxlan" and "host-gw"`);
  }
}

/** Parse and check net-conf.json (or etcd's `<prefix>/config`). Errors name the key at fault. */
export function parseNetConfig(json: string): E.Either<string, ParsedNetConfig> {
  const parsed = parseJson(json, 'net-conf.json');
  if (!parsed.ok) return E.left(parsed.error);
  if (!isObject(parsed.value)) return E.left(`net-conf.json: must be a JSON object, got ${typeOf(parsed.value)}`);
  const f = fields(parsed.value);
  const notices: string[] = [];
  for (const k of f.unknown(TOP_KEYS)) notices.push(`${k}: not a flannel network setting, ignored`);

  const enableIPv4 = bool(f, 'EnableIPv4', 'EnableIPv4', true);
  const enableIPv6 = bool(f, 'EnableIPv6', 'EnableIPv6', false);
  const nft = bool(f, 'EnableNFTables', 'EnableNFTables', false);
  for (const x of [enableIPv4, enableIPv6, nft]) if (E.isLeft(x)) return x;
  const v4 = (enableIPv4 as E.Right<boolean>).right;
  const v6 = (enableIPv6 as E.Right<boolean>).right;
  if (!v4 && !v6) return E.left('EnableIPv4, EnableIPv6: both are false; enable at least one family');

  const be = backend(f.get('Backend'), notices);
  if (E.isLeft(be)) return be;

  // Per family, as desiredOverlay does: its network, subnet length and subnet range.
  const fams: { 4?: FamilyConf; 6?: FamilyConf } = {};
  const off: string[] = [];
  for (const family of [4, 6] as const) {
    const k = FAMILY_KEYS[family];
    const net = network(f, k.network, family, notices);
    if (E.isLeft(net)) return net;
    const len = uint(f, k.len, k.len, bits(family));
    const min = address(f, k.min, family);
    const max = address(f, k.max, family);
    for (const x of [len, min, max]) if (E.isLeft(x)) return x;
    if (family === 4 ? v4 : v6) {
      if (!net.right)
        return E.left(`${k.network}: missing; an IPv${family} CIDR such as "${k.example}" is required when ${k.enable} is true`);
      const r = familyConf(
        net.right,
        (len as E.Right<number | undefined>).right,
        (min as E.Right<IP | undefined>).right,
        (max as E.Right<IP | undefined>).right,
        k,
      );
      if (E.isLeft(r)) return r;
      fams[family] = r.right;
    } else if (net.right) {
      // Told after every family's other notices (at most one family is off).
      off.push(`${k.network}: given but ${k.enable} is ${k.enabledByDefault ? 'false' : 'not true'}, so IPv${family} stays off`);
    }
  }
  notices.push(...off);
  const { 4: fam4, 6: fam6 } = fams;

  const config: NetConfig = {
    enableIPv4: v4,
    enableIPv6: v6,
    ...(fam4 ? { network: formatCIDR(fam4.network), subnetMin: formatIP(fam4.min), subnetMax: formatIP(fam4.max) } : {}),
    subnetLen: fam4?.subnetLen ?? 0,
    ...(fam6 ? { ipv6Network: formatCIDR(fam6.network), ipv6SubnetMin: formatIP(fam6.min), ipv6SubnetMax: formatIP(fam6.max) } : {}),
    ipv6SubnetLen: fam6?.subnetLen ?? 0,
    backend: be.right,
    ...((nft as E.Right<boolean>).right ? { enableNFTables: true } : {}),
  };
  return E.right({ config, notices });
}

/** The subnets a config can lease in one family: first, last, length, count. Undefined when the family is off. */
export function subnetRange(
  config: NetConfig,
  family: Family,
): { min: IP; max: IP; len: number; network: CIDR; count: bigint } | undefined {
  const enabled = family === 4 ? config.enableIPv4 : config.enableIPv6;
  const net = parseCIDR((family === 4 ? config.network : config.ipv6Network) ?? '');
  const min = parseIP((family === 4 ? config.subnetMin : config.ipv6SubnetMin) ?? '');
  const max = parseIP((family === 4 ? config.subnetMax : config.ipv6SubnetMax) ?? '');
  const len = family === 4 ? config.subnetLen : config.ipv6SubnetLen;
  if (!enabled || !net || !min || !max || !len) return undefined;
  const step = 1n << BigInt(bits(family) - len);
  return { min, max, len, network: net, count: (max.value - min.value) / step + 1n };
}
