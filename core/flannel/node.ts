// The node's own event log as a Decider: what this feltd knows about the network config, its own subnet lease
// and every remote lease, with the time each was seen, changed or lost (`felt events`). The lease store is the
// source of truth; this log records what the node observed of it, so `decide` diffs observations against the
// state and emits only real changes: a resync that sees the same leases emits nothing, and a remote lease that
// was only renewed (a later expiration) is not a change.
//
// Stream: `node/<public IP>`. State is plain JSON, kept by the store as a table: one row per remote lease,
// the config and the own lease in the header, so recording one lease event writes one row, not all 10,000.
// decide reads the state through a view (the header, one remote by key, or every remote for a full pass).

import * as E from 'fp-ts/lib/Either.js';
import { stateView, tableProjection, type CommandMeta, type RowChange, type RowView, type Stored, type Table } from '../events.ts';
import { parseMac } from '../ip/mac.ts';
import { parseIP } from '../ip/ip.ts';
import { parseVxlanBackendData, subnetKey } from './lease.ts';
import { screenLeases } from './trust.ts';
import type { NodeEvent, RemoteLeaseRemoved, RemoteLeaseSeen, SubnetLeased, SubnetLeaseLost, Subnets } from './events.ts';
import type { Lease, LeaseAttrs, LeaseEvent, LeaseSnapshot, NetConfig } from './types.ts';

// ---- state --------------------------------------------------------------------------------------------

/**
 * This node's lease as the last SubnetLeased recorded it (its key is the etcd key, subnetKey), and since when:
 * the time this subnet was first leased, kept across renewals.
 */
type OwnLease = Omit<SubnetLeased['data'], 'renewal'> & { readonly since: string };

export interface RemoteLease {
  readonly key: string;
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
  readonly attrs: LeaseAttrs;
  /** As last seen; renewals that only move it are not recorded. */
  readonly expiration: string;
  /** Event time the lease appeared, and of its last change. */
  readonly since: string;
  readonly changed: string;
}

export interface NodeState {
  readonly config: NetConfig | null;
  readonly ownLease: OwnLease | null;
  /** By lease key. */
  readonly remotes: Readonly<Record<string, RemoteLease>>;
}

export const initialState = (): NodeState => nodeProjection.initialState();

/** What the table's header holds: everything but the remote leases. */
export interface NodeHeader {
  readonly config: NetConfig | null;
  readonly ownLease: OwnLease | null;
}

/** The state as the store keeps it (remote leases as rows by key): what decide reads. */
export type NodeView = RowView<NodeHeader, RemoteLease>;

export const nodeStream = (publicIP: string): string => `node/${publicIP}`;

// ---- events (core/flannel/events.ts) ----------------------------------------------------------------

export type { NodeEvent } from './events.ts';

// ---- commands -----------------------------------------------------------------------------------------

/**
 * `metadata.time` (ISO) is the app's clock; ObserveLeases and ApplyLeaseEvents use it to treat leases past
 * their expiration as gone (without it, none is). `own` is this node's public IP: leases holding it are
 * never remote nodes (e.g. an old lease of this node about to be revoked).
 */
export type NodeCommand =
  | { readonly type: 'LoadConfig'; readonly data: { readonly config: NetConfig }; readonly metadata?: CommandMeta }
  | {
      readonly type: 'ObserveLeases';
      readonly data: { readonly snapshot: LeaseSnapshot; readonly own?: string };
      readonly metadata?: CommandMeta;
    }
  | {
      readonly type: 'ApplyLeaseEvents';
      readonly data: { readonly events: readonly LeaseEvent[]; readonly own?: string };
      readonly metadata?: CommandMeta;
    }
  | {
      readonly type: 'RecordOwnLease';
      readonly data: { readonly lease: Lease; readonly vtepMac?: string; readonly vtepMacV6?: string };
      readonly metadata?: CommandMeta;
    }
  | { readonly type: 'LoseOwnLease'; readonly data: { readonly reason?: string }; readonly metadata?: CommandMeta };

// ---- helpers ------------------------------------------------------------------------------------------

/** JSON with sorted keys: a structural comparison of parsed JSON values. */
const canonical = (v: unknown): string =>
  JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : x,
  );

const subnetsOf = (l: { subnet?: string | undefined; ipv6Subnet?: string | undefined }): Subnets => ({
  key: subnetKey(l),
  ...(l.subnet ? { subnet: l.subnet } : {}),
  ...(l.ipv6Subnet ? { ipv6Subnet: l.ipv6Subnet } : {}),
});

const sameIP = (a: string | null | undefined, b: string | undefined): boolean => {
  if (!a || !b || a === '0.0.0.0') return false;
  const x = parseIP(a);
  const y = parseIP(b);
  return !!x && !!y && x.family === y.family && x.value === y.value;
};

const expiredAt = (expiration: string, time: string | undefined): boolean => {
  if (time === undefined) return false;
  const e = Date.parse(expiration);
  const t = Date.parse(time);
  return Number.isFinite(e) && Number.isFinite(t) && e < t;
};

/** JSON-safe attrs: no undefined values (snapshots are JSON). */
const cleanAttrs = (a: LeaseAttrs): LeaseAttrs => ({
  PublicIP: a.PublicIP,
  PublicIPv6: a.PublicIPv6 ?? null,
  BackendType: a.BackendType,
  ...(a.BackendData !== undefined && a.BackendData !== null ? { BackendData: a.BackendData } : {}),
  ...(a.BackendV6Data !== undefined && a.BackendV6Data !== null ? { BackendV6Data: a.BackendV6Data } : {}),
});

const vtepOf = (data: unknown): string | undefined => {
  const r = parseVxlanBackendData(data);
  return E.isRight(r) ? r.right.vtepMac : undefined;
};

/** What differs between two remote leases of the same key, ignoring expiration. */
function changesOf(before: LeaseAttrs, after: LeaseAttrs): string[] {
  const out: string[] = [];
  const cmp = (name: string, a: unknown, b: unknown) => {
    if (canonical(a ?? null) !== canonical(b ?? null))
      out.push(
        `${name} ${a === undefined || a === null ? 'none' : typeof a === 'string' ? a : canonical(a)} -> ${b === undefined || b === null ? 'none' : typeof b === 'string' ? b : canonical(b)}`,
      );
  };
  cmp('PublicIP', before.PublicIP, after.PublicIP);
  cmp('PublicIPv6', before.PublicIPv6, after.PublicIPv6);
  cmp('BackendType', before.BackendType, after.BackendType);
  const [m0, m1] = [vtepOf(before.BackendData), vtepOf(after.BackendData)];
  if (
    m0 &&
    m1 &&
    m0 !== m1 &&
    canonical({ ...(before.BackendData as object), VtepMAC: 0 }) === canonical({ ...(after.BackendData as object), VtepMAC: 0 })
  ) {
    out.push(`VtepMAC ${m0} -> ${m1}`);
  } else cmp('BackendData', before.BackendData, after.BackendData);
  const [n0, n1] = [vtepOf(before.BackendV6Data), vtepOf(after.BackendV6Data)];
  if (
    n0 &&
    n1 &&
    n0 !== n1 &&
    canonical({ ...(before.BackendV6Data as object), VtepMAC: 0 }) === canonical({ ...(after.BackendV6Data as object), VtepMAC: 0 })
  ) {
    out.push(`IPv6 VtepMAC ${n0} -> ${n1}`);
  } else cmp('BackendV6Data', before.BackendV6Data, after.BackendV6Data);
  return out;
}

const seen = (l: Lease, before: RemoteLease | undefined): RemoteLeaseSeen | undefined => {
  const attrs = cleanAttrs(l.attrs);
  if (!before) return { type: 'RemoteLeaseSeen', data: { ...subnetsOf(l), attrs, expiration: l.expiration, change: 'appeared' } };
  const changes = changesOf(before.attrs, attrs);
  if (changes.length === 0) return undefined;
  return { type: 'RemoteLeaseSeen', data: { ...subnetsOf(l), attrs, expiration: l.expiration, change: 'changed', changes } };
};

const removed = (r: RemoteLease, reason: RemoteLeaseRemoved['data']['reason']): RemoteLeaseRemoved => ({
  type: 'RemoteLeaseRemoved',
  data: {
    key: r.key,
    ...(r.subnet ? { subnet: r.subnet } : {}),
    ...(r.ipv6Subnet ? { ipv6Subnet: r.ipv6Subnet } : {}),
    publicIP: r.attrs.PublicIP,
    reason,
  },
});

const lost = (o: OwnLease, reason: string): SubnetLeaseLost => ({
  type: 'SubnetLeaseLost',
  data: { key: o.key, ...(o.subnet ? { subnet: o.subnet } : {}), ...(o.ipv6Subnet ? { ipv6Subnet: o.ipv6Subnet } : {}), reason },
});

const validLease = (l: Lease): E.Either<string, Lease> => {
  if (!l.subnet && !l.ipv6Subnet) return E.left(`lease of ${l.attrs.PublicIP}: neither subnet nor ipv6Subnet is set`);
  return E.right(l);
};

// ---- decide -------------------------------------------------------------------------------------------

/** decide over the store's view of the state (feltd's transaction). */
export function decideNodeIn(command: NodeCommand, view: NodeView): E.Either<string, NodeEvent[]> {
  const time = command.metadata?.time;
  const state = view.header;
  const ownKey = state.ownLease?.key;
  switch (command.type) {
    case 'LoadConfig':
      return E.right(
        state.config && canonical(state.config) === canonical(command.data.config)
          ? []
          : [{ type: 'ConfigLoaded', data: { config: command.data.config } }],
      );

    case 'ObserveLeases': {
      const own = command.data.own;
      const live = new Map<string, Lease>();
      const expired = new Set<string>();
      for (const l of command.data.snapshot.leases) {
        const v = validLease(l);
        if (E.isLeft(v)) return v;
        const key = subnetKey(l);
        if (key === ownKey || sameIP(l.attrs.PublicIP, own) || sameIP(l.attrs.PublicIPv6 ?? undefined, own)) continue;
        if (expiredAt(l.expiration, time)) {
          expired.add(key);
          live.delete(key);
        } else {
          live.set(key, l);
          expired.delete(key);
        }
      }
      // Leases that do not fit the network config, or overlap this node's subnet or another lease, are refused:
      // never remote nodes (core/flannel/trust.ts).
      const refused = new Set<string>();
      if (state.config) {
        const s = screenLeases({
          config: state.config,
          leases: [...live.values()],
          own: state.ownLease,
          isKnown: (k) => view.get(k) !== undefined,
        });
        for (const r of s.refused) {
          live.delete(r.key);
          refused.add(r.key);
        }
      }
      const events: NodeEvent[] = [];
      for (const r of view.all()) {
        if (!live.has(r.key))
          events.push(removed(r, expired.has(r.key) ? 'expired' : r.key === ownKey ? 'ours' : refused.has(r.key) ? 'refused' : 'gone'));
      }
      for (const [key, l] of [...live].sort(([a], [b]) => (a < b ? -1 : 1))) {
        const e = seen(l, view.get(key));
        if (e) events.push(e);
      }
      return E.right(events);
    }

    case 'ApplyLeaseEvents': {
      // The net effect of the batch per key (its last event), diffed against the state: replaying a batch
      // changes nothing, and a lease added and removed within one batch leaves no trace.
      const own = command.data.own;
      const last = new Map<string, LeaseEvent>();
      for (const ev of command.data.events) {
        const v = validLease(ev.lease);
        if (E.isLeft(v)) return v;
        const key = subnetKey(ev.lease);
        last.delete(key);
        last.set(key, ev);
      }
      // Added leases that do not fit are refused (trust.ts); against the known ones only where two valid leases
      // can overlap without sharing a key (dual stack: the same IPv4 subnet with another IPv6 one).
      const refused = new Set<string>();
      if (state.config) {
        const added = [...last.values()].flatMap((ev) =>
          ev.type === 'added' &&
          subnetKey(ev.lease) !== ownKey &&
          !sameIP(ev.lease.attrs.PublicIP, own) &&
          !sameIP(ev.lease.attrs.PublicIPv6 ?? undefined, own)
            ? [ev.lease]
            : [],
        );
        if (added.length) {
          const dual = state.config.enableIPv4 && state.config.enableIPv6;
          const s = screenLeases({
            config: state.config,
            leases: added,
            own: state.ownLease,
            ...(dual ? { known: view.all() } : {}),
            isKnown: (k) => view.get(k) !== undefined,
          });
          for (const r of s.refused) refused.add(r.key);
        }
      }
      const events: NodeEvent[] = [];
      for (const [key, ev] of last) {
        if (refused.has(key)) {
          const before = view.get(key);
          if (before) events.push(removed(before, 'refused'));
          continue;
        }
        if (key === ownKey) {
          // Our own lease: renewals are recorded by RecordOwnLease; its removal is a revocation.
          if (ev.type === 'removed' && state.ownLease) events.push(lost(state.ownLease, 'revoked: removed from the lease store'));
          continue;
        }
        if (sameIP(ev.lease.attrs.PublicIP, own) || sameIP(ev.lease.attrs.PublicIPv6 ?? undefined, own)) continue;
        const before = view.get(key);
        if (ev.type === 'removed' || expiredAt(ev.lease.expiration, time)) {
          if (before) events.push(removed(before, ev.type === 'removed' ? 'removed' : 'expired'));
          continue;
        }
        const e = seen(ev.lease, before);
        if (e) events.push(e);
      }
      return E.right(events);
    }

    case 'RecordOwnLease': {
      const v = validLease(command.data.lease);
      if (E.isLeft(v)) return v;
      const l = v.right;
      const key = subnetKey(l);
      const attrs = cleanAttrs(l.attrs);
      const vtepMac = command.data.vtepMac ? parseMac(command.data.vtepMac) : vtepOf(attrs.BackendData);
      const vtepMacV6 = command.data.vtepMacV6 ? parseMac(command.data.vtepMacV6) : vtepOf(attrs.BackendV6Data);
      if (command.data.vtepMac && !vtepMac) return E.left(`RecordOwnLease: vtepMac "${command.data.vtepMac}" is not a MAC address`);
      if (command.data.vtepMacV6 && !vtepMacV6) return E.left(`RecordOwnLease: vtepMacV6 "${command.data.vtepMacV6}" is not a MAC address`);
      const data: SubnetLeased['data'] = {
        ...subnetsOf(l),
        publicIP: attrs.PublicIP,
        ...(attrs.PublicIPv6 ? { publicIPv6: attrs.PublicIPv6 } : {}),
        backendType: attrs.BackendType,
        ...(vtepMac ? { vtepMac } : {}),
        ...(vtepMacV6 ? { vtepMacV6 } : {}),
        expiration: l.expiration,
        renewal: ownKey === key,
      };
      const o = state.ownLease;
      if (o) {
        const { since: _s, ...was } = o;
        const { renewal: _r, ...now } = data;
        if (canonical(was) === canonical(now)) return E.right([]);
      }
      const events: NodeEvent[] = [];
      if (o && o.key !== key) events.push(lost(o, `replaced by ${key}`));
      const r = view.get(key);
      if (r) events.push(removed(r, 'ours'));
      events.push({ type: 'SubnetLeased', data });
      return E.right(events);
    }

    case 'LoseOwnLease':
      return E.right(state.ownLease ? [lost(state.ownLease, command.data.reason ?? 'lost')] : []);

    default: {
      const never: never = command;
      return never;
    }
  }
}

/** decide over a folded state. */
export const decide = (command: NodeCommand, state: NodeState): E.Either<string, NodeEvent[]> => decideNodeIn(command, nodeView(state));

// ---- evolve -------------------------------------------------------------------------------------------

// The one fold is the table's row changes below: evolve, evolveAll (batches, feltd's cache, replay) and the
// store's rows all follow them (tableProjection, foldTable in core/events.ts). Remote leases a batch does not
// touch keep their identity (desired.ts caches its parse of each lease by identity).

const remoteOf = (event: Stored<RemoteLeaseSeen>, before: RemoteLease | undefined): RemoteLease => {
  const { key, attrs, expiration } = event.data;
  return {
    key,
    ...(event.data.subnet ? { subnet: event.data.subnet } : {}),
    ...(event.data.ipv6Subnet ? { ipv6Subnet: event.data.ipv6Subnet } : {}),
    attrs,
    expiration,
    since: before ? before.since : event.time,
    changed: event.time,
  };
};

/** What each event changes: the header (config, own lease) or one remote lease's row. */
const nodeTable: Table<NodeState, NodeHeader, RemoteLease, NodeEvent> = {
  initialHeader: () => ({ config: null, ownLease: null }),
  changes: (view, event): RowChange<NodeHeader, RemoteLease>[] => {
    const h = view.header;
    switch (event.type) {
      case 'ConfigLoaded':
        return [{ op: 'header', header: { ...h, config: event.data.config } }];
      case 'SubnetLeased': {
        const { renewal: _r, ...rest } = event.data;
        const since = h.ownLease && h.ownLease.key === rest.key ? h.ownLease.since : event.time;
        const out: RowChange<NodeHeader, RemoteLease>[] = [{ op: 'header', header: { ...h, ownLease: { ...rest, since } } }];
        if (view.get(rest.key)) out.push({ op: 'del', key: rest.key });
        return out;
      }
      case 'SubnetLeaseLost':
        return h.ownLease && h.ownLease.key === event.data.key ? [{ op: 'header', header: { ...h, ownLease: null } }] : [];
      case 'RemoteLeaseSeen':
        return [{ op: 'put', key: event.data.key, row: remoteOf(event, view.get(event.data.key)) }];
      case 'RemoteLeaseRemoved':
        return view.get(event.data.key) ? [{ op: 'del', key: event.data.key }] : [];
      default: {
        // Not a node event (a log written by something else): nothing to fold.
        const never: never = event;
        void never;
        return [];
      }
    }
  },
  assemble: (header, rows) => ({ config: header.config, ownLease: header.ownLease, remotes: rows }),
  split: (s) => ({ header: { config: s.config, ownLease: s.ownLease }, rows: s.remotes }),
};

export const nodeProjection = tableProjection('feltd-node@2', nodeTable);

export const { evolve, evolveAll } = nodeProjection;

/** A view over a folded state (pure callers, tests). */
const nodeView = (state: NodeState): NodeView => stateView(nodeTable as Table<NodeState, NodeHeader, RemoteLease, never>, state);

// ---- queries ------------------------------------------------------------------------------------------

/** Remote leases in key order. */
export const remoteLeases = (s: NodeState): RemoteLease[] =>
  Object.values(s.remotes).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
