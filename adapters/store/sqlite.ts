// The event log in SQLite: `<dataDir>/felt.db`, WAL, one write transaction per decision. Every CNI call
// opens it, so opening is one pragma read when the schema is current, and statements are prepared once.
//
//   events(position INTEGER PRIMARY KEY AUTOINCREMENT, stream, type, data JSON, time)
//   snapshots(name, stream, position, state JSON)   -- one row per (projection, stream), written in the
//                                                      same transaction as the events it folds
//   projection_rows(name, stream, key, ix, value JSON) -- table projections (Projection.table): one row per
//                                                      allocation / lease; their snapshot holds only the
//                                                      header and the row count
//
// Loading a stream reads its snapshot plus the events after it (normally none), so it does not grow with
// history; a snapshot that is missing (a new projection name) is rebuilt from the log on first use. A table
// projection's transaction reads the rows its decider looks up and writes the rows its events change, so
// recording one lease does not rewrite the other 10,000.

import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, isCniError, type CniError } from '../../core/cni/errors.ts';
import {
  fold,
  type Event,
  type Projection,
  type RowView,
  type Stored,
  type StoredEvent,
  type Table,
  type TableProjection,
} from '../../core/events.ts';
import { Overlay, type RowSource, type TableHead } from './rows.ts';
import { decisions, openedState, tableOf, type OpenedTable, type StorageTx } from './loop.ts';
import type { EventStore, Loaded, ReadQuery, RecordedEvent } from './types.ts';
import { beginImmediate, boost, CorruptStore, ensureSchema, isBusy, NewerSchema, parseStored, refuseNewerSchema } from './sqlite-schema.ts';

const trace = !!process.env['FELT_TRACE'];
export const DB_FILE = 'felt.db';
/** 2: projection_rows (table projections). A version-1 file gains the table; its tables rebuild from the log. */
const SCHEMA_VERSION = 2;
/** 50 plugin processes queueing for the write lock finish well within this. */
export const DEFAULT_BUSY_TIMEOUT_MS = 30_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  position INTEGER PRIMARY KEY AUTOINCREMENT,
  stream   TEXT NOT NULL,
  type     TEXT NOT NULL,
  data     TEXT NOT NULL,
  time     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_stream ON events (stream, position);
CREATE TABLE IF NOT EXISTS snapshots (
  name     TEXT NOT NULL,
  stream   TEXT NOT NULL,
  position INTEGER NOT NULL,
  state    TEXT NOT NULL,
  PRIMARY KEY (name, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_rows (
  name     TEXT NOT NULL,
  stream   TEXT NOT NULL,
  key      TEXT NOT NULL,
  ix       TEXT,
  value    TEXT NOT NULL,
  PRIMARY KEY (name, stream, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS projection_rows_by_ix ON projection_rows (name, stream, ix);
`;

export interface SqliteOptions {
  readonly busyTimeoutMs?: number;
  /** Open read-only (the CLI): never creates the file or the schema. */
  readonly readonly?: boolean;
}

interface Row {
  position: number;
  stream: string;
  type: string;
  data: string;
  time: string;
}

/** A row as `raw()` statements return it: position, stream, type, data, time. */
type RawRow = [number, string, string, string, string];

/** Events per page of `scan`. */
const PAGE = 1000;

/**
 * The SELECT of a ReadQuery, without LIMIT; `position > ?` is always the first condition and parameter (scan
 * moves it from page to page).
 */
function selectOf(q: ReadQuery): { sql: string; params: unknown[] } {
  const where: string[] = ['position > ?'];
  const params: unknown[] = [q.fromPosition ?? 0];
  if (q.toPosition !== undefined) {
    where.push('position <= ?');
    params.push(q.toPosition);
  }
  if (q.stream !== undefined) {
    where.push('stream = ?');
    params.push(q.stream);
  }
  if (q.streamPrefix !== undefined) {
    where.push('substr(stream, 1, ?) = ?');
    params.push(q.streamPrefix.length, q.streamPrefix);
  }
  if (q.since !== undefined) {
    where.push('time >= ?');
    params.push(q.since);
  }
  if (q.until !== undefined) {
    where.push('time <= ?');
    params.push(q.until);
  }
  if (q.types !== undefined) {
    // One parameter whatever the number of types, so the statement is prepared once per shape.
    where.push('type IN (SELECT value FROM json_each(?))');
    params.push(JSON.stringify(q.types));
  }
  return { sql: `SELECT position, stream, type, data, time FROM events WHERE ${where.join(' AND ')} ORDER BY position`, params };
}

const toEvent = (r: Row): StoredEvent => ({
  position: r.position,
  stream: r.stream,
  type: r.type,
  data: parseStored(String(r.data), () => `data of event ${r.position} (${r.stream})`),
  time: r.time,
});

/** Fold events read from the log; a fold that throws means events felt did not write (CorruptStore). */
function foldStored<T>(stream: string, from: number, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof CorruptStore) throw e;
    throw new CorruptStore(
      `corrupt stream ${stream}: its events after position ${from} cannot be folded: ${(e as Error)?.message ?? String(e)}`,
    );
  }
}

function storageError(file: string, e: unknown): CniError {
  if (isCniError(e)) return e;
  const msg = (e as Error)?.message ?? String(e);
  if (isBusy(e)) return cniError(ErrCode.TryAgainLater, `event store ${file} is locked: ${msg}`);
  if (e instanceof NewerSchema) return cniError(ErrCode.IO, `event store ${msg}`);
  const code = (e as { code?: unknown })?.code;
  // Anything not from SQLite or the file system was thrown by a decide/evolve: a bug, not an I/O error.
  if (typeof code === 'string') return cniError(ErrCode.IO, `event store ${file}: ${msg}`);
  return cniError(ErrCode.Internal, `event store ${file}: transaction failed: ${msg}`);
}

/**
 * mkdir -p by hand: Node 20's recursive mkdirSync never returns for some paths (e.g. under /proc), and a
 * plugin must fail, not hang.
 */
function ensureDir(dir: string): void {
  if (existsSync(dir)) return;
  const parent = dirname(dir);
  if (parent !== dir) ensureDir(parent);
  try {
    mkdirSync(dir);
  } catch (e) {
    // Another process (a plugin beside feltd, or another plugin) made it since existsSync looked.
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(dir).isDirectory()) throw e;
  }
}

const hasSchema = (db: Database.Database): boolean =>
  (db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name IN ('events', 'snapshots')").get() as { n: number })
    .n === 2;

const hasRowsTable = (db: Database.Database): boolean =>
  (db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'projection_rows'").get() as { n: number }).n === 1;

export function openSqliteStore(dataDir: string, opts: SqliteOptions = {}): E.Either<CniError, EventStore> {
  const file = join(dataDir, DB_FILE);
  const timeout = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  let db: Database.Database;
  try {
    if (opts.readonly) {
      db = new Database(file, { readonly: true, fileMustExist: true, timeout });
      try {
        refuseNewerSchema(db, SCHEMA_VERSION);
      } catch (e) {
        db.close();
        throw e;
      }
      // A writer killed before its first commit leaves a file without felt's tables (the schema is created
      // in one transaction, so it is all there or not at all): that log is empty, not an error.
      if (!hasSchema(db)) {
        db.close();
        db = new Database(':memory:');
        db.exec(SCHEMA);
      }
    } else {
      ensureDir(dataDir);
      db = new Database(file, { timeout });
      try {
        ensureSchema(db, SCHEMA, SCHEMA_VERSION, Date.now() + timeout);
      } catch (e) {
        db.close();
        throw e;
      }
      // WAL + NORMAL: a commit survives a crash of the process (not of the machine) without an fsync.
      db.pragma('synchronous = NORMAL');
    }
  } catch (e) {
    return E.left(storageError(file, e));
  }
  // A reader of a version-1 file (no writer has opened it since) folds table projections from the log.
  let rows = true;
  try {
    rows = !opts.readonly || hasRowsTable(db);
  } catch (e) {
    db.close();
    return E.left(storageError(file, e));
  }
  return E.right(sqliteStore(db, file, rows, timeout));
}

/**
 * What this connection knows of one table projection's stored rows, valid while the stored snapshot is at
 * `position` (a long-lived writer such as feltd then reads each row once, not once per event). null: known
 * absent. `complete`: every stored row is in `rows`.
 */
interface RowCache {
  position: number;
  header: unknown;
  count: number;
  readonly rows: Map<string, unknown>;
  complete: boolean;
}

/** The SQLite store, with what tests of its caches read. */
export interface SqliteStore extends EventStore {
  /** Rows of table projections this connection keeps in memory (its row caches). */
  readonly cachedRows: () => number;
}

function sqliteStore(db: Database.Database, file: string, hasRows: boolean, busyTimeoutMs: number): SqliteStore {
  // Prepared on first use: a read-only CLI never prepares the write statements.
  const cache = new Map<string, Database.Statement>();
  const stmt = (sql: string): Database.Statement => {
    let s = cache.get(sql);
    if (!s) {
      s = db.prepare(sql);
      cache.set(sql, s);
    }
    return s;
  };
  const SNAPSHOT = 'SELECT position, state FROM snapshots WHERE name = ? AND stream = ?';
  const AFTER = 'SELECT position, stream, type, data, time FROM events WHERE stream = ? AND position > ? ORDER BY position';
  const APPEND = 'INSERT INTO events (stream, type, data, time) VALUES (?, ?, ?, ?)';
  const SAVE =
    'INSERT INTO snapshots (name, stream, position, state) VALUES (?, ?, ?, ?) ' +
    'ON CONFLICT (name, stream) DO UPDATE SET position = excluded.position, state = excluded.state';

  // The last snapshot this connection read or wrote, per projection and stream: when the stored snapshot is
  // still at that position (nobody else wrote), its state is reused instead of parsed again. States are never
  // mutated (evolve returns new ones), so sharing them is safe. A long-lived writer such as feltd then pays
  // for writing its snapshot, not for reading it back on every event.
  const snapshots = new Map<string, { position: number; state: unknown }>();
  const SNAPSHOT_POSITION = 'SELECT position FROM snapshots WHERE name = ? AND stream = ?';
  const TRANSACTION = [SNAPSHOT_POSITION, SNAPSHOT, AFTER, APPEND, SAVE, 'COMMIT', 'ROLLBACK'];

  const unboosted = (): void => undefined;
  // Inside `group` (one transaction for several decisions), each decision is a savepoint: its refusal or its
  // failure rolls back its own writes only, and nothing is durable before the group commits.
  let grouped = false;
  const begin = (): number => {
    if (!grouped) return beginImmediate(db, stmt('BEGIN IMMEDIATE'), Date.now() + busyTimeoutMs, busyTimeoutMs);
    stmt('SAVEPOINT felt_decision').run();
    return 0;
  };
  const commit = (): void => void (grouped ? stmt('RELEASE felt_decision') : stmt('COMMIT')).run();
  const rollback = (): void => {
    if (!grouped) return void stmt('ROLLBACK').run();
    stmt('ROLLBACK TO felt_decision').run();
    stmt('RELEASE felt_decision').run();
  };

  const loadIn = <S, Ev extends Event>(stream: string, p: Projection<S, Ev>): Loaded<S> & { replayed: Stored<Event>[] } => {
    const key = `${p.name}\u0000${stream}`;
    const at = stmt(SNAPSHOT_POSITION).get(p.name, stream) as { position: number } | undefined;
    const cached = snapshots.get(key);
    const snap =
      at && cached && cached.position === at.position
        ? { position: at.position, state: cached.state as S }
        : (() => {
            const row = stmt(SNAPSHOT).get(p.name, stream) as { position: number; state: string } | undefined;
            return row
              ? { position: row.position, state: parseStored<S>(String(row.state), () => `snapshot of ${stream} (${p.name})`) }
              : undefined;
          })();
    let state = snap ? snap.state : p.initialState();
    let position = snap?.position ?? 0;
    const later = (stmt(AFTER).all(stream, position) as Row[]).map((r) => toEvent(r) as Stored<Event>);
    if (later.length) {
      const from = state;
      state = foldStored(stream, position, () => fold(p, later as Stored<Ev>[], from));
      position = later.at(-1)!.position;
    }
    return { state, position, replayed: later };
  };

  // ---- table projections
  const ROW_GET = 'SELECT value FROM projection_rows WHERE name = ? AND stream = ? AND key = ?';
  // Without statistics the planner prefers a scan of the primary key's (name, stream) prefix: all the rows.
  const ROW_FIND = 'SELECT key, value FROM projection_rows INDEXED BY projection_rows_by_ix WHERE name = ? AND stream = ? AND ix = ?';
  const ROW_ALL = 'SELECT key, value FROM projection_rows WHERE name = ? AND stream = ?';
  const ROW_PUT =
    'INSERT INTO projection_rows (name, stream, key, ix, value) VALUES (?, ?, ?, ?, ?) ' +
    'ON CONFLICT (name, stream, key) DO UPDATE SET ix = excluded.ix, value = excluded.value';
  const ROW_DEL = 'DELETE FROM projection_rows WHERE name = ? AND stream = ? AND key = ?';
  const ROWS_CLEAR = 'DELETE FROM projection_rows WHERE name = ? AND stream = ?';
  const OLD_VERSIONS = 'DELETE FROM snapshots WHERE stream = ? AND substr(name, 1, ?) = ? AND name <> ?';
  const rowCaches = new Map<string, RowCache>();

  interface Opened<H, R> {
    readonly overlay: Overlay<H, R>;
    readonly cache: RowCache;
    /** No snapshot: rows left without one (a table dropped half-way) are ignored and cleared on commit. */
    readonly fresh: boolean;
    readonly replayed: Stored<Event>[];
  }

  /** Inside a transaction: the table's header, its rows on demand, and the events not yet in it folded on top. */
  const openTable = <H, R>(stream: string, name: string, table: Table<unknown, H, R, never>): Opened<H, R> => {
    const key = `${name}\u0000${stream}`;
    const snap = stmt(SNAPSHOT).get(name, stream) as { position: number; state: string } | undefined;
    let cache = rowCaches.get(key);
    if (!snap) cache = { position: 0, header: table.initialHeader(), count: 0, rows: new Map(), complete: true };
    else if (!cache || cache.position !== snap.position) {
      const head = parseStored<TableHead<H>>(String(snap.state), () => `snapshot of ${stream} (${name})`);
      cache = { position: snap.position, header: head.header, count: head.count, rows: new Map(), complete: false };
      rowCaches.set(key, cache);
    }
    const c = cache;
    const parse = (v: string): R => parseStored<R>(String(v), () => `row of ${stream} (${name})`);
    const base: RowSource<R> = {
      get(k) {
        if (c.rows.has(k)) return (c.rows.get(k) ?? undefined) as R | undefined;
        if (c.complete) return undefined;
        const row = stmt(ROW_GET).get(name, stream, k) as { value: string } | undefined;
        const r = row ? parse(row.value) : undefined;
        c.rows.set(k, r ?? null);
        return r;
      },
      find(value) {
        if (c.complete) return [...c.rows].filter(([, r]) => r !== null && table.index?.(r as R) === value) as [string, R][];
        const found = (stmt(ROW_FIND).all(name, stream, value) as { key: string; value: string }[]).map(
          (r) => [r.key, parse(r.value)] as [string, R],
        );
        for (const [k, r] of found) c.rows.set(k, r);
        return found;
      },
      all() {
        if (!c.complete) {
          c.rows.clear();
          for (const r of stmt(ROW_ALL).all(name, stream) as { key: string; value: string }[]) c.rows.set(r.key, parse(r.value));
          c.complete = true;
        }
        return [...c.rows].filter(([, r]) => r !== null) as [string, R][];
      },
    };
    const overlay = new Overlay<H, R>(table, base, c.header as H, c.count);
    const replayed = (stmt(AFTER).all(stream, c.position) as Row[]).map((r) => toEvent(r) as Stored<Event>);
    foldStored(stream, c.position, () => {
      for (const e of replayed) overlay.apply(e);
    });
    return { overlay, cache: c, fresh: !snap, replayed };
  };

  /** Inside the write transaction: write the changed rows and the header, then (after COMMIT) remember them. */
  const flushTable = <H, R>(
    stream: string,
    name: string,
    table: Table<unknown, H, R, never>,
    o: Opened<H, R>,
    position: number,
  ): (() => void) => {
    if (o.fresh) {
      stmt(ROWS_CLEAR).run(name, stream);
      // A table replacing an earlier version of the projection (ipam@1's whole-state snapshot, 3 MB for a node
      // stream) makes that snapshot dead weight: drop it. (An older felt opening the file again rebuilds it
      // from the log.)
      const at = name.lastIndexOf('@');
      if (at > 0) stmt(OLD_VERSIONS).run(stream, at + 1, name.slice(0, at + 1), name);
    }
    for (const [k, r] of o.overlay.pending) {
      if (r === null) stmt(ROW_DEL).run(name, stream, k);
      else stmt(ROW_PUT).run(name, stream, k, table.index?.(r) ?? null, JSON.stringify(r));
    }
    const head: TableHead<H> = { header: o.overlay.header, count: o.overlay.rows };
    stmt(SAVE).run(name, stream, position, JSON.stringify(head));
    return () => {
      const c = o.cache;
      c.position = position;
      c.header = o.overlay.header;
      c.count = o.overlay.rows;
      // A deleted row is forgotten, not remembered as absent: a long-lived writer (feltd) would otherwise keep
      // one entry per pod it ever served (attachments by container ID, allocations by address).
      for (const [k, r] of o.overlay.pending) {
        if (r === null) c.rows.delete(k);
        else c.rows.set(k, r);
      }
      rowCaches.set(`${name}\u0000${stream}`, c);
    };
  };

  // The storage transaction of the decision loop (loop.ts): one write transaction, or a savepoint of a group.
  let traced = '';
  let waited = 0;
  let held = 0;
  const tx: StorageTx = {
    begin(stream) {
      // Everything the transaction runs is prepared before taking the lock (the first prepare reads the
      // schema): under fifty concurrent ADDs on two cores the lock holder is often preempted, so the less it
      // does while holding the lock, the shorter the queue.
      for (const sql of TRANSACTION) stmt(sql);
      // IMMEDIATE takes the write lock up front, waited for in short jittered sleeps, and held at raised
      // priority (sqlite-schema.ts): two deciders never see the same state.
      waited = begin();
      held = trace ? performance.now() : 0;
      traced = stream;
      // A group's decisions run inside its transaction, raised once for all of them (group below).
      return grouped ? unboosted : boost();
    },
    append(stream, e, time) {
      const data = JSON.stringify(e.data);
      const info = stmt(APPEND).run(stream, e.type, data, time);
      return { position: Number(info.lastInsertRowid), stream, type: e.type, data: JSON.parse(data) as unknown, time } as Stored<Event>;
    },
    commit() {
      commit();
      if (trace)
        process.stderr.write(`# store ${traced}: lock wait ${waited.toFixed(1)} ms, held ${(performance.now() - held).toFixed(1)} ms\n`);
    },
    rollback() {
      if (db.inTransaction) rollback();
    },
    failed: (e) => storageError(file, e),
    openState: (stream, p) =>
      openedState(loadIn(stream, p), (next, at) => {
        stmt(SAVE).run(p.name, stream, at, JSON.stringify(next));
        return () => snapshots.set(`${p.name}\u0000${stream}`, { position: at, state: next });
      }),
    openTable<H, R>(stream: string, name: string, table: Table<unknown, H, R, never>): OpenedTable<H, R> {
      const o = openTable<H, R>(stream, name, table);
      return {
        view: o.overlay,
        position: o.replayed.at(-1)?.position ?? o.cache.position,
        replayed: o.replayed,
        save: (at) => flushTable(stream, name, table, o, at),
      };
    },
    forgetTable: (stream, name) => void rowCaches.delete(`${name}\u0000${stream}`),
    assemble: (table, overlay) => assembled(table, overlay),
    own: (state) => state,
  };

  /** A read transaction over a table projection (nothing is written, even when the table is behind the log). */
  const readTable = <S, H, R, A>(stream: string, p: Projection<S, Event>, table: Table<S, H, R, never>, f: (o: Opened<H, R>) => A): A => {
    if (!hasRows) {
      // A version-1 file opened read-only: fold the stream from the log (in one read transaction).
      return db.transaction(() => {
        const log = (stmt(AFTER).all(stream, 0) as Row[]).map((r) => toEvent(r) as Stored<Event>);
        const { header, rows } = table.split(fold(p, log));
        const entries = Object.entries(rows);
        const base: RowSource<R> = {
          get: (k) => (Object.prototype.hasOwnProperty.call(rows, k) ? rows[k] : undefined),
          find: (value) => entries.filter(([, r]) => table.index?.(r) === value),
          all: () => entries,
        };
        const overlay = new Overlay<H, R>(table as Table<unknown, H, R, never>, base, header, entries.length);
        const position = log.at(-1)?.position ?? 0;
        return f({
          overlay,
          cache: { position, header, count: entries.length, rows: new Map(), complete: true },
          fresh: true,
          replayed: [],
        });
      })();
    }
    return db.transaction(() => f(openTable<H, R>(stream, p.name, table as Table<unknown, H, R, never>)))();
  };

  const assembled = <S, H, R>(table: Table<S, H, R, never>, o: Overlay<H, R>): S =>
    table.assemble(o.header, Object.fromEntries(o.entries()));

  return {
    ...decisions(tx),

    group<A>(f: () => A): E.Either<CniError, A> {
      if (grouped) return E.right(f());
      const fail = (e: unknown): E.Either<CniError, A> => {
        grouped = false;
        try {
          if (db.inTransaction) stmt('ROLLBACK').run();
        } catch {
          // the connection is unusable: the caller closes it
        }
        // What the calls remembered was never committed.
        rowCaches.clear();
        snapshots.clear();
        return E.left(storageError(file, e));
      };
      try {
        for (const sql of TRANSACTION) stmt(sql);
        beginImmediate(db, stmt('BEGIN IMMEDIATE'), Date.now() + busyTimeoutMs, busyTimeoutMs);
      } catch (e) {
        return E.left(storageError(file, e));
      }
      grouped = true;
      // The whole group holds the write lock: raised once, not once per decision (three syscalls each).
      const unboost = boost();
      try {
        let out: A;
        try {
          out = f();
        } catch (e) {
          return fail(e);
        }
        try {
          stmt('COMMIT').run();
        } catch (e) {
          return fail(e);
        }
        grouped = false;
        return E.right(out);
      } finally {
        unboost();
      }
    },

    view<S, H, R, Ev extends Event, A>(
      stream: string,
      p: TableProjection<S, H, R, Ev>,
      f: (view: RowView<H, R>) => E.Either<CniError, A>,
    ): E.Either<CniError, A> {
      try {
        return readTable(stream, p as Projection<S, Event>, tableOf(p), (o) => f(o.overlay));
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    load<S, Ev extends Event>(stream: string, p: Projection<S, Ev>): E.Either<CniError, Loaded<S>> {
      const table = p.table as Table<S, unknown, unknown, never> | undefined;
      if (table) {
        try {
          return E.right(
            readTable(stream, p as Projection<S, Event>, table, (o) => ({
              state: assembled(table, o.overlay),
              position: o.replayed.at(-1)?.position ?? o.cache.position,
            })),
          );
        } catch (e) {
          return E.left(storageError(file, e));
        }
      }
      try {
        // One read transaction, so the snapshot and the events after it are from the same moment.
        const { state, position } = db.transaction(() => loadIn(stream, p))();
        return E.right({ state, position });
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    read(q: ReadQuery = {}): E.Either<CniError, readonly StoredEvent[]> {
      const { sql, params } = selectOf(q);
      const limit = q.limit !== undefined ? ' LIMIT ?' : '';
      try {
        const rows = stmt(`${sql}${limit}`).all(...params, ...(q.limit !== undefined ? [q.limit] : [])) as Row[];
        return E.right(rows.map(toEvent));
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    scan(
      q: ReadQuery,
      onPage: (events: readonly StoredEvent[]) => boolean | void,
      opts: { readonly pageSize?: number } = {},
    ): E.Either<CniError, void> {
      const pageSize = Math.max(1, opts.pageSize ?? PAGE);
      const { sql, params } = selectOf({ ...q, fromPosition: 0 });
      // Paged by position (the primary key, or events_by_stream for one stream): each page is an index range
      // scan from where the last one stopped. Rows come as arrays; small pages stay in the CPU caches and
      // die young (measured: 1,000 rows per page cost less than 10,000, and than one iterate()).
      // Its own statement (the comment makes the cache key differ from read()'s), as raw() changes it for good.
      const page = stmt(`/* scan */ ${sql} LIMIT ?`).raw(true);
      let left = q.limit ?? Infinity;
      let from = q.fromPosition ?? 0;
      try {
        db.transaction(() => {
          while (left > 0) {
            const rows = page.all(from, ...params.slice(1), Math.min(pageSize, left)) as RawRow[];
            if (rows.length === 0) return;
            const events: StoredEvent[] = new Array(rows.length);
            for (let i = 0; i < rows.length; i++) {
              const r = rows[i]!;
              events[i] = { position: r[0], stream: r[1], type: r[2], data: JSON.parse(r[3]) as unknown, time: r[4] };
            }
            from = rows[rows.length - 1]![0];
            left -= rows.length;
            if (onPage(events) === false || rows.length < pageSize) return;
          }
        })();
        return E.right(undefined);
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    lastPosition(): E.Either<CniError, number> {
      try {
        const row = stmt('SELECT max(position) AS p FROM events').get() as { p: number | null };
        return E.right(row.p ?? 0);
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    append(events: readonly RecordedEvent[]): E.Either<CniError, { readonly first: number; readonly last: number }> {
      try {
        return E.right(
          db
            .transaction(() => {
              let first = 0;
              let last = 0;
              const insert = stmt(APPEND);
              for (const e of events) {
                last = Number(insert.run(e.stream, e.type, JSON.stringify(e.data), e.time).lastInsertRowid);
                if (first === 0) first = last;
              }
              return { first, last };
            })
            .immediate(),
        );
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    streams(prefix = ''): E.Either<CniError, readonly string[]> {
      try {
        const rows = stmt('SELECT DISTINCT stream FROM snapshots WHERE substr(stream, 1, ?) = ? ORDER BY stream').all(
          prefix.length,
          prefix,
        ) as {
          stream: string;
        }[];
        return E.right(rows.map((r) => r.stream));
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    close(): void {
      if (db.open) db.close();
    },

    cachedRows: () => [...rowCaches.values()].reduce((n, c) => n + c.rows.size, 0),
  };
}
