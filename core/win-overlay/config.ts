// win-overlay: a container on an HNS Overlay network (VXLAN), as the reference's
// plugins/main/windows/win-overlay builds its endpoint: an IPv4 address from IPAM, a MAC made of
// `endpointMacPrefix` (default 0E-2A) and the address's four bytes, the network's gateway, the provider address
// (the network's management IP), with `ipMasq` an OutBoundNAT exception for the network's subnet, the loopback
// DSR destination, the DNS. Policies are added in the reference's order, which differs between its HNS v1
// and HCN v2 paths. Pure.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { cniError, ErrCode, type CniError } from '../cni/errors.ts';
import { parseCIDR, parseIP } from '../ip/ip.ts';
import {
  endpointName,
  hcnEndpointRequest,
  type EndpointInfo,
  type HcnEndpoint,
  type HnsEndpoint,
  type HnsNetwork,
} from '../hns/endpoint.ts';
import {
  done,
  endpointDns,
  hnsEndpointPolicies,
  parseHnsNetConf,
  withLoopbackDsr,
  withOutboundNatException,
  withProviderAddress,
  type HnsNetConf,
} from '../hns/netconf.ts';
import type { WinEndpointInput } from '../win-bridge/config.ts';

const DEFAULT_MAC_PREFIX = '0E-2A';

export interface WinOverlayConf extends HnsNetConf {
  readonly ipMasq: boolean;
  readonly endpointMacPrefix: string;
}

export function parseWinOverlayConf(conf: NetConf): E.Either<CniError, WinOverlayConf> {
  const o = conf.raw;
  const errs: string[] = [];
  const base = parseHnsNetConf(conf, errs);
  const ipMasq = o['ipMasq'] ?? false;
  if (typeof ipMasq !== 'boolean') errs.push('ipMasq: must be true or false');
  const prefix = o['endpointMacPrefix'] ?? '';
  // The reference checks the length and the dash only; felt also wants hex digits (the MAC must be one).
  if (prefix !== '' && (typeof prefix !== 'string' || !/^[0-9A-Fa-f]{2}-[0-9A-Fa-f]{2}$/.test(prefix))) {
    errs.push(`endpointMacPrefix: ${JSON.stringify(prefix)} is invalid, value must be of the format xx-xx (hex)`);
  }
  // Its HNS v1 path always runs IPAM.
  if (base.apiVersion === 1 && base.ipamType === '') errs.push('ipam.type: required (win-overlay needs an IPAM plugin with apiVersion 1)');
  return done(errs, {
    ...base,
    ipMasq: ipMasq === true,
    endpointMacPrefix: typeof prefix === 'string' && prefix !== '' ? prefix : DEFAULT_MAC_PREFIX,
  });
}

export const WIN_OVERLAY_NETWORK_TYPES = ['Overlay'] as const;

/** The endpoint's MAC: the prefix and the IPv4 address's bytes, "%02x" each. */
export function overlayMac(prefix: string, ipv4: string): string {
  const v = parseIP(ipv4)!.value;
  return [prefix, ...[24n, 16n, 8n, 0n].map((s) => ((v >> s) & 0xffn).toString(16).padStart(2, '0'))].join('-');
}

/** The IPAM result's first address, which must be IPv4. */
function ipv4Of(c: WinOverlayConf, a: WinEndpointInput, v6msg: string): E.Either<CniError, string> {
  const first = a.ipam?.ips?.[0];
  if (!first) return E.left(cniError(ErrCode.Delegate, `${c.ipamType}: IPAM plugin return is missing IP config`));
  const cidr = parseCIDR(first.address);
  if (!cidr) return E.left(cniError(ErrCode.Delegate, `${c.ipamType}: invalid address ${JSON.stringify(first.address)}`));
  if (cidr.ip.family !== 4) return E.left(cniError(ErrCode.Delegate, `${c.ipamType}: ${v6msg}`));
  return E.right(first.address.slice(0, first.address.indexOf('/')));
}

/** The HNS v1 endpoint win-overlay asks for on `net`. */
export function winOverlayHnsEndpoint(c: WinOverlayConf, net: HnsNetwork, a: WinEndpointInput): E.Either<CniError, HnsEndpoint> {
  const ip = ipv4Of(c, a, "win-overlay doesn't support IPv6 now");
  if (E.isLeft(ip)) return ip;
  let ps = withProviderAddress(c.policies, 1, net.ManagementIP ?? '');
  if (c.ipMasq) ps = withOutboundNatException(ps, 1, net.Subnets[0]?.AddressPrefix ?? '');
  const dns = endpointDns(c);
  if (c.loopbackDSR) ps = withLoopbackDsr(ps, 1, ip.right, a.dsrSupported);
  const pols = hnsEndpointPolicies(ps);
  const gw = net.Subnets[0]?.GatewayAddress ?? '';
  return E.right({
    Name: endpointName(a.containerId, a.netns, c.name),
    VirtualNetwork: net.Id,
    ...(dns.nameservers?.length ? { DNSServerList: dns.nameservers.join(',') } : {}),
    ...(dns.search?.length ? { DNSSuffix: dns.search.join(',') } : {}),
    ...(gw ? { GatewayAddress: gw } : {}),
    IPAddress: ip.right,
    MacAddress: overlayMac(c.endpointMacPrefix, ip.right),
    ...(pols.length ? { Policies: pols } : {}),
  });
}

/** The HCN v2 endpoint win-overlay asks for: `net` is the HNS v1 view of the same network (gateway, management IP). */
export function winOverlayHcnEndpoint(
  c: WinOverlayConf,
  net: HnsNetwork,
  networkId: string,
  a: WinEndpointInput,
): E.Either<CniError, HcnEndpoint> {
  let ip = '';
  let mac = '';
  if (c.ipamType !== '') {
    const got = ipv4Of(c, a, 'IPAM plugin return is missing valid IP Address');
    if (E.isLeft(got)) return got;
    ip = got.right;
    mac = overlayMac(c.endpointMacPrefix, ip);
  }
  let ps = c.policies;
  if (c.loopbackDSR) ps = withLoopbackDsr(ps, 2, ip, a.dsrSupported);
  const gw = net.Subnets[0]?.GatewayAddress ?? '';
  const gateway = parseIP(gw)?.family === 4 ? gw : '';
  ps = withProviderAddress(ps, 2, net.ManagementIP ?? '');
  if (c.ipMasq) ps = withOutboundNatException(ps, 2, net.Subnets[0]?.AddressPrefix ?? '');
  if (c.loopbackDSR) ps = withLoopbackDsr(ps, 2, ip, a.dsrSupported);
  const info: EndpointInfo = { name: endpointName(a.containerId, a.netns, c.name), networkId, dns: endpointDns(c), ip, gateway, mac };
  return E.right(hcnEndpointRequest(info, ps));
}
