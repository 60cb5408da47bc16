// The endpoints win-bridge and win-overlay ask HNS for, and the CNI results they print, as the reference's
// pkg/hns/endpoint_windows.go builds them: the endpoint of a container on a network is named
// `<sandbox container>_<network>`; an HNS v1 request is an HNSEndpoint document, an HCN v2 one a
// HostComputeEndpoint document (schema 2.0), both with Go's JSON field names and omitempty. Pure.

import type { DNS, Result } from '../cni/result.ts';
import { formatIP, parseCIDR, parseIP } from '../ip/ip.ts';
import { hcnEndpointPolicies, hnsEndpointPolicies, type HcnEndpointPolicy, type Policy } from './netconf.ts';

/** CNI_NETNS of a pod's infra container on Windows (the endpoint is its own; others share it). */
export const PAUSE_NETNS = 'none';

/** GetSandboxContainerID: the container whose endpoint this is ("container:<id>" names it in CNI_NETNS). */
function sandboxContainerId(containerId: string, netns: string): string {
  if (netns !== '' && netns !== PAUSE_NETNS) {
    const i = netns.indexOf(':');
    if (i >= 0) return netns.slice(i + 1);
  }
  return containerId;
}

/** ConstructEndpointName. */
export const endpointName = (containerId: string, netns: string, network: string): string =>
  `${sandboxContainerId(containerId, netns)}_${network}`;

/** An HNS v1 network as HNS reports it (the fields the plugins read). */
export interface HnsNetwork {
  readonly Id: string;
  readonly Name: string;
  readonly Type: string;
  readonly ManagementIP?: string;
  readonly Subnets: readonly { readonly AddressPrefix: string; readonly GatewayAddress?: string }[];
}

/** An HNS v1 endpoint (request: without Id; HNS fills Id, and MacAddress / IPAddress when not given). */
export interface HnsEndpoint {
  readonly Id?: string;
  readonly Name: string;
  readonly VirtualNetwork: string;
  readonly DNSServerList?: string;
  readonly DNSSuffix?: string;
  readonly GatewayAddress?: string;
  readonly IPAddress?: string;
  readonly MacAddress?: string;
  readonly Policies?: readonly unknown[];
}

/** An HCN v2 network (the fields the plugins read). */
export interface HcnNetwork {
  readonly Id: string;
  readonly Name: string;
  readonly Type: string;
  readonly Ipams: readonly { readonly Subnets: readonly { readonly IpAddressPrefix: string }[] }[];
}

interface HcnDns {
  readonly Domain?: string;
  readonly Search?: readonly string[];
  readonly ServerList?: readonly string[];
  readonly Options?: readonly string[];
}

/** An HCN v2 endpoint (request: without Id; HCN fills Id, HostComputeNamespace once added to one). */
export interface HcnEndpoint {
  readonly Id?: string;
  readonly Name: string;
  readonly HostComputeNetwork: string;
  readonly HostComputeNamespace?: string;
  readonly Policies?: readonly HcnEndpointPolicy[];
  readonly IpConfigurations?: readonly { readonly IpAddress?: string }[];
  readonly Dns?: HcnDns;
  readonly Routes?: readonly { readonly NextHop?: string; readonly DestinationPrefix?: string }[];
  readonly MacAddress?: string;
  readonly SchemaVersion: { readonly Major: number; readonly Minor: number };
}

/** What an endpoint is made of (EndpointInfo). */
export interface EndpointInfo {
  readonly name: string;
  readonly networkId: string;
  readonly dns: DNS;
  /** '' when HNS picks. */
  readonly ip: string;
  readonly gateway: string;
  readonly mac: string;
}

const joined = (xs: readonly string[] | undefined): string => (xs ?? []).join(',');
const nonEmpty = <K extends string>(k: K, v: string): Partial<Record<K, string>> => (v === '' ? {} : ({ [k]: v } as Record<K, string>));

/** GenerateHnsEndpoint's document (win-overlay's HNS path also sets the MAC). */
export function hnsEndpointRequest(ep: EndpointInfo, policies: readonly Policy[]): HnsEndpoint {
  const ps = hnsEndpointPolicies(policies);
  return {
    Name: ep.name,
    VirtualNetwork: ep.networkId,
    ...nonEmpty('DNSServerList', joined(ep.dns.nameservers)),
    ...nonEmpty('DNSSuffix', joined(ep.dns.search)),
    ...nonEmpty('GatewayAddress', ep.gateway),
    ...nonEmpty('IPAddress', ep.ip),
    ...nonEmpty('MacAddress', ep.mac),
    ...(ps.length ? { Policies: ps } : {}),
  };
}

/** GetDefaultDestinationPrefix: of the gateway's family (no gateway reads as IPv6, as Go's nil IP does). */
const defaultDestination = (gateway: string): string => (gateway !== '' && parseIP(gateway)?.family === 4 ? '0.0.0.0/0' : '::/0');

/** GenerateHcnEndpoint's document. */
export function hcnEndpointRequest(ep: EndpointInfo, policies: readonly Policy[]): HcnEndpoint {
  const ps = hcnEndpointPolicies(policies);
  const dns: HcnDns = {
    ...nonEmpty('Domain', ep.dns.domain ?? ''),
    ...(ep.dns.search?.length ? { Search: ep.dns.search } : {}),
    ...(ep.dns.nameservers?.length ? { ServerList: ep.dns.nameservers } : {}),
    ...(ep.dns.options?.length ? { Options: ep.dns.options } : {}),
  };
  return {
    SchemaVersion: { Major: 2, Minor: 0 },
    Name: ep.name,
    ...nonEmpty('MacAddress', ep.mac),
    HostComputeNetwork: ep.networkId,
    ...(Object.keys(dns).length ? { Dns: dns } : {}),
    Routes: [{ ...nonEmpty('NextHop', ep.gateway), DestinationPrefix: defaultDestination(ep.gateway) }],
    IpConfigurations: [{ ...nonEmpty('IpAddress', ep.ip) }],
    ...(ps.length ? { Policies: ps } : {}),
  };
}

/** The address with the network's prefix length (net.IPNet{IP, Mask}.String()). */
function withPrefix(ip: string | undefined, prefix: string): string | undefined {
  const c = parseCIDR(prefix);
  const a = ip ? parseIP(ip) : undefined;
  if (!c || !a) return undefined;
  return `${formatIP(a)}/${a.family === c.ip.family ? c.prefix : a.family === 4 ? 32 : 128}`;
}

/** ConstructHnsResult: the endpoint HNS made as the CNI result (DNS split on ',' as the reference does). */
export function hnsResult(cniVersion: string, net: HnsNetwork, ep: HnsEndpoint): Result | string {
  const address = withPrefix(ep.IPAddress, net.Subnets[0]?.AddressPrefix ?? '');
  if (!address)
    return `failed to parse CIDR from ${JSON.stringify(net.Subnets[0]?.AddressPrefix ?? '')} or the endpoint's address ${JSON.stringify(ep.IPAddress ?? '')}`;
  const gw = ep.GatewayAddress ? parseIP(ep.GatewayAddress) : undefined;
  return {
    cniVersion,
    interfaces: [{ name: ep.Name, ...(ep.MacAddress ? { mac: ep.MacAddress } : {}) }],
    ips: [{ address, ...(gw ? { gateway: formatIP(gw) } : {}) }],
    dns: { nameservers: (ep.DNSServerList ?? '').split(','), search: (ep.DNSSuffix ?? '').split(',') },
  };
}

/** ConstructHcnResult. */
export function hcnResult(cniVersion: string, net: HcnNetwork, ep: HcnEndpoint): Result | string {
  const prefix = net.Ipams[0]?.Subnets[0]?.IpAddressPrefix ?? '';
  const address = withPrefix(ep.IpConfigurations?.[0]?.IpAddress, prefix);
  if (!address)
    return `failed to parse CIDR from ${JSON.stringify(prefix)} or the endpoint's address ${JSON.stringify(ep.IpConfigurations?.[0]?.IpAddress ?? '')}`;
  const nh = ep.Routes?.[0]?.NextHop;
  const gw = nh ? parseIP(nh) : undefined;
  const d = ep.Dns ?? {};
  const dns: DNS = {
    ...(d.ServerList?.length ? { nameservers: [...d.ServerList] } : {}),
    ...(d.Domain ? { domain: d.Domain } : {}),
    ...(d.Search?.length ? { search: [...d.Search] } : {}),
    ...(d.Options?.length ? { options: [...d.Options] } : {}),
  };
  return {
    cniVersion,
    interfaces: [{ name: ep.Name, ...(ep.MacAddress ? { mac: ep.MacAddress } : {}) }],
    ips: [{ address, ...(gw ? { gateway: formatIP(gw) } : {}) }],
    ...(Object.keys(dns).length ? { dns } : {}),
  };
}
