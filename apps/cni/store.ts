// felt's event log as CNI calls use it: bridge's attachment records and host-local's allocations live in the
// same `<dataDir>/felt.db`, and one call (bridge ADD with host-local in-process) writes both. Every call has a
// `CallStores` (in its Ctx; no module-level state, so calls running at once in one process never share a
// scope by accident):
//
//  - `callStores()`, one per call of a plugin executable: a dataDir's store is opened once and shared by every
//    plugin the call runs, so better-sqlite3 is loaded and the file opened once, and closed (one checkpoint)
//    when the call ends (`end`), or earlier (`closeSoon`). A handle stays usable after its store was closed:
//    its next use opens the store again.
//  - `warmStores()`, one per feltd serving CNI: the calls in flight share the stores (one open per dataDir
//    however many calls use it at once), keyed by dataDir, at most `max` of them (the least recently used is
//    closed), and they are closed (checkpointed: the log on disk is as an executable leaves it, no WAL kept
//    growing, nothing held open on an idle data dir) once no call has been running for `idleMs` (default 2 s:
//    calls that follow each other keep them open, and a reopen costs a call a few milliseconds of its ~15; a
//    data dir left alone is released soon after, so that it can be remounted read-only, and a full disk is met
//    by the next call's write, not hidden by a WAL kept warm).
//    A store whose file was removed or replaced since it was opened (a dataDir deleted and made again) is
//    opened afresh, and one whose use failed (a full disk, an I/O error) is closed: the next use opens it
//    again, as an executable would, instead of inheriting a connection left in whatever state the failure left it.
//    better-sqlite3 is synchronous, so two calls' transactions never interleave in the process; SQLite's own
//    locking orders them against other processes (executables running standalone beside the daemon).
//    Decisions of calls waiting at once on one dataDir (`batched`) are group-committed: at the end of the turn
//    one transaction runs them in order, each a savepoint of its own (its refusal rolls back its writes only) and
//    each call gets its own result; when that transaction cannot commit, each decision runs again in its own
//    transaction, so one call's failure is never another's.
//
// The store module is imported on first use only.

import { statSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, type CniError } from '../../core/cni/errors.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import { traceMark } from '../../adapters/kernel/exec.ts';

type Sqlite = typeof import('../../adapters/store/sqlite.ts');

let sqlite: Sqlite | undefined; // the loaded module only: no call's state
const loadSqlite = async (): Promise<Sqlite> => (sqlite ??= await import('../../adapters/store/sqlite.ts'));

/** The stores one CNI call uses. */
export interface CallStores {
  /** The store under `dataDir`; its `close` leaves closing to the scope. */
  readonly open: (dataDir: string) => Promise<E.Either<CniError, EventStore>>;
  /**
   * The call is done with its stores for now: close them (closing checkpoints the log: fsyncs) at the next turn
   * of the event loop, i.e. once the caller has started its next processes (the kernel apply), so that the
   * checkpoint runs while they do. A later use opens them again.
   */
  readonly closeSoon: () => void;
  /** The call ended. */
  readonly end: () => void;
}

type Decision<A> = (s: EventStore) => E.Either<CniError, A>;

/** A store whose decisions may wait for others' to be committed with them (feltd's warm stores). */
interface Batching extends EventStore {
  readonly batch: <A>(f: Decision<A>) => Promise<E.Either<CniError, A>>;
}

/** Run `f` (one or more transactions on `s`): with the decisions of other calls waiting at once when `s` batches. */
export const batched = <A>(s: EventStore, f: Decision<A>): Promise<E.Either<CniError, A>> =>
  'batch' in s && typeof (s as Batching).batch === 'function' ? (s as Batching).batch(f) : Promise.resolve(f(s));

/** A handle whose every use goes through `use`, and whose `close` does nothing (the scope closes). */
const handle = (use: <A>(what: string, f: (s: EventStore) => E.Either<CniError, A>) => E.Either<CniError, A>): EventStore => ({
  transact: (stream, projection, decide, meta) => use(`transacted ${stream}`, (s) => s.transact(stream, projection, decide, meta)),
  transactRows: (stream, projection, decide, meta) => use(`transacted ${stream}`, (s) => s.transactRows(stream, projection, decide, meta)),
  view: (stream, projection, f) => use(`viewed ${stream}`, (s) => s.view(stream, projection, f)),
  load: (stream, projection) => use(`loaded ${stream}`, (s) => s.load(stream, projection)),
  read: (query) => use('read', (s) => s.read(query)),
  scan: (query, onPage, opts) => use('scanned', (s) => s.scan(query, onPage, opts)),
  lastPosition: () => use('last position', (s) => s.lastPosition()),
  append: (events) => use('appended', (s) => s.append(events)),
  streams: (prefix) => use('streams', (s) => s.streams(prefix)),
  close: () => undefined,
});

/** One call's stores: each dataDir opened once, all closed when the call ends. */
export function callStores(): CallStores {
  const open = new Map<string, EventStore>();
  let ended = false;
  const current = (dataDir: string): E.Either<CniError, EventStore> => {
    const have = open.get(dataDir);
    if (have) return E.right(have);
    traceMark(`open ${dataDir}`);
    const opened = sqlite!.openSqliteStore(dataDir);
    traceMark('opened');
    if (E.isRight(opened)) open.set(dataDir, opened.right);
    return opened;
  };
  const closeAll = (): void => {
    for (const s of open.values()) s.close();
    if (open.size) traceMark('closed');
    open.clear();
  };
  return {
    open: async (dataDir) => {
      await loadSqlite();
      const first = current(dataDir);
      if (E.isLeft(first)) return first;
      return E.right(
        handle((what, f) => {
          const s = current(dataDir);
          if (E.isLeft(s)) return s;
          try {
            const r = f(s.right);
            traceMark(what);
            return r;
          } finally {
            // A use after the call ended (a handle kept by mistake) does not leave the store open.
            if (ended) closeAll();
          }
        }),
      );
    },
    closeSoon: () => {
      if (open.size > 0) setImmediate(closeAll);
    },
    end: () => {
      ended = true;
      closeAll();
    },
  };
}

/** The file identity a warm store was opened on. */
const fileId = (dataDir: string): string | undefined => {
  try {
    const st = statSync(join(dataDir, 'felt.db'));
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
};

export interface WarmStores {
  /** A scope for one call: stores come from the daemon-lifetime cache and stay open after the call. */
  readonly scope: () => CallStores;
  /** How many stores are open. */
  readonly size: () => number;
  /** The dataDirs calls used, most recent last (at most `max`): what the status page reads. */
  readonly dataDirs: () => string[];
  /** Close every store (the daemon stops). */
  readonly close: () => void;
  /** Decisions run (`batched`), and the transactions they took. */
  readonly stats: () => { calls: number; transactions: number };
}

/** The daemon's stores: open across calls, keyed by dataDir, the least recently used closed beyond `max`. */
export function warmStores(max = 16, idleMs = 2000): WarmStores {
  const open = new Map<string, { store: EventStore; id: string | undefined }>();
  const used = new Set<string>();
  const get = (dataDir: string): E.Either<CniError, EventStore> => {
    used.delete(dataDir);
    used.add(dataDir);
    if (used.size > max) used.delete(used.values().next().value as string);
    const have = open.get(dataDir);
    if (have) {
      open.delete(dataDir);
      // Removed or replaced since it was opened: this handle would write into a file nobody reads.
      if (have.id !== undefined && have.id === fileId(dataDir)) {
        open.set(dataDir, have); // most recently used last
        return E.right(have.store);
      }
      have.store.close();
    }
    const opened = sqlite!.openSqliteStore(dataDir);
    if (E.isLeft(opened)) return opened;
    open.set(dataDir, { store: opened.right, id: fileId(dataDir) });
    while (open.size > max) {
      const [oldest, v] = open.entries().next().value as [string, { store: EventStore }];
      open.delete(oldest);
      v.store.close();
    }
    return opened;
  };
  const evict = (dataDir: string, store: EventStore): void => {
    if (open.get(dataDir)?.store !== store) return;
    open.delete(dataDir);
    store.close();
  };
  let active = 0;
  let idle: NodeJS.Timeout | undefined;
  const closeAll = (): void => {
    for (const v of open.values()) v.store.close();
    open.clear();
  };
  /** `f` on the store of `dataDir`, evicting it after a throw or a storage failure. */
  const checked = <A>(dataDir: string, s: EventStore, what: string, f: Decision<A>): E.Either<CniError, A> => {
    let r: E.Either<CniError, A>;
    try {
      r = f(s);
    } catch (e) {
      evict(dataDir, s);
      throw e;
    }
    // A storage failure (code 5): not a decision's refusal, which leaves the store as it was.
    if (E.isLeft(r) && r.left.code === ErrCode.IO) evict(dataDir, s);
    traceMark(what);
    return r;
  };
  let calls = 0;
  let transactions = 0;
  const queues = new Map<string, { f: Decision<unknown>; resolve: (r: E.Either<CniError, unknown>) => void }[]>();
  const flush = (dataDir: string): void => {
    const q = queues.get(dataDir) ?? [];
    queues.delete(dataDir);
    const one = (w: (typeof q)[number]): void => {
      calls++;
      transactions++;
      const s = get(dataDir);
      if (E.isLeft(s)) return w.resolve(s);
      try {
        w.resolve(checked(dataDir, s.right, 'decided', w.f));
      } catch (e) {
        w.resolve(E.left(cniError(ErrCode.Internal, `internal error in the event log: ${(e as Error)?.message ?? String(e)}`)));
      }
    };
    const s = get(dataDir);
    if (q.length === 1 || E.isLeft(s) || !s.right.group) return q.forEach(one);
    const store = s.right;
    const group = store.group!;
    const results = group(() =>
      q.map((w) => {
        try {
          return w.f(store);
        } catch (e) {
          return E.left(cniError(ErrCode.Internal, `internal error in the event log: ${(e as Error)?.message ?? String(e)}`));
        }
      }),
    );
    if (E.isLeft(results)) {
      // Nothing of the group is stored: each decision again, on its own, in a store opened afresh.
      evict(dataDir, store);
      return q.forEach(one);
    }
    calls += q.length;
    transactions++;
    traceMark(`decided ${q.length} at once`);
    if (results.right.some((r) => E.isLeft(r) && r.left.code === ErrCode.IO)) evict(dataDir, store);
    q.forEach((w, i) => w.resolve(results.right[i]!));
  };
  const batch = <A>(dataDir: string, f: Decision<A>): Promise<E.Either<CniError, A>> =>
    new Promise((resolve) => {
      let q = queues.get(dataDir);
      if (!q) {
        q = [];
        queues.set(dataDir, q);
        setImmediate(() => flush(dataDir));
      }
      q.push({ f, resolve: resolve as (r: E.Either<CniError, unknown>) => void });
    });
  const scope = (): CallStores => {
    active++;
    if (idle) clearTimeout(idle);
    idle = undefined;
    let ended = false;
    return {
      open: async (dataDir) => {
        await loadSqlite();
        const first = get(dataDir);
        if (E.isLeft(first)) return first;
        const h: Batching = {
          ...handle((what, f) => {
            const s = get(dataDir);
            return E.isLeft(s) ? s : checked(dataDir, s.right, what, f);
          }),
          batch: (f) => batch(dataDir, f),
        };
        return E.right(h);
      },
      closeSoon: () => undefined,
      end: () => {
        if (ended) return;
        ended = true;
        // The last call in flight ended: close once none has come for idleMs (a call that arrives keeps them).
        if (--active === 0) {
          idle = setTimeout(() => active === 0 && closeAll(), idleMs);
          idle.unref();
        }
      },
    };
  };
  return {
    scope,
    size: () => open.size,
    dataDirs: () => [...used],
    close: () => {
      if (idle) clearTimeout(idle);
      closeAll();
    },
    stats: () => ({ calls, transactions }),
  };
}
