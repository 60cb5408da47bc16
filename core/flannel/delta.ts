// The ops for a change to some remote leases, without reading the kernel: the desired state those leases give
// now, planned against the one they gave when last applied. Cost follows the change, not the cluster size.
// Only valid while the node's own lease and config are unchanged; otherwise the caller does a full pass.
// Leases are taken one by one, so a conflict between a changed lease and an unchanged one (two leases claiming
// one VtepMAC) is not seen here: the next full pass settles it.

import * as E from 'fp-ts/lib/Either.js';
import { emptyKernelState, type Fdb, type KernelState, type Neighbour, type Op, type OwnershipScope, type Route } from '../kernel/model.ts';
import { fdbKey, neighKey, nftSetKey, routeKey } from '../kernel/keys.ts';
import { order, plan } from '../kernel/plan.ts';
import { desiredOverlay, type OverlayNode } from './desired.ts';
import type { NodeState } from './node.ts';

const only = (s: NodeState, keys: readonly string[]): NodeState => ({
  ...s,
  remotes: Object.fromEntries(keys.flatMap((k) => (s.remotes[k] ? [[k, s.remotes[k]!]] : []))),
});

/** The same network config: by identity, or by value (an event store may hand back a fresh copy of the state). */
const sameConfig = (a: NodeState, b: NodeState): boolean => a.config === b.config || JSON.stringify(a.config) === JSON.stringify(b.config);

/** Ops to go from `before` to `after` for the remote leases `keys`, or 'full' when only a full pass will do. */
export function overlayDelta(
  before: NodeState,
  after: NodeState,
  keys: readonly string[],
  node: OverlayNode,
): E.Either<string, Op[] | 'full'> {
  if (before.ownLease?.key !== after.ownLease?.key || !sameConfig(before, after)) return E.right('full');
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

// ---- a full pass and the deltas that overtake it ------------------------------------------------------
// A full pass plans against an observation that takes hundreds of milliseconds at 10,000 nodes; delta passes
// do not wait for it. Before the full pass applies, its plan drops every op on an object of a lease that a
// delta changed meanwhile: the delta applied the newer state, and the full plan (desired state read before,
// kernel read during the delta) would undo it, e.g. put back the route of a lease that was just removed.

/** The identity of the object an op touches: routes, neighbours and fdb entries (what remote leases give). */
export function opObject(o: Op): string | undefined {
  switch (o.op) {
    case 'route.replace':
    case 'route.del':
      return `route ${routeKey(o.route)}`;
    case 'neigh.replace':
    case 'neigh.del':
      return `neigh ${neighKey(o.neigh)}`;
    case 'fdb.replace':
    case 'fdb.del':
      return `fdb ${fdbKey(o.fdb)}`;
    default:
      return undefined;
  }
}

/** The identities (as opObject names them) of the routes, neighbours and fdb entries the leases `keys` give in `s`. */
export function leaseObjects(s: NodeState, keys: readonly string[], node: OverlayNode): Set<string> {
  const out = new Set<string>();
  if (keys.length === 0) return out;
  const d = desiredOverlay(only(s, keys), node);
  if (E.isLeft(d)) return out;
  for (const route of d.right.kernel.routes) out.add(opObject({ op: 'route.del', route })!);
  for (const neigh of d.right.kernel.neighbours) out.add(opObject({ op: 'neigh.del', neigh })!);
  for (const fdb of d.right.kernel.fdb) out.add(opObject({ op: 'fdb.del', fdb })!);
  for (const set of d.right.kernel.nftSets ?? []) for (const e of set.elements) out.add(elemObject(set, e));
  return out;
}

/** Every object an op touches, as leaseObjects names them: its one object, or a set op's elements. */
export const opObjects = (o: Op): string[] =>
  o.op === 'nft.set.elements'
    ? [...o.add, ...o.del].map((e) => elemObject(o.set, e))
    : [opObject(o)].filter((x): x is string => x !== undefined);

/** The identity of one element of an nftables set (feltd's remote pod subnets), as leaseObjects names it. */
const elemObject = (set: { ns: string; family: string; table: string; name: string }, e: string): string => `elem ${nftSetKey(set)} ${e}`;

/** `ops` without those on the objects `objects` names (devices, addresses, iptables and nftables rules are always kept). */
export function withoutObjects(ops: readonly Op[], objects: ReadonlySet<string>): Op[] {
  if (objects.size === 0) return [...ops];
  return ops.flatMap((o): Op[] => {
    // A set's elements are objects of their own: only those of leases no delta changed stay in the op.
    if (o.op === 'nft.set.elements') {
      const keep = (e: string): boolean => !objects.has(elemObject(o.set, e));
      const add = o.add.filter(keep);
      const del = o.del.filter(keep);
      return add.length || del.length ? [{ ...o, add, del }] : [];
    }
    const id = opObject(o);
    return id === undefined || !objects.has(id) ? [o] : [];
  });
}

/**
 * `plan(want, seen, scope)` in steps, for a caller that lets other work run between them (feltd's full pass
 * yields to delta passes after each `yield`): at 10,000 nodes one plan of ~60,000 routes, neighbours and fdb
 * entries is one long run of the event loop, a step is a slice of at most about `perStep` of them.
 * The same ops as plan: when the links, addresses, iptables or anything else but routes, neighbours and fdb
 * entries need an op (their changes can take those objects with them), the whole plan is made in one step;
 * otherwise routes, neighbours and fdb entries are diffed per slice of their identity, which is how plan
 * diffs them (route by destination, neighbour by address, fdb entry by MAC), and the ops are ordered as one.
 */
export function* planInSteps(want: KernelState, seen: KernelState, scope: OwnershipScope, perStep = 4000): Generator<void, Op[], void> {
  const objects = (k: KernelState): number => k.routes.length + k.neighbours.length + k.fdb.length;
  const slices = Math.ceil((objects(want) + objects(seen)) / perStep);
  const rest = (k: KernelState): KernelState => ({ ...k, routes: [], neighbours: [], fdb: [] });
  if (slices <= 1 || plan(rest(want), rest(seen), scope).length > 0) return plan(want, seen, scope);
  yield;
  const bucket = (s: string): number => {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0;
    return (h >>> 0) % slices;
  };
  const split = (k: KernelState): KernelState[] => {
    const parts = Array.from({ length: slices }, (): KernelState => ({
      ...emptyKernelState(),
      links: k.links,
      addresses: k.addresses,
      routes: [],
      neighbours: [],
      fdb: [],
    }));
    for (const r of k.routes) (parts[bucket(r.dst)]!.routes as Route[]).push(r);
    for (const n of k.neighbours) (parts[bucket(n.ip)]!.neighbours as Neighbour[]).push(n);
    for (const f of k.fdb) (parts[bucket(f.mac.toLowerCase())]!.fdb as Fdb[]).push(f);
    return parts;
  };
  const w = split(want);
  const o = split(seen);
  const ops: Op[] = [];
  for (let i = 0; i < slices; i++) {
    yield;
    ops.push(...plan(w[i]!, o[i]!, scope));
  }
  return ops.length ? order(ops, { desired: want, observed: seen }) : ops;
}
