// DHCPv4 packets (RFC 2131 / 2132): encode what the client sends, decode what a server sends into typed
// values. Pure: bytes in, values out. A server's bytes are untrusted; the decoder never throws, and every
// option the client uses is parsed into numbers or dotted-quad text that the decoder formatted itself.

export const MessageType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export const Opt = {
  Pad: 0,
  SubnetMask: 1,
  Router: 3,
  DomainNameServer: 6,
  HostName: 12,
  DomainName: 15,
  StaticRoute: 33,
  VendorClassIdentifier: 60,
  RequestedIP: 50,
  LeaseTime: 51,
  MessageType: 53,
  ServerIdentifier: 54,
  ParameterRequestList: 55,
  RenewalTime: 58,
  RebindingTime: 59,
  ClientIdentifier: 61,
  UserClass: 77,
  ClasslessStaticRoute: 121,
  End: 255,
} as const;

const MAGIC = [99, 130, 83, 99] as const;
/** The fixed BOOTP header (236 bytes) plus the magic cookie. */
const HEADER = 240;
/** The broadcast bit of `flags`: ask the server to broadcast replies (the client has no address yet). */
const FLAG_BROADCAST = 0x8000;

export interface Packet {
  /** 1 BOOTREQUEST (client), 2 BOOTREPLY (server). */
  readonly op: 1 | 2;
  readonly xid: number;
  readonly secs: number;
  readonly flags: number;
  readonly ciaddr: string;
  readonly yiaddr: string;
  readonly siaddr: string;
  readonly giaddr: string;
  /** Client hardware address, six bytes, as `aa:bb:cc:dd:ee:ff`. */
  readonly chaddr: string;
  /** Options in the order given (a repeated code is concatenated, RFC 3396). */
  readonly options: ReadonlyMap<number, Uint8Array>;
}

const ipv4Text = (b: Uint8Array, at = 0): string => `${b[at] ?? 0}.${b[at + 1] ?? 0}.${b[at + 2] ?? 0}.${b[at + 3] ?? 0}`;

/** Dotted quad to four bytes; undefined when it is not one. */
export function ipv4Bytes(s: string): Uint8Array | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const b = m.slice(1).map(Number);
  return b.every((x) => x <= 255) ? Uint8Array.from(b) : undefined;
}

function macBytes(mac: string): Uint8Array | undefined {
  const parts = mac.split(':');
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) return undefined;
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

const u32 = (b: Uint8Array, at: number): number =>
  (((b[at] ?? 0) << 24) >>> 0) + ((b[at + 1] ?? 0) << 16) + ((b[at + 2] ?? 0) << 8) + (b[at + 3] ?? 0);

export interface Outgoing {
  readonly type: MessageType;
  readonly xid: number;
  readonly secs?: number;
  readonly broadcast: boolean;
  readonly chaddr: string;
  readonly ciaddr?: string;
  /** Options besides the message type, in this order; each value at most 255 bytes. */
  readonly options: readonly (readonly [number, Uint8Array])[];
}

/** Encode a client message. Returns an error text when a field cannot be encoded. */
export function encode(m: Outgoing): { ok: true; bytes: Uint8Array } | { ok: false; error: string } {
  const chaddr = macBytes(m.chaddr);
  if (!chaddr) return { ok: false, error: `chaddr: ${JSON.stringify(m.chaddr)} is not a MAC address` };
  const ciaddr = ipv4Bytes(m.ciaddr ?? '0.0.0.0');
  if (!ciaddr) return { ok: false, error: `ciaddr: ${JSON.stringify(m.ciaddr)} is not an IPv4 address` };
  const opts: number[] = [Opt.MessageType, 1, m.type];
  for (const [code, value] of m.options) {
    if (code <= 0 || code >= 255) return { ok: false, error: `option ${code}: not a settable option code` };
    if (value.length > 255) return { ok: false, error: `option ${code}: value longer than 255 bytes` };
    opts.push(code, value.length, ...value);
  }
  opts.push(Opt.End);
  // Pad to the BOOTP minimum of 300 bytes: some servers and relays drop shorter packets.
  const len = Math.max(300, HEADER + opts.length);
  const b = new Uint8Array(len);
  b[0] = 1; // BOOTREQUEST
  b[1] = 1; // Ethernet
  b[2] = 6; // hardware address length
  b[4] = (m.xid >>> 24) & 0xff;
  b[5] = (m.xid >>> 16) & 0xff;
  b[6] = (m.xid >>> 8) & 0xff;
  b[7] = m.xid & 0xff;
  const secs = Math.min(0xffff, Math.max(0, m.secs ?? 0));
  b[8] = secs >> 8;
  b[9] = secs & 0xff;
  const flags = m.broadcast ? FLAG_BROADCAST : 0;
  b[10] = flags >> 8;
  b[11] = flags & 0xff;
  b.set(ciaddr, 12);
  b.set(chaddr, 28);
  b.set(MAGIC, 236);
  b.set(opts, HEADER);
  return { ok: true, bytes: b };
}

/** Decode a packet; undefined when it is not a well-formed DHCP message. */
export function decode(b: Uint8Array): Packet | undefined {
  if (b.length < HEADER) return undefined;
  const op = b[0];
  if (op !== 1 && op !== 2) return undefined;
  if (b[1] !== 1 || b[2] !== 6) return undefined;
  if (!MAGIC.every((x, i) => b[236 + i] === x)) return undefined;
  const options = new Map<number, Uint8Array>();
  let i = HEADER;
  while (i < b.length) {
    const code = b[i]!;
    if (code === Opt.End) break;
    if (code === Opt.Pad) {
      i++;
      continue;
    }
    const n = b[i + 1];
    if (n === undefined || i + 2 + n > b.length) return undefined;
    const value = b.slice(i + 2, i + 2 + n);
    const prev = options.get(code);
    options.set(code, prev ? Uint8Array.from([...prev, ...value]) : value);
    i += 2 + n;
  }
  const chaddr = Array.from(b.slice(28, 34), (x) => x.toString(16).padStart(2, '0')).join(':');
  return {
    op,
    xid: u32(b, 4),
    secs: ((b[8] ?? 0) << 8) | (b[9] ?? 0),
    flags: ((b[10] ?? 0) << 8) | (b[11] ?? 0),
    ciaddr: ipv4Text(b, 12),
    yiaddr: ipv4Text(b, 16),
    siaddr: ipv4Text(b, 20),
    giaddr: ipv4Text(b, 24),
    chaddr,
    options,
  };
}

export const messageType = (p: Packet): number | undefined => {
  const v = p.options.get(Opt.MessageType);
  return v && v.length === 1 ? v[0] : undefined;
};

/** One IPv4 address option (exactly four bytes), else undefined. */
export const optIPv4 = (p: Packet, code: number): string | undefined => {
  const v = p.options.get(code);
  return v && v.length === 4 ? ipv4Text(v) : undefined;
};

/** A list-of-addresses option (a multiple of four bytes, at least one), else undefined. */
export const optIPv4List = (p: Packet, code: number): string[] | undefined => {
  const v = p.options.get(code);
  if (!v || v.length === 0 || v.length % 4 !== 0) return undefined;
  const out: string[] = [];
  for (let i = 0; i < v.length; i += 4) out.push(ipv4Text(v, i));
  return out;
};

/** A 32-bit seconds option, else undefined. */
export const optU32 = (p: Packet, code: number): number | undefined => {
  const v = p.options.get(code);
  return v && v.length === 4 ? u32(v, 0) : undefined;
};

/** The prefix length of a contiguous subnet mask, else undefined. */
export function maskPrefix(mask: string): number | undefined {
  const b = ipv4Bytes(mask);
  if (!b) return undefined;
  const n = u32(b, 0);
  const inv = ~n >>> 0;
  // contiguous: the inverted mask + 1 is a power of two
  if ((inv & (inv + 1)) !== 0) return undefined;
  return 32 - Math.log2(inv + 1);
}

export interface StaticRoute {
  /** Destination prefix in CIDR form, host bits clear. */
  readonly dst: string;
  readonly gw: string;
}

/**
 * Classless static routes (option 121, RFC 3442): width, the significant octets of the destination, then the
 * router. Undefined when the option is malformed (as the reference: one bad entry discards the option).
 */
export function classlessRoutes(v: Uint8Array): StaticRoute[] | undefined {
  const out: StaticRoute[] = [];
  let i = 0;
  while (i < v.length) {
    const width = v[i]!;
    if (width > 32) return undefined;
    const octets = Math.ceil(width / 8);
    if (i + 1 + octets + 4 > v.length) return undefined;
    const dst = new Uint8Array(4);
    dst.set(v.slice(i + 1, i + 1 + octets));
    // clear host bits the server may have sent
    const n = width === 0 ? 0 : (u32(dst, 0) & (~0 << (32 - width))) >>> 0;
    const clean = Uint8Array.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
    out.push({ dst: `${ipv4Text(clean)}/${width}`, gw: ipv4Text(v, i + 1 + octets) });
    i += 1 + octets + 4;
  }
  return out;
}

/** Encode classless static routes (tests and servers); `dst` in CIDR form. */
export function encodeClasslessRoutes(routes: readonly StaticRoute[]): Uint8Array {
  const out: number[] = [];
  for (const r of routes) {
    const [addr, w] = r.dst.split('/');
    const width = Number(w);
    const d = ipv4Bytes(addr ?? '') ?? new Uint8Array(4);
    out.push(width, ...d.slice(0, Math.ceil(width / 8)), ...(ipv4Bytes(r.gw) ?? new Uint8Array(4)));
  }
  return Uint8Array.from(out);
}

/** Static routes (option 33): destination/router pairs, destinations classful. */
export function staticRoutes(v: Uint8Array): StaticRoute[] {
  const out: StaticRoute[] = [];
  for (let i = 0; i + 8 <= v.length; i += 8) {
    const first = v[i]!;
    const prefix = first < 128 ? 8 : first < 192 ? 16 : 24;
    const n = (u32(v, i) & (~0 << (32 - prefix))) >>> 0;
    const d = Uint8Array.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
    out.push({ dst: `${ipv4Text(d)}/${prefix}`, gw: ipv4Text(v, i + 4) });
  }
  return out;
}
