// The store's decision loop, written once for every event store (as emmett's DeciderCommandHandler): take
// the write lock, open the stream's state (a snapshot, or a table projection's rows), decide, append the
// events, fold them in, save, commit; roll back on a refusal, on "nothing to do" and on any failure. Each store
// implements only the small storage transaction below (the SQLite store over one write transaction or a
// savepoint of a group; the memory twin over a buffer applied at commit).

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../../core/cni/errors.ts';
import { fold, type Event, type Projection, type RowView, type Stored, type Table, type TableProjection } from '../../core/events.ts';
import type { Overlay } from './rows.ts';
import type { EventStore, Transacted, TransactedRows } from './types.ts';

/** A stream's state as opened inside the transaction, with the log's events not yet in it folded on top. */
interface Opened<V> {
  /** What the decider sees: the state, or the table's overlay of rows. */
  readonly view: V;
  /** Position of the last event folded into `view` (0: none). */
  readonly position: number;
  /** Events read from the log and folded in on opening (a stale snapshot or table). */
  readonly replayed: readonly Stored<Event>[];
}

/** A whole-state projection opened in the transaction; `save` writes its snapshot. */
export interface OpenedState<S> extends Opened<S> {
  /** Inside the transaction: write the snapshot at `position`; returns what to remember once committed. */
  save(state: S, position: number): () => void;
}

/** The OpenedState of a loaded stream, whose snapshot `save` writes. */
export const openedState = <S>(
  loaded: { readonly state: S; readonly position: number; readonly replayed: readonly Stored<Event>[] },
  save: (state: S, position: number) => () => void,
): OpenedState<S> => ({
  view: loaded.state,
  position: loaded.position,
  replayed: loaded.replayed,
  save,
});

/** A table projection opened in the transaction; `save` writes the rows its overlay changed and the header. */
export interface OpenedTable<H, R> extends Opened<Overlay<H, R>> {
  save(position: number): () => void;
}

/** The storage transaction one decision runs in: what each event store implements. */
export interface StorageTx {
  /**
   * Take the write lock for a decision on `stream` (throws when it stays taken); returns what ends the attempt,
   * called once whether it committed or not (drops the raised priority).
   */
  begin(stream: string): () => void;
  /** Append one event to the stream inside the transaction, with its position and its data as stored. */
  append(stream: string, event: Event, time: string): Stored<Event>;
  commit(): void;
  /** Undo the transaction (refusal, nothing to do, failure): nothing of it stays. */
  rollback(): void;
  /** A failure thrown inside the attempt, as the Left returned (or thrown again). */
  failed(e: unknown): CniError;
  openState<S>(stream: string, p: Projection<S, Event>): OpenedState<S>;
  openTable<H, R>(stream: string, name: string, table: Table<unknown, H, R, never>): OpenedTable<H, R>;
  /** A failed attempt on a table: forget what was read of it (its cached rows may be the rolled-back ones). */
  forgetTable(stream: string, name: string): void;
  /** A table projection's whole state from its overlay (the memory twin copies it, as a JSON round trip). */
  assemble<S, H, R>(table: Table<S, H, R, never>, overlay: Overlay<H, R>): S;
  /** A state handed back to the caller (the memory twin copies it). */
  own<T>(state: T): T;
}

interface Decided<O> {
  readonly opened: O;
  readonly position: number;
  readonly events: Stored<Event>[];
}

/**
 * The one decision loop: lock, open, decide, append, `save` (fold the events in and write them), commit,
 * then remember. A Left from `decide` rolls back and is returned; so is "no events and nothing replayed".
 */
function decideIn<O extends Opened<unknown>>(
  tx: StorageTx,
  stream: string,
  open: () => O,
  decide: (o: O) => E.Either<CniError, readonly Event[]>,
  save: (o: O, events: readonly Stored<Event>[], position: number) => () => void,
  time: string,
  forget: () => void = () => {},
): E.Either<CniError, Decided<O>> {
  try {
    const end = tx.begin(stream);
    try {
      const opened = open();
      const decision = decide(opened);
      if (E.isLeft(decision) || (decision.right.length === 0 && opened.replayed.length === 0)) {
        tx.rollback();
        return E.map(() => ({ opened, position: opened.position, events: [] }))(decision);
      }
      let position = opened.position;
      const events: Stored<Event>[] = [];
      for (const e of decision.right) {
        const stored = tx.append(stream, e, time);
        position = stored.position;
        events.push(stored);
      }
      const remember = save(opened, events, position);
      tx.commit();
      remember();
      return E.right({ opened, position, events });
    } catch (e) {
      forget();
      tx.rollback();
      throw e;
    } finally {
      end();
    }
  } catch (e) {
    return E.left(tx.failed(e));
  }
}

/** The table of a table projection, as the loop handles every table (its event type erased). */
export const tableOf = <S, H, R, Ev extends Event>(p: TableProjection<S, H, R, Ev>): Table<S, H, R, never> =>
  p.table as Table<S, H, R, never>;

/** `transact` and `transactRows` of an event store, over its storage transaction. */
export function decisions(tx: StorageTx): Pick<EventStore, 'transact' | 'transactRows'> {
  const onTable = <H, R>(
    stream: string,
    name: string,
    table: Table<unknown, H, R, never>,
    decide: (o: OpenedTable<H, R>) => E.Either<CniError, readonly Event[]>,
    time: string,
  ): E.Either<CniError, Decided<OpenedTable<H, R>>> =>
    decideIn(
      tx,
      stream,
      () => tx.openTable(stream, name, table),
      decide,
      (o, events, position) => {
        for (const e of events) o.view.apply(e);
        return o.save(position);
      },
      time,
      () => tx.forgetTable(stream, name),
    );

  return {
    transact<S, Ev extends Event>(
      stream: string,
      p: Projection<S, Ev>,
      decide: (state: S) => E.Either<CniError, readonly Ev[]>,
      meta: { readonly time: string },
    ): E.Either<CniError, Transacted<S, Ev>> {
      const whole = p as Projection<S, Event>;
      const decideState = decide as (state: S) => E.Either<CniError, readonly Event[]>;
      if (p.table) {
        const table = tableOf(p as TableProjection<S, unknown, unknown, Ev>);
        // The decider reads every row: the whole state, assembled from the overlay.
        let before: S | undefined;
        return E.map((d: Decided<OpenedTable<unknown, unknown>>) => ({
          state: d.events.length ? tx.own(fold(whole, d.events, before as S)) : (before as S),
          position: d.position,
          events: d.events as Stored<Ev>[],
        }))(
          onTable(
            stream,
            p.name,
            table as Table<unknown, unknown, unknown, never>,
            (o) => decideState((before = tx.assemble(table, o.view))),
            meta.time,
          ),
        );
      }
      // The state saved with the events (undefined: nothing was saved, the opened state stands).
      let saved: { readonly state: S } | undefined;
      return E.map((d: Decided<OpenedState<S>>) => ({
        state: saved ? saved.state : d.opened.view,
        position: d.position,
        events: d.events as Stored<Ev>[],
      }))(
        decideIn(
          tx,
          stream,
          () => tx.openState(stream, whole),
          (o) => decideState(o.view),
          (o, events, position) => {
            saved = { state: fold(whole, events, o.view) };
            return o.save(saved.state, position);
          },
          meta.time,
        ),
      );
    },

    transactRows<S, H, R, Ev extends Event>(
      stream: string,
      p: TableProjection<S, H, R, Ev>,
      decide: (view: RowView<H, R>) => E.Either<CniError, readonly Ev[]>,
      meta: { readonly time: string },
    ): E.Either<CniError, TransactedRows<Ev>> {
      return E.map((d: Decided<OpenedTable<H, R>>) => ({
        position: d.position,
        events: d.events as Stored<Ev>[],
        replayed: d.opened.replayed as Stored<Ev>[],
      }))(onTable(stream, p.name, tableOf(p) as Table<unknown, H, R, never>, (o) => decide(o.view), meta.time));
    },
  };
}
