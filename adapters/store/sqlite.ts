// The event log in SQLite: `<dataDir>/felt.db`, WAL, one write transaction per decision. Every CNI call
// opens it, so opening is one pragma read when the schema is current, and statements are prepared once.
//
//   events(position INTEGER PRIMARY KEY AUTOINCREMENT, stream, type, data JSON, time)
//   snapshots(name, stream, position, state JSON)   -- one row per (projection, stream), written in the
//                                                      same transaction as the events it folds
//
// Loading a stream reads its snapshot plus the events after it (normally none), so it does not grow with
// history; a snapshot that is missing (a new projection name) is rebuilt from the log on first use.

import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, isCniError, type CniError } from '../../core/cni/errors.ts';
import { fold, type Event, type Projection, type Stored, type StoredEvent } from '../../core/events.ts';
import type { EventStore, Loaded, ReadQuery, Transacted } from './types.ts';
import { beginImmediate, boost, ensureSchema, isBusy } from './sqlite-schema.ts';

const trace = !!process.env['FELT_TRACE'];
export const DB_FILE = 'felt.db';
const SCHEMA_VERSION = 1;
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

const toEvent = (r: Row): StoredEvent => ({ position: r.position, stream: r.stream, type: r.type, data: JSON.parse(r.data) as unknown, time: r.time });

function storageError(file: string, e: unknown): CniError {
  if (isCniError(e)) return e;
  const msg = (e as Error)?.message ?? String(e);
  if (isBusy(e)) return cniError(ErrCode.TryAgainLater, `event store ${file} is locked: ${msg}`);
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
  mkdirSync(dir);
}

const hasSchema = (db: Database.Database): boolean =>
  (db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name IN ('events', 'snapshots')").get() as { n: number }).n === 2;

export function openSqliteStore(dataDir: string, opts: SqliteOptions = {}): E.Either<CniError, EventStore> {
  const file = join(dataDir, DB_FILE);
  const timeout = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  let db: Database.Database;
  try {
    if (opts.readonly) {
      db = new Database(file, { readonly: true, fileMustExist: true, timeout });
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
      ensureSchema(db, SCHEMA, SCHEMA_VERSION, Date.now() + timeout);
      // WAL + NORMAL: a commit survives a crash of the process (not of the machine) without an fsync.
      db.pragma('synchronous = NORMAL');
    }
  } catch (e) {
    return E.left(storageError(file, e));
  }
  return E.right(sqliteStore(db, file, timeout));
}

function sqliteStore(db: Database.Database, file: string, busyTimeoutMs: number): EventStore {
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

  const loadIn = <S, Ev extends Event>(stream: string, p: Projection<S, Ev>): Loaded<S> & { rebuilt: boolean } => {
    const key = `${p.name}\u0000${stream}`;
    const at = stmt(SNAPSHOT_POSITION).get(p.name, stream) as { position: number } | undefined;
    const cached = snapshots.get(key);
    const snap =
      at && cached && cached.position === at.position
        ? { position: at.position, state: cached.state as S }
        : (() => {
            const row = stmt(SNAPSHOT).get(p.name, stream) as { position: number; state: string } | undefined;
            return row ? { position: row.position, state: JSON.parse(row.state) as S } : undefined;
          })();
    let state = snap ? snap.state : p.initialState();
    let position = snap?.position ?? 0;
    const later = stmt(AFTER).all(stream, position) as Row[];
    if (later.length) {
      state = fold(p, later.map((r) => toEvent(r) as Stored<Ev>), state);
      position = later.at(-1)!.position;
    }
    return { state, position, rebuilt: later.length > 0 };
  };

  return {
    transact<S, Ev extends Event>(
      stream: string,
      p: Projection<S, Ev>,
      decide: (state: S) => E.Either<CniError, readonly Ev[]>,
      meta: { readonly time: string },
    ): E.Either<CniError, Transacted<S, Ev>> {
      try {
        // Everything the transaction runs is prepared before taking the lock (the first prepare reads the
        // schema): under fifty concurrent ADDs on two cores the lock holder is often preempted, so the less
        // it does while holding the lock, the shorter the queue.
        for (const sql of TRANSACTION) stmt(sql);
        // IMMEDIATE takes the write lock up front: two deciders never see the same state.
        const waited = beginImmediate(db, stmt('BEGIN IMMEDIATE'), Date.now() + busyTimeoutMs, busyTimeoutMs);
        const t1 = trace ? performance.now() : 0;
        const unboost = boost();
        try {
          const loaded = loadIn(stream, p);
          const decision = decide(loaded.state);
          if (E.isLeft(decision) || (decision.right.length === 0 && !loaded.rebuilt)) {
            stmt('ROLLBACK').run();
            return E.map(() => ({ state: loaded.state, position: loaded.position, events: [] }))(decision);
          }
          let { state, position } = loaded;
          const events: Stored<Ev>[] = [];
          for (const e of decision.right) {
            const data = JSON.stringify(e.data);
            const info = stmt(APPEND).run(stream, e.type, data, meta.time);
            position = Number(info.lastInsertRowid);
            events.push({ position, stream, type: e.type, data: JSON.parse(data) as unknown, time: meta.time } as Stored<Ev>);
          }
          state = fold(p, events, state);
          stmt(SAVE).run(p.name, stream, position, JSON.stringify(state));
          stmt('COMMIT').run();
          if (trace) process.stderr.write(`# store ${stream}: lock wait ${waited.toFixed(1)} ms, held ${(performance.now() - t1).toFixed(1)} ms\n`);
          snapshots.set(`${p.name}\u0000${stream}`, { position, state });
          return E.right({ state, position, events });
        } catch (e) {
          if (db.inTransaction) stmt('ROLLBACK').run();
          throw e;
        } finally {
          unboost();
        }
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    load<S, Ev extends Event>(stream: string, p: Projection<S, Ev>): E.Either<CniError, Loaded<S>> {
      try {
        // One read transaction, so the snapshot and the events after it are from the same moment.
        const { state, position } = db.transaction(() => loadIn(stream, p))();
        return E.right({ state, position });
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    read(q: ReadQuery = {}): E.Either<CniError, readonly StoredEvent[]> {
      const where: string[] = ['position > ?'];
      const params: unknown[] = [q.fromPosition ?? 0];
      if (q.stream !== undefined) {
        where.push('stream = ?');
        params.push(q.stream);
      }
      if (q.streamPrefix !== undefined) {
        where.push('substr(stream, 1, ?) = ?');
        params.push(q.streamPrefix.length, q.streamPrefix);
      }
      const limit = q.limit !== undefined ? ' LIMIT ?' : '';
      if (q.limit !== undefined) params.push(q.limit);
      try {
        const rows = stmt(`SELECT position, stream, type, data, time FROM events WHERE ${where.join(' AND ')} ORDER BY position${limit}`).all(
          ...params,
        ) as Row[];
        return E.right(rows.map(toEvent));
      } catch (e) {
        return E.left(storageError(file, e));
      }
    },

    streams(prefix = ''): E.Either<CniError, readonly string[]> {
      try {
        const rows = stmt('SELECT DISTINCT stream FROM snapshots WHERE substr(stream, 1, ?) = ? ORDER BY stream').all(prefix.length, prefix) as {
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
  };
}
