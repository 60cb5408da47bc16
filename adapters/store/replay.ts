// Replay a stream from the log in chunks: to rebuild or verify a snapshot, and for `felt replay` later.

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../../core/cni/errors.ts';
import { fold, type Event, type Projection, type Stored } from '../../core/events.ts';
import type { EventStore, Loaded } from './types.ts';

export function replay<S, Ev extends Event>(
  store: EventStore,
  stream: string,
  projection: Projection<S, Ev>,
  opts: { readonly chunk?: number; readonly toPosition?: number } = {},
): E.Either<CniError, Loaded<S>> {
  const chunk = opts.chunk ?? 1000;
  let state = projection.initialState();
  let position = 0;
  for (;;) {
    const page = store.read({ stream, fromPosition: position, limit: chunk });
    if (E.isLeft(page)) return page;
    const events = page.right.filter((e) => opts.toPosition === undefined || e.position <= opts.toPosition);
    state = fold(projection, events as unknown as Stored<Ev>[], state);
    if (events.length) position = events[events.length - 1]!.position;
    if (page.right.length < chunk || events.length < page.right.length) return E.right({ state, position });
  }
}
