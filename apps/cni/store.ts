// felt's event log as one CNI call uses it: bridge's attachment records and host-local's allocations live in
// the same `<dataDir>/felt.db`, and one call (bridge ADD with host-local in-process) writes both. Within a
// call (`withCallStores`, which the dispatcher wraps every command in) a dataDir's store is opened once and
// shared, so better-sqlite3 is loaded and the file opened once, and closed (one checkpoint) when the call
// ends. Outside a call, every open is its own, as before. The store module is imported on first use only.

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../../core/cni/errors.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import { traceMark } from '../../adapters/kernel/exec.ts';

let depth = 0;
const open = new Map<string, EventStore>();

/** The same store with a `close` that leaves it to the end of the call. */
const shared = (s: EventStore): EventStore => ({
  transact: (stream, projection, decide, meta) => s.transact(stream, projection, decide, meta),
  load: (stream, projection) => s.load(stream, projection),
  read: (query) => s.read(query),
  streams: (prefix) => s.streams(prefix),
  close: () => undefined,
});

/** Open the SQLite event store under `dataDir`: once per call, shared by every plugin the call runs. */
export async function openCallStore(dataDir: string): Promise<E.Either<CniError, EventStore>> {
  const have = open.get(dataDir);
  if (have) return E.right(shared(have));
  traceMark(`open ${dataDir}`);
  const opened = (await import('../../adapters/store/sqlite.ts')).openSqliteStore(dataDir);
  traceMark('opened');
  if (E.isLeft(opened) || depth === 0) return opened;
  open.set(dataDir, opened.right);
  return E.right(shared(opened.right));
}

/** Run one CNI call; the stores it opened are closed when the last call running in this process ends. */
export async function withCallStores<A>(f: () => Promise<A>): Promise<A> {
  depth++;
  try {
    return await f();
  } finally {
    if (--depth === 0) {
      for (const s of open.values()) s.close();
      open.clear();
    }
  }
}
