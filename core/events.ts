// The event envelope shared by all of felt. A decider emits new events `{ type, data }`; the store records
// them with a global position, the stream they belong to and the time the app passed in (the core never
// reads a clock). State is a fold of recorded events: `evolve` sees the envelope, so it may keep times.

/** A new event, as `decide` emits it. Names are past tense (`AddressAllocated`); data is plain JSON. */
export interface Event<T extends string = string, D = unknown> {
  readonly type: T;
  readonly data: D;
}

/** An event as the log holds it. */
export interface StoredEvent<E extends Event = Event> {
  /** Global, strictly increasing across all streams (1, 2, ...). */
  readonly position: number;
  /** e.g. `ipam/<network>`. */
  readonly stream: string;
  readonly type: E['type'];
  readonly data: E['data'];
  /** ISO 8601, passed in by the app with the command. */
  readonly time: string;
}

/** Narrow a stored event by its type while keeping the envelope. */
export type Stored<E extends Event> = E extends Event ? StoredEvent<E> : never;

/**
 * How a stream's state is kept: a fold of its events. `name` identifies the fold in the snapshot table;
 * change it (e.g. `ipam@2`) when `evolve` or the state shape changes, and the store rebuilds from the log.
 * The state must be plain JSON (no bigint, Map or undefined-as-value) because snapshots are stored as JSON.
 */
export interface Projection<S, E extends Event = Event> {
  readonly name: string;
  readonly initialState: () => S;
  readonly evolve: (state: S, event: Stored<E>) => S;
  /**
   * Optional: fold many events in one step, equal to folding them one by one with `evolve`. A projection
   * whose state grows large (thousands of remote leases) gives one so that a batch costs one copy, not one
   * copy per event.
   */
  readonly evolveAll?: (state: S, events: readonly Stored<E>[]) => S;
  /**
   * Optional: keep the state as a table (one row per allocation, per lease) plus a small header, so that a
   * transaction writes only the rows its events change instead of the whole state. Such a projection is made
   * by `tableProjection`: its `evolve` and `evolveAll` are `table.changes` folded (`foldTable`), so an event's
   * effect is written once, and the stored rows equal the fold of the log (test/core/projection-table.test.ts).
   */
  readonly table?: Table<S, any, any, E>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

// ---- table projections ----------------------------------------------------------------------------------

/** One change an event makes to a table projection. */
export type RowChange<H, R> =
  | { readonly op: 'put'; readonly key: string; readonly row: R }
  | { readonly op: 'del'; readonly key: string }
  | { readonly op: 'header'; readonly header: H };

/**
 * What a decider sees of a table projection: the header, point lookups, the secondary index, a count, and (for
 * full passes and GC only) every row. A store answers these inside its write transaction, from the rows.
 */
export interface RowView<H, R> {
  readonly header: H;
  get(key: string): R | undefined;
  /** Rows whose `table.index` is `value`, in key order. */
  find(value: string): R[];
  /** Number of rows (kept by the store, not counted). */
  count(): number;
  /** Every row, in key order: a full read. */
  all(): R[];
}

export interface Table<S, H, R, E extends Event = Event> {
  readonly initialHeader: () => H;
  /** The changes one event makes, given the rows before it: the one definition of what the event does (evolve folds it). */
  readonly changes: (view: RowView<H, R>, event: Stored<E>) => readonly RowChange<H, R>[];
  /** The secondary lookup value of a row (e.g. its container and ifname), or undefined for none. */
  readonly index?: (row: R) => string | undefined;
  /** The whole state from the header and the rows (for `load` and readers). */
  readonly assemble: (header: H, rows: Readonly<Record<string, R>>) => S;
  /** The header and rows of a whole state (the inverse of assemble, for views over a folded state). */
  readonly split: (state: S) => { readonly header: H; readonly rows: Readonly<Record<string, R>> };
}

/** A projection whose state is kept as a table. */
export interface TableProjection<S, H, R, E extends Event = Event> extends Projection<S, E> {
  readonly table: Table<S, H, R, E>;
}

const byKey = <R>(a: readonly [string, R], b: readonly [string, R]): number => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/** A view over a whole state in memory (pure deciders over a folded state, tests). Lookups by index scan. */
export function stateView<S, H, R>(table: Table<S, H, R, never>, state: S): RowView<H, R> {
  const { header, rows } = table.split(state);
  const entries = (): [string, R][] => Object.entries(rows).sort(byKey);
  return {
    header,
    get: (key) => (Object.prototype.hasOwnProperty.call(rows, key) ? rows[key] : undefined),
    find: (value) =>
      entries()
        .filter(([, r]) => table.index?.(r) === value)
        .map(([, r]) => r),
    count: () => Object.keys(rows).length,
    all: () => entries().map(([, r]) => r),
  };
}

/** Commands carry the time and other identity from the app, never from the core. */
export interface CommandMeta {
  readonly time: string;
}

/** Fold events onto a state (replay). Chunking does not matter: fold(fold(s, a), b) = fold(s, a ++ b). */
export const fold = <S, E extends Event>(p: Projection<S, E>, events: readonly Stored<E>[], from: S = p.initialState()): S =>
  p.evolveAll ? p.evolveAll(from, events) : events.reduce((s, e) => p.evolve(s, e), from);

/** Give new events an envelope, as a store would: for pure tests and previews of a decision. */
export const stamp = <E extends Event>(stream: string, events: readonly E[], time: string, firstPosition: number): Stored<E>[] =>
  events.map((e, i) => ({ position: firstPosition + i, stream, type: e.type, data: e.data, time }) as unknown as Stored<E>);

/**
 * Fold events onto a whole state through a table's `changes`: one shallow copy of the rows per batch, and none
 * of the header; rows the batch does not touch keep their identity, and a batch that changes nothing returns
 * `state` itself. It is the `evolve` (a batch of one) and `evolveAll` of every table projection
 * (`tableProjection`), so a cached state of 10,000 remote leases follows one event at the cost of one copy.
 */
export function foldTable<S, H, R, E extends Event>(table: Table<S, H, R, E>, state: S, events: readonly Stored<E>[]): S {
  if (events.length === 0) return state;
  const { header, rows } = table.split(state);
  let h = header;
  let headerChanged = false;
  // The rows, copied on the first change and then written in place (a batch costs one copy, not a Map of
  // pending changes merged at the end); rows added minus rows deleted, so the count is taken only when asked.
  let next: Record<string, R> | undefined;
  let added = 0;
  const current = (): Readonly<Record<string, R>> => next ?? rows;
  const get = (k: string): R | undefined => {
    const r = current();
    return Object.prototype.hasOwnProperty.call(r, k) ? r[k] : undefined;
  };
  const sorted = (): [string, R][] => Object.entries(current()).sort(byKey);
  const view: RowView<H, R> = {
    get header() {
      return h;
    },
    get,
    find: (value) =>
      sorted()
        .filter(([, r]) => table.index?.(r) === value)
        .map(([, r]) => r),
    count: () => Object.keys(rows).length + added,
    all: () => sorted().map(([, r]) => r),
  };
  for (const e of events) {
    for (const c of table.changes(view, e)) {
      if (c.op === 'header') {
        h = c.header;
        headerChanged = true;
      } else if (c.op === 'put') {
        if (get(c.key) === undefined) added++;
        (next ??= { ...rows })[c.key] = c.row;
      } else if (get(c.key) !== undefined) {
        added--;
        delete (next ??= { ...rows })[c.key];
      }
    }
  }
  if (next === undefined) return headerChanged ? table.assemble(h, rows) : state;
  return table.assemble(h, next);
}

/**
 * A projection kept as a table, with its one fold: the initial state is the table's initial header and no
 * rows, and `evolve` and `evolveAll` fold the table's `changes` (`foldTable`). A new event type is written
 * once, in `changes`.
 */
export const tableProjection = <S, H, R, E extends Event>(
  name: string,
  table: Table<S, H, R, E>,
): TableProjection<S, H, R, E> & { readonly evolveAll: (state: S, events: readonly Stored<E>[]) => S } => ({
  name,
  initialState: () => table.assemble(table.initialHeader(), {}),
  evolve: (state, event) => foldTable(table, state, [event]),
  evolveAll: (state, events) => foldTable(table, state, events),
  table,
});
