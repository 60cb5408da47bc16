// dummy: the container interface is a dummy device (it drops what it is sent; addresses on it are reachable from
// within the pod, e.g. a service address) made in the pod's namespace with the addresses of an IPAM plugin,
// which the reference v1.9.1 requires (it has no other option). The result is the IPAM plugin's, with the
// dummy as its one interface (its DNS included, as the reference passes it through). Pure: the MAC is passed in.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { Result } from '../cni/result.ts';
import { emptyKernelState, type KernelState, type Link, type OwnershipScope } from '../kernel/model.ts';
import { ifaceConfig, lowerLinkScope, obj, type Addressing } from '../l2/attachment.ts';

export interface DummyConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly ipamType: string;
}

export function parseDummyConf(conf: NetConf): E.Either<CniError, DummyConf> {
  const o = conf.raw;
  const ipam = o['ipam'] === undefined || o['ipam'] === null ? {} : obj(o['ipam']);
  if (!ipam) return E.left(invalidConfig('ipam: must be an object'));
  const t = ipam['type'];
  if (t !== undefined && typeof t !== 'string') return E.left(invalidConfig('ipam.type: must be a string'));
  if (!t) return E.left(invalidConfig('ipam.type: required (a dummy interface needs an IPAM configuration)'));
  if (t === 'dhcp') return E.left(invalidConfig('ipam.type: dhcp is not supported with dummy (a dummy device drops what it is sent)'));
  return E.right({ name: conf.name, cniVersion: conf.cniVersion, ipamType: t });
}

export interface DummyAttachment {
  readonly conf: DummyConf;
  readonly ifname: string;
  readonly netns: string;
  readonly mac: string;
  readonly addressing: Addressing;
}

export function dummyPlan(a: DummyAttachment): E.Either<CniError, { kernel: KernelState; scope: OwnershipScope; result: Result }> {
  const { conf, netns, ifname } = a;
  const cfg = ifaceConfig(a.addressing, ifname, netns);
  if (E.isLeft(cfg)) return cfg;
  const { ips, addresses, routes, sysctls } = cfg.right;
  const link: Link = { ns: netns, name: ifname, kind: 'dummy', up: true, mac: a.mac };
  const r = a.addressing.result;
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces: [{ name: ifname, mac: a.mac, sandbox: netns }],
    ips,
    ...(r.routes?.length ? { routes: r.routes } : {}),
    ...(r.dns && Object.keys(r.dns).length ? { dns: r.dns } : {}),
  };
  return E.right({
    kernel: { ...emptyKernelState(), links: [link], addresses, routes, sysctls },
    scope: lowerLinkScope(ifname, netns),
    result,
  });
}
