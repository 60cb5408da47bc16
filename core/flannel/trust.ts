// What feltd believes of the lease store. Leases are untrusted input: anyone with write access to etcd (or to
// leases.db) can put a value, and an operator can wipe or restore the store under running nodes. Pure checks:
//
// - leaseProblem: a remote lease that does not fit the network config (a family the config does not enable,
//   a subnet of another length than SubnetLen, outside Network, a value that is not a flannel lease) is
//   refused: never recorded as a remote node, never routed.
// - screenLeases: the same, plus no overlap with this node's subnet or with another lease (the lease already
//   known wins; among new ones, the first in key order), for a listing or a batch of watch events.
// - trackRefusals: which refusals are new, so feltd logs each one once, not on every resync.
// - ownLeaseStatus: the own lease as the store holds it: missing (wiped store, hand-deleted key), tampered
//   (another PublicIP, not JSON), or renewed by a second feltd with the same public IP (flanneld reuses a lease
//   by PublicIP, so two daemons on one address share one subnet: felt warns instead of fighting).
// - configChanges: how the network config in the store differs from the one feltd runs with.

import * as E from 'fp-ts/lib/Either.js';
import { contains, formatCIDR, overlaps, parseCIDR, parseIP, type Family } from '../ip/ip.ts';
import { parseVxlanBackendData, subnetKey } from './lease.ts';
import type { Lease, LeaseAttrs, NetConfig } from './types.ts';

/** What screening needs of a lease (a Lease, or a RemoteLease of the node state). */
export type LeaseLike = Pick<Lease, 'subnet' | 'ipv6Subnet' | 'attrs'> & { readonly invalid?: string | undefined };

const FAM = (f: Family): string => (f === 4 ? 'IPv4' : 'IPv6');

const subnetOf = (l: Pick<Lease, 'subnet' | 'ipv6Subnet'>, f: Family): string | undefined => (f === 4 ? l.subnet : l.ipv6Subnet);

/** Why a lease cannot be a remote node of this network, or undefined when it can. */
export function leaseProblem(config: NetConfig, lease: LeaseLike): string | undefined {
  if (lease.invalid) return `its value is not a flannel lease: ${lease.invalid}`;
  let any = false;
  for (const f of [4, 6] as const) {
    const enabled = f === 4 ? config.enableIPv4 : config.enableIPv6;
    const text = subnetOf(lease, f);
    if (!text) continue;
    if (!enabled) return `it has an ${FAM(f)} subnet ${text} but the network config does not enable ${FAM(f)}`;
    const c = parseCIDR(text);
    if (!c || c.ip.family !== f) return `${text} is not an ${FAM(f)} subnet`;
    const netText = f === 4 ? config.network : config.ipv6Network;
    const net = parseCIDR(netText ?? '');
    const len = f === 4 ? config.subnetLen : config.ipv6SubnetLen;
    if (!net) return `the network config has no ${f === 4 ? 'Network' : 'IPv6Network'}`;
    if (c.prefix !== len) return `${text} is a /${c.prefix}, not a /${len} (${f === 4 ? 'SubnetLen' : 'IPv6SubnetLen'})`;
    if (!contains(net, c.ip)) return `${text} is outside the network ${formatCIDR(net)}`;
    any = true;
  }
  if (!any) return `it has no subnet of a family the network config enables`;
  return undefined;
}

/** The subnets of a lease that overlap those of `other`, in words ("10.244.3.0/24"), or undefined. */
function overlapWith(a: Pick<Lease, 'subnet' | 'ipv6Subnet'>, b: Pick<Lease, 'subnet' | 'ipv6Subnet'>): string | undefined {
  for (const f of [4, 6] as const) {
    const x = parseCIDR(subnetOf(a, f) ?? '');
    const y = parseCIDR(subnetOf(b, f) ?? '');
    if (x && y && x.ip.family === y.ip.family && overlaps(x, y)) return formatCIDR(y);
  }
  return undefined;
}

export interface Refusal {
  /** The lease key (subnetKey). */
  readonly key: string;
  readonly publicIP: string;
  readonly why: string;
}

export interface ScreenInput<L extends LeaseLike> {
  readonly config: NetConfig;
  /** Candidate leases (the caller leaves out this node's own). */
  readonly leases: readonly L[];
  /** This node's subnets: nothing may overlap them. */
  readonly own?: Pick<Lease, 'subnet' | 'ipv6Subnet'> | null | undefined;
  /** Leases already accepted (the node's remote leases): they win an overlap against a newcomer. */
  readonly known?: readonly LeaseLike[];
  /** Whether `key` is one of `known` (so a lease is not compared with its own earlier version). */
  readonly isKnown?: (key: string) => boolean;
}

export interface Screened<L> {
  readonly accepted: readonly L[];
  readonly refused: readonly Refusal[];
}

const keyOf = (l: Pick<Lease, 'subnet' | 'ipv6Subnet'>): string => subnetKey(l);

/**
 * Split leases into those a node may route and those it must refuse. Every lease is checked alone
 * (leaseProblem), then against this node's subnets, then against the leases already known and those accepted
 * before it (known ones first, then key order), so exactly one lease holds any address.
 */
export function screenLeases<L extends LeaseLike>(input: ScreenInput<L>): Screened<L> {
  const { config, own } = input;
  const isKnown = input.isKnown ?? (() => false);
  const refused: Refusal[] = [];
  const accepted: L[] = [];
  const refuse = (l: LeaseLike, why: string) =>
    refused.push({ key: keyOf(l), publicIP: l.attrs.PublicIP !== '0.0.0.0' ? l.attrs.PublicIP : (l.attrs.PublicIPv6 ?? '?'), why });
  // Valid leases per family, by the start of their subnet: with one SubnetLen, two valid subnets overlap only when
  // they are equal, so a map finds every overlap without comparing all pairs.
  const holder = new Map<string, string>();
  const slots = (l: LeaseLike): string[] =>
    ([4, 6] as const).flatMap((f) => {
      const c = parseCIDR(subnetOf(l, f) ?? '');
      return c ? [`${f} ${formatCIDR(c)}`] : [];
    });
  const claim = (l: LeaseLike): void => {
    for (const s of slots(l)) if (!holder.has(s)) holder.set(s, keyOf(l));
  };
  const candidates = input.leases.map((l) => ({ l, key: keyOf(l) }));
  const newKeys = new Set(candidates.map((c) => c.key));
  // Known leases not in this batch hold their subnets first (a delta against the state).
  for (const k of input.known ?? []) if (!newKeys.has(keyOf(k)) && !leaseProblem(config, k)) claim(k);
  const order = [...candidates].sort((a, b) => {
    const ka = isKnown(a.key) ? 0 : 1;
    const kb = isKnown(b.key) ? 0 : 1;
    return ka - kb || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  });
  const rejected = new Set<L>();
  for (const { l, key } of order) {
    const problem = leaseProblem(config, l);
    if (problem) {
      refuse(l, problem);
      rejected.add(l);
      continue;
    }
    const mine = own ? overlapWith(l, own) : undefined;
    if (mine) {
      refuse(l, `it overlaps this node's subnet ${mine}`);
      rejected.add(l);
      continue;
    }
    const clash = slots(l)
      .map((s) => holder.get(s))
      .find((k) => k !== undefined && k !== key);
    if (clash) {
      refuse(l, `it overlaps the lease ${clash}`);
      rejected.add(l);
      continue;
    }
    claim(l);
  }
  for (const { l } of candidates) if (!rejected.has(l)) accepted.push(l);
  return { accepted, refused };
}

/**
 * Which refusals to log: those not logged before with the same reason. `present` are the keys the caller saw
 * (a full listing: every lease; a watch batch: the keys of its events); a key seen and no longer refused is
 * forgotten, so a lease refused again later is logged again.
 */
export function trackRefusals(
  logged: ReadonlyMap<string, string>,
  refused: readonly Refusal[],
  present: Iterable<string>,
  complete: boolean,
): { readonly log: readonly Refusal[]; readonly logged: ReadonlyMap<string, string> } {
  const next = new Map(logged);
  const now = new Map(refused.map((r) => [r.key, r]));
  if (complete) for (const k of [...next.keys()]) if (!now.has(k)) next.delete(k);
  for (const k of present) if (!now.has(k)) next.delete(k);
  const log: Refusal[] = [];
  for (const r of refused) {
    if (next.get(r.key) === r.why) continue;
    next.set(r.key, r.why);
    log.push(r);
  }
  return { log, logged: next };
}

// ---- the own lease --------------------------------------------------------------------------------------

export interface OwnIdentity {
  readonly publicIP: string;
  readonly publicIPv6?: string | null | undefined;
  readonly backendType: string;
  /** This feltd's VtepMAC (vxlan). */
  readonly vtepMac?: string | undefined;
}

export type OwnLeaseStatus =
  | { readonly kind: 'ok' }
  /** The key is gone from the store. */
  | { readonly kind: 'missing' }
  /** The key holds another node's address, or something that is not a lease. */
  | { readonly kind: 'foreign'; readonly why: string; readonly holder?: string }
  /** The key holds this public IP but another feltd's attributes (a second feltd with the same public IP). */
  | { readonly kind: 'duplicate'; readonly why: string };

const sameAddress = (a: string | null | undefined, b: string | null | undefined): boolean => {
  const x = a ? parseIP(a) : undefined;
  const y = b ? parseIP(b) : undefined;
  if (!x || !y) return !x && !y;
  return x.family === y.family && x.value === y.value;
};

/** The own lease as the store holds it (`found`: the lease of the own key, if any). */
export function ownLeaseStatus(found: LeaseLike | undefined, me: OwnIdentity): OwnLeaseStatus {
  if (!found) return { kind: 'missing' };
  if (found.invalid) return { kind: 'foreign', why: `its value is not a flannel lease (${found.invalid})` };
  const a: LeaseAttrs = found.attrs;
  const v4 = me.publicIP !== '0.0.0.0';
  if ((v4 && !sameAddress(a.PublicIP, me.publicIP)) || (!v4 && !sameAddress(a.PublicIPv6, me.publicIPv6))) {
    const holder = v4 ? a.PublicIP : (a.PublicIPv6 ?? undefined);
    return {
      kind: 'foreign',
      why: `it names PublicIP ${v4 ? a.PublicIP : (a.PublicIPv6 ?? 'none')}, not this node's ${v4 ? me.publicIP : (me.publicIPv6 ?? 'none')}`,
      ...(holder ? { holder } : {}),
    };
  }
  if (a.BackendType !== me.backendType) {
    return { kind: 'duplicate', why: `it holds backend type "${a.BackendType}", this feltd runs "${me.backendType}"` };
  }
  if (me.vtepMac) {
    const d = parseVxlanBackendData(a.BackendData);
    const mac = E.isRight(d) ? d.right.vtepMac : undefined;
    if (mac !== me.vtepMac.toLowerCase())
      return { kind: 'duplicate', why: `it holds VtepMAC ${mac ?? 'none'}, this feltd's is ${me.vtepMac.toLowerCase()}` };
  }
  return { kind: 'ok' };
}

// ---- the network config ---------------------------------------------------------------------------------

/** What differs between the config feltd runs with and another (e.g. the one now in the store), in words. */
export function configChanges(running: NetConfig, other: NetConfig): string[] {
  const out: string[] = [];
  const show = (v: unknown): string => (v === undefined ? 'none' : typeof v === 'string' ? v : JSON.stringify(v));
  const cmp = (name: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a ?? null) !== JSON.stringify(b ?? null)) out.push(`${name} ${show(a)} -> ${show(b)}`);
  };
  cmp('EnableIPv4', running.enableIPv4, other.enableIPv4);
  cmp('EnableIPv6', running.enableIPv6, other.enableIPv6);
  cmp('Network', running.network, other.network);
  cmp('SubnetLen', running.subnetLen, other.subnetLen);
  cmp('SubnetMin', running.subnetMin, other.subnetMin);
  cmp('SubnetMax', running.subnetMax, other.subnetMax);
  cmp('IPv6Network', running.ipv6Network, other.ipv6Network);
  cmp('IPv6SubnetLen', running.ipv6SubnetLen, other.ipv6SubnetLen);
  cmp('IPv6SubnetMin', running.ipv6SubnetMin, other.ipv6SubnetMin);
  cmp('IPv6SubnetMax', running.ipv6SubnetMax, other.ipv6SubnetMax);
  const keys = [...new Set([...Object.keys(running.backend), ...Object.keys(other.backend)])].sort();
  for (const k of keys) cmp(`Backend.${k}`, (running.backend as Record<string, unknown>)[k], (other.backend as Record<string, unknown>)[k]);
  return out;
}
