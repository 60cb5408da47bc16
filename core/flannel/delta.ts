// The ops for a change to some remote leases, without reading the kernel: the desired state those leases give
// now, planned against the one they gave when last applied. Cost follows the change, not the cluster size.
// Only valid while the node's own lease and config are unchanged; otherwise the caller does a full pass.
// Leases are taken one by one, so a conflict between a changed lease and an unchanged one (two leases claiming
// one VtepMAC) is not seen here: the next full pass settles it.

import * as E from 'fp-ts/lib/Either.js';
import type { Op } from '../kernel/model.ts';
import { plan } from '../kernel/plan.ts';
import { desiredOverlay, type OverlayNode } from './desired.ts';
import type { NodeState } from './node.ts';

const only = (s: NodeState, keys: readonly string[]): NodeState => ({
  ...s,
  remotes: Object.fromEntries(keys.flatMap((k) => (s.remotes[k] ? [[k, s.remotes[k]!]] : []))),
});

/** Ops to go from `before` to `after` for the remote leases `keys`, or 'full' when only a full pass will do. */
export function overlayDelta(before: NodeState, after: NodeState, keys: readonly string[], node: OverlayNode): E.Either<string, Op[] | 'full'> {
  if (before.ownLease?.key !== after.ownLease?.key || before.config !== after.config) return E.right('full');
  const now = desiredOverlay(only(after, keys), node);
  const was = desiredOverlay(only(before, keys), node);
  if (E.isLeft(now)) return now;
  if (E.isLeft(was)) return was;
  return E.right(plan(now.right.kernel, was.right.kernel, now.right.scope));
}

/** `before` with the leases `keys` taken from `after`: what the kernel holds once the delta is applied. */
export function withLeases(before: NodeState, after: NodeState, keys: readonly string[]): NodeState {
  const remotes = { ...before.remotes };
  for (const k of keys) {
    const r = after.remotes[k];
    if (r) remotes[k] = r;
    else delete remotes[k];
  }
  return { ...before, remotes };
}
