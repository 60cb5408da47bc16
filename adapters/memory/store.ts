// The in-memory twin of the SQLite event store: same interface, same semantics (snapshots written with the
// events, nothing kept from a failed decision, JSON round trip of data and state), for core and plugin tests.

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../../core/cni/errors.ts';
import { fold, type Event, type Projection, type Stored, type StoredEvent } from '../../core/events.ts';
import type { EventStore, Loaded, ReadQuery, RecordedEvent, Transacted } from '../store/types.ts';

export interface MemoryStore extends EventStore {
  /** Every event, for assertions. */
  readonly events: readonly StoredEvent[];
  /** The raw snapshot of a stream, for assertions that it equals the fold of the log. */
  snapshot(name: string, stream: string): { position: number; state: unknown } | undefined;
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

  const loadIn = <S, Ev extends Event>(stream: string, p: Projection<S, Ev>): Loaded<S> & { rebuilt: boolean } => {
    const snap = snapshots.get(key(p.name, stream));
    let state = snap ? (JSON.parse(snap.state) as S) : p.initialState();
    let position = snap?.position ?? 0;
    const later = log.filter((e) => e.stream === stream && e.position > position).map((e) => roundTrip(e) as Stored<Ev>);
    if (later.length) {
      state = fold(p, later, state);
      position = later.at(-1)!.position;
    }
    return { state, position, rebuilt: later.length > 0 };
  };

  const store: MemoryStore = {
    get events() {
      return log;
    },
    snapshot(name, stream) {
      const s = snapshots.get(key(name, stream));
      return s ? { position: s.position, state: JSON.parse(s.state) as unknown } : undefined;
    },
    transact<S, Ev extends Event>(
      stream: string,
      p: Projection<S, Ev>,
      decide: (state: S) => E.Either<CniError, readonly Ev[]>,
      meta: { readonly time: string },
    ): E.Either<CniError, Transacted<S, Ev>> {
      const loaded = loadIn(stream, p);
      const decision = decide(loaded.state);
      if (E.isLeft(decision)) return decision;
      if (decision.right.length === 0 && !loaded.rebuilt) return E.right({ state: loaded.state, position: loaded.position, events: [] });
      let { state, position } = loaded;
      const events: Stored<Ev>[] = [];
      for (const e of decision.right) {
        position = (log.at(-1)?.position ?? 0) + 1 + events.length;
        events.push({ position, stream, type: e.type, data: roundTrip(e.data), time: meta.time } as Stored<Ev>);
      }
      state = fold(p, events, state);
      // Commit: append and snapshot together.
      log.push(...(events as StoredEvent[]));
      snapshots.set(key(p.name, stream), { position, state: JSON.stringify(state) });
      return E.right({ state, position, events });
    },
    load<S, Ev extends Event>(stream: string, p: Projection<S, Ev>): E.Either<CniError, Loaded<S>> {
      const { state, position } = loadIn(stream, p);
      return E.right({ state, position });
    },
    read(q: ReadQuery = {}): E.Either<CniError, readonly StoredEvent[]> {
      const out = log.filter(matches(q));
      return E.right(roundTrip(q.limit !== undefined ? out.slice(0, q.limit) : out));
    },
    scan(q: ReadQuery, onPage: (events: readonly StoredEvent[]) => boolean | void, opts: { readonly pageSize?: number } = {}): E.Either<CniError, void> {
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
      const stored = events.map((e, i): StoredEvent => ({ position: start + 1 + i, stream: e.stream, type: e.type, data: roundTrip(e.data), time: e.time }));
      log.push(...stored);
      return E.right(stored.length ? { first: start + 1, last: start + stored.length } : { first: 0, last: 0 });
    },
    streams(prefix = ''): E.Either<CniError, readonly string[]> {
      const all = new Set<string>();
      for (const k of snapshots.keys()) {
        const stream = k.slice(k.indexOf('\u0000') + 1);
        if (stream.startsWith(prefix)) all.add(stream);
      }
      return E.right([...all].sort());
    },
    close() {},
  };
  return store;
}
