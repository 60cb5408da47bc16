// Addresses as numbers: an IP is its family plus a bigint, so arithmetic (next, contains, offsets) is exact
// for IPv4 and IPv6 alike. Parsing never throws; it returns undefined and the caller names the field.

export type Family = 4 | 6;

export interface IP {
  readonly family: Family;
  readonly value: bigint;
}

export interface CIDR {
  /** The address as written (may have host bits set, e.g. an interface address 10.0.0.5/24). */
  readonly ip: IP;
  readonly prefix: number;
}

export const bits = (family: Family): number => (family === 4 ? 32 : 128);
const maxValue = (family: Family): bigint => (1n << BigInt(bits(family))) - 1n;

export function parseIPv4(s: string): IP | undefined {
  // One pass over the characters: this runs for every lease and route feltd handles, so no regex or split.
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return undefined;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return undefined; // a leading zero ("01")
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return undefined;
    } else {
      return undefined;
    }
  }
  if (dots !== 3 || digits === 0) return undefined;
  return { family: 4, value: BigInt(value * 256 + part) };
}

export function parseIPv6(s: string): IP | undefined {
  if (s.includes('%')) return undefined;
  let head = s;
  let tailV4: IP | undefined;
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.')) {
    tailV4 = parseIPv4(s.slice(lastColon + 1));
    if (!tailV4) return undefined;
    head = s.slice(0, lastColon + 1) + '0:0';
  }
  const dbl = head.split('::');
  if (dbl.length > 2) return undefined;
  const groups = (x: string): string[] | undefined => (x === '' ? [] : x.split(':'));
  const left = groups(dbl[0] ?? '');
  const right = dbl.length === 2 ? groups(dbl[1] ?? '') : [];
  if (!left || !right) return undefined;
  const all = [...left, ...right];
  if (all.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  if (dbl.length === 1 && all.length !== 8) return undefined;
  if (dbl.length === 2 && all.length > 7) return undefined;
  const fill = 8 - all.length;
  const words = [...left, ...Array<string>(dbl.length === 2 ? fill : 0).fill('0'), ...right];
  let v = 0n;
  for (const w of words) v = (v << 16n) | BigInt(parseInt(w, 16));
  if (tailV4) v = (v & ~0xffffffffn) | tailV4.value;
  return { family: 6, value: v };
}

export const parseIP = (s: string): IP | undefined => (s.includes(':') ? parseIPv6(s) : parseIPv4(s));

export function parseCIDR(s: string): CIDR | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseIP(s.slice(0, slash));
  const ps = s.slice(slash + 1);
  if (!addr || !/^(0|[1-9][0-9]{0,2})$/.test(ps)) return undefined;
  const prefix = Number(ps);
  if (prefix > bits(addr.family)) return undefined;
  return { ip: addr, prefix };
}

export function formatIP(a: IP): string {
  if (a.family === 4) {
    const v = a.value;
    return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
  }
  const words: number[] = [];
  for (let i = 7; i >= 0; i--) words.push(Number((a.value >> BigInt(i * 16)) & 0xffffn));
  // IPv4-mapped addresses keep the dotted tail, as Go and iproute2 print them.
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return '::ffff:' + formatIP({ family: 4, value: a.value & 0xffffffffn });
  }
  // Longest run of zero words (length >= 2) becomes "::" (RFC 5952).
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]): string => ws.map((w) => w.toString(16)).join(':');
  if (bestStart < 0) return hex(words);
  return hex(words.slice(0, bestStart)) + '::' + hex(words.slice(bestStart + bestLen));
}

export const formatCIDR = (c: CIDR): string => `${formatIP(c.ip)}/${c.prefix}`;

export const mask = (family: Family, prefix: number): bigint => maxValue(family) ^ ((1n << BigInt(bits(family) - prefix)) - 1n);

/** The network address of a CIDR (host bits cleared). */
export const networkOf = (c: CIDR): CIDR => ({
  ip: { family: c.ip.family, value: c.ip.value & mask(c.ip.family, c.prefix) },
  prefix: c.prefix,
});

export const hasHostBits = (c: CIDR): boolean => (c.ip.value & ~mask(c.ip.family, c.prefix)) !== 0n;

export const firstIP = (c: CIDR): IP => networkOf(c).ip;
export const lastIP = (c: CIDR): IP => ({
  family: c.ip.family,
  value: networkOf(c).ip.value | (maxValue(c.ip.family) ^ mask(c.ip.family, c.prefix)),
});

export const contains = (c: CIDR, a: IP): boolean =>
  a.family === c.ip.family && (a.value & mask(a.family, c.prefix)) === (c.ip.value & mask(a.family, c.prefix));

export const overlaps = (a: CIDR, b: CIDR): boolean => a.ip.family === b.ip.family && (contains(a, b.ip) || contains(b, a.ip));

export const add = (a: IP, n: bigint): IP => ({ family: a.family, value: a.value + n });
export const next = (a: IP): IP => add(a, 1n);
export const prev = (a: IP): IP => add(a, -1n);

export const eqIP = (a: IP, b: IP): boolean => a.family === b.family && a.value === b.value;
export const cmpIP = (a: IP, b: IP): number =>
  a.family !== b.family ? a.family - b.family : a.value < b.value ? -1 : a.value > b.value ? 1 : 0;

export const size = (c: CIDR): bigint => 1n << BigInt(bits(c.ip.family) - c.prefix);
