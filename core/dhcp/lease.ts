// The client's side of a DHCP exchange, pure: the messages it sends (DISCOVER, REQUEST in its three forms,
// RELEASE), which replies it accepts, the lease an ACK gives (times as RFC 2131 4.4.5 defaults them, as the
// reference's commit()), and the CNI result of a lease (the reference's IPNet, Gateway, Routes). Time
// arrives as a number (ms since the epoch) from the caller.

import * as E from 'fp-ts/lib/Either.js';
import type { Result, Route } from '../cni/result.ts';
import type { ClientOptions } from './config.ts';
import {
  classlessRoutes,
  ipv4Bytes,
  maskPrefix,
  MessageType,
  messageType,
  Opt,
  optIPv4,
  optIPv4List,
  optU32,
  staticRoutes,
  type Outgoing,
  type Packet,
  type StaticRoute,
} from './packet.ts';

/** What the client needs to know about its attachment. */
export interface ClientIdentity {
  /** `<containerID>/<network>/<ifname>` (config.ts clientId). */
  readonly clientId: string;
  /** The interface's MAC, `aa:bb:cc:dd:ee:ff`. */
  readonly mac: string;
  readonly options: ClientOptions;
}

/** A lease as the client holds it: typed values only, formatted by the decoder. JSON-serialisable. */
export interface Lease {
  readonly address: string;
  readonly prefix: number;
  readonly server: string;
  readonly router?: string;
  readonly classless?: readonly StaticRoute[];
  readonly staticRoutes?: readonly StaticRoute[];
  readonly dns?: readonly string[];
  /** Seconds, as the server gave them (T1, T2 defaulted). */
  readonly leaseSeconds: number;
  readonly renewSeconds: number;
  readonly rebindSeconds: number;
  /** ms since the epoch: when the ACK arrived, and when T1, T2 and the lease end fall. */
  readonly boundAt: number;
  readonly renewAt: number;
  readonly rebindAt: number;
  readonly expiresAt: number;
}

const te = new TextEncoder();
const ipv4 = (s: string): Uint8Array => ipv4Bytes(s) ?? new Uint8Array(4);

/** Option 61: type 0 ("not a hardware address") then the client id text, as the reference sends it. */
const clientIdOption = (id: ClientIdentity): readonly [number, Uint8Array] => [
  Opt.ClientIdentifier,
  Uint8Array.from([0, ...te.encode(id.clientId)]),
];

const provided = (id: ClientIdentity): (readonly [number, Uint8Array])[] =>
  id.options.provide.filter((p) => p.code !== Opt.ClientIdentifier).map((p) => [p.code, te.encode(p.value)] as const);

/** A provided client id replaces the generated one (the reference lets `provide` override every option). */
const clientIdOf = (id: ClientIdentity): readonly [number, Uint8Array] => {
  const own = id.options.provide.find((p) => p.code === Opt.ClientIdentifier);
  return own ? [Opt.ClientIdentifier, te.encode(own.value)] : clientIdOption(id);
};

const prl = (id: ClientIdentity): readonly [number, Uint8Array] => [Opt.ParameterRequestList, Uint8Array.from(id.options.request)];

export const discover = (id: ClientIdentity, xid: number, secs = 0): Outgoing => ({
  type: MessageType.DISCOVER,
  xid,
  secs,
  broadcast: true,
  chaddr: id.mac,
  options: [clientIdOf(id), ...provided(id), prl(id)],
});

/** REQUEST in SELECTING state: the offered address and the server chosen. */
export const requestSelecting = (id: ClientIdentity, xid: number, offer: Packet, secs = 0): Outgoing => ({
  type: MessageType.REQUEST,
  xid,
  secs,
  broadcast: true,
  chaddr: id.mac,
  options: [
    clientIdOf(id),
    [Opt.RequestedIP, ipv4(offer.yiaddr)],
    [Opt.ServerIdentifier, ipv4(optIPv4(offer, Opt.ServerIdentifier) ?? offer.siaddr)],
    ...provided(id),
    prl(id),
  ],
});

/** REQUEST in RENEWING (unicast to the server) or REBINDING (broadcast) state: ciaddr set, no server id. */
export const requestExtend = (id: ClientIdentity, xid: number, lease: Lease, broadcast: boolean, secs = 0): Outgoing => ({
  type: MessageType.REQUEST,
  xid,
  secs,
  broadcast,
  chaddr: id.mac,
  ciaddr: lease.address,
  options: [clientIdOf(id), ...provided(id), prl(id)],
});

export const release = (id: ClientIdentity, xid: number, lease: Lease): Outgoing => ({
  type: MessageType.RELEASE,
  xid,
  broadcast: false,
  chaddr: id.mac,
  ciaddr: lease.address,
  options: [clientIdOf(id), [Opt.ServerIdentifier, ipv4(lease.server)]],
});

/** Is `p` a server reply to our transaction? */
const ours = (p: Packet, xid: number, mac: string): boolean => p.op === 2 && p.xid === xid && p.chaddr === mac.toLowerCase();

export const isOffer = (p: Packet, xid: number, mac: string): boolean =>
  ours(p, xid, mac) && messageType(p) === MessageType.OFFER && p.yiaddr !== '0.0.0.0';

export type Reply = { readonly kind: 'ack'; readonly packet: Packet } | { readonly kind: 'nak'; readonly packet: Packet };

/** An ACK or NAK for our transaction, else undefined. */
export function replyTo(p: Packet, xid: number, mac: string): Reply | undefined {
  if (!ours(p, xid, mac)) return undefined;
  const t = messageType(p);
  if (t === MessageType.ACK) return { kind: 'ack', packet: p };
  if (t === MessageType.NAK) return { kind: 'nak', packet: p };
  return undefined;
}

/**
 * The lease of an ACK received at `now`. Refused (an error naming the option) without a usable address,
 * subnet mask or lease time; T2 defaults to 87.5% and T1 to 50% of the lease when missing or out of order
 * (RFC 2131 4.4.5; the reference uses 85% for T2). An infinite lease (0xffffffff) is kept as such.
 */
export function leaseOf(ack: Packet, now: number, previous?: Lease): E.Either<string, Lease> {
  const address = ack.yiaddr;
  if (address === '0.0.0.0') return E.left('yiaddr: the ACK carries no address');
  const mask = optIPv4(ack, Opt.SubnetMask);
  if (mask === undefined) return E.left('option 1 (subnet mask): missing in DHCPACK');
  const prefix = maskPrefix(mask);
  if (prefix === undefined) return E.left(`option 1 (subnet mask): ${mask} is not a contiguous mask`);
  const leaseSeconds = optU32(ack, Opt.LeaseTime);
  if (leaseSeconds === undefined) return E.left('option 51 (lease time): missing in DHCPACK');
  let rebind = optU32(ack, Opt.RebindingTime);
  if (rebind === undefined || rebind > leaseSeconds) rebind = Math.floor((leaseSeconds * 7) / 8);
  let renew = optU32(ack, Opt.RenewalTime);
  if (renew === undefined || renew > rebind) renew = Math.floor(leaseSeconds / 2);
  const server = optIPv4(ack, Opt.ServerIdentifier) ?? previous?.server ?? ack.siaddr;
  const router = optIPv4List(ack, Opt.Router)?.[0];
  const c121 = ack.options.get(Opt.ClasslessStaticRoute);
  const classless = c121 ? classlessRoutes(c121) : undefined;
  const s33 = ack.options.get(Opt.StaticRoute);
  const dns = optIPv4List(ack, Opt.DomainNameServer);
  const at = (s: number): number => (s === 0xffffffff ? Number.MAX_SAFE_INTEGER : now + s * 1000);
  return E.right({
    address,
    prefix,
    server,
    ...(router ? { router } : {}),
    ...(classless && classless.length ? { classless } : {}),
    ...(s33 ? { staticRoutes: staticRoutes(s33) } : {}),
    ...(dns ? { dns } : {}),
    leaseSeconds,
    renewSeconds: renew,
    rebindSeconds: rebind,
    boundAt: now,
    renewAt: at(renew),
    rebindAt: at(rebind),
    expiresAt: at(leaseSeconds),
  });
}

/**
 * The CNI result of a lease, as the reference builds it: the address with the mask's prefix and the router
 * as gateway; routes from option 121 when given (RFC 3442: then static routes and the router are ignored),
 * else option 33's and a default route via the router.
 */
export function leaseResult(l: Lease, cniVersion: string): Result {
  const ip = l.router ? { address: `${l.address}/${l.prefix}`, gateway: l.router } : { address: `${l.address}/${l.prefix}` };
  let routes: Route[];
  // A classless route via 0.0.0.0 is on-link (RFC 3442): a route without a gateway.
  if (l.classless && l.classless.length) routes = l.classless.map((r) => (r.gw === '0.0.0.0' ? { dst: r.dst } : { dst: r.dst, gw: r.gw }));
  else {
    routes = (l.staticRoutes ?? []).map((r) => ({ dst: r.dst, gw: r.gw }));
    if (l.router) routes.push({ dst: '0.0.0.0/0', gw: l.router });
  }
  return { cniVersion, ips: [ip], routes };
}
