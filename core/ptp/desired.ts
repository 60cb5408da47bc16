// ptp: a veth pair per container and routes instead of a bridge, as the reference plugin builds it. The
// container interface holds each address without its prefix route (`noprefixroute`; the reference deletes
// the kernel's one), a /32 (/128) link route to the gateway and the subnet via the gateway, both with the
// address as source, plus the IPAM routes via the gateway. The host veth holds the gateway as a /32 (/128)
// and a host-scope route to each container address. Masquerade as bridge's (the reference's chain names).
// Pure: names and MACs are passed in.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import { parseBackend, type NetfilterBackend } from '../netfilter/backend.ts';
import { masqueradeScope, renderMasquerade } from '../netfilter/masquerade.ts';
import type { DNS, IPConfig, Result } from '../cni/result.ts';
import { formatCIDR, formatIP, networkOf, parseCIDR, parseIP } from '../ip/ip.ts';
import { devSysctl } from '../kernel/keys.ts';
import {
  emptyKernelState,
  HOST,
  type Address,
  type KernelState,
  type Link,
  type OwnershipScope,
  type Route,
  type Sysctl,
} from '../kernel/model.ts';

export interface PtpConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly ipMasq: boolean;
  /** The masquerade's backend; undefined: the host decides (apps/cni/netfilter.ts). */
  readonly ipMasqBackend?: NetfilterBackend;
  /** 0: kernel default. */
  readonly mtu: number;
  readonly dns?: DNS;
  readonly ipamType: string;
}

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);

export function parsePtpConf(conf: NetConf): E.Either<CniError, PtpConf> {
  const o = conf.raw;
  const errs: string[] = [];
  const ipMasq = o['ipMasq'] ?? false;
  if (typeof ipMasq !== 'boolean') errs.push(`ipMasq: must be true or false, got ${JSON.stringify(ipMasq)}`);
  const ipMasqBackend = parseBackend(o, 'ipMasqBackend', errs);
  const mtu = o['mtu'] ?? 0;
  if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 0 || mtu > 65535)
    errs.push(`mtu: must be an integer between 0 and 65535, got ${JSON.stringify(mtu)}`);
  const ipam = obj(o['ipam']);
  if (!ipam || typeof ipam['type'] !== 'string' || ipam['type'] === '')
    errs.push("ipam.type: ptp needs an IPAM plugin ('ipam': {'type': ...})");
  // dhcp talks on the interface, which ptp makes only once it knows the addresses: not supported (yet).
  else if (ipam['type'] === 'dhcp')
    errs.push(
      "ipam.type: dhcp is not supported with felt's ptp (it needs the interface before IPAM runs; bridge and macvlan order themselves for it)",
    );
  let dns: DNS | undefined;
  if (o['dns'] !== undefined && o['dns'] !== null) {
    const d = obj(o['dns']);
    if (!d) errs.push('dns: must be an object');
    else if (Object.keys(d).length) dns = d as DNS;
  }
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({
    name: conf.name,
    cniVersion: conf.cniVersion,
    ipMasq: ipMasq as boolean,
    ...(ipMasqBackend ? { ipMasqBackend } : {}),
    mtu: mtu as number,
    ...(dns ? { dns } : {}),
    ipamType: ipam!['type'] as string,
  });
}

export interface PtpAttachment {
  readonly conf: PtpConf;
  readonly containerId: string;
  readonly ifname: string;
  readonly netns: string;
  readonly hostVeth: string;
  readonly hostVethMac: string;
  readonly containerMac: string;
  readonly ipam: Pick<Result, 'ips' | 'routes' | 'dns'>;
}

export interface PtpPlan {
  readonly kernel: KernelState;
  readonly scope: OwnershipScope;
  readonly result: Result;
}

export function ptpPlan(a: PtpAttachment): E.Either<CniError, PtpPlan> {
  const { conf, netns, ifname, hostVeth } = a;
  const ipamIps = a.ipam.ips ?? [];
  if (ipamIps.length === 0) return E.left(cniError(ErrCode.Delegate, `${conf.ipamType}: IPAM plugin returned missing IP config`));
  const mtu = conf.mtu || undefined;
  const links: Link[] = [
    { ns: HOST, name: hostVeth, kind: 'veth', up: true, mac: a.hostVethMac, ...(mtu ? { mtu } : {}) },
    {
      ns: netns,
      name: ifname,
      kind: 'veth',
      up: true,
      mac: a.containerMac,
      veth: { peer: hostVeth, peerNs: HOST, peerMac: a.hostVethMac },
      ...(mtu ? { mtu } : {}),
    },
  ];
  const addresses: Address[] = [];
  const routes: Route[] = [];
  const ips: IPConfig[] = [];
  const gwOf: { 4?: string; 6?: string } = {};
  for (const ipc of ipamIps) {
    const c = parseCIDR(ipc.address);
    const gw = ipc.gateway === undefined ? undefined : parseIP(ipc.gateway);
    if (!c) return E.left(cniError(ErrCode.Delegate, `${conf.ipamType}: invalid address ${JSON.stringify(ipc.address)}`));
    if (!gw || gw.family !== c.ip.family)
      return E.left(
        cniError(ErrCode.Delegate, `${conf.ipamType}: address ${ipc.address} has no gateway of its family (ptp routes through it)`),
      );
    const fam = c.ip.family;
    const host = fam === 4 ? 32 : 128;
    const ip = formatIP(c.ip);
    const g = formatIP(gw);
    gwOf[fam] ??= g;
    ips.push({ address: ipc.address, gateway: g, interface: 1 });
    // IPv6: no duplicate address detection on a link with one peer (a tentative address cannot be a route's
    // source, and the reference waits for DAD instead); IPv6 routes have no scope to set.
    const v6 = fam === 6;
    addresses.push({ ns: netns, dev: ifname, cidr: formatCIDR(c), noprefixroute: true, ...(v6 ? { nodad: true } : {}) });
    routes.push({ ns: netns, dst: `${g}/${host}`, dev: ifname, ...(v6 ? {} : { scope: 'link' as const }), src: ip });
    routes.push({ ns: netns, dst: formatCIDR(networkOf(c)), gw: g, dev: ifname, src: ip });
    addresses.push({ ns: HOST, dev: hostVeth, cidr: `${g}/${host}`, ...(v6 ? { nodad: true } : {}) });
    routes.push({ ns: HOST, dst: `${ip}/${host}`, dev: hostVeth, ...(v6 ? {} : { scope: 'host' as const }) });
  }
  for (const r of a.ipam.routes ?? []) {
    const dst = parseCIDR(r.dst);
    if (!dst) return E.left(cniError(ErrCode.Delegate, `${conf.ipamType}: invalid route destination ${JSON.stringify(r.dst)}`));
    const gw = r.gw ?? gwOf[dst.ip.family];
    routes.push({ ns: netns, dst: formatCIDR(networkOf(dst)), dev: ifname, ...(gw ? { gw } : {}) });
  }
  const sysctls: Sysctl[] = [];
  if (ips.some((i) => !i.address.includes(':'))) sysctls.push({ ns: HOST, key: 'net.ipv4.ip_forward', value: '1' });
  if (ips.some((i) => i.address.includes(':'))) {
    sysctls.push({ ns: HOST, key: 'net.ipv6.conf.all.forwarding', value: '1' });
    sysctls.push({ ns: netns, key: devSysctl('net.ipv6.conf', ifname, 'disable_ipv6'), value: '0' });
  }
  const masq = conf.ipMasq
    ? renderMasquerade(
        { ns: HOST, network: conf.name, ifname, containerId: a.containerId, addresses: ips.map((i) => i.address) },
        conf.ipMasqBackend ?? 'iptables',
      )
    : {};
  const kernel: KernelState = { ...emptyKernelState(), links, addresses, routes, sysctls, ...masq };
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces: [
      { name: hostVeth, mac: a.hostVethMac },
      { name: ifname, mac: a.containerMac, sandbox: netns },
    ],
    ips,
    ...(a.ipam.routes?.length ? { routes: a.ipam.routes } : {}),
    ...(conf.dns ? { dns: conf.dns } : a.ipam.dns ? { dns: a.ipam.dns } : {}),
  };
  return E.right({ kernel, scope: ptpScope(conf, a.containerId, ifname, netns, hostVeth), result });
}

/** What one ptp attachment owns: the veth pair and everything on it, and its masquerade chain. */
export function ptpScope(conf: PtpConf, containerId: string, ifname: string, netns: string, hostVeth?: string): OwnershipScope {
  const masq = masqueradeScope(HOST, conf.name, ifname, containerId);
  return {
    ...(conf.ipMasq ? { nftRuleMarkers: masq.nftRuleMarkers } : {}),
    links: [...(netns ? [{ ns: netns, name: ifname }] : []), ...(hostVeth ? [{ ns: HOST, name: hostVeth }] : [])],
    devices: [...(netns ? [{ ns: netns, dev: ifname }] : []), ...(hostVeth ? [{ ns: HOST, dev: hostVeth }] : [])],
    chains: conf.ipMasq ? masq.chains : [],
    ruleMarkers: conf.ipMasq ? masq.ruleMarkers : [],
  };
}
