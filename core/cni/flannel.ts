// The flannel CNI plugin's pure part: its config, subnet.env, and the delegate config it renders, following
// flannel-io/cni-plugin (flannel.go, flannel_linux.go).

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from './env.ts';
import { invalidConfig, type CniError } from './errors.ts';
import { formatCIDR, networkOf, parseCIDR } from '../ip/ip.ts';
import { dataDirProblem } from '../ipam/config.ts';

export interface FlannelConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly subnetFile?: string;
  readonly dataDir: string;
  readonly delegate: Readonly<Record<string, unknown>>;
  readonly ipam: Readonly<Record<string, unknown>>;
  readonly runtimeConfig?: Readonly<Record<string, unknown>>;
}

const DEFAULT_FLANNEL_DATA_DIR = '/var/lib/cni/flannel';

const obj = (v: unknown): Record<string, unknown> | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

export function parseFlannelConf(conf: NetConf): E.Either<CniError, FlannelConf> {
  const o = conf.raw;
  const str = (k: string): E.Either<CniError, string | undefined> =>
    o[k] === undefined || o[k] === ''
      ? E.right(undefined)
      : typeof o[k] === 'string'
        ? E.right(o[k] as string)
        : E.left(invalidConfig(`${k}: must be a string`));
  const subnetFile = str('subnetFile');
  const dataDir = str('dataDir');
  if (E.isLeft(subnetFile)) return subnetFile;
  if (E.isLeft(dataDir)) return dataDir;
  if (dataDir.right !== undefined) {
    const problem = dataDirProblem(dataDir.right);
    if (problem) return E.left(invalidConfig(`dataDir: ${JSON.stringify(dataDir.right)} ${problem}`));
  }
  const delegate = o['delegate'] === undefined ? {} : obj(o['delegate']);
  if (!delegate) return E.left(invalidConfig('delegate: must be an object'));
  if ('type' in delegate && typeof delegate['type'] !== 'string') {
    return E.left(invalidConfig("delegate: 'delegate' dictionary, if present, must have (string) 'type' field"));
  }
  if ('name' in delegate) return E.left(invalidConfig('delegate.name: must not be set, flannel sets it from the network name'));
  if ('ipam' in delegate) return E.left(invalidConfig('delegate.ipam: must not be set, flannel sets it from subnet.env'));
  const ipam = o['ipam'] === undefined ? {} : obj(o['ipam']);
  if (!ipam) return E.left(invalidConfig('ipam: must be an object'));
  const runtimeConfig = o['runtimeConfig'] === undefined ? undefined : obj(o['runtimeConfig']);
  return E.right({
    name: conf.name,
    cniVersion: conf.cniVersion,
    ...(subnetFile.right ? { subnetFile: subnetFile.right } : {}),
    dataDir: dataDir.right ?? DEFAULT_FLANNEL_DATA_DIR,
    delegate,
    ipam,
    ...(runtimeConfig ? { runtimeConfig } : {}),
  });
}

/**
 * subnet.env's content: what feltd writes (core/flannel/lease.ts renderSubnetEnv) and the flannel plugin reads
 * (parseSubnetEnvFile).
 */
export interface SubnetEnv {
  /**
   * The flannel Network and this node's subnet, as CIDRs of their network address (flannel parses them with
   * net.ParseCIDR); both absent when IPv4 is off, the IPv6 pair when IPv6 is.
   */
  readonly network?: string;
  readonly subnet?: string;
  readonly ipv6Network?: string;
  readonly ipv6Subnet?: string;
  readonly mtu: number;
  readonly ipMasq: boolean;
}

/** Read subnet.env; like flannel, FLANNEL_MTU and FLANNEL_IPMASQ are required, and a subnet of some family. */
export function parseSubnetEnvFile(text: string, path: string): E.Either<string, SubnetEnv> {
  const vars: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) vars[m[1]!] = m[2]!.trim();
  }
  const cidr = (k: string): E.Either<string, string | undefined> => {
    const v = vars[k];
    if (v === undefined || v === '') return E.right(undefined);
    const c = parseCIDR(v);
    return c ? E.right(formatCIDR(networkOf(c))) : E.left(`${path}: ${k}=${v} is not a CIDR`);
  };
  const network = cidr('FLANNEL_NETWORK');
  const subnet = cidr('FLANNEL_SUBNET');
  const ipv6Network = cidr('FLANNEL_IPV6_NETWORK');
  const ipv6Subnet = cidr('FLANNEL_IPV6_SUBNET');
  for (const x of [network, subnet, ipv6Network, ipv6Subnet]) if (E.isLeft(x)) return x;
  const missing = ['FLANNEL_MTU', 'FLANNEL_IPMASQ'].filter((k) => vars[k] === undefined);
  if (E.isRight(subnet) && !subnet.right && E.isRight(ipv6Subnet) && !ipv6Subnet.right) missing.unshift('FLANNEL_SUBNET');
  if (missing.length) return E.left(`${path} is missing ${missing.join(', ')}`);
  const mtu = Number(vars['FLANNEL_MTU']);
  if (!Number.isInteger(mtu) || mtu <= 0) return E.left(`${path}: FLANNEL_MTU=${vars['FLANNEL_MTU']} is not a positive integer`);
  const get = (x: E.Either<string, string | undefined>): string | undefined => (E.isRight(x) ? x.right : undefined);
  return E.right({
    ...(get(network) ? { network: get(network) } : {}),
    ...(get(subnet) ? { subnet: get(subnet) } : {}),
    ...(get(ipv6Network) ? { ipv6Network: get(ipv6Network) } : {}),
    ...(get(ipv6Subnet) ? { ipv6Subnet: get(ipv6Subnet) } : {}),
    mtu,
    ipMasq: vars['FLANNEL_IPMASQ'] === 'true',
  });
}

/**
 * The delegate network config: the user's `delegate` dictionary plus name, type (bridge), ipMasq (on unless
 * the node daemon masquerades), mtu, isGateway (bridge), cniVersion, runtimeConfig, and host-local IPAM with
 * the node subnet(s) as ranges and routes to the whole network(s); other IPAM keys pass through.
 */
export function delegateConfig(fc: FlannelConf, env: SubnetEnv): Record<string, unknown> {
  const d: Record<string, unknown> = { ...fc.delegate, name: fc.name };
  if (!('type' in d)) d['type'] = 'bridge';
  if (!('ipMasq' in d)) d['ipMasq'] = !env.ipMasq;
  if (!('mtu' in d)) d['mtu'] = env.mtu;
  if (d['type'] === 'bridge' && !('isGateway' in d)) d['isGateway'] = true;
  if (fc.cniVersion) d['cniVersion'] = fc.cniVersion;
  if (fc.runtimeConfig) d['runtimeConfig'] = fc.runtimeConfig;
  const ipam: Record<string, unknown> = { ...fc.ipam };
  if (!('type' in ipam)) ipam['type'] = 'host-local';
  const ranges: { subnet: string }[][] = [];
  if (env.subnet) ranges.push([{ subnet: env.subnet }]);
  if (env.ipv6Subnet) ranges.push([{ subnet: env.ipv6Subnet }]);
  ipam['ranges'] = ranges;
  const routes = Array.isArray(ipam['routes']) ? [...(ipam['routes'] as unknown[])] : [];
  if (env.network) routes.push({ dst: env.network });
  if (env.ipv6Network) routes.push({ dst: env.ipv6Network });
  ipam['routes'] = routes;
  d['ipam'] = ipam;
  return d;
}
