// The narrow interface every event store implements (SQLite for the executables, memory for tests), in
// the spirit of host-local's backend.Store: plugins see only this.

import type * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../../core/cni/errors.ts';
import type { Event, Projection, RowView, Stored, StoredEvent, TableProjection } from '../../core/events.ts';

export interface ReadQuery {
  /** Exactly this stream. */
  readonly stream?: string;
  /** Streams starting with this (e.g. `ipam/`). */
  readonly streamPrefix?: string;
  /** Events after this position (exclusive). */
  readonly fromPosition?: number;
  /** Events up to this position (inclusive). */
  readonly toPosition?: number;
  /**
   * Events recorded at or after this time (inclusive). Times are compared as text, which orders the ISO 8601
   * UTC times felt records (`toISOString()`, e.g. 2024-01-01T00:00:01.000Z); pass the bound in that form.
   */
  readonly since?: string;
  /** Events recorded at or before this time (inclusive), compared as `since` is. */
  readonly until?: string;
  /** Only events of these types (an empty list matches nothing). */
  readonly types?: readonly string[];
  readonly limit?: number;
}

/** An event as it was recorded elsewhere (an export), to be appended with a new position. */
export interface RecordedEvent {
  readonly stream: string;
  readonly type: string;
  readonly data: unknown;
  readonly time: string;
}

export interface Loaded<S> {
  readonly state: S;
  /** Position of the last event folded into `state` (0: none). */
  readonly position: number;
}

export interface Transacted<S, E extends Event> extends Loaded<S> {
  /** The events appended, with their positions; empty when the decision was "nothing to do". */
  readonly events: readonly Stored<E>[];
}

export interface TransactedRows<E extends Event> {
  /** Position of the last event folded into the table (0: none). */
  readonly position: number;
  /** The events appended, with their positions; empty when the decision was "nothing to do". */
  readonly events: readonly Stored<E>[];
  /**
   * Events of the stream that were in the log but not yet in the table (written by a process that did not
   * keep it, or a table being rebuilt), folded in before `decide`: a caller that caches the state (feltd)
   * reloads it when this is not empty.
   */
  readonly replayed: readonly Stored<E>[];
}

export interface EventStore {
  /**
   * Run `f`, whose transactions (transact, transactRows) become savepoints of one write transaction: each
   * decision's refusal or failure rolls back its own writes, the rest commit together (one commit for many
   * calls). Left when the whole transaction failed (then nothing `f` did is stored, whatever its results said).
   * Stores without it (the memory twin) run each transaction on its own.
   */
  readonly group?: <A>(f: () => A) => E.Either<CniError, A>;
  /**
   * The Decider loop in one write transaction: load the stream's state (snapshot + any later events), run
   * `decide`, append its events, evolve and save the snapshot, commit. Concurrent callers (other processes)
   * serialize here. A Left from `decide` rolls back and is returned unchanged; storage failures are
   * Left too (code 11 when the database stayed locked, 5 otherwise).
   */
  transact<S, E extends Event>(
    stream: string,
    projection: Projection<S, E>,
    decide: (state: S) => E.Either<CniError, readonly E[]>,
    meta: { readonly time: string },
  ): E.Either<CniError, Transacted<S, E>>;
  /**
   * `transact` for a table projection, deciding over a view of its rows instead of the whole state: the
   * decider's lookups read single rows inside the write transaction, and the commit writes only the rows the
   * new events change (plus the small header). `transact` works on table projections too (it reads every row).
   */
  transactRows<S, H, R, E extends Event>(
    stream: string,
    projection: TableProjection<S, H, R, E>,
    decide: (view: RowView<H, R>) => E.Either<CniError, readonly E[]>,
    meta: { readonly time: string },
  ): E.Either<CniError, TransactedRows<E>>;
  /** A read-only look at a table projection through its view (point lookups; nothing written). */
  view<S, H, R, E extends Event, A>(
    stream: string,
    projection: TableProjection<S, H, R, E>,
    f: (view: RowView<H, R>) => E.Either<CniError, A>,
  ): E.Either<CniError, A>;
  /** Current state of a stream, read-only (a table projection's whole state, assembled from its rows). */
  load<S, E extends Event>(stream: string, projection: Projection<S, E>): E.Either<CniError, Loaded<S>>;
  /** The log, oldest first. */
  read(query?: ReadQuery): E.Either<CniError, readonly StoredEvent[]>;
  /**
   * The log, oldest first, in pages of at most `pageSize` events (default 1,000), all from one read
   * transaction (one moment of the log, whatever writers do meanwhile), without holding the whole log in
   * memory. `onPage` returns `false` to stop early. For replays and exports of large logs.
   */
  scan(
    query: ReadQuery,
    onPage: (events: readonly StoredEvent[]) => boolean | void,
    opts?: { readonly pageSize?: number },
  ): E.Either<CniError, void>;
  /** Position of the newest event (0: empty log); cheap, for following the log. */
  lastPosition(): E.Either<CniError, number>;
  /**
   * Append events recorded elsewhere (an import), in order, keeping their streams, types, data and times, with
   * new positions: all or nothing, in one transaction. Writes no snapshot: `load` folds the appended events
   * onto whatever snapshot a stream has. Returns the positions given to the first and last event (0, 0 for none).
   */
  append(events: readonly RecordedEvent[]): E.Either<CniError, { readonly first: number; readonly last: number }>;
  /** Streams that have a snapshot, optionally under a prefix (cheap: does not scan the log). */
  streams(prefix?: string): E.Either<CniError, readonly string[]>;
  close(): void;
}
