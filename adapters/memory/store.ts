// The in-memory twin of the SQLite event store: same interface, same semantics (snapshots written with the
// events, nothing kept from a failed decision, JSON round trip of data and state; table projections kept as
// rows, written only where their events change them), for core and plugin tests.

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../../core/cni/errors.ts';
import {
  fold,
  type Event,
  type Projection,
  type RowView,
  type Stored,
  type StoredEvent,
  type Table,
  type TableProjection,
} from '../../core/events.ts';
import { Overlay, type RowSource } from '../store/rows.ts';
import { decisions, openedState, tableOf, type OpenedTable, type StorageTx } from '../store/loop.ts';
import type { EventStore, Loaded, ReadQuery, RecordedEvent } from '../store/types.ts';

export interface MemoryStore extends EventStore {
  /** Every event, for assertions. */
  readonly events: readonly StoredEvent[];
  /**
   * The raw snapshot of a stream, for assertions that it equals the fold of the log (a table projection's:
   * assembled from its stored rows).
   */
  snapshot(name: string, stream: string): { position: number; state: unknown } | undefined;
  /** A table projection's stored rows (JSON parsed), for assertions; undefined when it has none yet. */
  rows(name: string, stream: string): { position: number; header: unknown; rows: Record<string, unknown> } | undefined;
  /** Forget every table projection's rows and header, as if the tables were dropped (the log stays). */
  dropTables(): void;
}

/** A table projection's stored state: header, rows and count as JSON, as SQLite keeps them. */
interface StoredTable {
  position: number;
  header: string;
  count: number;
  readonly rows: Map<string, { readonly ix: string | undefined; readonly value: string }>;
  readonly table: Table<unknown, unknown, unknown, never>;
}

const roundTrip = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

/** The filter of a ReadQuery, as the SQLite store's WHERE (times compared as text). */
const matches =
  (q: ReadQuery) =>
  (e: StoredEvent): boolean =>
    e.position > (q.fromPosition ?? 0) &&
    (q.toPosition === undefined || e.position <= q.toPosition) &&
    (q.stream === undefined || e.stream === q.stream) &&
    (q.streamPrefix === undefined || e.stream.startsWith(q.streamPrefix)) &&
    (q.since === undefined || e.time >= q.since) &&
    (q.until === undefined || e.time <= q.until) &&
    (q.types === undefined || q.types.includes(e.type));

export function memoryStore(): MemoryStore {
  const log: StoredEvent[] = [];
  const snapshots = new Map<string, { position: number; state: string }>();
  const key = (name: string, stream: string): string => `${name}\u0000${stream}`;

  const loadIn = <S, Ev extends Event>(stream: string, p: Projection<S, Ev>): Loaded<S> & { replayed: Stored<Event>[] } => {
    const snap = snapshots.get(key(p.name, stream));
    let state = snap ? (JSON.parse(snap.state) as S) : p.initialState();
    let position = snap?.position ?? 0;
    const later = log.filter((e) => e.stream === stream && e.position > position).map((e) => roundTrip(e) as Stored<Event>);
    if (later.length) {
      state = fold(p, later as Stored<Ev>[], state);
      position = later.at(-1)!.position;
    }
    return { state, position, replayed: later };
  };

  const tables = new Map<string, StoredTable>();

  interface Opened<H, R> {
    readonly overlay: Overlay<H, R>;
    readonly position: number;
    readonly replayed: Stored<Event>[];
  }

  const openTable = <H, R>(stream: string, name: string, table: Table<unknown, H, R, never>): Opened<H, R> => {
    const t = tables.get(key(name, stream));
    const parse = (v: string): R => JSON.parse(v) as R;
    const base: RowSource<R> = {
      get: (k) => {
        const r = t?.rows.get(k);
        return r ? parse(r.value) : undefined;
      },
      find: (value) => (t ? [...t.rows].filter(([, r]) => r.ix === value).map(([k, r]) => [k, parse(r.value)] as [string, R]) : []),
      all: () => (t ? [...t.rows].map(([k, r]) => [k, parse(r.value)] as [string, R]) : []),
    };
    const overlay = new Overlay<H, R>(table, base, t ? (JSON.parse(t.header) as H) : table.initialHeader(), t?.count ?? 0);
    const position = t?.position ?? 0;
    const replayed = log.filter((e) => e.stream === stream && e.position > position).map((e) => roundTrip(e) as Stored<Event>);
    for (const e of replayed) overlay.apply(e);
    return { overlay, position, replayed };
  };

  // The storage transaction of the decision loop (loop.ts): the events appended are kept aside and join the
  // log at commit, so a refusal or a failure leaves nothing.
  let pending: StoredEvent[] = [];
  const tx: StorageTx = {
    begin() {
      pending = [];
      return () => {};
    },
    append(stream, e, time) {
      const stored = { position: (log.at(-1)?.position ?? 0) + 1 + pending.length, stream, type: e.type, data: roundTrip(e.data), time };
      pending.push(stored);
      return stored as Stored<Event>;
    },
    commit() {
      log.push(...pending);
      pending = [];
    },
    rollback() {
      pending = [];
    },
    // No storage to fail: what a decider throws reaches the caller, as it would without a store.
    failed(e) {
      throw e;
    },
    openState: (stream, p) =>
      openedState(loadIn(stream, p), (next, at) => {
        const json = JSON.stringify(next);
        return () => snapshots.set(key(p.name, stream), { position: at, state: json });
      }),
    openTable<H, R>(stream: string, name: string, table: Table<unknown, H, R, never>): OpenedTable<H, R> {
      const o = openTable<H, R>(stream, name, table);
      return {
        view: o.overlay,
        position: o.replayed.at(-1)?.position ?? o.position,
        replayed: o.replayed,
        save(at) {
          // Serialize first: a row JSON cannot hold fails the whole transaction, as in SQLite.
          const writes = [...o.overlay.pending].map(
            ([k, r]) => [k, r === null ? null : { ix: table.index?.(r), value: JSON.stringify(r) }] as const,
          );
          const header = JSON.stringify(o.overlay.header);
          return () => {
            const t: StoredTable = tables.get(key(name, stream)) ?? {
              position: 0,
              header,
              count: 0,
              rows: new Map(),
              table: table as Table<unknown, unknown, unknown, never>,
            };
            for (const [k, w] of writes) {
              if (w === null) t.rows.delete(k);
              else t.rows.set(k, w);
            }
            t.position = at;
            t.header = header;
            t.count = o.overlay.rows;
            tables.set(key(name, stream), t);
          };
        },
      };
    },
    forgetTable() {},
    assemble: (table, overlay) => assembled(table, overlay),
    own: roundTrip,
  };

  const assembled = <S, H, R>(table: Table<S, H, R, never>, o: Overlay<H, R>): S =>
    roundTrip(table.assemble(o.header, Object.fromEntries(o.entries())));

  const store: MemoryStore = {
    rows(name, stream) {
      const t = tables.get(key(name, stream));
      if (!t) return undefined;
      return {
        position: t.position,
        header: JSON.parse(t.header) as unknown,
        rows: Object.fromEntries([...t.rows].map(([k, r]) => [k, JSON.parse(r.value) as unknown])),
      };
    },
    dropTables() {
      tables.clear();
    },
    ...decisions(tx),
    view<S, H, R, Ev extends Event, A>(
      stream: string,
      p: TableProjection<S, H, R, Ev>,
      f: (view: RowView<H, R>) => E.Either<CniError, A>,
    ): E.Either<CniError, A> {
      return f(openTable<H, R>(stream, p.name, tableOf(p) as Table<unknown, H, R, never>).overlay);
    },
    get events() {
      return log;
    },
    snapshot(name, stream) {
      const t = tables.get(key(name, stream));
      if (t) {
        const rows = Object.fromEntries([...t.rows].map(([k, r]) => [k, JSON.parse(r.value) as unknown]));
        return { position: t.position, state: roundTrip(t.table.assemble(JSON.parse(t.header) as unknown, rows)) };
      }
      const s = snapshots.get(key(name, stream));
      return s ? { position: s.position, state: JSON.parse(s.state) as unknown } : undefined;
    },
    load<S, Ev extends Event>(stream: string, p: Projection<S, Ev>): E.Either<CniError, Loaded<S>> {
      const table = p.table as Table<S, unknown, unknown, never> | undefined;
      if (table) {
        const o = openTable(stream, p.name, table as Table<unknown, unknown, unknown, never>);
        return E.right({ state: assembled(table, o.overlay), position: o.replayed.at(-1)?.position ?? o.position });
      }
      const { state, position } = loadIn(stream, p);
      return E.right({ state, position });
    },
    read(q: ReadQuery = {}): E.Either<CniError, readonly StoredEvent[]> {
      const out = log.filter(matches(q));
      return E.right(roundTrip(q.limit !== undefined ? out.slice(0, q.limit) : out));
    },
    scan(
      q: ReadQuery,
      onPage: (events: readonly StoredEvent[]) => boolean | void,
      opts: { readonly pageSize?: number } = {},
    ): E.Either<CniError, void> {
      const pageSize = Math.max(1, opts.pageSize ?? 1000);
      // The log as it is now (one moment, as the SQLite store's read transaction), paged.
      const all = log.filter(matches(q));
      const picked = q.limit !== undefined ? all.slice(0, q.limit) : all;
      for (let i = 0; i < picked.length; i += pageSize) if (onPage(roundTrip(picked.slice(i, i + pageSize))) === false) break;
      return E.right(undefined);
    },
    lastPosition(): E.Either<CniError, number> {
      return E.right(log.at(-1)?.position ?? 0);
    },
    append(events: readonly RecordedEvent[]): E.Either<CniError, { readonly first: number; readonly last: number }> {
      const start = log.at(-1)?.position ?? 0;
      // Serialize everything before appending anything: all or nothing, as one transaction.
      const stored = events.map((e, i): StoredEvent => ({
        position: start + 1 + i,
        stream: e.stream,
        type: e.type,
        data: roundTrip(e.data),
        time: e.time,
      }));
      log.push(...stored);
      return E.right(stored.length ? { first: start + 1, last: start + stored.length } : { first: 0, last: 0 });
    },
    streams(prefix = ''): E.Either<CniError, readonly string[]> {
      const all = new Set<string>();
      for (const k of [...snapshots.keys(), ...tables.keys()]) {
        const stream = k.slice(k.indexOf('\u0000') + 1);
        if (stream.startsWith(prefix)) all.add(stream);
      }
      return E.right([...all].sort());
    },
    close() {},
  };
  return store;
}
