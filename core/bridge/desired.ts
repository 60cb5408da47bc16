// What one bridge attachment wants in the kernel, computed from the config, the IPAM result and the names and
// MACs chosen by the app (randomness is passed in). The same function serves ADD (desired), CHECK (compared
// with the kernel) and DEL (its scope says what to remove).

import * as E from 'fp-ts/lib/Either.js';
import { invalidConfig, cniError, ErrCode, type CniError } from '../cni/errors.ts';
import { masqueradeScope, renderMasquerade } from '../netfilter/masquerade.ts';
import type { IPConfig, Result, Route as CniRoute } from '../cni/result.ts';
import { contains, formatCIDR, formatIP, next, networkOf, parseCIDR, parseIP, type CIDR } from '../ip/ip.ts';
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
import type { BridgeConf } from './config.ts';
import { devSysctl } from '../kernel/keys.ts';

export interface Attachment {
  readonly conf: BridgeConf;
  readonly containerId: string;
  readonly ifname: string;
  readonly netns: string;
  readonly hostVeth: string;
  readonly hostVethMac: string;
  readonly containerMac: string;
  readonly bridgeMac: string;
  /** IPAM's answer (layer 3), or undefined for an L2-only bridge. */
  readonly ipam?: Pick<Result, 'ips' | 'routes' | 'dns'>;
}

export interface AttachmentPlan {
  readonly kernel: KernelState;
  readonly scope: OwnershipScope;
  readonly result: Result;
}

const defaultDst = (family: 4 | 6): string => (family === 4 ? '0.0.0.0/0' : '::/0');

/** Gateways per family and the result's IPs/routes, as the reference's calcGateways. */
function gateways(conf: BridgeConf, ips: readonly IPConfig[], routes: readonly CniRoute[]) {
  const outIps: IPConfig[] = [];
  const outRoutes: CniRoute[] = [...routes];
  const gws: { family: 4 | 6; cidr: string }[] = [];
  const defaultFound = { 4: false, 6: false };
  for (const ipc of ips) {
    const c = parseCIDR(ipc.address);
    if (!c) return E.left(cniError(ErrCode.InvalidNetworkConfig, `IPAM returned an invalid address ${JSON.stringify(ipc.address)}`));
    const fam = c.ip.family;
    let gateway = ipc.gateway;
    if (gateway === undefined && conf.isGateway) gateway = formatIP(next(networkOf(c).ip));
    outIps.push({ address: ipc.address, ...(gateway ? { gateway } : {}), interface: 2 });
    if (conf.isDefaultGateway && !defaultFound[fam]) {
      defaultFound[fam] = outRoutes.some((r) => r.gw !== undefined && r.dst === defaultDst(fam));
      if (!defaultFound[fam]) {
        outRoutes.push(gateway ? { dst: defaultDst(fam), gw: gateway } : { dst: defaultDst(fam) });
        defaultFound[fam] = true;
      }
    }
    if (conf.isGateway && gateway) gws.push({ family: fam, cidr: `${gateway}/${c.prefix}` });
  }
  return E.right({ ips: outIps, routes: outRoutes, gws });
}

export function attachmentPlan(a: Attachment): E.Either<CniError, AttachmentPlan> {
  const { conf, netns, ifname } = a;
  const ipamIps = a.ipam?.ips ?? [];
  if (conf.ipamType !== '' && ipamIps.length === 0) return E.left(invalidConfig('ipam: IPAM plugin returned missing IP config'));
  const g = gateways(conf, ipamIps, a.ipam?.routes ?? []);
  if (E.isLeft(g)) return g;
  const { ips, routes, gws } = g.right;

  const mtu = conf.mtu || undefined;
  const links: Link[] = [
    {
      ns: HOST,
      name: conf.bridge,
      kind: 'bridge',
      up: true,
      mac: a.bridgeMac,
      ...(mtu ? { mtu } : {}),
      ...(conf.promiscMode ? { promisc: true } : {}),
      // As the reference's setupBridge: a VLAN needs a VLAN-filtering bridge (refused where the kernel lacks it).
      ...(conf.vlan !== 0 || conf.vlanTrunk.length > 0 ? { bridge: { vlanFiltering: true } } : {}),
    },
    {
      ns: HOST,
      name: a.hostVeth,
      kind: 'veth',
      up: true,
      mac: a.hostVethMac,
      master: conf.bridge,
      hairpin: conf.hairpinMode,
      ...(mtu ? { mtu } : {}),
    },
    {
      ns: netns,
      name: ifname,
      kind: 'veth',
      // disableContainerInterface: the pod gets its interface down (layer 2 only; config.ts refuses IPAM).
      up: !conf.disableContainerInterface,
      mac: a.containerMac,
      veth: { peer: a.hostVeth, peerNs: HOST, peerMac: a.hostVethMac },
      ...(mtu ? { mtu } : {}),
    },
  ];

  const addresses: Address[] = ips.map((i) => ({ ns: netns, dev: ifname, cidr: i.address }));
  const bridgeAddrs = [...new Set(gws.map((gw) => gw.cidr))];
  for (const cidr of bridgeAddrs) addresses.push({ ns: HOST, dev: conf.bridge, cidr });

  // Routes without a gateway go via the first gateway of their family (ipam.ConfigureIface).
  const firstGw = (fam: 4 | 6): string | undefined =>
    ips.find((i) => i.gateway !== undefined && parseIP(i.gateway)?.family === fam)?.gateway;
  const kroutes: Route[] = [];
  for (const r of routes) {
    const dst = parseCIDR(r.dst);
    if (!dst) return E.left(invalidConfig(`routes: invalid destination ${JSON.stringify(r.dst)}`));
    const gw = r.gw ?? firstGw(dst.ip.family);
    kroutes.push({ ns: netns, dst: formatCIDR(networkOf(dst)), dev: ifname, ...(gw ? { gw } : {}) });
  }

  const sysctls: Sysctl[] = [];
  const hasV6 = ips.some((i) => i.address.includes(':'));
  if (gws.some((gw) => gw.family === 4)) sysctls.push({ ns: HOST, key: 'net.ipv4.ip_forward', value: '1' });
  if (gws.some((gw) => gw.family === 6)) sysctls.push({ ns: HOST, key: 'net.ipv6.conf.all.forwarding', value: '1' });
  if (hasV6) sysctls.push({ ns: netns, key: devSysctl('net.ipv6.conf', ifname, 'disable_ipv6'), value: '0' });
  // As the reference: DAD and arp_notify on every layer-3 container interface, whatever its families.
  if (ips.length) {
    sysctls.push({ ns: netns, key: devSysctl('net.ipv6.conf', ifname, 'accept_dad'), value: conf.enableDad ? '1' : '0' });
    if (conf.enableDad) sysctls.push({ ns: netns, key: devSysctl('net.ipv6.conf', ifname, 'enhanced_dad'), value: '1' });
    sysctls.push({ ns: netns, key: devSysctl('net.ipv4.conf', ifname, 'arp_notify'), value: '1' });
  }
  // The bridge never takes router advertisements (the reference's ensureBridge), IPv6 pods or not: otherwise
  // any pod could advertise itself as the host's IPv6 router.
  sysctls.push({ ns: HOST, key: devSysctl('net.ipv6.conf', conf.bridge, 'accept_ra'), value: '0' });

  const masq =
    conf.ipMasq && conf.ipamType !== ''
      ? renderMasquerade(
          { ns: HOST, network: conf.name, ifname, containerId: a.containerId, addresses: ips.map((i) => i.address) },
          conf.ipMasqBackend ?? 'iptables',
        )
      : {};

  const kernel: KernelState = {
    ...emptyKernelState(),
    links,
    addresses,
    routes: kroutes,
    sysctls,
    ...masq,
  };
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces: [
      { name: conf.bridge, mac: a.bridgeMac },
      { name: a.hostVeth, mac: a.hostVethMac },
      { name: ifname, mac: a.containerMac, sandbox: netns, ...(mtu ? { mtu } : {}) },
    ],
    ...(ips.length ? { ips } : {}),
    ...(routes.length ? { routes } : {}),
    ...(conf.dns && Object.keys(conf.dns).length ? { dns: conf.dns } : a.ipam?.dns ? { dns: a.ipam.dns } : {}),
  };
  return E.right({ kernel, scope: attachmentScope(conf, a.containerId, ifname, netns, a.hostVeth), result });
}

/**
 * What one attachment owns: the container interface (and with it the veth pair), everything on it, and the
 * masquerade chain. The bridge is shared by every attachment: ADD creates it, no attachment removes it.
 */
export function attachmentScope(conf: BridgeConf, containerId: string, ifname: string, netns: string, hostVeth?: string): OwnershipScope {
  const masq = masqueradeScope(HOST, conf.name, ifname, containerId);
  return {
    ...(conf.ipMasq ? { nftRuleMarkers: masq.nftRuleMarkers } : {}),
    links: [{ ns: netns, name: ifname }, ...(hostVeth ? [{ ns: HOST, name: hostVeth }] : [])],
    devices: [{ ns: netns, dev: ifname }, ...(hostVeth ? [{ ns: HOST, dev: hostVeth }] : [])],
    chains: conf.ipMasq ? masq.chains : [],
    ruleMarkers: conf.ipMasq ? masq.ruleMarkers : [],
  };
}

/**
 * The reference's ensureAddr rule: an IPv4 bridge keeps one gateway address per subnet; a different IPv4
 * address (or an overlapping IPv6 one) on the bridge is an error unless forceAddress, which replaces it.
 * Returns the addresses to remove.
 */
export function bridgeAddressConflicts(
  conf: BridgeConf,
  observed: readonly Address[],
  wanted: readonly Address[],
): E.Either<CniError, Address[]> {
  const remove: Address[] = [];
  for (const w of wanted.filter((x) => x.ns === HOST && x.dev === conf.bridge)) {
    const wc = parseCIDR(w.cidr) as CIDR;
    for (const o of observed.filter((x) => x.ns === HOST && x.dev === conf.bridge)) {
      if (o.cidr === w.cidr) continue;
      const oc = parseCIDR(o.cidr);
      if (!oc || oc.ip.family !== wc.ip.family) continue;
      if (wanted.some((x) => x.ns === HOST && x.dev === conf.bridge && x.cidr === o.cidr)) continue;
      const conflict = wc.ip.family === 4 || contains(oc, wc.ip) || contains(wc, oc.ip);
      if (!conflict) continue;
      if (!conf.forceAddress) {
        return E.left(
          invalidConfig(
            `bridge: "${conf.bridge}" already has an IP address ${o.cidr} different from ${w.cidr} (set forceAddress to replace it)`,
          ),
        );
      }
      remove.push(o);
    }
  }
  return E.right(remove);
}
