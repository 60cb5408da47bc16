// tap: the container interface is a persistent tap device (for a VM monitor or a userspace stack to attach to),
// made in the pod's namespace, optionally a port of a bridge there, with the addresses of an optional IPAM
// plugin. Every option of the reference v1.9.1: mac (also CNI_ARGS MAC and runtimeConfig.mac), mtu,
// multiQueue, owner, group, selinuxContext, bridge. Pure: the MAC is passed in when none is configured.
//
// The reference creates the tap two ways, and the kernel state differs: with both owner and group (and no
// selinuxContext) through netlink, which leaves IFF_VNET_HDR set (and, single-queue, no IFF_NO_PI); otherwise
// with `ip tuntap add`, which sets neither. felt makes the same flags. Unlike the reference's netlink path
// (v1.9.1 drops the MTU and MAC there), felt always gives the tap the configured MTU and MAC.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { DNS, Result } from '../cni/result.ts';
import { parseMac } from '../ip/mac.ts';
import { devSysctl } from '../kernel/keys.ts';
import { emptyKernelState, type KernelState, type Link, type OwnershipScope, type TapSpec } from '../kernel/model.ts';
import { linkNameProblem } from '../kernel/names.ts';
import { ifaceConfig, lowerLinkScope, obj, type Addressing } from '../l2/attachment.ts';

/** The largest MTU the tun driver takes. */
const TAP_MAX_MTU = 65521;
const UINT32_MAX = 0xffffffff;
/** user:role:type[:level], as SELinux writes contexts (no whitespace, nothing a batch tool reinterprets). */
const SELINUX_CONTEXT = /^[A-Za-z0-9_.]+:[A-Za-z0-9_.]+:[A-Za-z0-9_.]+(?::[A-Za-z0-9_.,:-]+)?$/;

export interface TapConf {
  readonly name: string;
  readonly cniVersion: string;
  /** 0: the kernel's default. */
  readonly mtu: number;
  readonly mac?: string;
  readonly multiQueue: boolean;
  readonly owner?: number;
  readonly group?: number;
  readonly selinuxContext?: string;
  /** A bridge in the pod's namespace the tap becomes a port of. */
  readonly bridge?: string;
  readonly dns?: DNS;
  /** '' means layer 2 only. */
  readonly ipamType: string;
}

const uint32 = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= UINT32_MAX;

export function parseTapConf(conf: NetConf, cniArgs: Readonly<Record<string, string>>): E.Either<CniError, TapConf> {
  const o = conf.raw;
  const errs: string[] = [];
  const mtu = o['mtu'] ?? 0;
  if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 0 || mtu > TAP_MAX_MTU)
    errs.push(`mtu: must be an integer between 0 and ${TAP_MAX_MTU}, got ${JSON.stringify(mtu)}`);
  // mac < CNI_ARGS MAC < runtimeConfig.mac, as the reference.
  let mac: string | undefined;
  const rc = o['runtimeConfig'];
  if (rc !== undefined && rc !== null && !obj(rc)) errs.push('runtimeConfig: must be an object');
  for (const [field, v] of [
    ['mac', o['mac']],
    ['CNI_ARGS MAC', cniArgs['MAC']],
    ['runtimeConfig.mac', obj(rc)?.['mac']],
  ] as const) {
    if (v === undefined || v === '') continue;
    const m = typeof v === 'string' ? parseMac(v) : undefined;
    if (!m) errs.push(`${field}: ${JSON.stringify(v)} is not a MAC address`);
    else if (parseInt(m.slice(0, 2), 16) & 1) errs.push(`${field}: ${m} is a multicast address`);
    else mac = m;
  }
  const mq = o['multiQueue'] ?? false;
  if (typeof mq !== 'boolean') errs.push('multiQueue: must be true or false');
  for (const f of ['owner', 'group'] as const) {
    if (o[f] !== undefined && o[f] !== null && !uint32(o[f]))
      errs.push(`${f}: must be an integer between 0 and ${UINT32_MAX}, got ${JSON.stringify(o[f])}`);
  }
  let selinuxContext: string | undefined;
  const sc = o['selinuxContext'];
  if (sc !== undefined && sc !== '') {
    if (typeof sc !== 'string' || !SELINUX_CONTEXT.test(sc))
      errs.push(`selinuxContext: ${JSON.stringify(sc)} is not an SELinux context (user:role:type[:level])`);
    else selinuxContext = sc;
  }
  let bridge: string | undefined;
  if (o['bridge'] !== undefined && o['bridge'] !== '') {
    const p = typeof o['bridge'] === 'string' ? linkNameProblem(o['bridge']) : 'must be a string';
    if (p) errs.push(`bridge: ${JSON.stringify(o['bridge'])} ${p}`);
    else bridge = o['bridge'] as string;
  }
  let ipamType = '';
  if (o['ipam'] !== undefined && o['ipam'] !== null) {
    const ipam = obj(o['ipam']);
    if (!ipam) errs.push('ipam: must be an object');
    else if (ipam['type'] !== undefined && typeof ipam['type'] !== 'string') errs.push('ipam.type: must be a string');
    else ipamType = (ipam['type'] as string | undefined) ?? '';
    // dhcp talks on the interface, and a tap has no carrier until something attaches to it.
    if (ipamType === 'dhcp') errs.push('ipam.type: dhcp is not supported with tap (a tap carries nothing until a process attaches to it)');
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
    mtu: mtu as number,
    ...(mac ? { mac } : {}),
    multiQueue: mq as boolean,
    ...(uint32(o['owner']) ? { owner: o['owner'] as number } : {}),
    ...(uint32(o['group']) ? { group: o['group'] as number } : {}),
    ...(selinuxContext ? { selinuxContext } : {}),
    ...(bridge ? { bridge } : {}),
    ...(dns ? { dns } : {}),
    ipamType,
  });
}

/** The tun flags the reference's tap has (see the file comment). */
function tapSpec(c: TapConf): TapSpec {
  const netlink = c.selinuxContext === undefined && c.owner !== undefined && c.group !== undefined;
  return {
    multiQueue: c.multiQueue,
    vnetHdr: netlink,
    pi: netlink && !c.multiQueue,
    ...(c.owner !== undefined ? { owner: c.owner } : {}),
    ...(c.group !== undefined ? { group: c.group } : {}),
    ...(c.selinuxContext !== undefined ? { selinuxContext: c.selinuxContext } : {}),
  };
}

export interface TapAttachment {
  readonly conf: TapConf;
  readonly ifname: string;
  readonly netns: string;
  /** The MAC: the configured one, else one the app drew. */
  readonly mac: string;
  /** The IPAM result (undefined without IPAM). */
  readonly addressing?: Addressing;
}

export function tapPlan(a: TapAttachment): E.Either<CniError, { kernel: KernelState; scope: OwnershipScope; result: Result }> {
  const { conf, netns, ifname } = a;
  const cfg = a.addressing ? ifaceConfig(a.addressing, ifname, netns) : E.right({ ips: [], addresses: [], routes: [], sysctls: [] });
  if (E.isLeft(cfg)) return cfg;
  const { ips, addresses, routes, sysctls } = cfg.right;
  const link: Link = {
    ns: netns,
    name: ifname,
    kind: 'tap',
    up: true,
    mac: a.mac,
    ...(conf.mtu ? { mtu: conf.mtu } : {}),
    ...(conf.bridge ? { master: conf.bridge } : {}),
    tap: tapSpec(conf),
  };
  const kernel: KernelState = {
    ...emptyKernelState(),
    links: [link],
    addresses,
    routes,
    sysctls: a.addressing ? [{ ns: netns, key: devSysctl('net.ipv4.conf', ifname, 'arp_notify'), value: '1' }, ...sysctls] : sysctls,
  };
  const routesOut = a.addressing?.result.routes;
  const result: Result = {
    cniVersion: conf.cniVersion,
    interfaces: [{ name: ifname, mac: a.mac, sandbox: netns }],
    ...(ips.length ? { ips } : {}),
    ...(routesOut?.length ? { routes: routesOut } : {}),
    ...(conf.dns ? { dns: conf.dns } : {}),
  };
  return E.right({ kernel, scope: lowerLinkScope(ifname, netns), result });
}
