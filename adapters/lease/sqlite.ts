// The embedded lease store: one SQLite file shared by the nodes (feltd processes) of one machine, with the
// semantics of the etcd store, so a single host or the demo needs no server.
//
//   config(k PRIMARY KEY, v)                         -- the network config under k = 'network'
//   leases(key PRIMARY KEY, subnet, ipv6_subnet, attrs JSON, expires_at, revision)
//                                                     -- key as in etcd (10.244.3.0-24[&fd00::-64]);
//                                                        expires_at in ms since the epoch
//   changes(revision INTEGER PRIMARY KEY AUTOINCREMENT, key, kind, lease JSON)
//                                                     -- the change log watches replay; kind added|removed
//   meta(k PRIMARY KEY, v)                            -- pruned_through: changes up to it are gone
//
// Every write is one IMMEDIATE transaction (the write lock taken up front), so two nodes racing for a subnet
// are serialized and exactly one wins. A lease past expires_at is absent: acquire may take its key, and the
// first reader or writer that notices (list, watch poll, acquire, renew, revoke) deletes it and records a
// 'removed' change, in a write transaction that re-checks, so the removal is recorded once. The revision of
// the store is the last change's. Watches poll the change log (default every 200 ms) and get onReset when
// the revision they need was pruned (the log keeps the last `maxChanges` rows, default 10,000).

import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { parseLeaseAttrs } from '../../core/flannel/lease.ts';
import type { Lease, LeaseAttrs, LeaseEvent, LeaseSnapshot } from '../../core/flannel/types.ts';
import { errorMessage, iso, isStoreError, leaseMatches, leaseOf, NO_ATTRS, storeError, writeLease, type LeaseWriter } from './common.ts';
import type { LeaseStore, StoreError, Watch } from './types.ts';
import { ensureSchema, isBusy } from '../store/sqlite-schema.ts';

export interface SqliteLeaseStoreOptions {
  /** The database file (created with its directory when missing). */
  readonly path: string;
  /** Milliseconds since the epoch; default Date.now. All processes sharing a file must share the clock. */
  readonly clock?: () => number;
  /** How often watches poll the change log (default 200 ms). */
  readonly pollMs?: number;
  /** Changes kept for watches (default 10,000). */
  readonly maxChanges?: number;
  /** How long a call waits for another process's write lock before failing retryably (default 5,000 ms). */
  readonly busyTimeoutMs?: number;
}

const SCHEMA_VERSION = 1;
const SCHEMA = `
CREATE TABLE IF NOT EXISTS config (
  k TEXT PRIMARY KEY,
  v TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
  key         TEXT PRIMARY KEY,
  subnet      TEXT,
  ipv6_subnet TEXT,
  attrs       TEXT NOT NULL,
  expires_at  INTEGER NOT NULL,
  revision    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
CREATE TABLE IF NOT EXISTS changes (
  revision INTEGER PRIMARY KEY AUTOINCREMENT,
  key      TEXT NOT NULL,
  kind     TEXT NOT NULL,
  lease    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
  k TEXT PRIMARY KEY,
  v INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (k, v) VALUES ('pruned_through', 0);
`;

interface LeaseRow {
  key: string;
  subnet: string | null;
  ipv6_subnet: string | null;
  attrs: string;
  expires_at: number;
  revision: number;
}

interface ChangeRow {
  revision: number;
  kind: string;
  lease: string;
}

function toStoreError(path: string, e: unknown): StoreError {
  if (isStoreError(e)) return e;
  const code = (e as { code?: unknown })?.code;
  const msg = errorMessage(e);
  if (isBusy(e)) return storeError(`lease store ${path} is locked by another process: ${msg}`, true);
  const transient = typeof code === 'string' && /^SQLITE_(IOERR|PROTOCOL|FULL)/.test(code);
  return storeError(`lease store ${path}: ${msg}`, transient);
}

/** A row as a lease; attrs that are not a flannel lease (edited by hand) give a lease with `invalid`. */
const rowToLease = (r: LeaseRow): Lease => {
  const a = parseLeaseAttrs(r.attrs);
  const l = leaseOf(r.subnet ?? undefined, r.ipv6_subnet ?? undefined, E.isRight(a) ? a.right : NO_ATTRS, iso(r.expires_at));
  return E.isRight(a) ? l : { ...l, invalid: a.left };
};
const attrsOf = (text: string): LeaseAttrs | undefined => {
  const a = parseLeaseAttrs(text);
  return E.isRight(a) ? a.right : undefined;
};

export function sqliteLeaseStore(opts: SqliteLeaseStoreOptions): LeaseStore {
  const { path } = opts;
  const clock = opts.clock ?? Date.now;
  const pollMs = opts.pollMs ?? 200;
  const maxChanges = opts.maxChanges ?? 10_000;
  const busyTimeoutMs = opts.busyTimeoutMs ?? 5_000;
  let db: Database.Database | undefined;
  let closed = false;
  const watches = new Set<() => void>();
  const cache = new Map<string, Database.Statement>();
  /**
   * The file this store has open (device and inode), and how many times it had to open another: a leases.db
   * deleted or replaced under a running feltd would otherwise keep taking its writes into an unlinked file
   * while other nodes use the new one. Watches compare `generation` and reset when it moved.
   */
  let identity: string | undefined;
  let generation = 0;
  let replacedWhy = '';
  /** The config this process put, written again into a file that replaced the one it was put into. */
  let ownConfig: string | undefined;
  const fileIdentity = (): string | undefined => {
    const st = statSync(path, { throwIfNoEntry: false });
    return st ? `${st.dev}:${st.ino}` : undefined;
  };

  const open = (): Database.Database => {
    if (closed) throw storeError(`lease store ${path} is closed`, false);
    if (db) return db;
    mkdirSync(dirname(path), { recursive: true });
    const d = new Database(path, { timeout: busyTimeoutMs });
    try {
      ensureSchema(d, SCHEMA, SCHEMA_VERSION, Date.now() + busyTimeoutMs);
      d.pragma('synchronous = NORMAL');
    } catch (e) {
      d.close();
      throw e;
    }
    db = d;
    identity = fileIdentity();
    if (generation > 0 && ownConfig !== undefined) {
      d.prepare("INSERT INTO config (k, v) VALUES ('network', ?) ON CONFLICT (k) DO NOTHING").run(ownConfig);
    }
    return d;
  };
  /** Reopen when the file at `path` is no longer the one open (deleted, or replaced by another file). */
  const checkFile = (): void => {
    if (!db) return;
    const now = fileIdentity();
    if (now === identity) return;
    replacedWhy = now === undefined ? `${path} was deleted` : `${path} was replaced by another file`;
    cache.clear();
    try {
      db.close();
    } catch {
      // Closing the unlinked file cannot fail in a way that matters: it is gone.
    }
    db = undefined;
    generation += 1;
  };
  const stmt = (sql: string): Database.Statement => {
    let s = cache.get(sql);
    if (!s) {
      s = open().prepare(sql);
      cache.set(sql, s);
    }
    return s;
  };

  const currentRevision = (): number =>
    (stmt("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0) AS r").get() as { r: number }).r;
  const prunedThrough = (): number => (stmt("SELECT v FROM meta WHERE k = 'pruned_through'").get() as { v: number } | undefined)?.v ?? 0;

  /** Append a change (inside a write transaction) and prune the log; returns its revision. */
  const record = (key: string, kind: LeaseEvent['type'], lease: Lease): number => {
    const info = stmt('INSERT INTO changes (key, kind, lease) VALUES (?, ?, ?)').run(key, kind, JSON.stringify(lease));
    const rev = Number(info.lastInsertRowid);
    const keepFrom = rev - maxChanges;
    if (keepFrom > prunedThrough()) {
      stmt('DELETE FROM changes WHERE revision <= ?').run(keepFrom);
      stmt("UPDATE meta SET v = ? WHERE k = 'pruned_through'").run(keepFrom);
    }
    return rev;
  };

  /** Remove the expired leases and record their removal (inside a write transaction). */
  const sweepIn = (now: number): void => {
    const expired = stmt('SELECT key, subnet, ipv6_subnet, attrs, expires_at, revision FROM leases WHERE expires_at <= ? ORDER BY key').all(
      now,
    ) as LeaseRow[];
    for (const r of expired) {
      stmt('DELETE FROM leases WHERE key = ?').run(r.key);
      record(r.key, 'removed', rowToLease(r));
    }
  };

  const write = <A>(f: (now: number) => A): A =>
    open()
      .transaction(() => {
        const now = clock();
        sweepIn(now);
        return f(now);
      })
      .immediate();

  /** Record the removal of expired leases, taking the write lock only when there are some. */
  const sweepIfNeeded = (): void => {
    const now = clock();
    if (stmt('SELECT 1 FROM leases WHERE expires_at <= ? LIMIT 1').get(now) !== undefined) write(() => undefined);
  };

  const op =
    <A>(f: () => E.Either<StoreError, A>): TE.TaskEither<StoreError, A> =>
    () =>
      Promise.resolve().then(() => {
        try {
          checkFile();
          return f();
        } catch (e) {
          return E.left(toStoreError(path, e));
        }
      });

  const upsert = (key: string, subnet: string | undefined, ipv6Subnet: string | undefined, attrs: LeaseAttrs, expiresAt: number): Lease => {
    const lease = leaseOf(subnet, ipv6Subnet, JSON.parse(JSON.stringify(attrs)) as LeaseAttrs, iso(expiresAt));
    const rev = record(key, 'added', lease);
    stmt(
      'INSERT INTO leases (key, subnet, ipv6_subnet, attrs, expires_at, revision) VALUES (?, ?, ?, ?, ?, ?) ' +
        'ON CONFLICT (key) DO UPDATE SET subnet = excluded.subnet, ipv6_subnet = excluded.ipv6_subnet, attrs = excluded.attrs, ' +
        'expires_at = excluded.expires_at, revision = excluded.revision',
    ).run(key, subnet ?? null, ipv6Subnet ?? null, JSON.stringify(lease.attrs), expiresAt, rev);
    return lease;
  };

  /** acquire, renew and repair: writeLease (common.ts), inside one write transaction. */
  const writer: LeaseWriter = {
    write,
    held: (key) => {
      const row = stmt('SELECT attrs FROM leases WHERE key = ?').get(key) as { attrs: string } | undefined;
      return row && { attrs: attrsOf(row.attrs) };
    },
    put: (key, c, expiresAt) => upsert(key, c.subnet, c.ipv6Subnet, c.attrs, expiresAt),
  };

  return {
    getNetworkConfig: () => op(() => E.right((stmt("SELECT v FROM config WHERE k = 'network'").get() as { v: string } | undefined)?.v)),

    putNetworkConfig: (json) =>
      op(() => {
        stmt("INSERT INTO config (k, v) VALUES ('network', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v").run(json);
        ownConfig = json;
        return E.right(undefined);
      }),

    watchNetworkConfig(onConfig): Watch {
      // The config row is one read of a local file: polled with the watches' period, told on change.
      let stopped = false;
      let timer: NodeJS.Timeout | undefined;
      let last: string | undefined | null = null;
      const stop = (): void => {
        stopped = true;
        if (timer) clearTimeout(timer);
        watches.delete(stop);
      };
      const tick = (): void => {
        timer = undefined;
        if (stopped) return;
        try {
          checkFile();
          const now = (stmt("SELECT v FROM config WHERE k = 'network'").get() as { v: string } | undefined)?.v;
          if (now !== last) {
            last = now;
            onConfig(now);
          }
        } catch {
          // Locked or briefly unreadable: the next poll tries again.
        }
        if (!stopped) timer = setTimeout(tick, pollMs);
      };
      watches.add(stop);
      timer = setTimeout(tick, 0);
      return { stop };
    },

    list: () =>
      op((): E.Either<StoreError, LeaseSnapshot> => {
        sweepIfNeeded();
        // One read transaction: the leases and the revision are from the same moment.
        const snap = open().transaction(() => {
          const rows = stmt(
            'SELECT key, subnet, ipv6_subnet, attrs, expires_at, revision FROM leases WHERE expires_at > ? ORDER BY key',
          ).all(clock()) as LeaseRow[];
          return { leases: rows.map(rowToLease), revision: currentRevision() };
        })();
        return E.right(snap);
      }),

    acquire: (req, ttlSeconds) => op(() => writeLease(writer, 'acquire', req, ttlSeconds)),
    renew: (req, ttlSeconds) => op(() => writeLease(writer, 'renew', req, ttlSeconds)),
    repair: (req, ttlSeconds) => op(() => writeLease(writer, 'repair', req, ttlSeconds)),

    revoke: (subnet: string) =>
      op(() => {
        write(() => {
          const rows = stmt('SELECT key, subnet, ipv6_subnet, attrs, expires_at, revision FROM leases ORDER BY key').all() as LeaseRow[];
          for (const r of rows) {
            if (
              !leaseMatches({ ...(r.subnet ? { subnet: r.subnet } : {}), ...(r.ipv6_subnet ? { ipv6Subnet: r.ipv6_subnet } : {}) }, subnet)
            )
              continue;
            stmt('DELETE FROM leases WHERE key = ?').run(r.key);
            record(r.key, 'removed', rowToLease(r));
          }
        });
        return E.right(undefined);
      }),

    watch(fromRevision, onEvents, onReset): Watch {
      let cursor = fromRevision;
      let stopped = false;
      const gen = generation;
      let timer: NodeJS.Timeout | undefined;
      const stop = (): void => {
        stopped = true;
        if (timer) clearTimeout(timer);
        watches.delete(stop);
      };
      const PAGE = 1000;
      const tick = (): void => {
        timer = undefined;
        if (stopped) return;
        let full = false;
        try {
          checkFile();
          if (generation !== gen) {
            stop();
            onReset(`${replacedWhy}: reopened ${path}, which no longer holds what was watched`);
            return;
          }
          sweepIfNeeded();
          const r = open().transaction(() => {
            const pruned = prunedThrough();
            const current = currentRevision();
            if (cursor > current) return { behind: current };
            if (cursor < pruned) return { pruned };
            return {
              rows: stmt('SELECT revision, kind, lease FROM changes WHERE revision > ? ORDER BY revision LIMIT ?').all(
                cursor,
                PAGE,
              ) as ChangeRow[],
            };
          })();
          if ('behind' in r) {
            stop();
            onReset(`${path} is at revision ${r.behind}, below revision ${cursor} already seen: it was replaced or restored`);
            return;
          }
          if ('pruned' in r) {
            stop();
            onReset(`revision ${cursor} is no longer in the change log (pruned through ${r.pruned})`);
            return;
          }
          const rows = r.rows ?? [];
          if (rows.length > 0) {
            cursor = rows.at(-1)!.revision;
            full = rows.length === PAGE;
            onEvents(
              rows.map((c) => ({ type: c.kind === 'removed' ? 'removed' : 'added', lease: JSON.parse(c.lease) as Lease })),
              cursor,
            );
          }
        } catch {
          // Locked or briefly unreadable: the next poll tries again.
        }
        if (!stopped) timer = setTimeout(tick, full ? 0 : pollMs);
      };
      watches.add(stop);
      timer = setTimeout(tick, 0);
      return { stop };
    },

    close() {
      for (const stop of [...watches]) stop();
      closed = true;
      cache.clear();
      if (db?.open) db.close();
      db = undefined;
      return Promise.resolve();
    },
  };
}
