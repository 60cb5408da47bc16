// What the three lease stores share: errors, the ownership test of renew (and the whole acquire/renew/repair
// of the embedded and in-memory stores, writeLease), matching a subnet for revoke, and the time
// arithmetic of expirations. The key and value formats are flannel's, in core/flannel/lease.ts.

import * as E from 'fp-ts/lib/Either.js';
import { parseLeaseAttrs, serializeLeaseAttrs, subnetKey } from '../../core/flannel/lease.ts';
import { formatCIDR, networkOf, parseCIDR } from '../../core/ip/ip.ts';
import type { Lease, LeaseAttrs } from '../../core/flannel/types.ts';
import type { LeaseRequest, StoreError } from './types.ts';

export const storeError = (msg: string, retryable: boolean): StoreError => ({ kind: 'store', msg, retryable });

export const isStoreError = (e: unknown): e is StoreError =>
  typeof e === 'object' && e !== null && (e as { kind?: unknown }).kind === 'store' && typeof (e as { msg?: unknown }).msg === 'string';

export const errorMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** A canonical network CIDR ("10.244.3.0/24"), or undefined when `s` is not a CIDR. */
function canonicalSubnet(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  const c = parseCIDR(s);
  return c ? formatCIDR(networkOf(c)) : undefined;
}

export interface CheckedRequest {
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
  /** Normalized as flannel's JSON reads back. */
  readonly attrs: LeaseAttrs;
}

/** The request with its subnets canonical and its attrs normalized; a request without a subnet is refused. */
export function checkRequest(req: LeaseRequest, ttlSeconds: number): E.Either<StoreError, CheckedRequest> {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0)
    return E.left(storeError(`lease TTL ${ttlSeconds}: must be a positive whole number of seconds`, false));
  const subnet = canonicalSubnet(req.subnet);
  const ipv6Subnet = canonicalSubnet(req.ipv6Subnet);
  if (req.subnet !== undefined && (!subnet || !subnet.includes('.')))
    return E.left(storeError(`lease request: subnet ${JSON.stringify(req.subnet)} is not an IPv4 CIDR`, false));
  if (req.ipv6Subnet !== undefined && (!ipv6Subnet || ipv6Subnet.includes('.'))) {
    return E.left(storeError(`lease request: ipv6Subnet ${JSON.stringify(req.ipv6Subnet)} is not an IPv6 CIDR`, false));
  }
  if (!subnet && !ipv6Subnet) return E.left(storeError('lease request: neither subnet nor ipv6Subnet given', false));
  const attrs = normalizeAttrs(req.attrs);
  if (E.isLeft(attrs)) return attrs;
  return E.right({ ...(subnet ? { subnet } : {}), ...(ipv6Subnet ? { ipv6Subnet } : {}), attrs: attrs.right });
}

/**
 * The attrs as they read back from flannel's JSON (PublicIPv6 null when absent, BackendType "" when absent),
 * so every store hands out what a reader of the etcd value would see; invalid attrs are refused.
 */
function normalizeAttrs(attrs: LeaseAttrs): E.Either<StoreError, LeaseAttrs> {
  let text: string;
  try {
    text = serializeLeaseAttrs(attrs);
  } catch (e) {
    return E.left(storeError(`lease attrs: ${errorMessage(e)}`, false));
  }
  const r = parseLeaseAttrs(text);
  return E.isLeft(r) ? E.left(storeError(r.left, false)) : r;
}

const normIP = (s: string | null | undefined): string => (s ?? '').toLowerCase();

/** Whether a stored lease belongs to the node making a request: the same public IPv4 and IPv6 address. */
export const sameOwner = (stored: LeaseAttrs, mine: LeaseAttrs): boolean =>
  normIP(stored.PublicIP) === normIP(mine.PublicIP) && normIP(stored.PublicIPv6) === normIP(mine.PublicIPv6);

/** What acquire, renew and repair answer when they write nothing. */
export interface Refusals {
  readonly acquire: 'taken';
  readonly renew: 'lost';
  readonly repair: 'absent';
}
export type LeaseWrite = keyof Refusals;

/** A lease is absent from its expiration on (`expiresAt`, `now`: ms since the epoch). */
export const expired = (expiresAt: number, now: number): boolean => expiresAt <= now;

/** How a store reads and writes one key, inside one write (its transaction and clock). */
export interface LeaseWriter {
  /** Run `f` as one write, after expired leases are gone, with the time it runs at. */
  write<A>(f: (now: number) => A): A;
  /** What the key holds: undefined when absent; its attrs undefined when unreadable. */
  held(key: string): { readonly attrs: LeaseAttrs | undefined } | undefined;
  /** Write the lease, record the change, return the lease as read back. */
  put(key: string, c: CheckedRequest, expiresAt: number): Lease;
}

/**
 * The rule of acquire, renew and repair (pure), given what the key holds once expired leases are gone (`held`:
 * undefined when absent; its attrs undefined when unreadable): acquire takes an absent key ('taken' otherwise),
 * renew extends a lease that still holds this node's public addresses ('lost' otherwise), repair rewrites a
 * present one ('absent' otherwise). What is written expires `ttlSeconds` after `now`.
 */
function leaseRule<K extends LeaseWrite>(
  kind: K,
  held: { readonly attrs: LeaseAttrs | undefined } | undefined,
  mine: LeaseAttrs,
  now: number,
  ttlSeconds: number,
): { readonly refused: Refusals[K] } | { readonly expiresAt: number } {
  const refusals: Refusals = { acquire: 'taken', renew: 'lost', repair: 'absent' };
  const ok = kind === 'acquire' ? !held : kind === 'repair' ? !!held : !!held?.attrs && sameOwner(held.attrs, mine);
  return ok ? { expiresAt: now + ttlSeconds * 1000 } : { refused: refusals[kind] };
}

/**
 * acquire, renew and repair of the embedded and the in-memory store through its writer: the request is checked
 * before anything is read, then leaseRule decides inside one write.
 */
export function writeLease<K extends LeaseWrite>(
  w: LeaseWriter,
  kind: K,
  req: LeaseRequest,
  ttlSeconds: number,
): E.Either<StoreError, Lease | Refusals[K]> {
  const checked = checkRequest(req, ttlSeconds);
  if (E.isLeft(checked)) return checked;
  const c = checked.right;
  const key = subnetKey(c);
  return E.right(
    w.write((now): Lease | Refusals[K] => {
      const r = leaseRule(kind, w.held(key), c.attrs, now, ttlSeconds);
      return 'refused' in r ? r.refused : w.put(key, c, r.expiresAt);
    }),
  );
}

/** Whether `lease` is the one `subnet` (either family, any spelling of the CIDR) names. */
export function leaseMatches(lease: { subnet?: string; ipv6Subnet?: string }, subnet: string): boolean {
  const want = canonicalSubnet(subnet);
  if (!want) return false;
  return canonicalSubnet(lease.subnet) === want || canonicalSubnet(lease.ipv6Subnet) === want;
}

/** The lease value as JSON round-trips it, so every store hands out plain data, never shared objects. */
export const plain = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

export const iso = (ms: number): string => new Date(ms).toISOString();

/** The expiration of a key without a TTL (an etcd key put without a lease): never. */
export const NEVER = '9999-12-31T23:59:59.999Z';

export const leaseOf = (subnet: string | undefined, ipv6Subnet: string | undefined, attrs: LeaseAttrs, expiration: string): Lease => ({
  ...(subnet ? { subnet } : {}),
  ...(ipv6Subnet ? { ipv6Subnet } : {}),
  attrs,
  expiration,
});

/** The attrs of a lease whose value cannot be read: nothing to trust (Lease.invalid says why). */
export const NO_ATTRS: LeaseAttrs = { PublicIP: '0.0.0.0', PublicIPv6: null, BackendType: '' };
