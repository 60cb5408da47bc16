// host-device's kernel states. ADD: the host device, moved into the pod under CNI_IFNAME (its original name
// kept as the link's alias, as the reference does since 1.1), up, with the IPAM addresses and routes. DEL
// (and an ADD that failed): the same device back in the host under its original name, with its original MTU,
// up state and alias. Both are plain desired states for plan; the move is the link's `from`.

import * as E from 'fp-ts/lib/Either.js';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { IPConfig, Result } from '../cni/result.ts';
import { ipamIfaceConfig } from '../l2/attachment.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type OwnershipScope } from '../kernel/model.ts';
import { isBatchToken } from '../kernel/names.ts';
import { describeSelector, type Selector } from './config.ts';

/** What the device was in the host before ADD moved it: what DEL puts back. */
export interface Original {
  readonly name: string;
  readonly mac?: string;
  readonly mtu?: number;
  readonly up: boolean;
  /** '' for none. An alias that is not one word is not kept (DEL clears it, as the reference does). */
  readonly alias: string;
}

export const originalOf = (l: Link): Original => ({
  name: l.name,
  ...(l.mac !== undefined ? { mac: l.mac } : {}),
  ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
  up: !!l.up,
  alias: l.alias !== undefined && isBatchToken(l.alias) ? l.alias : '',
});

/**
 * The host link a selector names. `listed`: for kernelpath and pci, the names in the device's sysfs net/
 * directory, sorted (read by the app); the first that is a host link wins, as in the reference. Loopback is
 * never a candidate (the kernel refuses to move it).
 */
export function pickDevice(s: Selector, host: readonly Link[], listed: readonly string[] = []): E.Either<CniError, Link> {
  const links = host.filter((l) => l.ns === HOST && l.kind !== 'loopback');
  const found =
    s.by === 'device'
      ? links.find((l) => l.name === s.name)
      : s.by === 'hwaddr'
        ? links.find((l) => l.mac?.toLowerCase() === s.mac)
        : listed.map((n) => links.find((l) => l.name === n)).find((l) => l !== undefined);
  return found
    ? E.right(found)
    : E.left(invalidConfig(`${s.field}: failed to find host device (${describeSelector(s)} is not in the host namespace)`));
}

export interface Attachment {
  readonly netns: string;
  readonly ifname: string;
  readonly original: Original;
  /** '' when the config has no IPAM. */
  readonly ipamType: string;
  readonly ipam?: Pick<Result, 'ips' | 'routes'>;
}

/** The pod's side of an attachment, and the result's ips (on interface 0). */
export function attachedState(a: Attachment): E.Either<CniError, { kernel: KernelState; ips: IPConfig[] }> {
  const { netns, ifname } = a;
  // A moved device gets its namespace's defaults: IPv6 may be off there (ifaceConfig turns it on with IPv6 addresses).
  const cfg = ipamIfaceConfig(a.ipamType, a.ipam, ifname, netns);
  if (E.isLeft(cfg)) return cfg;
  const { ips, addresses, routes, sysctls } = cfg.right;
  const link: Link = {
    ns: netns,
    name: ifname,
    kind: 'device',
    up: true,
    alias: a.original.name,
    from: { ns: HOST, name: a.original.name },
  };
  return E.right({ kernel: { ...emptyKernelState(), links: [link], addresses, routes, sysctls }, ips });
}

/**
 * The device back in the host: its original name, MTU, up state and alias. Without a record (an attachment
 * felt did not make, e.g. the reference's) only the name is known, from the alias: the device is then moved
 * back and its alias cleared, and stays down, as with the reference.
 */
export function releasedState(netns: string, ifname: string, original: Original | { readonly name: string }): KernelState {
  const o = original as Partial<Original> & { name: string };
  const link: Link = {
    ns: HOST,
    name: o.name,
    kind: 'device',
    alias: o.alias ?? '',
    ...(o.mtu !== undefined ? { mtu: o.mtu } : {}),
    ...(o.up !== undefined ? { up: o.up } : {}),
    from: { ns: netns, name: ifname },
  };
  return { ...emptyKernelState(), links: [link] };
}

/** An attachment owns the device while it is in the pod, and everything on it there; nothing in the host. */
export const hostDeviceScope = (ifname: string, netns: string): OwnershipScope => ({
  links: netns ? [{ ns: netns, name: ifname }] : [],
  devices: netns ? [{ ns: netns, dev: ifname }] : [],
  chains: [],
  ruleMarkers: [],
});
