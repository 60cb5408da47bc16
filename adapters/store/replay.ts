// Replay streams from the log itself (not their snapshots), in pages: to rebuild or verify a snapshot, and for
// `felt replay`. The log is scanned once, page by page from one read transaction, and each page's events are
// folded per stream in batches (Projection.evolveAll where there is one), so a replay of a million events
// holds one batch in memory and pays one state copy per batch, not per event.

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../../core/cni/errors.ts';
import { fold, type Event, type Projection, type Stored, type StoredEvent } from '../../core/events.ts';
import type { EventStore, Loaded } from './types.ts';

/** Events read before they are folded (in one evolveAll per stream). */
const FOLD_BATCH = 10_000;

export interface ReplayOptions {
  /** Events per page read (default: the store's). */
  readonly chunk?: number;
  /** Stop after this position. */
  readonly toPosition?: number;
  /**
   * Stop at the first event recorded after this time (ISO 8601 UTC, compared as text): the stream as it stood
   * at that time. Events are appended in time order, so that is every event recorded at or before it.
   */
  readonly at?: string;
}

export interface Replayed<S> extends Loaded<S> {
  /** How many events were folded. */
  readonly events: number;
}

/** What to fold a stream with, and which event types its projection knows (others are left out). */
export interface Folder {
  readonly projection: Projection<unknown, Event>;
  readonly types?: ReadonlySet<string>;
}

/**
 * Fold every stream under `streamPrefix` (all when undefined; or exactly `stream`) that `folderOf` knows.
 * Streams it does not know are counted in `unknown` (by stream: events seen), not folded.
 */
export function replayStreams(
  store: EventStore,
  select: { readonly stream?: string; readonly streamPrefix?: string },
  folderOf: (stream: string) => Folder | undefined,
  opts: ReplayOptions = {},
): E.Either<CniError, { readonly streams: ReadonlyMap<string, Replayed<unknown>>; readonly unknown: ReadonlyMap<string, number> }> {
  interface Acc {
    folder: Folder;
    state: unknown;
    position: number;
    events: number;
    done: boolean;
    /** Read, not folded yet. */
    pending: StoredEvent[];
  }
  const accs = new Map<string, Acc | null>();
  const unknown = new Map<string, number>();
  const at = opts.at;
  const single = select.stream !== undefined;
  // Events are folded in batches larger than a page: a batch costs one copy of the state (evolveAll), a
  // page is sized for reading.
  let pending = 0;
  const flush = (): void => {
    for (const acc of accs.values()) {
      if (!acc || acc.pending.length === 0) continue;
      acc.state = fold(acc.folder.projection, acc.pending as Stored<Event>[], acc.state);
      acc.pending = [];
    }
    pending = 0;
  };
  const scanned = store.scan(
    {
      ...(select.stream !== undefined ? { stream: select.stream } : {}),
      ...(select.streamPrefix !== undefined ? { streamPrefix: select.streamPrefix } : {}),
      ...(opts.toPosition !== undefined ? { toPosition: opts.toPosition } : {}),
    },
    (page) => {
      for (const e of page) {
        let acc = accs.get(e.stream);
        if (acc === undefined) {
          const folder = folderOf(e.stream);
          acc = folder ? { folder, state: folder.projection.initialState(), position: 0, events: 0, done: false, pending: [] } : null;
          accs.set(e.stream, acc);
        }
        if (acc === null) {
          if (at === undefined || e.time <= at) unknown.set(e.stream, (unknown.get(e.stream) ?? 0) + 1);
          continue;
        }
        if (acc.done) continue;
        if (at !== undefined && e.time > at) {
          acc.done = true;
          continue;
        }
        acc.position = e.position;
        acc.events++;
        if (acc.folder.types && !acc.folder.types.has(e.type)) continue;
        acc.pending.push(e);
        if (++pending >= FOLD_BATCH) flush();
      }
      // One stream that reached its time: nothing later matters.
      return !(single && [...accs.values()].every((a) => a === null || a.done));
    },
    opts.chunk !== undefined ? { pageSize: opts.chunk } : {},
  );
  if (E.isLeft(scanned)) return scanned;
  flush();
  const streams = new Map<string, Replayed<unknown>>();
  for (const [stream, acc] of [...accs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (acc) streams.set(stream, { state: acc.state, position: acc.position, events: acc.events });
  }
  return E.right({ streams, unknown });
}

/** One stream, folded from its first event (the initial state when it has none). */
export function replay<S, Ev extends Event>(
  store: EventStore,
  stream: string,
  projection: Projection<S, Ev>,
  opts: ReplayOptions = {},
): E.Either<CniError, Loaded<S>> {
  const r = replayCount(store, stream, projection, opts);
  return E.map(({ state, position }: Replayed<S>) => ({ state, position }))(r);
}

/** As `replay`, with the number of events folded. */
export function replayCount<S, Ev extends Event>(
  store: EventStore,
  stream: string,
  projection: Projection<S, Ev>,
  opts: ReplayOptions = {},
  types?: ReadonlySet<string>,
): E.Either<CniError, Replayed<S>> {
  const folder: Folder = { projection: projection as unknown as Projection<unknown, Event>, ...(types ? { types } : {}) };
  const r = replayStreams(store, { stream }, (s) => (s === stream ? folder : undefined), opts);
  if (E.isLeft(r)) return r;
  const got = r.right.streams.get(stream);
  return E.right((got as Replayed<S> | undefined) ?? { state: projection.initialState(), position: 0, events: 0 });
}
