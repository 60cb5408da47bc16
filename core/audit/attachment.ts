// The desired kernel state of one recorded bridge attachment, from the log alone: the attachment record
// (core/bridge/attachments.ts: the network config and CNI_ARGS of the ADD, the container netns, the host veth
// and its MAC) and, for host-local, the addresses the ipam stream says the attachment holds. The same
// attachmentPlan the bridge plugin used at ADD computes it. Pure.
//
// What the log does not hold is left unmanaged, so that `felt plan` never calls it drift: the container and
// bridge MACs (random per ADD, unless the config asks for one) and, for IPAM plugins that keep nothing in
// felt's log (dhcp, another vendor's plugin), the addresses, routes and masquerade rules.

import * as E from 'fp-ts/lib/Either.js';
import type { AttachmentRecord } from '../bridge/attachments.ts';
import { parseBridgeConf, type BridgeConf } from '../bridge/config.ts';
import { attachmentPlan } from '../bridge/desired.ts';
import type { NetConf } from '../cni/env.ts';
import type { Result } from '../cni/result.ts';
import { parseIpamConf, type IpamConf } from '../ipam/config.ts';
import { allocationsOf, ipamResult, type IpamState } from '../ipam/decider.ts';
import { parseStaticConf, staticResult } from '../ipam/static.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type OwnershipScope } from '../kernel/model.ts';

export interface AttachmentDesired {
  /** What only this attachment owns: the veth pair, its addresses, routes, sysctls, masquerade chain and rule. */
  readonly own: KernelState;
  /** What every attachment of the network shares: the bridge, its gateway addresses, the host sysctls. */
  readonly shared: KernelState;
  readonly scope: OwnershipScope;
  readonly bridge: string;
  /** What could not be checked, and why (e.g. addresses from dhcp). */
  readonly notes: readonly string[];
}

/** The record's network config as a NetConf (what the plugin parsed from stdin at ADD). */
function recordNetConf(rec: AttachmentRecord): NetConf | undefined {
  const raw = rec.conf;
  if (!raw) return undefined;
  const v = raw['cniVersion'];
  return {
    cniVersion: typeof v === 'string' ? v : '0.1.0',
    name: rec.network,
    type: typeof raw['type'] === 'string' ? raw['type'] : 'bridge',
    raw,
  };
}

/** host-local's config of the attachment's network, as the ADD saw it (for range sizes and gateways). */
export function recordIpamConf(rec: AttachmentRecord): IpamConf | undefined {
  const nc = recordNetConf(rec);
  if (!nc) return undefined;
  const bc = parseBridgeConf(nc, rec.cniArgs ?? {});
  if (E.isLeft(bc) || bc.right.ipamType !== 'host-local') return undefined;
  const c = parseIpamConf(nc, rec.cniArgs ?? {});
  return E.isRight(c) ? c.right : undefined;
}

const who = (rec: AttachmentRecord): string => `${rec.containerId}/${rec.ifname}`;

/** The MACs the log knows: the host veth's (recorded) and the container's when the config asks for one. */
function knownMacs(links: readonly Link[], bc: BridgeConf, rec: AttachmentRecord): Link[] {
  return links.map((l) => {
    const { mac: _mac, veth, ...rest } = l;
    if (l.kind === 'bridge') return rest as Link;
    if (l.ns === HOST) return (rec.hostVethMac ? { ...rest, mac: rec.hostVethMac } : rest) as Link;
    const peer = veth ? { peer: veth.peer, peerNs: veth.peerNs, ...(rec.hostVethMac ? { peerMac: rec.hostVethMac } : {}) } : undefined;
    return { ...rest, ...(bc.mac ? { mac: bc.mac } : {}), ...(peer ? { veth: peer } : {}) } as Link;
  });
}

/**
 * The attachment's desired kernel state, or why it cannot be computed from the log. `ipam` is the folded
 * state of the network's ipam stream (host-local's allocations), when there is one.
 */
export function attachmentDesired(rec: AttachmentRecord, ipam: IpamState | undefined): E.Either<string, AttachmentDesired> {
  const nc = recordNetConf(rec);
  if (!nc)
    return E.left(`attachment ${who(rec)} was recorded without its network config (by an older felt): re-add it to let felt check it`);
  const parsed = parseBridgeConf(nc, rec.cniArgs ?? {});
  if (E.isLeft(parsed)) return E.left(`the recorded config of ${who(rec)} does not parse: ${parsed.left.msg}`);
  let bc = parsed.right;
  const notes: string[] = [];
  let result: Pick<Result, 'ips' | 'routes' | 'dns'> | undefined;
  if (bc.ipamType === 'host-local') {
    const ic = parseIpamConf(nc, rec.cniArgs ?? {});
    if (E.isLeft(ic)) return E.left(`the recorded ipam config of ${who(rec)} does not parse: ${ic.left.msg}`);
    const held = ipam ? allocationsOf(ipam, rec.containerId, rec.ifname) : [];
    if (held.length === 0)
      return E.left(
        `host-local holds no address for ${who(rec)} in network "${rec.network}" in this log: its addresses, routes and masquerade rules are unknown`,
      );
    result = ipamResult(
      ic.right,
      held.map((a) => ({ network: rec.network, containerId: a.containerId, ifname: a.ifname, rangeSet: a.rangeSet, ip: a.ip })),
    );
  } else if (bc.ipamType === 'static') {
    const sc = parseStaticConf(nc, rec.cniArgs ?? {});
    if (E.isLeft(sc)) return E.left(`the recorded ipam config of ${who(rec)} does not parse: ${sc.left.msg}`);
    result = staticResult(sc.right);
  } else if (bc.ipamType !== '') {
    notes.push(
      `addresses, routes and masquerade rules of ${who(rec)} come from the ${bc.ipamType} IPAM plugin, which keeps nothing in felt's log: only its veth pair and bridge port are checked`,
    );
    bc = { ...bc, ipamType: '' };
  }
  const p = attachmentPlan({
    conf: bc,
    containerId: rec.containerId,
    ifname: rec.ifname,
    netns: rec.netns,
    hostVeth: rec.hostVeth,
    hostVethMac: rec.hostVethMac ?? '',
    containerMac: bc.mac ?? '',
    bridgeMac: '',
    ...(result ? { ipam: result } : {}),
  });
  if (E.isLeft(p)) return E.left(`the desired state of ${who(rec)} cannot be computed: ${p.left.msg}`);
  const k = p.right.kernel;
  const links = knownMacs(k.links, bc, rec);
  const isShared = (ns: string, dev: string | undefined): boolean => ns === HOST && (dev === undefined || dev === bc.bridge);
  const own: KernelState = {
    ...emptyKernelState(),
    links: links.filter((l) => !(l.kind === 'bridge' && l.ns === HOST)),
    addresses: k.addresses.filter((a) => !isShared(a.ns, a.dev)),
    routes: k.routes,
    sysctls: k.sysctls.filter((s) => s.ns !== HOST),
    chains: k.chains,
    rules: k.rules,
  };
  const shared: KernelState = {
    ...emptyKernelState(),
    links: links.filter((l) => l.kind === 'bridge' && l.ns === HOST),
    addresses: k.addresses.filter((a) => isShared(a.ns, a.dev)),
    sysctls: k.sysctls.filter((s) => s.ns === HOST),
  };
  return E.right({ own, shared, scope: p.right.scope, bridge: bc.bridge, notes });
}

/** The union of states, each object once (shared objects of many attachments). */
export function union(states: readonly KernelState[]): KernelState {
  const once = <T>(xs: readonly T[]): T[] => {
    const seen = new Set<string>();
    return xs.filter((x) => {
      const k = JSON.stringify(x);
      return seen.has(k) ? false : (seen.add(k), true);
    });
  };
  const all = <K extends keyof KernelState>(k: K) => states.flatMap((s) => (s[k] ?? []) as readonly NonNullable<KernelState[K]>[number][]);
  const ipRules = once(all('ipRules'));
  return {
    links: once(all('links')),
    addresses: once(all('addresses')),
    routes: once(all('routes')),
    neighbours: once(all('neighbours')),
    fdb: once(all('fdb')),
    chains: once(all('chains')),
    rules: once(all('rules')),
    sysctls: once(all('sysctls')),
    qdiscs: once(all('qdiscs')),
    ...(ipRules.length ? { ipRules } : {}),
  };
}
