// vlan: the container interface is an 802.1Q vlan on a host device (the master), made from the host straight
// into the pod under its final name (the reference uses a temporary name and renames it), or inside the pod
// with `linkInContainer`. `master` and an IPAM plugin are required, as in the reference. Pure.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { Result } from '../cni/result.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type OwnershipScope } from '../kernel/model.ts';
import { ifaceConfig, lowerLinkScope, mtuProblem, parseLowerLinkConf, type Addressing, type LowerLinkConf } from '../l2/attachment.ts';

export interface VlanConf extends LowerLinkConf {
  readonly master: string;
  readonly vlanId: number;
}

export function parseVlanConf(conf: NetConf): E.Either<CniError, VlanConf> {
  const o = conf.raw;
  const errs: string[] = [];
  const base = parseLowerLinkConf(o, conf.name, conf.cniVersion, errs);
  if (o['master'] === undefined || o['master'] === '') errs.push('master: required (the host interface to create the VLAN on)');
  // 4095 is reserved by 802.1Q; the reference accepts 0-4094 too (its message says "4095 inclusive").
  const id = o['vlanId'] ?? 0;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 4094)
    errs.push(`vlanId: invalid VLAN ID ${JSON.stringify(id)} (must be an integer between 0 and 4094)`);
  if (base.ipamType === '') errs.push('ipam.type: required (vlan needs an IPAM plugin)');
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({ ...base, master: base.master!, vlanId: id as number });
}

export interface VlanAttachment {
  readonly conf: VlanConf;
  readonly masterMtu?: number;
  /** The master's MAC: a new vlan has it too (the result reports it). */
  readonly masterMac?: string;
  readonly ifname: string;
  readonly netns: string;
  readonly addressing: Addressing;
}

export function vlanPlan(a: VlanAttachment): E.Either<CniError, { kernel: KernelState; scope: OwnershipScope; result: Result }> {
  const { conf, netns, ifname } = a;
  const tooBig = mtuProblem(conf.mtu, a.masterMtu);
  if (tooBig) return E.left(tooBig);
  const cfg = ifaceConfig(a.addressing, ifname, netns);
  if (E.isLeft(cfg)) return cfg;
  const { ips, addresses, routes, sysctls } = cfg.right;
  const link: Link = {
    ns: netns,
    name: ifname,
    kind: 'vlan',
    up: true,
    ...(conf.mtu ? { mtu: conf.mtu } : {}),
    vlan: { master: conf.master, id: conf.vlanId, ...(conf.linkInContainer ? {} : { masterNs: HOST }) },
  };
  const kernel: KernelState = { ...emptyKernelState(), links: [link], addresses, routes, sysctls };
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
