// macvlan: the container interface is a macvlan on a host device (the master), made from the host straight
// into the pod's namespace under its final name (the reference makes it under a temporary name and renames it
// there; creating it in place needs no rename). With `linkInContainer` the master is in the pod itself.
// Addresses and routes come from IPAM (optional: without it the interface is only brought up, as the
// reference does). Pure: the MAC is passed in when the config names none.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { DNS, Result } from '../cni/result.ts';
import { parseMac } from '../ip/mac.ts';
import { devSysctl } from '../kernel/keys.ts';
import {
  emptyKernelState,
  HOST,
  type KernelState,
  type Link,
  type MacvlanSpec,
  type OwnershipScope,
  type Sysctl,
} from '../kernel/model.ts';
import { linkNameProblem } from '../kernel/names.ts';
import { ipamIfaceConfig } from '../l2/attachment.ts';

const MACVLAN_MODES = ['bridge', 'private', 'vepa', 'passthru'] as const;

export interface MacvlanConf {
  readonly name: string;
  readonly cniVersion: string;
  /** undefined: the interface of the host's default route (found by the app). */
  readonly master?: string;
  readonly mode: MacvlanSpec['mode'];
  readonly mtu: number;
  readonly mac?: string;
  readonly linkInContainer: boolean;
  readonly dns?: DNS;
  /** '' means layer 2 only. */
  readonly ipamType: string;
}

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);

export function parseMacvlanConf(conf: NetConf, cniArgs: Readonly<Record<string, string>>): E.Either<CniError, MacvlanConf> {
  const o = conf.raw;
  const errs: string[] = [];
  let master: string | undefined;
  if (o['master'] !== undefined && o['master'] !== '') {
    const p = typeof o['master'] === 'string' ? linkNameProblem(o['master']) : 'must be a string';
    if (p) errs.push(`master: ${JSON.stringify(o['master'])} ${p}`);
    else master = o['master'] as string;
  }
  const mode = o['mode'] === undefined || o['mode'] === '' ? 'bridge' : o['mode'];
  if (typeof mode !== 'string' || !(MACVLAN_MODES as readonly string[]).includes(mode))
    errs.push(`mode: unknown macvlan mode ${JSON.stringify(mode)} (one of ${MACVLAN_MODES.join(', ')})`);
  const mtu = o['mtu'] ?? 0;
  if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 0 || mtu > 65535)
    errs.push(`mtu: must be an integer between 0 and 65535, got ${JSON.stringify(mtu)}`);
  // mac < CNI_ARGS MAC < runtimeConfig.mac, as the reference.
  let mac: string | undefined;
  for (const [field, v] of [
    ['mac', o['mac']],
    ['CNI_ARGS MAC', cniArgs['MAC']],
    ['runtimeConfig.mac', obj(o['runtimeConfig'])?.['mac']],
  ] as const) {
    if (v === undefined || v === '') continue;
    const m = typeof v === 'string' ? parseMac(v) : undefined;
    if (!m) errs.push(`${field}: ${JSON.stringify(v)} is not a MAC address`);
    else mac = m;
  }
  const lic = o['linkInContainer'] ?? false;
  if (typeof lic !== 'boolean') errs.push('linkInContainer: must be true or false');
  let ipamType = '';
  if (o['ipam'] !== undefined) {
    const ipam = obj(o['ipam']);
    if (!ipam) errs.push('ipam: must be an object');
    else if (ipam['type'] !== undefined && typeof ipam['type'] !== 'string') errs.push('ipam.type: must be a string');
    else ipamType = (ipam['type'] as string | undefined) ?? '';
  }
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
    ...(master ? { master } : {}),
    mode: mode as MacvlanSpec['mode'],
    mtu: mtu as number,
    ...(mac ? { mac } : {}),
    linkInContainer: lic as boolean,
    ...(dns ? { dns } : {}),
    ipamType,
  });
}

export interface MacvlanAttachment {
  readonly conf: MacvlanConf;
  readonly master: string;
  /** The master's MTU: the container's may not exceed it. */
  readonly masterMtu?: number;
  readonly ifname: string;
  readonly netns: string;
  readonly mac: string;
  readonly ipam?: Pick<Result, 'ips' | 'routes' | 'dns'>;
}

export function macvlanPlan(a: MacvlanAttachment): E.Either<CniError, { kernel: KernelState; scope: OwnershipScope; result: Result }> {
  const { conf, netns, ifname } = a;
  if (a.masterMtu !== undefined && conf.mtu > a.masterMtu)
    return E.left(invalidConfig(`mtu: invalid MTU ${conf.mtu}, must be [0, master MTU(${a.masterMtu})]`));
  const cfg = ipamIfaceConfig(conf.ipamType, a.ipam, ifname, netns);
  if (E.isLeft(cfg)) return cfg;
  const { ips, addresses, routes } = cfg.right;
  const link: Link = {
    ns: netns,
    name: ifname,
    kind: 'macvlan',
    up: true,
    mac: a.mac,
    ...(conf.mtu ? { mtu: conf.mtu } : {}),
    macvlan: { master: a.master, mode: conf.mode, ...(conf.linkInContainer ? {} : { masterNs: HOST }) },
  };
  const sysctls: Sysctl[] = [
    ...(ips.length ? [{ ns: netns, key: devSysctl('net.ipv4.conf', ifname, 'arp_notify'), value: '1' }] : []),
    ...cfg.right.sysctls,
  ];
  const kernel: KernelState = { ...emptyKernelState(), links: [link], addresses, routes, sysctls };
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces: [{ name: ifname, mac: a.mac, sandbox: netns }],
    ...(ips.length ? { ips } : {}),
    ...(a.ipam?.routes?.length ? { routes: a.ipam.routes } : {}),
    ...(conf.dns ? { dns: conf.dns } : {}),
  };
  return E.right({ kernel, scope: macvlanScope(ifname, netns), result });
}

/** One attachment owns its interface in the pod and everything on it; never the master. */
export const macvlanScope = (ifname: string, netns: string): OwnershipScope => ({
  links: netns ? [{ ns: netns, name: ifname }] : [],
  devices: netns ? [{ ns: netns, dev: ifname }] : [],
  chains: [],
  ruleMarkers: [],
});
