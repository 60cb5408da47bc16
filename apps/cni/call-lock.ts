// One CNI call at a time per attachment: calls for the same network, container ID and interface name are
// serialized, inside one process (feltd serving many calls, `felt cni` running a chain) and across processes
// (a runtime running plugins side by side, a retried ADD beside its DEL). Without it a DEL running in the
// middle of an ADD releases the address the ADD then configures, and host-local gives it to the next pod.
//
// In process: a keyed async mutex (a queue of promises per key). Across processes: a lease row per key in a
// small SQLite file (`<lock dir>/cni-calls.db`, lock dir /run/felt/locks unless FELT_LOCK_DIR; kept open for
// the life of the process): taking it is
// one write transaction that reads the row and writes it when there is none or its holder is gone, so the
// check and the take cannot interleave with another process's. A holder is its pid plus the process's start
// time (/proc/<pid>/stat field 22): a row whose process died (kill -9) or whose pid now names another
// process is stale and taken over. Waiting is a bounded poll (LOCK_WAIT_MS, then code 11 "try again later").
//
// Reentrant: a call that holds the key (through AsyncLocalStorage: `felt cni` holds it for the whole chain and
// runs felt's plugins in-process) runs without taking it again, and a delegate executed as another process
// (felt's bridge executed by flannel, a foreign IPAM plugin) inherits it through FELT_CALL_LOCKS.

import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { cniError, ErrCode, type CniError } from '../../core/cni/errors.ts';
import { traceMark } from '../../adapters/kernel/exec.ts';

const DEFAULT_LOCK_DIR = '/run/felt/locks';
export const LOCK_FILE = 'cni-calls.db';
/** How long a call waits for another call of the same attachment before giving up (code 11). */
const LOCK_WAIT_MS = 120_000;
/** The environment variable that hands held locks to a delegate run as another process: `key=token;...`. */
const INHERIT_ENV = 'FELT_CALL_LOCKS';

export interface CallKey {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
}

/** The lock's key: unambiguous for any strings (JSON), so no two attachments share one. */
export const lockKey = (k: CallKey): string => JSON.stringify([k.network, k.containerId, k.ifname]);

type Env = Readonly<Record<string, string | undefined>>;

// ------------------------------------------------------------------------------------------ in process

const tails = new Map<string, Promise<void>>();

/** Run `f` when every earlier holder of `key` in this process is done; FIFO. */
async function inProcess<A>(key: string, f: () => Promise<A>): Promise<A> {
  const before = tails.get(key) ?? Promise.resolve();
  let done!: () => void;
  const mine = new Promise<void>((r) => (done = r));
  const tail = before.then(() => mine);
  tails.set(key, tail);
  await before;
  try {
    return await f();
  } finally {
    done();
    if (tails.get(key) === tail) tails.delete(key);
  }
}

// --------------------------------------------------------------------------------- across processes

/** A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat); undefined when it is gone. */
export function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces or parentheses: count after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = f[0];
    if (state === 'Z' || state === 'X') return undefined;
    return f[19];
  } catch {
    return undefined;
  }
}

/** This process's start time: read once (reading /proc/self/stat on every lock took ~1 ms a call in a busy feltd). */
let myStartTime: string | undefined;
const myStart = (): string => (myStartTime ??= startTimeOf(process.pid) ?? '?');

interface Row {
  readonly pid: number;
  readonly start: string;
  readonly token: string;
}

type Sqlite = typeof Database;
let sqlite: Sqlite | undefined;
const dbs = new Map<string, Database.Database>();
/** Each lock file's statements, prepared once (feltd takes and gives a lock per call). */
const statements = new WeakMap<Database.Database, Map<string, Database.Statement>>();
function stmt(db: Database.Database, sql: string): Database.Statement {
  let m = statements.get(db);
  if (!m) statements.set(db, (m = new Map()));
  let s = m.get(sql);
  if (!s) m.set(sql, (s = db.prepare(sql)));
  return s;
}
/** Tokens this process holds now (a row of this pid whose token is not here is a leftover: stale). */
const mine = new Set<string>();

async function dbOf(dir: string): Promise<Database.Database> {
  const have = dbs.get(dir);
  if (have) return have;
  sqlite ??= (await import('better-sqlite3')).default as unknown as Sqlite;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const db = new sqlite(join(dir, LOCK_FILE), { timeout: 0 });
  // On tmpfs (/run) syncing buys nothing, and a lost row only means nobody holds that lock.
  for (;;) {
    try {
      // WAL: a reader never makes a writer's COMMIT busy (in rollback-journal mode COMMIT waits for every reader).
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = OFF');
      db.exec(
        'CREATE TABLE IF NOT EXISTS call_locks (key TEXT PRIMARY KEY, pid INTEGER NOT NULL, start TEXT NOT NULL, token TEXT NOT NULL, since TEXT NOT NULL)',
      );
      break;
    } catch (e) {
      if (!isBusy(e)) {
        db.close();
        throw e;
      }
      await pause(1 + Math.random() * 4);
    }
  }
  dbs.set(dir, db);
  return db;
}

const isBusy = (e: unknown): boolean => {
  const code = (e as { code?: unknown })?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
};

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const alive = (r: Row): boolean => {
  if (r.pid === process.pid && r.start === myStart()) return mine.has(r.token);
  return startTimeOf(r.pid) === r.start;
};

/** One attempt: the row is ours now (true), or a live holder has it (its pid). Busy database: undefined. */
function tryTake(db: Database.Database, key: string, token: string, now: string): true | number | undefined {
  try {
    stmt(db, 'BEGIN IMMEDIATE').run();
  } catch (e) {
    if (isBusy(e)) return undefined;
    throw e;
  }
  try {
    const row = stmt(db, 'SELECT pid, start, token FROM call_locks WHERE key = ?').get(key) as Row | undefined;
    if (row && (row.token === token || alive(row))) {
      stmt(db, 'COMMIT').run();
      return row.token === token ? true : row.pid;
    }
    stmt(db, 'INSERT OR REPLACE INTO call_locks (key, pid, start, token, since) VALUES (?, ?, ?, ?, ?)').run(
      key,
      process.pid,
      myStart(),
      token,
      now,
    );
    stmt(db, 'COMMIT').run();
    return true;
  } catch (e) {
    if (db.inTransaction) stmt(db, 'ROLLBACK').run();
    // Busy anywhere in the transaction (its COMMIT too): another process's transaction, microseconds long; try again.
    if (isBusy(e)) return undefined;
    throw e;
  }
}

async function take(dir: string, key: string, what: string, waitMs: number): Promise<string> {
  const db = await dbOf(dir);
  const token = randomBytes(16).toString('hex');
  const deadline = Date.now() + waitMs;
  let holder: number | undefined;
  for (let attempt = 0; ; attempt++) {
    const r = tryTake(db, key, token, new Date().toISOString());
    if (r === true) {
      mine.add(token);
      return token;
    }
    if (r !== undefined) {
      if (holder === undefined) traceMark(`waiting for the call lock of ${what}, held by pid ${r}`);
      holder = r;
    }
    if (Date.now() > deadline) {
      throw cniError(
        ErrCode.TryAgainLater,
        `${what}: another call for this attachment${holder !== undefined ? ` (pid ${holder})` : ''} still runs after ${waitMs / 1000} s (${join(dir, LOCK_FILE)})`,
      );
    }
    // Busy database: a transaction lasts microseconds. A live holder: its call lasts milliseconds to seconds.
    await pause(r === undefined ? 0.5 + Math.random() : Math.min(50, 2 * 1.5 ** attempt) * (0.5 + Math.random()));
  }
}

async function give(dir: string, key: string, token: string): Promise<void> {
  mine.delete(token);
  const db = dbs.get(dir);
  if (!db) return;
  for (let attempt = 0; ; attempt++) {
    try {
      stmt(db, 'DELETE FROM call_locks WHERE key = ? AND token = ?').run(key, token);
      return;
    } catch (e) {
      // A row left behind is stale (this token is no longer ours, or the process is gone): harmless.
      if (!isBusy(e) || attempt > 2000) return;
      await pause(0.5 + Math.random());
    }
  }
}

// ----------------------------------------------------------------------------------------- the lock

/** Keys this async context holds, with their tokens. */
const held = new AsyncLocalStorage<ReadonlyMap<string, string>>();

/** Locks held by the environment's parent (INHERIT_ENV), by key. */
function inherited(env: Env): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (env[INHERIT_ENV] ?? '').split(';')) {
    const i = part.lastIndexOf('=');
    if (i <= 0) continue;
    try {
      out.set(Buffer.from(part.slice(0, i), 'base64url').toString('utf8'), part.slice(i + 1));
    } catch {
      // not one of ours
    }
  }
  return out;
}

/** Whether the row of `key` is held with `token` now (a parent process's lock, handed down). */
async function holds(dir: string, key: string, token: string): Promise<boolean> {
  if (!/^[0-9a-f]{32}$/.test(token)) return false;
  const db = await dbOf(dir);
  let row: Row | undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      row = stmt(db, 'SELECT pid, start, token FROM call_locks WHERE key = ?').get(key) as Row | undefined;
      break;
    } catch (e) {
      if (!isBusy(e) || attempt > 2000) throw e;
      await pause(0.5 + Math.random());
    }
  }
  return row !== undefined && row.token === token && startTimeOf(row.pid) === row.start;
}

/** The environment entry that hands this context's locks to a process it starts (none held: {}). */
export function lockEnv(): Record<string, string> {
  const h = held.getStore();
  if (!h || h.size === 0) return {};
  return { [INHERIT_ENV]: [...h].map(([k, t]) => `${Buffer.from(k).toString('base64url')}=${t}`).join(';') };
}

/**
 * The lock directory: FELT_LOCK_DIR of this process's own environment (never a call's: feltd serving calls on
 * a socket gets their environments from clients), else /run/felt/locks.
 */
const lockDir = (): string => process.env['FELT_LOCK_DIR'] || DEFAULT_LOCK_DIR;

/**
 * Run `f` holding the lock of `k`: after every other call for the same attachment, in this process and in
 * others, has finished. `env` is the call's environment, read only for a lock handed down (FELT_CALL_LOCKS).
 * Fails with code 11 after LOCK_WAIT_MS, and code 5 when the lock file cannot be used.
 */
export async function withCallLock<A>(k: CallKey, env: Env, f: () => Promise<A>, waitMs = LOCK_WAIT_MS): Promise<A> {
  const key = lockKey(k);
  const mineNow = held.getStore();
  if (mineNow?.has(key)) return f();
  const dir = lockDir();
  if (!dir.startsWith('/')) throw cniError(ErrCode.IO, `FELT_LOCK_DIR: ${JSON.stringify(dir)} is not an absolute path`);
  const what = `${k.network} ${k.containerId} ${k.ifname}`;
  const parent = inherited(env).get(key);
  return inProcess(key, async () => {
    let token: string;
    let own = true;
    try {
      if (parent !== undefined && (await holds(dir, key, parent))) {
        token = parent;
        own = false;
      } else token = await take(dir, key, what, waitMs);
    } catch (e) {
      if ((e as CniError)?.code === ErrCode.TryAgainLater) throw e;
      throw cniError(ErrCode.IO, `cannot lock ${what} in ${join(dir, LOCK_FILE)}: ${(e as Error)?.message ?? String(e)}`);
    }
    const next = new Map(mineNow ?? []);
    next.set(key, token);
    try {
      return await held.run(next, f);
    } finally {
      if (own) await give(dir, key, token);
    }
  });
}
