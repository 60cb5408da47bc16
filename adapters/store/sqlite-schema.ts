// What felt's SQLite files share (the event log, the embedded lease store): busy detection, a synchronous
// back-off, and creating a versioned schema once while other processes may be opening the same file.

import type Database from 'better-sqlite3';

export const isBusy = (e: unknown): boolean => {
  const code = (e as { code?: unknown })?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED' || code === 'SQLITE_BUSY_SNAPSHOT';
};

/** Block this thread for `ms` (better-sqlite3 is synchronous; so is waiting for a lock). */
export const sleepSync = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/** Create the schema once (WAL, `user_version` = version); concurrent first openers wait for each other. */
export function ensureSchema(db: Database.Database, schema: string, version: number, deadline: number): void {
  for (;;) {
    try {
      if (db.pragma('user_version', { simple: true }) === version) return;
      // WAL is persistent in the file; switching needs the database to itself, which busy_timeout does not
      // always wait for, hence the retry loop.
      db.pragma('journal_mode = WAL');
      db.exec('BEGIN IMMEDIATE');
      try {
        db.exec(schema);
        db.pragma(`user_version = ${version}`);
        db.exec('COMMIT');
      } catch (e) {
        if (db.inTransaction) db.exec('ROLLBACK');
        throw e;
      }
      return;
    } catch (e) {
      if (!isBusy(e) || Date.now() > deadline) throw e;
      sleepSync(5 + Math.floor(Math.random() * 20));
    }
  }
}
