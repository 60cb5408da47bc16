// The SQLite write lock as felt takes it (adapters/store/sqlite-schema.ts): BEGIN IMMEDIATE retried with short
// jittered sleeps instead of SQLite's busy handler, the connection's busy timeout put back afterwards, a
// holder that gives up at its deadline with a "locked" error and nothing written, and the priority boost
// undone after the transaction. How fast a wave of plugin processes gets through is test/bench/churn.bench.ts.

import { mkdtempSync, rmSync } from 'node:fs';
import { getPriority } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrCode } from '../../core/cni/errors.ts';
import type { Event, Projection } from '../../core/events.ts';
import { DB_FILE, openSqliteStore } from '../../adapters/store/sqlite.ts';
import { beginImmediate, boost, isBusy, lockBackoffMs } from '../../adapters/store/sqlite-schema.ts';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'felt-lock-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

type Added = Event<'Added', { n: number }>;
const sum: Projection<{ total: number }, Added> = {
  name: 'sum@1',
  initialState: () => ({ total: 0 }),
  evolve: (s, e) => ({ total: s.total + e.data.n }),
};
const T = '2024-05-01T12:00:00.000Z';

/** A store file with the schema, and a second raw connection to it. */
function twoConnections(): { dir: string; other: Database.Database } {
  const dir = tmp();
  const s = openSqliteStore(dir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  s.right.close();
  return { dir, other: new Database(join(dir, DB_FILE), { timeout: 0 }) };
}

describe('the write lock', () => {
  it('backs off from 0.25 ms doubling to at most 4 ms, jittered by ×0.5..1.5 (at most 6 ms)', () => {
    expect([0, 1, 2, 3, 4, 5, 10].map((a) => lockBackoffMs(a, () => 0.5))).toEqual([0.25, 0.5, 1, 2, 4, 4, 4]);
    fc.assert(
      fc.property(fc.nat(64), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, r) => {
        const ms = lockBackoffMs(attempt, () => r);
        return ms >= 0.125 && ms <= 6 && ms <= lockBackoffMs(attempt + 1, () => r);
      }),
    );
  });

  it('gives up at the deadline while another connection holds the lock, and keeps the busy timeout', () => {
    const { dir, other } = twoConnections();
    const db = new Database(join(dir, DB_FILE), { timeout: 1234 });
    other.exec('BEGIN IMMEDIATE');
    let thrown: unknown;
    try {
      beginImmediate(db, db.prepare('BEGIN IMMEDIATE'), Date.now() + 30, 1234);
    } catch (e) {
      thrown = e;
    }
    expect(isBusy(thrown)).toBe(true);
    expect(db.inTransaction).toBe(false);
    expect(db.pragma('busy_timeout', { simple: true })).toBe(1234);
    // Once the other writer is done, the lock is ours.
    other.exec('COMMIT');
    expect(beginImmediate(db, db.prepare('BEGIN IMMEDIATE'), Date.now() + 1000, 1234)).toBeGreaterThanOrEqual(0);
    expect(db.inTransaction).toBe(true);
    db.exec('ROLLBACK');
    expect(db.pragma('busy_timeout', { simple: true })).toBe(1234);
    db.close();
    other.close();
  });

  it('a transaction that cannot get the lock in time fails as "locked" (try again later), writing nothing', () => {
    const { dir, other } = twoConnections();
    const s = openSqliteStore(dir, { busyTimeoutMs: 30 });
    if (E.isLeft(s)) throw new Error(s.left.msg);
    other.exec('BEGIN IMMEDIATE');
    const r = s.right.transact('s', sum, () => E.right([{ type: 'Added', data: { n: 1 } } as Added]), { time: T });
    other.exec('COMMIT');
    expect(E.isLeft(r) && r.left.code).toBe(ErrCode.TryAgainLater);
    expect(E.isLeft(r) && r.left.msg).toContain(join(dir, DB_FILE));
    expect(s.right.read()).toEqual(E.right([]));
    // And with the lock free again, the same store writes.
    const again = s.right.transact('s', sum, () => E.right([{ type: 'Added', data: { n: 2 } } as Added]), { time: T });
    expect(E.isRight(again) && again.right.state).toEqual({ total: 2 });
    s.right.close();
    other.close();
  });

  it('the priority boost is undone, whether or not it was allowed', () => {
    const before = getPriority();
    const restore = boost();
    expect(getPriority()).toBeLessThanOrEqual(before);
    restore();
    expect(getPriority()).toBe(before);
    // A transaction leaves the thread's priority as it found it, also when its decision fails.
    const s = openSqliteStore(tmp());
    if (E.isLeft(s)) throw new Error(s.left.msg);
    s.right.transact('s', sum, () => E.right([{ type: 'Added', data: { n: 1 } } as Added]), { time: T });
    expect(() =>
      s.right.transact(
        's',
        sum,
        () => {
          throw new Error('bug');
        },
        { time: T },
      ),
    ).not.toThrow();
    expect(getPriority()).toBe(before);
    s.right.close();
  });
});

describe('a group of decisions', () => {
  it('holds the lock raised throughout, once, and puts the priority back, also when it fails', () => {
    const before = getPriority();
    const raised = (() => {
      const r = boost();
      try {
        return getPriority();
      } finally {
        r();
      }
    })();
    const s = openSqliteStore(tmp());
    if (E.isLeft(s)) throw new Error(s.left.msg);
    const seen: number[] = [];
    const decide = (n: number) =>
      s.right.transact(
        's',
        sum,
        () => {
          seen.push(getPriority());
          return E.right([{ type: 'Added', data: { n } } as Added]);
        },
        { time: T },
      );
    const g = s.right.group?.(() => {
      seen.push(getPriority());
      decide(1);
      seen.push(getPriority());
      decide(2);
      seen.push(getPriority());
      return 'done';
    });
    expect(g).toEqual(E.right('done'));
    expect(seen).toEqual([raised, raised, raised, raised, raised]);
    expect(getPriority()).toBe(before);
    const total = s.right.load('s', sum);
    expect(E.isRight(total) && total.right.state).toEqual({ total: 3 });
    const failed = s.right.group?.(() => {
      decide(4);
      throw new Error('bug');
    });
    expect(failed !== undefined && E.isLeft(failed)).toBe(true);
    expect(getPriority()).toBe(before);
    s.right.close();
  });
});
