// ipvlan: the container interface is an ipvlan on a host device (the master), made from the host straight into
// the pod under its final name (the reference makes it under a temporary name and renames it), or inside the
// pod with `linkInContainer`. It shares its master's MAC. As the reference: chained (a prevResult and no
// `master`), the master is prevResult's single interface; without an IPAM plugin, prevResult's addresses are
// reused. Pure.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { Result } from '../cni/result.ts';
import { devSysctl } from '../kernel/keys.ts';
import { emptyKernelState, HOST, type IpvlanSpec, type KernelState, type Link, type OwnershipScope } from '../kernel/model.ts';
import { ifaceConfig, lowerLinkScope, mtuProblem, parseLowerLinkConf, type Addressing, type LowerLinkConf } from '../l2/attachment.ts';

const IPVLAN_MODES = ['l2', 'l3', 'l3s'] as const;

export interface IpvlanConf extends LowerLinkConf {
  readonly mode: IpvlanSpec['mode'];
}

export function parseIpvlanConf(conf: NetConf): E.Either<CniError, IpvlanConf> {
  const o = conf.raw;
  const errs: string[] = [];
  const base = parseLowerLinkConf(o, conf.name, conf.cniVersion, errs);
  const mode = o['mode'] === undefined || o['mode'] === '' ? 'l2' : o['mode'];
  if (typeof mode !== 'string' || !(IPVLAN_MODES as readonly string[]).includes(mode))
    errs.push(`mode: unknown ipvlan mode ${JSON.stringify(mode)} (one of ${IPVLAN_MODES.join(', ')})`);
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({ ...base, mode: mode as IpvlanSpec['mode'] });
}

/**
 * The master's name as the reference picks it: the config's; else, chained, prevResult's only interface (an
 * error when it has not exactly one named interface); else undefined (the app takes the default route's).
 */
export function ipvlanMaster(conf: IpvlanConf, prev: Result | undefined): E.Either<CniError, { name: string; from: string } | undefined> {
  if (conf.master) return E.right({ name: conf.master, from: 'master' });
  if (!prev) return E.right(undefined);
  const ifs = prev.interfaces ?? [];
  if (ifs.length !== 1 || !ifs[0]!.name)
    return E.left(invalidConfig(`master: not set, and prevResult lacks a single named interface to use (it has ${ifs.length})`));
  return E.right({ name: ifs[0]!.name, from: 'prevResult.interfaces[0].name' });
}

/** Without an IPAM plugin, prevResult's addresses (as the reference); a missing source is the config's fault. */
export function ipvlanAddressing(conf: IpvlanConf, prev: Result | undefined, ipam: Result | undefined): E.Either<CniError, Addressing> {
  if (conf.ipamType !== '') return E.right({ source: conf.ipamType, result: ipam ?? {} });
  if (prev?.ips?.length) return E.right({ source: 'prevResult', result: prev });
  return E.left(invalidConfig('ipam: missing, and there is no prevResult with addresses to reuse'));
}

export interface IpvlanAttachment {
  readonly conf: IpvlanConf;
  readonly master: string;
  readonly masterMtu?: number;
  /** The master's MAC: an ipvlan has it too (the result reports it). */
  readonly masterMac?: string;
  readonly ifname: string;
  readonly netns: string;
  readonly addressing: Addressing;
}

export function ipvlanPlan(a: IpvlanAttachment): E.Either<CniError, { kernel: KernelState; scope: OwnershipScope; result: Result }> {
  const { conf, netns, ifname } = a;
  const tooBig = mtuProblem(conf.mtu, a.masterMtu);
  if (tooBig) return E.left(tooBig);
  const cfg = ifaceConfig(a.addressing, ifname, netns);
  if (E.isLeft(cfg)) return cfg;
  const { ips, addresses, routes, sysctls } = cfg.right;
  const link: Link = {
    ns: netns,
    name: ifname,
    kind: 'ipvlan',
    up: true,
    ...(conf.mtu ? { mtu: conf.mtu } : {}),
    ipvlan: { master: a.master, mode: conf.mode, ...(conf.linkInContainer ? {} : { masterNs: HOST }) },
  };
  // As the reference: gratuitous ARP and unsolicited neighbour advertisements when the address changes.
  const notify = [
    ...(ips.some((i) => !i.address.includes(':'))
      ? [{ ns: netns, key: devSysctl('net.ipv4.conf', ifname, 'arp_notify'), value: '1' }]
      : []),
    ...(ips.some((i) => i.address.includes(':'))
      ? [{ ns: netns, key: devSysctl('net.ipv6.conf', ifname, 'ndisc_notify'), value: '1' }]
      : []),
  ];
  const kernel: KernelState = { ...emptyKernelState(), links: [link], addresses, routes, sysctls: [...notify, ...sysctls] };
  const routesOut = a.addressing.result.routes;
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces: [{ name: ifname, ...(a.masterMac ? { mac: a.masterMac } : {}), sandbox: netns }],
    ips,
    ...(routesOut?.length ? { routes: routesOut } : {}),
    ...(conf.dns ? { dns: conf.dns } : {}),
  };
  return E.right({ kernel, scope: lowerLinkScope(ifname, netns), result });
}
