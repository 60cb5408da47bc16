// host-local as a Decider. Commands: AllocateAddresses (ADD), ReleaseAddresses (DEL), CollectGarbage (GC).
// Events: AddressAllocated, AddressReleased. State (one per network, stream `ipam/<network>`): who holds
// which address, and the last address reserved in each range set (the round-robin cursor, host-local's
// last_reserved_ip.<index>). decide validates everything before it emits anything, so a Left means nothing
// changed; evolve is a plain fold (immer) and never fails.

import * as E from 'fp-ts/lib/Either.js';
import { Immer } from 'immer';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import type { DNS, IPConfig, Result } from '../cni/result.ts';
import { CURRENT_VERSION } from '../cni/result.ts';
import type { Event, Projection, Stored } from '../events.ts';
import { formatCIDR, formatIP, parseIP, type IP } from '../ip/ip.ts';
import type { Attachment, IpamConf, RequestedIP } from './config.ts';
import { candidates, rangeFor, rangeSetContains, rangeSetSize, rangeSetString, type RangeSet } from './range.ts';

// ---- events -------------------------------------------------------------------------------------------

export interface AddressData {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  /** Index of the range set in the effective config at the time. */
  readonly rangeSet: number;
  readonly ip: string;
}

export type AddressAllocated = Event<'AddressAllocated', AddressData>;
/** `reason`: `del` (CNI DEL) or `gc` (not in cni.dev/valid-attachments). */
export type AddressReleased = Event<'AddressReleased', AddressData & { readonly reason: 'del' | 'gc' }>;
export type IpamEvent = AddressAllocated | AddressReleased;

// ---- commands -----------------------------------------------------------------------------------------

export type IpamCommand =
  | { readonly type: 'AllocateAddresses'; readonly data: { readonly conf: IpamConf; readonly containerId: string; readonly ifname: string } }
  | { readonly type: 'ReleaseAddresses'; readonly data: { readonly network: string; readonly containerId: string; readonly ifname: string } }
  | { readonly type: 'CollectGarbage'; readonly data: { readonly network: string; readonly validAttachments: readonly Attachment[] } };

// ---- state --------------------------------------------------------------------------------------------

export interface Allocation {
  readonly ip: string;
  readonly containerId: string;
  readonly ifname: string;
  readonly rangeSet: number;
  /** Time of the AddressAllocated event. */
  readonly since: string;
  readonly position: number;
}

export interface IpamState {
  /** By address (canonical text). */
  readonly allocations: Readonly<Record<string, Allocation>>;
  /** Range set index -> last reserved address. */
  readonly lastReserved: Readonly<Record<string, string>>;
}

// A private Immer without auto-freeze: freezing a snapshot of thousands of allocations on every event costs
// more than the whole transaction, and states are never mutated outside evolve anyway.
const { produce } = new Immer({ autoFreeze: false });

export const initialState = (): IpamState => ({ allocations: {}, lastReserved: {} });

export const ipamStream = (network: string): string => `ipam/${network}`;

export const evolve = (state: IpamState, event: Stored<IpamEvent>): IpamState =>
  produce(state, (d) => {
    const { ip, containerId, ifname, rangeSet } = event.data;
    switch (event.type) {
      case 'AddressAllocated':
        d.allocations[ip] = { ip, containerId, ifname, rangeSet, since: event.time, position: event.position };
        d.lastReserved[String(rangeSet)] = ip;
        return;
      case 'AddressReleased': {
        const held = d.allocations[ip];
        if (held && held.containerId === containerId && held.ifname === ifname) delete d.allocations[ip];
        return;
      }
      default: {
        const never: never = event;
        return never;
      }
    }
  });

/**
 * Many events in one step, equal to folding them with `evolve`: one copy of the state per batch instead of an
 * Immer draft per event (a replay of a million events).
 */
export const evolveAll = (state: IpamState, events: readonly Stored<IpamEvent>[]): IpamState => {
  if (events.length === 0) return state;
  const allocations: Record<string, Allocation> = { ...state.allocations };
  const lastReserved: Record<string, string> = { ...state.lastReserved };
  for (const event of events) {
    const { ip, containerId, ifname, rangeSet } = event.data;
    if (event.type === 'AddressAllocated') {
      allocations[ip] = { ip, containerId, ifname, rangeSet, since: event.time, position: event.position };
      lastReserved[String(rangeSet)] = ip;
    } else if (event.type === 'AddressReleased') {
      const held = allocations[ip];
      if (held && held.containerId === containerId && held.ifname === ifname) delete allocations[ip];
    }
  }
  return { allocations, lastReserved };
};

export const ipamProjection: Projection<IpamState, IpamEvent> = { name: 'ipam@1', initialState, evolve, evolveAll };

// ---- decide -------------------------------------------------------------------------------------------

interface Held {
  readonly containerId: string;
  readonly ifname: string;
  readonly addr: IP | undefined;
}

const who = (h: { containerId: string; ifname: string }): string => `${h.containerId}/${h.ifname}`;

function allocate(conf: IpamConf, containerId: string, ifname: string, state: IpamState): E.Either<CniError, IpamEvent[]> {
  const held = new Map<string, Held>();
  for (const [k, a] of Object.entries(state.allocations)) held.set(k, { containerId: a.containerId, ifname: a.ifname, addr: parseIP(k) });
  const gateways = new Map<string, string>();
  for (const s of conf.rangeSets) for (const r of s.ranges) if (!gateways.has(formatIP(r.gateway))) gateways.set(formatIP(r.gateway), r.label);

  // Each requested address must fall in exactly one range set, at most one per set.
  const wanted = new Map<number, RequestedIP>();
  const seen = new Set<string>();
  for (const req of conf.requested) {
    const k = formatIP(req.ip);
    if (seen.has(k)) continue;
    seen.add(k);
    const set = conf.rangeSets.find((s) => rangeSetContains(s, req.ip));
    if (!set) {
      const sets = conf.rangeSets.map((s) => `${s.label} ${rangeSetString(s)}`).join('; ');
      return E.left(invalidConfig(`${req.source}: requested address ${k} is not in any range set (${sets})`));
    }
    const other = wanted.get(set.index);
    if (other) {
      return E.left(
        invalidConfig(`${req.source}: requested address ${k} and ${formatIP(other.ip)} (${other.source}) are both in range set ${set.label}; one address per range set`),
      );
    }
    wanted.set(set.index, req);
  }

  const events: IpamEvent[] = [];
  for (const set of conf.rangeSets) {
    const inSet = (h: Held) => h.addr !== undefined && rangeSetContains(set, h.addr);
    // One address per (container, ifname) per range set: a second ADD is an error, as in the reference.
    for (const [k, h] of held) {
      if (h.containerId === containerId && h.ifname === ifname && inSet(h)) {
        return E.left(
          cniError(ErrCode.AddressInUse, `${set.label}: ${k} has been allocated to ${who(h)}, duplicate allocation is not allowed`),
        );
      }
    }
    const req = wanted.get(set.index);
    let ip: IP | undefined;
    if (req) {
      const k = formatIP(req.ip);
      const gw = gateways.get(k);
      if (gw) return E.left(invalidConfig(`${req.source}: requested address ${k} is the gateway of ${gw}`));
      const h = held.get(k);
      if (h) return E.left(cniError(ErrCode.AddressInUse, `${req.source}: requested address ${k} is already allocated to ${who(h)}`));
      ip = req.ip;
    } else {
      ip = pick(set, state, held, gateways, inSet);
      if (!ip) return E.left(cniError(ErrCode.RangeExhausted, `${set.label}: no IP addresses available in range set: ${rangeSetString(set)}`));
    }
    const k = formatIP(ip);
    events.push({ type: 'AddressAllocated', data: { network: conf.network, containerId, ifname, rangeSet: set.index, ip: k } });
    held.set(k, { containerId, ifname, addr: ip });
  }
  return E.right(events);
}

/** The next free address of a set in round-robin order, or undefined when every address is taken. */
function pick(
  set: RangeSet,
  state: IpamState,
  held: ReadonlyMap<string, Held>,
  gateways: ReadonlyMap<string, string>,
  inSet: (h: Held) => boolean,
): IP | undefined {
  // Count first, so an exhausted /8 answers without walking it; otherwise the walk stops after at most
  // (taken + 1) addresses.
  const taken = new Set<string>();
  for (const [k, h] of held) if (inSet(h)) taken.add(k);
  for (const g of gateways.keys()) {
    const a = parseIP(g);
    if (a && rangeSetContains(set, a)) taken.add(g);
  }
  if (BigInt(taken.size) >= rangeSetSize(set)) return undefined;
  const lastText = state.lastReserved[String(set.index)];
  const last = lastText === undefined ? undefined : parseIP(lastText);
  for (const c of candidates(set, last, (a) => gateways.has(formatIP(a)))) {
    if (!held.has(formatIP(c.ip))) return c.ip;
  }
  return undefined;
}

const byPosition = (a: Allocation, b: Allocation): number => a.rangeSet - b.rangeSet || a.position - b.position;

const released = (network: string, a: Allocation, reason: 'del' | 'gc'): AddressReleased => ({
  type: 'AddressReleased',
  data: { network, containerId: a.containerId, ifname: a.ifname, rangeSet: a.rangeSet, ip: a.ip, reason },
});

export function decide(command: IpamCommand, state: IpamState): E.Either<CniError, IpamEvent[]> {
  switch (command.type) {
    case 'AllocateAddresses':
      return allocate(command.data.conf, command.data.containerId, command.data.ifname, state);
    case 'ReleaseAddresses': {
      const { network, containerId, ifname } = command.data;
      // Nothing held is not an error: DEL may come many times.
      return E.right(
        Object.values(state.allocations)
          .filter((a) => a.containerId === containerId && a.ifname === ifname)
          .sort(byPosition)
          .map((a) => released(network, a, 'del')),
      );
    }
    case 'CollectGarbage': {
      const { network, validAttachments } = command.data;
      const valid = new Set(validAttachments.map((v) => `${v.containerId}\u0000${v.ifname}`));
      return E.right(
        Object.values(state.allocations)
          .filter((a) => !valid.has(`${a.containerId}\u0000${a.ifname}`))
          .sort(byPosition)
          .map((a) => released(network, a, 'gc')),
      );
    }
    default: {
      const never: never = command;
      return never;
    }
  }
}

// ---- queries ------------------------------------------------------------------------------------------

export const allocationsOf = (state: IpamState, containerId: string, ifname: string): Allocation[] =>
  Object.values(state.allocations)
    .filter((a) => a.containerId === containerId && a.ifname === ifname)
    .sort(byPosition);

/**
 * CHECK: the attachment holds at least one address (the reference's rule), and every address of
 * `prevResult` that lies in one of this config's range sets is held by it.
 */
export function checkAllocation(
  state: IpamState,
  conf: IpamConf,
  containerId: string,
  ifname: string,
  prevAddresses: readonly string[] = [],
): E.Either<CniError, void> {
  const drift = (msg: string) => E.left(cniError(ErrCode.Drift, msg));
  if (allocationsOf(state, containerId, ifname).length === 0) {
    return drift(`host-local: no address is allocated to ${containerId}/${ifname} in network "${conf.network}"`);
  }
  for (const cidr of prevAddresses) {
    const text = cidr.includes('/') ? cidr.slice(0, cidr.indexOf('/')) : cidr;
    const a = parseIP(text);
    if (!a || !conf.rangeSets.some((s) => rangeSetContains(s, a))) continue;
    const h = state.allocations[formatIP(a)];
    if (!h) return drift(`host-local: prevResult address ${cidr} of ${containerId}/${ifname} is not allocated`);
    if (h.containerId !== containerId || h.ifname !== ifname) {
      return drift(`host-local: prevResult address ${cidr} of ${containerId}/${ifname} is allocated to ${who(h)}`);
    }
  }
  return E.right(undefined);
}

/** The ADD result: one address per range set (its subnet's prefix, its range's gateway), routes, dns. */
export function ipamResult(conf: IpamConf, allocated: readonly AddressData[], dns?: DNS): Result {
  const ips: IPConfig[] = [];
  for (const a of allocated) {
    const set = conf.rangeSets[a.rangeSet];
    const addr = parseIP(a.ip);
    const r = set && addr ? rangeFor(set, addr) : undefined;
    if (!r || !addr) continue;
    ips.push({ address: formatCIDR({ ip: addr, prefix: r.subnet.prefix }), gateway: formatIP(r.gateway) });
  }
  return {
    cniVersion: CURRENT_VERSION,
    ips,
    ...(conf.routes.length ? { routes: conf.routes.map((r) => ({ ...r })) } : {}),
    ...(dns && Object.keys(dns).length ? { dns } : {}),
  };
}
