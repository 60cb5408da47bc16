// feltd's overlay as `felt plan` checks it: the desired state from the node stream's folded state (its lease,
// the remote leases, the network config) and the node parameters feltd used (recorded in reconcile.json:
// underlay device, CIDR and MTU, VtepMAC, --ip-masq), and what to read from the kernel, exactly as feltd's
// full pass reads it. Pure.

import * as E from 'fp-ts/lib/Either.js';
import { desiredOverlay, type OverlayNode } from '../flannel/desired.ts';
import type { NodeState } from '../flannel/node.ts';
import type { IptFamily, KernelState, OwnershipScope } from '../kernel/model.ts';

export interface OverlayCheck {
  readonly desired: KernelState;
  readonly scope: OwnershipScope;
  /** What feltd's full pass reads: iptables families (with --ip-masq) and the fdb (vxlan). */
  readonly iptables: readonly IptFamily[];
  readonly fdb: boolean;
  readonly ignored: readonly string[];
}

/** The node parameters as reconcile.json holds them; undefined when a field is missing or of the wrong type. */
export function overlayNodeOf(v: unknown): OverlayNode | undefined {
  const o = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  if (!o) return undefined;
  const s = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const publicIP = s('publicIP');
  const underlayDev = s('underlayDev');
  const underlayCidr = s('underlayCidr');
  const vtepMac = s('vtepMac');
  const publicIPv6 = s('publicIPv6');
  const underlayCidrV6 = s('underlayCidrV6');
  const vtepMacV6 = s('vtepMacV6');
  const mtu = o['underlayMtu'];
  if (
    !publicIP ||
    !underlayDev ||
    !(underlayCidr || underlayCidrV6) ||
    vtepMac === undefined ||
    typeof mtu !== 'number' ||
    typeof o['ipMasq'] !== 'boolean'
  )
    return undefined;
  return {
    publicIP,
    ...(publicIPv6 ? { publicIPv6 } : {}),
    underlayDev,
    ...(underlayCidr ? { underlayCidr } : {}),
    ...(underlayCidrV6 ? { underlayCidrV6 } : {}),
    underlayMtu: mtu,
    vtepMac,
    ...(vtepMacV6 ? { vtepMacV6 } : {}),
    ipMasq: o['ipMasq'],
  };
}

export function overlayCheck(state: NodeState, node: OverlayNode): E.Either<string, OverlayCheck> {
  const d = desiredOverlay(state, node);
  if (E.isLeft(d)) return d;
  const config = state.config!;
  return E.right({
    desired: d.right.kernel,
    scope: d.right.scope,
    iptables: node.ipMasq ? (config.enableIPv6 ? [4, 6] : [4]) : [],
    fdb: config.backend.type === 'vxlan',
    ignored: d.right.ignored,
  });
}
