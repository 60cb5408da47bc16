// Ranges and range sets as host-local defines them: a range is an interval [rangeStart, rangeEnd] inside a
// subnet, with a gateway that is never handed out; a range set is a list of ranges of one family, one address
// per attachment comes from each set. Membership is by interval (host-local's Range.Contains), so two sets
// may share a subnet with disjoint intervals.

import { cmpIP, eqIP, formatCIDR, formatIP, next, type CIDR, type Family, type IP } from '../ip/ip.ts';

export interface Range {
  readonly subnet: CIDR;
  readonly rangeStart: IP;
  readonly rangeEnd: IP;
  readonly gateway: IP;
  /** Where it came from, for messages: `ipam.ranges[0][1]`, `runtimeConfig.ipRanges[0][0]`, `ipam.subnet`. */
  readonly label: string;
}

export interface RangeSet {
  /** Position in the effective list (runtimeConfig.ipRanges, then the legacy range, then ipam.ranges). */
  readonly index: number;
  readonly label: string;
  readonly family: Family;
  readonly ranges: readonly Range[];
}

const inRange = (r: Range, a: IP): boolean => a.family === r.rangeStart.family && cmpIP(a, r.rangeStart) >= 0 && cmpIP(a, r.rangeEnd) <= 0;

export const rangeFor = (s: RangeSet, a: IP): Range | undefined => s.ranges.find((r) => inRange(r, a));

export const rangeSetContains = (s: RangeSet, a: IP): boolean => rangeFor(s, a) !== undefined;

export const rangesOverlap = (a: Range, b: Range): boolean =>
  a.rangeStart.family === b.rangeStart.family && cmpIP(a.rangeStart, b.rangeEnd) <= 0 && cmpIP(b.rangeStart, a.rangeEnd) <= 0;

/** `10.0.0.1-10.0.0.254`, as host-local prints a range. */
const rangeString = (r: Range): string => `${formatIP(r.rangeStart)}-${formatIP(r.rangeEnd)}`;
export const rangeSetString = (s: RangeSet): string => s.ranges.map(rangeString).join(',');
export const describeRange = (r: Range): string => `${rangeString(r)} (${formatCIDR(r.subnet)})`;

/** Number of addresses in the set's intervals. */
export const rangeSetSize = (s: RangeSet): bigint => s.ranges.reduce((n, r) => n + (r.rangeEnd.value - r.rangeStart.value + 1n), 0n);

/**
 * host-local's round-robin order: start right after the last reserved address when it is still in the set,
 * else at the first range's start; walk to the end of each range, then the next range (wrapping), and stop
 * when back at the start. Each address of the set comes out exactly once. `skip` (gateways) are passed over.
 */
export function* candidates(
  s: RangeSet,
  last: IP | undefined,
  skip: (a: IP) => boolean,
): Generator<{ readonly range: Range; readonly ip: IP }> {
  const n = s.ranges.length;
  let idx = 0;
  let cur: IP | undefined;
  let start: IP | undefined;
  const from = last ? s.ranges.findIndex((r) => inRange(r, last)) : -1;
  if (last && from >= 0) {
    idx = from;
    cur = last;
  }
  for (;;) {
    let r = s.ranges[idx]!;
    if (cur === undefined) {
      cur = r.rangeStart;
      start = cur;
    } else {
      if (eqIP(cur, r.rangeEnd)) {
        idx = (idx + 1) % n;
        r = s.ranges[idx]!;
        cur = r.rangeStart;
      } else {
        cur = next(cur);
      }
      if (start === undefined) start = cur;
      else if (eqIP(cur, start)) return;
    }
    if (!skip(cur)) yield { range: r, ip: cur };
  }
}
