// host-local as a Decider. Commands: AllocateAddresses (ADD), ReleaseAddresses (DEL), CollectGarbage (GC).
// Events: AddressAllocated, AddressReleased. State (one per network, stream `ipam/<network>`): who holds
// which address, and the last address reserved in each range set (the round-robin cursor, host-local's
// last_reserved_ip.<index>). decide validates everything before it emits anything, so a Left means nothing
// changed; evolve is the table's row changes folded and never fails.
//
// The store keeps the state as a table (one row per allocation, indexed by container/ifname; the cursors in
// the header), and decide reads it through a view: an ADD looks up its own allocations, the addresses it
// walks past and the row count, never every allocation unless the range set is nearly full.

import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import type { DNS, IPConfig, Result } from '../cni/result.ts';
import { CURRENT_VERSION } from '../cni/result.ts';
import { stateView, tableProjection, type Event, type RowChange, type RowView, type Table } from '../events.ts';
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

type AddressAllocated = Event<'AddressAllocated', AddressData>;
/** `reason`: `del` (CNI DEL) or `gc` (not in cni.dev/valid-attachments). */
type AddressReleased = Event<'AddressReleased', AddressData & { readonly reason: 'del' | 'gc' }>;
export type IpamEvent = AddressAllocated | AddressReleased;

// ---- commands -----------------------------------------------------------------------------------------

export type IpamCommand =
  | {
      readonly type: 'AllocateAddresses';
      readonly data: { readonly conf: IpamConf; readonly containerId: string; readonly ifname: string };
    }
  | {
      readonly type: 'ReleaseAddresses';
      readonly data: { readonly network: string; readonly containerId: string; readonly ifname: string };
    }
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

export const ipamStream = (network: string): string => `ipam/${network}`;

export interface IpamHeader {
  readonly lastReserved: Readonly<Record<string, string>>;
}

/** The state as the store keeps it: what a decider reads. */
export type IpamView = RowView<IpamHeader, Allocation>;

/** The secondary index of allocations: their attachment. */
const attachmentIndex = (containerId: string, ifname: string): string => JSON.stringify([containerId, ifname]);

const ipamTable: Table<IpamState, IpamHeader, Allocation, IpamEvent> = {
  initialHeader: () => ({ lastReserved: {} }),
  changes: (view, event): RowChange<IpamHeader, Allocation>[] => {
    const { ip, containerId, ifname, rangeSet } = event.data;
    switch (event.type) {
      case 'AddressAllocated':
        return [
          { op: 'put', key: ip, row: { ip, containerId, ifname, rangeSet, since: event.time, position: event.position } },
          { op: 'header', header: { lastReserved: { ...view.header.lastReserved, [String(rangeSet)]: ip } } },
        ];
      case 'AddressReleased': {
        const held = view.get(ip);
        return held && held.containerId === containerId && held.ifname === ifname ? [{ op: 'del', key: ip }] : [];
      }
      default: {
        // Not an IPAM event: nothing to fold.
        const never: never = event;
        void never;
        return [];
      }
    }
  },
  index: (a) => attachmentIndex(a.containerId, a.ifname),
  assemble: (header, rows) => ({ allocations: rows, lastReserved: header.lastReserved }),
  split: (s) => ({ header: { lastReserved: s.lastReserved }, rows: s.allocations }),
};

/** The one fold: evolve and evolveAll (a replay of a million events, in batches) are the table's changes. */
export const ipamProjection = tableProjection('ipam@2', ipamTable);

export const { initialState, evolve } = ipamProjection;

/** A view over a folded state (pure callers and tests). */
export const ipamView = (state: IpamState): IpamView => stateView(ipamTable as Table<IpamState, IpamHeader, Allocation, never>, state);

// ---- decide -------------------------------------------------------------------------------------------

interface Holder {
  readonly containerId: string;
  readonly ifname: string;
}

const who = (h: Holder): string => `${h.containerId}/${h.ifname}`;

function allocate(conf: IpamConf, containerId: string, ifname: string, view: IpamView): E.Either<CniError, IpamEvent[]> {
  // Addresses this decision allocates (one per range set), on top of the view.
  const added = new Map<string, Holder>();
  const heldBy = (k: string): Holder | undefined => added.get(k) ?? view.get(k);
  const mine = view.find(attachmentIndex(containerId, ifname));
  const gateways = new Map<string, string>();
  for (const s of conf.rangeSets)
    for (const r of s.ranges) if (!gateways.has(formatIP(r.gateway))) gateways.set(formatIP(r.gateway), r.label);

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
        invalidConfig(
          `${req.source}: requested address ${k} and ${formatIP(other.ip)} (${other.source}) are both in range set ${set.label}; one address per range set`,
        ),
      );
    }
    wanted.set(set.index, req);
  }

  const events: IpamEvent[] = [];
  for (const set of conf.rangeSets) {
    const inSet = (k: string): boolean => {
      const a = parseIP(k);
      return a !== undefined && rangeSetContains(set, a);
    };
    // One address per (container, ifname) per range set: a second ADD is an error, as in the reference.
    const dup = [...mine.map((a) => a.ip), ...added.keys()].find(inSet);
    if (dup !== undefined) {
      return E.left(
        cniError(
          ErrCode.AddressInUse,
          `${set.label}: ${dup} has been allocated to ${who({ containerId, ifname })}, duplicate allocation is not allowed`,
        ),
      );
    }
    const req = wanted.get(set.index);
    let ip: IP | undefined;
    if (req) {
      const k = formatIP(req.ip);
      const gw = gateways.get(k);
      if (gw) return E.left(invalidConfig(`${req.source}: requested address ${k} is the gateway of ${gw}`));
      const h = heldBy(k);
      if (h) return E.left(cniError(ErrCode.AddressInUse, `${req.source}: requested address ${k} is already allocated to ${who(h)}`));
      ip = req.ip;
    } else {
      ip = pick(set, view, added, heldBy, gateways, inSet);
      if (!ip)
        return E.left(cniError(ErrCode.RangeExhausted, `${set.label}: no IP addresses available in range set: ${rangeSetString(set)}`));
    }
    const k = formatIP(ip);
    events.push({ type: 'AddressAllocated', data: { network: conf.network, containerId, ifname, rangeSet: set.index, ip: k } });
    added.set(k, { containerId, ifname });
  }
  return E.right(events);
}

/** The next free address of a set in round-robin order, or undefined when every address is taken. */
function pick(
  set: RangeSet,
  view: IpamView,
  added: ReadonlyMap<string, Holder>,
  heldBy: (k: string) => Holder | undefined,
  gateways: ReadonlyMap<string, string>,
  inSet: (k: string) => boolean,
): IP | undefined {
  const size = rangeSetSize(set);
  const gws = [...gateways.keys()].filter(inSet);
  // Fewer allocations in the whole network than addresses in the set: one is free, and the walk below stops
  // at it. Only a nearly full set counts its own holders (a full read), so an exhausted /8 answers without
  // walking it.
  if (BigInt(view.count() + added.size + gws.length) >= size) {
    const taken = new Set<string>(gws);
    for (const a of view.all()) if (inSet(a.ip)) taken.add(a.ip);
    for (const k of added.keys()) if (inSet(k)) taken.add(k);
    if (BigInt(taken.size) >= size) return undefined;
  }
  const lastText = view.header.lastReserved[String(set.index)];
  const last = lastText === undefined ? undefined : parseIP(lastText);
  for (const c of candidates(set, last, (a) => gateways.has(formatIP(a)))) {
    if (!heldBy(formatIP(c.ip))) return c.ip;
  }
  return undefined;
}

const byPosition = (a: Allocation, b: Allocation): number => a.rangeSet - b.rangeSet || a.position - b.position;

const released = (network: string, a: Allocation, reason: 'del' | 'gc'): AddressReleased => ({
  type: 'AddressReleased',
  data: { network, containerId: a.containerId, ifname: a.ifname, rangeSet: a.rangeSet, ip: a.ip, reason },
});

/** decide over the store's view of the state (host-local's transaction). */
export function decideIpam(command: IpamCommand, view: IpamView): E.Either<CniError, IpamEvent[]> {
  switch (command.type) {
    case 'AllocateAddresses':
      return allocate(command.data.conf, command.data.containerId, command.data.ifname, view);
    case 'ReleaseAddresses': {
      const { network, containerId, ifname } = command.data;
      // Nothing held is not an error: DEL may come many times.
      return E.right(
        view
          .find(attachmentIndex(containerId, ifname))
          .sort(byPosition)
          .map((a) => released(network, a, 'del')),
      );
    }
    case 'CollectGarbage': {
      const { network, validAttachments } = command.data;
      const valid = new Set(validAttachments.map((v) => `${v.containerId}\u0000${v.ifname}`));
      return E.right(
        view
          .all()
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

/** decide over a folded state. */
export const decide = (command: IpamCommand, state: IpamState): E.Either<CniError, IpamEvent[]> => decideIpam(command, ipamView(state));

// ---- queries ------------------------------------------------------------------------------------------

const allocationsIn = (view: IpamView, containerId: string, ifname: string): Allocation[] =>
  view.find(attachmentIndex(containerId, ifname)).sort(byPosition);

export const allocationsOf = (state: IpamState, containerId: string, ifname: string): Allocation[] =>
  allocationsIn(ipamView(state), containerId, ifname);

/**
 * CHECK: the attachment holds at least one address (the reference's rule), and every address of
 * `prevResult` that lies in one of this config's range sets is held by it.
 */
export const checkAllocation = (
  state: IpamState,
  conf: IpamConf,
  containerId: string,
  ifname: string,
  prevAddresses: readonly string[] = [],
): E.Either<CniError, void> => checkAllocationIn(ipamView(state), conf, containerId, ifname, prevAddresses);

/** CHECK over the store's view. */
export function checkAllocationIn(
  view: IpamView,
  conf: IpamConf,
  containerId: string,
  ifname: string,
  prevAddresses: readonly string[] = [],
): E.Either<CniError, void> {
  const drift = (msg: string) => E.left(cniError(ErrCode.Drift, msg));
  if (allocationsIn(view, containerId, ifname).length === 0) {
    return drift(`host-local: no address is allocated to ${containerId}/${ifname} in network "${conf.network}"`);
  }
  for (const cidr of prevAddresses) {
    const text = cidr.includes('/') ? cidr.slice(0, cidr.indexOf('/')) : cidr;
    const a = parseIP(text);
    if (!a || !conf.rangeSets.some((s) => rangeSetContains(s, a))) continue;
    const h = view.get(formatIP(a));
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
