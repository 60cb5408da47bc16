// win-bridge: a container on an HNS L2Bridge (or L2Tunnel) network, as the reference's
// plugins/main/windows/win-bridge builds its endpoint: the address from the (optional) IPAM plugin, the gateway
// at the subnet's .2 (the last byte of the network address plus 2), an OutBoundNAT exception for
// `ipMasqNetwork`, runtimeConfig's port mappings, the loopback DSR destination, the DNS. Pure.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { cniError, ErrCode, type CniError } from '../cni/errors.ts';
import type { Result } from '../cni/result.ts';
import { formatIP, networkOf, parseCIDR } from '../ip/ip.ts';
import {
  endpointName,
  hcnEndpointRequest,
  hnsEndpointRequest,
  type EndpointInfo,
  type HcnEndpoint,
  type HnsEndpoint,
} from '../hns/endpoint.ts';
import {
  cidrOption,
  done,
  endpointDns,
  parseHnsNetConf,
  withLoopbackDsr,
  withOutboundNatException,
  withPortMappings,
  type HnsNetConf,
} from '../hns/netconf.ts';

export interface WinBridgeConf extends HnsNetConf {
  /** The OutBoundNAT exception ('' for none). */
  readonly ipMasqNetwork: string;
}

export function parseWinBridgeConf(conf: NetConf): E.Either<CniError, WinBridgeConf> {
  const errs: string[] = [];
  const base = parseHnsNetConf(conf, errs);
  const ipMasqNetwork = cidrOption(conf.raw, 'ipMasqNetwork', errs);
  return done(errs, { ...base, ipMasqNetwork });
}

/** HNS network types win-bridge attaches to (case-insensitive). */
export const WIN_BRIDGE_NETWORK_TYPES = ['L2Bridge', 'L2Tunnel'] as const;

/** The gateway win-bridge gives an address: its network's address with 2 added to the last byte. */
export function bridgeGateway(cidr: string): string | undefined {
  const c = parseCIDR(cidr);
  if (!c) return undefined;
  const n = networkOf(c).ip;
  const v = (n.value & ~0xffn) | (((n.value & 0xffn) + 2n) & 0xffn);
  return formatIP({ family: n.family, value: v });
}

export interface WinEndpointInput {
  readonly containerId: string;
  readonly netns: string;
  readonly networkId: string;
  /** The IPAM plugin's result (undefined without IPAM: HNS picks the address). */
  readonly ipam?: Result;
  /** hcn.DSRSupported() on this host. */
  readonly dsrSupported: boolean;
}

function endpointInfo(
  c: WinBridgeConf,
  a: WinEndpointInput,
): E.Either<CniError, { info: EndpointInfo; policies: WinBridgeConf['policies'] }> {
  let ip = '';
  let gateway = '';
  if (c.ipamType !== '') {
    const first = a.ipam?.ips?.[0];
    if (!first) return E.left(cniError(ErrCode.Delegate, `${c.ipamType}: IPAM plugin return is missing IP config`));
    const cidr = parseCIDR(first.address);
    const gw = bridgeGateway(first.address);
    if (!cidr || !gw) return E.left(cniError(ErrCode.Delegate, `${c.ipamType}: invalid address ${JSON.stringify(first.address)}`));
    ip = formatIP(cidr.ip);
    gateway = gw;
  }
  let policies = withOutboundNatException(c.policies, c.apiVersion, c.ipMasqNetwork);
  policies = withPortMappings(policies, c.apiVersion, c.portMappings);
  // GenerateHnsEndpoint / GenerateHcnEndpoint: then the loopback DSR destination.
  if (c.loopbackDSR) policies = withLoopbackDsr(policies, c.apiVersion, ip, a.dsrSupported);
  return E.right({
    info: { name: endpointName(a.containerId, a.netns, c.name), networkId: a.networkId, dns: endpointDns(c), ip, gateway, mac: '' },
    policies,
  });
}

/** The HNS v1 endpoint win-bridge asks for. */
export const winBridgeHnsEndpoint = (c: WinBridgeConf, a: WinEndpointInput): E.Either<CniError, HnsEndpoint> =>
  E.map(({ info, policies }: { info: EndpointInfo; policies: WinBridgeConf['policies'] }) => hnsEndpointRequest(info, policies))(
    endpointInfo(c, a),
  );

/** The HCN v2 endpoint win-bridge asks for. */
export const winBridgeHcnEndpoint = (c: WinBridgeConf, a: WinEndpointInput): E.Either<CniError, HcnEndpoint> =>
  E.map(({ info, policies }: { info: EndpointInfo; policies: WinBridgeConf['policies'] }) => hcnEndpointRequest(info, policies))(
    endpointInfo(c, a),
  );
