// What felt's SQLite files share (the event log, the embedded lease store): busy detection, a synchronous
// back-off, taking the write lock without SQLite's busy handler, and creating a versioned schema once while
// other processes may be opening the same file.

import { getPriority, setPriority } from 'node:os';
import type Database from 'better-sqlite3';

export const isBusy = (e: unknown): boolean => {
  const code = (e as { code?: unknown })?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED' || code === 'SQLITE_BUSY_SNAPSHOT';
};

/** Block this thread for `ms` (better-sqlite3 is synchronous; so is waiting for a lock). */
const sleepSync = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/**
 * The wait before the `attempt`-th retry for a lock: 0.25 ms doubling to 4 ms, times a random factor in
 * [0.5, 1.5) (`random` is Math.random in production), so that waiters do not wake in step.
 */
export const lockBackoffMs = (attempt: number, random: () => number = Math.random): number =>
  Math.min(4, 0.25 * 2 ** attempt) * (0.5 + random());

/**
 * `BEGIN IMMEDIATE` (the write lock), waited for with short jittered sleeps (lockBackoffMs) until `deadline`
 * (Date.now() ms), instead of SQLite's busy handler. That handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50,
 * 50 and then 100 ms between tries: with fifty plugin processes queueing for a lock held ~1 ms at a time, a
 * waiter that has backed off to 100 ms sleeps on while the lock is free, and the last ADDs of a wave finish
 * hundreds of ms after the CPU went idle. The connection's own busy timeout (for the rare busy read) is
 * switched off for the attempts and restored after. Returns the ms spent waiting.
 */
export function beginImmediate(db: Database.Database, begin: Database.Statement, deadline: number, busyTimeoutMs: number): number {
  const t0 = performance.now();
  db.pragma('busy_timeout = 0');
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        begin.run();
        return performance.now() - t0;
      } catch (e) {
        if (!isBusy(e) || Date.now() > deadline) throw e;
        sleepSync(lockBackoffMs(attempt));
      }
    }
  } finally {
    db.pragma(`busy_timeout = ${Math.floor(busyTimeoutMs)}`);
  }
}

/** Create the schema once (WAL, `user_version` = version); concurrent first openers wait for each other. */
/**
 * A file whose schema is newer than this felt's: a newer felt wrote it, and running this felt's schema over it
 * (and setting its older version) would downgrade it under the newer one. `code` is a string, so the stores
 * report it as an I/O error (CNI code 5), naming the file and both versions.
 */
export class NewerSchema extends Error {
  readonly code = 'FELT_SCHEMA_NEWER';
  constructor(
    readonly file: string,
    readonly found: number,
    readonly supported: number,
  ) {
    super(
      `${file} has schema version ${found}, newer than the version ${supported} this felt reads and writes: refused, to not downgrade it (use the felt that wrote it)`,
    );
  }
}

/** Throw NewerSchema when the file's user_version is above `version`. */
export function refuseNewerSchema(db: Database.Database, version: number): void {
  const found = db.pragma('user_version', { simple: true }) as number;
  if (found > version) throw new NewerSchema(db.name, found, version);
}

/**
 * A stored value (an event's data, a snapshot, a table row) that is not the JSON felt wrote, or a log whose
 * events the projection cannot fold (evolve never fails on events felt made): the file is corrupt, an I/O
 * error (code 5) naming it and what was unreadable, not an internal error.
 */
export class CorruptStore extends Error {
  readonly code = 'FELT_CORRUPT';
}

/** JSON.parse of a stored value; CorruptStore naming `what` when it is not JSON. */
export function parseStored<T>(text: string, what: () => string): T {
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new CorruptStore(`corrupt ${what()}: ${(e as Error).message}`);
  }
}

export function ensureSchema(db: Database.Database, schema: string, version: number, deadline: number): void {
  for (;;) {
    try {
      refuseNewerSchema(db, version);
      if (db.pragma('user_version', { simple: true }) === version) return;
      // WAL is persistent in the file; switching needs the database to itself, which busy_timeout does not
      // always wait for, hence the retry loop.
      db.pragma('journal_mode = WAL');
      db.exec('BEGIN IMMEDIATE');
      try {
        // Again under the write lock: a newer felt may have upgraded the file since the check above.
        refuseNewerSchema(db, version);
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

/**
 * Raise this thread to the highest scheduling priority it may take while it holds a write lock; returns the
 * function that puts the old priority back (call it in a finally). On two cores with fifty plugin processes
 * runnable, a lock holder at everyone's priority is preempted mid-transaction (a ~2 ms transaction then holds
 * the lock for ~15 ms, and everyone queued behind it waits that long); boosted, it finishes first. A holder
 * cannot see whether anyone queues behind it (one that got the lock at once is preempted as often), so every
 * write transaction is boosted; it lasts milliseconds. Without the privilege (not root) nothing changes.
 */
export function boost(): () => void {
  let before: number;
  try {
    before = getPriority();
    // Raised already (feltd raises its thread for good): left as it is.
    if (before < 0) return () => undefined;
    setPriority(-20);
  } catch {
    return () => undefined;
  }
  return () => {
    try {
      setPriority(before);
    } catch {
      // going back to a lower priority needs no privilege
    }
  };
}
