// felt's event log as one CNI call uses it: bridge's attachment records and host-local's allocations live in
// the same `<dataDir>/felt.db`, and one call (bridge ADD with host-local in-process) writes both. Within a
// call (`withCallStores`, which the dispatcher wraps every command in) a dataDir's store is opened once and
// shared, so better-sqlite3 is loaded and the file opened once, and closed (one checkpoint) when the call
// ends, or earlier (`closeCallStoresSoon`). A handle stays usable after its store was closed: its next use
// opens the store again. Outside a call, every open is its own, as before. The store module is imported on
// first use only.

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../../core/cni/errors.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import { traceMark } from '../../adapters/kernel/exec.ts';

type Sqlite = typeof import('../../adapters/store/sqlite.ts');

let sqlite: Sqlite | undefined;
let depth = 0;
const open = new Map<string, EventStore>();

function current(dataDir: string): E.Either<CniError, EventStore> {
  const have = open.get(dataDir);
  if (have) return E.right(have);
  traceMark(`open ${dataDir}`);
  const opened = sqlite!.openSqliteStore(dataDir);
  traceMark('opened');
  if (E.isRight(opened)) open.set(dataDir, opened.right);
  return opened;
}

function closeAll(): void {
  for (const s of open.values()) s.close();
  if (open.size) traceMark('closed');
  open.clear();
}

const use = <A>(dataDir: string, what: string, f: (s: EventStore) => E.Either<CniError, A>): E.Either<CniError, A> => {
  const s = current(dataDir);
  if (E.isLeft(s)) return s;
  try {
    const r = f(s.right);
    traceMark(what);
    return r;
  } finally {
    if (depth === 0) closeAll();
  }
};

/** The call's store of `dataDir`, whose `close` leaves closing to the call. */
const handle = (dataDir: string): EventStore => ({
  transact: (stream, projection, decide, meta) => use(dataDir, `transacted ${stream}`, (s) => s.transact(stream, projection, decide, meta)),
  transactRows: (stream, projection, decide, meta) => use(dataDir, `transacted ${stream}`, (s) => s.transactRows(stream, projection, decide, meta)),
  view: (stream, projection, f) => use(dataDir, `viewed ${stream}`, (s) => s.view(stream, projection, f)),
  load: (stream, projection) => use(dataDir, `loaded ${stream}`, (s) => s.load(stream, projection)),
  read: (query) => use(dataDir, 'read', (s) => s.read(query)),
  scan: (query, onPage, opts) => use(dataDir, 'scanned', (s) => s.scan(query, onPage, opts)),
  lastPosition: () => use(dataDir, 'last position', (s) => s.lastPosition()),
  append: (events) => use(dataDir, 'appended', (s) => s.append(events)),
  streams: (prefix) => use(dataDir, 'streams', (s) => s.streams(prefix)),
  close: () => undefined,
});

/** Open the SQLite event store under `dataDir`: once per call, shared by every plugin the call runs. */
export async function openCallStore(dataDir: string): Promise<E.Either<CniError, EventStore>> {
  sqlite ??= await import('../../adapters/store/sqlite.ts');
  if (depth === 0) return sqlite.openSqliteStore(dataDir);
  return E.map(() => handle(dataDir))(current(dataDir));
}

/**
 * The call is done with its stores for now: close them (closing checkpoints the log: fsyncs) at the next
 * turn of the event loop, i.e. once the caller has started its next processes (the kernel apply), so that
 * the checkpoint runs while they do.
 */
export function closeCallStoresSoon(): void {
  if (open.size > 0) setImmediate(closeAll);
}

/** Run one CNI call; the stores it opened are closed when the last call running in this process ends. */
export async function withCallStores<A>(f: () => Promise<A>): Promise<A> {
  depth++;
  try {
    return await f();
  } finally {
    if (--depth === 0) closeAll();
  }
}
