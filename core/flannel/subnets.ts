// The subnet allocator, flanneld's tryAcquireLease/allocateSubnet (flannel-io/flannel
// pkg/subnet/etcd/local_manager.go) as a pure function: the leases, the time and the randomness come in.
//
// 1. A live lease already holding this node's public IP is reused (renewed with new attrs) when it still fits
//    the config; one that no longer fits is returned as stale, for the caller to revoke before creating.
// 2. Else the subnet of the previous run (subnet.env), when it fits the config and nobody holds it.
// 3. Else a random free subnet: like flanneld, walk up from SubnetMin collecting at most 100 free subnets and
//    pick one of them with `rand`. Subnets in `avoid` (those this node last knew held by other nodes: after a
//    wiped store their holders may not have re-created their leases yet, but their kernels still route them)
//    are taken only when no other subnet is free.
// Expired leases (expiration < now) are free. The caller creates the chosen lease with create-if-absent and
// chooses again (flanneld: up to 10 times) when another node was faster.

import * as E from 'fp-ts/lib/Either.js';
import { bits, formatCIDR, formatIP, parseCIDR, parseIP, type Family, type IP } from '../ip/ip.ts';
import { subnetRange } from './netconf.ts';
import type { Lease, NetConfig } from './types.ts';

/** flanneld collects this many free subnets before picking one at random. */
const RANDOM_CANDIDATES = 100;

export interface ChooseSubnetInput {
  readonly config: NetConfig;
  /** Every lease the store holds (expired ones are treated as free). */
  readonly leases: readonly Lease[];
  /** This node's public IPv4 address. */
  readonly publicIP: string;
  /** This node's public IPv6 address; identifies its lease when IPv4 is off. */
  readonly publicIPv6?: string;
  /** The subnets of the previous run, from subnet.env (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET). */
  readonly previous?: string;
  readonly previousIPv6?: string;
  /** Subnets (CIDRs) to take only when no other is free: those other nodes were last seen holding. */
  readonly avoid?: readonly string[];
  /** ISO time, for expiry. */
  readonly now: string;
  /** A uniform integer in [0, n). */
  readonly rand: (n: number) => number;
}

export interface SubnetChoice {
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
  /** `reused`: renew the existing lease; `previous`/`random`: create it if absent. */
  readonly source: 'reused' | 'previous' | 'random';
  /** Leases that hold this node's public IP but do not fit the config: revoke them first. */
  readonly stale: readonly Lease[];
  /** Why this subnet, in words, for the log. */
  readonly why: string;
}

export const leaseExpired = (l: Lease, now: string): boolean => {
  const exp = Date.parse(l.expiration);
  const t = Date.parse(now);
  // An unreadable expiry is treated as live: never hand out a subnet that may be held.
  return Number.isFinite(exp) && Number.isFinite(t) && exp < t;
};

const sameIP = (a: string | null | undefined, b: string | undefined): boolean => {
  if (!a || !b) return false;
  const x = parseIP(a);
  const y = parseIP(b);
  return !!x && !!y && x.family === y.family && x.value === y.value;
};

interface Range {
  readonly family: Family;
  readonly min: bigint;
  readonly max: bigint;
  readonly len: number;
  readonly step: bigint;
}

const rangeOf = (config: NetConfig, family: Family): Range | undefined => {
  const r = subnetRange(config, family);
  return r && { family, min: r.min.value, max: r.max.value, len: r.len, step: 1n << BigInt(bits(family) - r.len) };
};

const describeRange = (r: Range): string =>
  `/${r.len} between ${formatIP({ family: r.family, value: r.min })} and ${formatIP({ family: r.family, value: r.max })}`;

/** A subnet fits the config: the right length, aligned, inside SubnetMin..SubnetMax (isSubnetConfigCompat). */
function fits(r: Range | undefined, cidr: string | undefined): boolean {
  if (!r) return cidr === undefined;
  const c = cidr === undefined ? undefined : parseCIDR(cidr);
  if (!c || c.ip.family !== r.family || c.prefix !== r.len) return false;
  const v = c.ip.value;
  return v % r.step === 0n && v >= r.min && v <= r.max;
}

export const leaseFitsConfig = (config: NetConfig, l: Pick<Lease, 'subnet' | 'ipv6Subnet'>): boolean =>
  fits(rangeOf(config, 4), l.subnet) && fits(rangeOf(config, 6), l.ipv6Subnet);

interface Interval {
  start: bigint;
  end: bigint;
}

/** Address intervals held by leases in one family, sorted and merged. */
function occupied(leases: readonly Lease[], family: Family): Interval[] {
  const iv: Interval[] = [];
  for (const l of leases) {
    const c = parseCIDR((family === 4 ? l.subnet : l.ipv6Subnet) ?? '');
    if (!c || c.ip.family !== family) continue;
    const size = 1n << BigInt(bits(family) - c.prefix);
    const start = c.ip.value - (c.ip.value % size);
    iv.push({ start, end: start + size - 1n });
  }
  return mergeIntervals(iv);
}

function mergeIntervals(xs: readonly Interval[]): Interval[] {
  const iv = [...xs].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const merged: Interval[] = [];
  for (const x of iv) {
    const last = merged[merged.length - 1];
    if (last && x.start <= last.end + 1n) {
      if (x.end > last.end) last.end = x.end;
    } else merged.push({ ...x });
  }
  return merged;
}

const isFree = (iv: readonly Interval[], start: bigint, step: bigint): boolean =>
  !iv.some((x) => x.start <= start + step - 1n && start <= x.end);

/** The first `limit` free subnets from SubnetMin up, skipping held ranges in O(leases + limit). */
function freeSubnets(r: Range, iv: readonly Interval[], limit: number): bigint[] {
  const out: bigint[] = [];
  let c = r.min;
  let i = 0;
  while (c <= r.max && out.length < limit) {
    while (i < iv.length && iv[i]!.end < c) i++;
    const x = iv[i];
    if (x && x.start <= c + r.step - 1n) {
      const after = x.end + 1n;
      c = ((after + r.step - 1n) / r.step) * r.step;
      continue;
    }
    out.push(c);
    c += r.step;
  }
  return out;
}

function pick(r: Range, iv: readonly Interval[], rand: (n: number) => number, avoid: readonly Interval[] = []): E.Either<string, string> {
  let free = freeSubnets(r, iv, RANDOM_CANDIDATES);
  if (avoid.length) {
    const unused = freeSubnets(r, mergeIntervals([...iv, ...avoid]), RANDOM_CANDIDATES);
    if (unused.length) free = unused;
  }
  if (free.length === 0) {
    const count = (r.max - r.min) / r.step + 1n;
    return E.left(`out of subnets: all ${count} subnets ${describeRange(r)} are leased`);
  }
  const i = rand(free.length);
  if (!Number.isInteger(i) || i < 0 || i >= free.length)
    return E.left(`rand(${free.length}) returned ${i}, not an integer in [0, ${free.length})`);
  return E.right(formatCIDR({ ip: { family: r.family, value: free[i]! } as IP, prefix: r.len }));
}

export function chooseSubnet(input: ChooseSubnetInput): E.Either<string, SubnetChoice> {
  const { config, now, rand } = input;
  const r4 = rangeOf(config, 4);
  const r6 = rangeOf(config, 6);
  if (!r4 && !r6) return E.left('network config: no family enabled, or Network/IPv6Network missing');
  const live = input.leases.filter((l) => !leaseExpired(l, now));

  // 1. The lease this node already holds.
  const mine = live.filter((l) => (r4 ? sameIP(l.attrs.PublicIP, input.publicIP) : sameIP(l.attrs.PublicIPv6, input.publicIPv6)));
  const reuse = mine.find((l) => fits(r4, l.subnet) && fits(r6, l.ipv6Subnet));
  const stale = mine.filter((l) => l !== reuse);
  const who = r4 ? input.publicIP : (input.publicIPv6 ?? '');
  if (reuse) {
    return E.right({
      ...(reuse.subnet ? { subnet: reuse.subnet } : {}),
      ...(reuse.ipv6Subnet ? { ipv6Subnet: reuse.ipv6Subnet } : {}),
      source: 'reused',
      stale,
      why: `reusing the lease ${[reuse.subnet, reuse.ipv6Subnet].filter(Boolean).join(' ')} held by ${who}`,
    });
  }
  const held = live.filter((l) => !stale.includes(l));
  const iv4 = r4 ? occupied(held, 4) : [];
  const iv6 = r6 ? occupied(held, 6) : [];
  const staleNote = stale.length
    ? `; ${stale.map((l) => l.subnet ?? l.ipv6Subnet).join(', ')} held by ${who} no longer fits the config`
    : '';

  // 2. The previous run's subnet.
  const prevWanted = (r4 && input.previous) || (!r4 && input.previousIPv6);
  let prevNote = '';
  if (prevWanted) {
    const p4 = r4 ? parseCIDR(input.previous ?? '') : undefined;
    const p6 = r6 ? parseCIDR(input.previousIPv6 ?? '') : undefined;
    const ok4 = !r4 || (fits(r4, input.previous) && !!p4 && isFree(iv4, p4.ip.value, r4.step));
    const ok6 = !r6 || (fits(r6, input.previousIPv6) && !!p6 && isFree(iv6, p6.ip.value, r6.step));
    const text = [r4 ? input.previous : undefined, r6 ? input.previousIPv6 : undefined].filter(Boolean).join(' ');
    if (ok4 && ok6 && (p4 || p6)) {
      return E.right({
        ...(p4 ? { subnet: formatCIDR(p4) } : {}),
        ...(p6 ? { ipv6Subnet: formatCIDR(p6) } : {}),
        source: 'previous',
        stale,
        why: `the previous subnet ${text} from subnet.env is free${staleNote}`,
      });
    }
    const fitsAll = (!r4 || fits(r4, input.previous)) && (!r6 || fits(r6, input.previousIPv6));
    prevNote = fitsAll
      ? `; the previous subnet ${text} is leased to another node`
      : `; the previous subnet ${text} does not fit the config`;
  }

  // 3. A random free subnet of each family, away from those other nodes were last seen holding.
  // (occupied() reads each family's field and skips a CIDR of the other family.)
  const avoided: Lease[] = (input.avoid ?? []).map((a) => ({
    subnet: a,
    ipv6Subnet: a,
    attrs: { PublicIP: '0.0.0.0', BackendType: '' },
    expiration: '',
  }));
  const s4 = r4 ? pick(r4, iv4, rand, occupied(avoided, 4)) : E.right(undefined);
  if (E.isLeft(s4)) return s4;
  const s6 = r6 ? pick(r6, iv6, rand, occupied(avoided, 6)) : E.right(undefined);
  if (E.isLeft(s6)) return s6;
  return E.right({
    ...(s4.right ? { subnet: s4.right } : {}),
    ...(s6.right ? { ipv6Subnet: s6.right } : {}),
    source: 'random',
    stale,
    why: `picked a free subnet ${r4 ? describeRange(r4) : ''}${r4 && r6 ? ' and ' : ''}${r6 ? describeRange(r6) : ''}${prevNote}${staleNote}`,
  });
}
