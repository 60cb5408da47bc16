// What one bandwidth attachment wants in the host namespace, as plugins/meta/bandwidth makes it:
//   ingress (to the container):   root tbf on the host veth
//   egress (from the container):  an ifb `bwp` + sha512(network + containerID) (15 chars), up, with the host
//                                 veth's MTU; an ingress qdisc on the host veth whose u32 filter redirects
//                                 everything to the ifb; a root tbf on the ifb
// tbf values the reference's way: rate/8 bytes per second, burst/8 bytes, 25 ms latency (tc then computes the
// same buffer and limit as the reference's netlink code). The scope owns the ifb whole and only the qdiscs of
// the host veth (the bridge plugin owns the veth itself), so DEL is "nothing desired" over it.

import * as E from 'fp-ts/lib/Either.js';
import { createHash } from 'node:crypto'; // a pure function of its input; no I/O
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { Interface } from '../cni/result.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type NsRef, type OwnershipScope, type Qdisc } from '../kernel/model.ts';
import { runNetnsName } from '../kernel/names.ts';
import type { BandwidthConf, Limit } from './config.ts';

const LATENCY_MS = 25;
const IFB_PREFIX = 'bwp';
const IFB_LENGTH = 15;

/** The reference's ifb name: utils.MustFormatHashWithPrefix(15, "bwp", network + containerID). */
export const ifbName = (network: string, containerId: string): string =>
  (
    IFB_PREFIX +
    createHash('sha512')
      .update(network + containerId)
      .digest('hex')
  ).slice(0, IFB_LENGTH);

/** A root tbf for a limit in bits: whole bytes per second and whole bytes of burst, as the reference. */
export const tbfOn = (dev: string, l: Limit): Qdisc => ({
  ns: HOST,
  dev,
  kind: 'tbf',
  rate: Math.floor(l.rate / 8) * 8,
  burst: Math.floor(l.burst / 8),
  latencyMs: LATENCY_MS,
});

export interface BandwidthAttachment {
  readonly conf: BandwidthConf;
  readonly ifb: string;
  readonly hostVeth: string;
  /** The host veth's MTU: the ifb gets the same. */
  readonly hostMtu?: number;
  /** The ifb's MAC (chosen by the app), or undefined when it is not managed (CHECK). */
  readonly ifbMac?: string;
}

/** The ifb and the host veth's qdiscs; the ifb even when no egress limit is wanted (so that it goes). */
export function bandwidthScope(ifb: string, hostVeth: string | undefined): OwnershipScope {
  return {
    links: [{ ns: HOST, name: ifb }],
    devices: [{ ns: HOST, dev: ifb }],
    chains: [],
    ruleMarkers: [],
    ...(hostVeth !== undefined ? { qdiscDevices: [{ ns: HOST, dev: hostVeth }] } : {}),
  };
}

export function bandwidthDesired(a: BandwidthAttachment): KernelState {
  const qdiscs: Qdisc[] = [];
  const links: Link[] = [];
  if (a.conf.ingress) qdiscs.push(tbfOn(a.hostVeth, a.conf.ingress));
  if (a.conf.egress) {
    links.push({
      ns: HOST,
      name: a.ifb,
      kind: 'ifb',
      up: true,
      ...(a.hostMtu !== undefined ? { mtu: a.hostMtu } : {}),
      ...(a.ifbMac !== undefined ? { mac: a.ifbMac } : {}),
    });
    qdiscs.push({ ns: HOST, dev: a.hostVeth, kind: 'ingress', redirect: a.ifb });
    qdiscs.push(tbfOn(a.ifb, a.conf.egress));
  }
  return { ...emptyKernelState(), links, qdiscs };
}

/** The result: the previous plugin's, plus the ifb (name and MAC) when there is one, as the reference. */
export const withIfb = <R extends { interfaces?: Interface[] }>(prev: R, ifb: string | undefined, mac: string | undefined): R =>
  ifb === undefined ? prev : { ...prev, interfaces: [...(prev.interfaces ?? []), { name: ifb, ...(mac !== undefined ? { mac } : {}) }] };

/**
 * The host interface whose veth peer is the container's `ifname` (the reference's getHostInterface): among
 * prevResult's interfaces without a sandbox, the one the kernel pairs with the container end. When the pairing
 * cannot be seen (a CNI_NETNS outside /run/netns), the only host veth prevResult names.
 *
 * `hostOnly` (only the host was read): prevResult names `ifname` in `netns`, and exactly one host veth among
 * its host interfaces has its peer in `netns` (its peerNetns, or a peer the reader could name): that one. Else
 * an error, and the caller reads the container's namespace too.
 */
export function hostInterface(
  interfaces: readonly Interface[],
  links: readonly Link[],
  ifname: string,
  netns: NsRef,
  hostOnly = false,
): E.Either<CniError, Link> {
  if (interfaces.length === 0) return E.left(invalidConfig('prevResult.interfaces: no interfaces provided'));
  if (hostOnly) {
    if (!interfaces.some((i) => i.sandbox === netns && i.name === ifname))
      return E.left(invalidConfig(`prevResult.interfaces: no ${ifname} in ${netns}`));
    const named = new Set(interfaces.filter((i) => !i.sandbox).map((i) => i.name));
    const pod = runNetnsName(netns);
    const inPod = links.filter(
      (l) =>
        l.ns === HOST &&
        l.kind === 'veth' &&
        named.has(l.name) &&
        (l.veth ? l.veth.peerNs === netns && l.veth.peer === ifname : pod !== undefined && l.peerNetns === pod),
    );
    return inPod.length === 1
      ? E.right(inPod[0]!)
      : E.left(invalidConfig(`prevResult.interfaces: no one host veth with its peer in ${netns} (${inPod.length} found)`));
  }
  const cont = links.find((l) => l.ns === netns && l.name === ifname);
  if (!cont) return E.left(invalidConfig(`CNI_IFNAME: container interface ${ifname} not found in ${netns}`));
  if (cont.kind !== 'veth')
    return E.left(invalidConfig(`CNI_IFNAME: container interface ${ifname} in ${netns} has no veth peer (it is a ${cont.kind})`));
  const hostVeths = links.filter((l) => l.ns === HOST && l.kind === 'veth');
  const named = new Set(interfaces.filter((i) => !i.sandbox).map((i) => i.name));
  const peer =
    cont.veth?.peerNs === HOST ? cont.veth.peer : hostVeths.find((l) => l.veth?.peerNs === netns && l.veth.peer === ifname)?.name;
  if (peer !== undefined) {
    const l = hostVeths.find((x) => x.name === peer);
    if (l && named.has(peer)) return E.right(l);
    return E.left(
      invalidConfig(
        `prevResult.interfaces: the host end of ${ifname} (${peer}) is not among the host interfaces ${JSON.stringify([...named])}`,
      ),
    );
  }
  const candidates = hostVeths.filter((l) => named.has(l.name) && l.veth === undefined);
  if (candidates.length === 1) return E.right(candidates[0]!);
  return E.left(invalidConfig(`prevResult.interfaces: no veth peer of container interface ${ifname} found in the host namespace`));
}
