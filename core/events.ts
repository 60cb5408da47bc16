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
