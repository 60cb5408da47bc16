// apps/cni/store.ts: one event store per dataDir per CNI call, closed at the end of the call (or earlier),
// and handles that survive an early close.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterEach, describe, expect, it } from 'vitest';
import type { Projection } from '../../core/events.ts';
import { batched, callStores, warmStores } from '../../apps/cni/store.ts';
import { cniError, ErrCode } from '../../core/cni/errors.ts';
import fc from 'fast-check';
import { eventually } from '../support/eventually.ts';

type Ev = { type: 'Added'; data: { n: number } };
const sum: Projection<number, Ev> = { name: 'test-sum', initialState: () => 0, evolve: (s, e) => s + e.data.n };
const add = (n: number) => () => E.right([{ type: 'Added', data: { n } } as Ev]);
const meta = { time: '2026-12-04T00:00:00.000Z' };

const dirs: string[] = [];
const dir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'felt-callstore-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const right = <A>(x: E.Either<unknown, A>): A => {
  if (E.isLeft(x)) throw new Error(`unexpected Left: ${JSON.stringify(x.left)}`);
  return x.right;
};

describe('the event store of one CNI call', () => {
  it('is shared by every open in the call and closed (WAL checkpointed away) when the call ends', async () => {
    const d = dir();
    const call = callStores();
    const a = right(await call.open(d));
    const b = right(await call.open(d));
    right(a.transact('s', sum, add(1), meta));
    a.close(); // left to the call
    right(b.transact('s', sum, add(2), meta));
    expect(right(b.load('s', sum)).state).toBe(3);
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(true);
    call.end();
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(false);
    const next = callStores();
    expect(right(right(await next.open(d)).load('s', sum)).state).toBe(3);
    next.end();
  });

  it('a handle still works after an early close: it opens the store again', async () => {
    const d = dir();
    const call = callStores();
    const s = right(await call.open(d));
    right(s.transact('s', sum, add(5), meta));
    call.closeSoon();
    await new Promise((r) => setImmediate(r));
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(false);
    right(s.transact('s', sum, add(1), meta));
    expect(right(s.load('s', sum)).state).toBe(6);
    call.end();
  });

  it('calls running at once in one process have their own scopes: one ending does not close the other', async () => {
    const d = dir();
    const first = callStores();
    const s1 = right(await first.open(d));
    right(s1.transact('s', sum, add(1), meta));
    const second = callStores();
    right(right(await second.open(d)).transact('s', sum, add(10), meta));
    second.end();
    // The first call's store is still open (its WAL is there) and its handle works without reopening.
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(true);
    right(s1.transact('s', sum, add(1), meta));
    first.end();
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(false);
    const check = callStores();
    expect(right(right(await check.open(d)).load('s', sum)).state).toBe(12);
    check.end();
  });

  it('an open that fails is an error naming the store', async () => {
    const call = callStores();
    const r = await call.open('/proc/felt-nope');
    call.end();
    expect(E.isLeft(r)).toBe(true);
  });
});

describe("feltd's warm stores", () => {
  it('calls in flight share one open store; it is closed (checkpointed) once none has run for idleMs', async () => {
    const warm = warmStores(16, 200);
    const d = dir();
    const a = warm.scope();
    const b = warm.scope();
    right(right(await a.open(d)).transact('s', sum, add(2), meta));
    right(right(await b.open(d)).transact('s', sum, add(3), meta));
    expect(warm.size()).toBe(1);
    a.end();
    await new Promise((r) => setImmediate(r));
    // b still runs: the store stays open (its WAL is there).
    expect(warm.size()).toBe(1);
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(true);
    expect(right(right(await b.open(d)).load('s', sum)).state).toBe(5);
    b.end();
    b.end(); // a second end of the same call counts once
    // A call that follows finds it open still.
    const c = warm.scope();
    expect(warm.size()).toBe(1);
    expect(right(right(await c.open(d)).load('s', sum)).state).toBe(5);
    c.end();
    await eventually(() => warm.size() === 0, { what: 'the idle store closed' });
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(false);
  });

  it('the decisions of calls waiting at once are committed in one transaction, each with its own result', async () => {
    const warm = warmStores();
    const d = dir();
    const calls = Array.from({ length: 8 }, () => warm.scope());
    const handles = await Promise.all(calls.map(async (c) => right(await c.open(d))));
    // Call 3 refuses (its decide fails); call 5's second event cannot be stored (a BigInt: JSON.stringify throws)
    // after its first was written: its savepoint is rolled back. Neither changes the others' results.
    const rs = await Promise.all(
      handles.map((h, i) =>
        batched(h, (s) =>
          s.transact(
            's',
            sum,
            i === 3
              ? () => E.left(cniError(ErrCode.InvalidNetworkConfig, 'no'))
              : i === 5
                ? () => E.right([{ type: 'Added', data: { n: 100 } } as Ev, { type: 'Added', data: { n: 1n } } as unknown as Ev])
                : add(i + 1),
            meta,
          ),
        ),
      ),
    );
    expect(rs.map((r) => (E.isRight(r) ? r.right.state : /BigInt/.test(r.left.msg) ? 'threw' : r.left.code))).toEqual([
      1,
      3,
      6,
      ErrCode.InvalidNetworkConfig,
      11,
      'threw',
      18,
      26,
    ]);
    expect(warm.stats()).toEqual({ calls: 8, transactions: 1 });
    for (const c of calls) c.end();
    warm.close();
    const check = callStores();
    expect(right(right(await check.open(d)).load('s', sum)).state).toBe(1 + 2 + 3 + 5 + 7 + 8);
    check.end();
  });

  it('property: decisions batched at once end as the same decisions one by one', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.integer({ min: -3, max: 9 }), fc.constant('refuse' as const)), { minLength: 1, maxLength: 12 }),
        async (moves) => {
          // Refusals depend on the state: a decision that would take the sum below zero is refused.
          const decide = (m: number | 'refuse') => (s: number) =>
            m === 'refuse' || s + m < 0
              ? E.left(cniError(ErrCode.InvalidNetworkConfig, `refused at ${s}`))
              : E.right([{ type: 'Added', data: { n: m } } as Ev]);
          const show = (r: E.Either<{ msg: string }, { state: number }>) => (E.isRight(r) ? r.right.state : r.left.msg);
          const one = callStores();
          const d1 = dir();
          const alone = [];
          for (const m of moves) alone.push(show(right(await one.open(d1)).transact('s', sum, decide(m), meta)));
          one.end();
          const warm = warmStores();
          const d2 = dir();
          const calls = moves.map(() => warm.scope());
          const together = await Promise.all(
            calls.map(async (c, i) => show(await batched(right(await c.open(d2)), (s) => s.transact('s', sum, decide(moves[i]!), meta)))),
          );
          expect(together).toEqual(alone);
          expect(warm.stats()).toEqual({ calls: moves.length, transactions: 1 });
          for (const c of calls) c.end();
          warm.close();
        },
      ),
      { numRuns: 30 },
    );
  });

  it('a store whose file was replaced while open is opened afresh', async () => {
    const warm = warmStores();
    const d = dir();
    const call = warm.scope();
    right(right(await call.open(d)).transact('s', sum, add(2), meta));
    // The dataDir is removed and made again: the next use must not write into the removed file.
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d);
    right(right(await call.open(d)).transact('s', sum, add(7), meta));
    call.end();
    warm.close();
    const check = callStores();
    expect(right(right(await check.open(d)).load('s', sum)).state).toBe(7);
    check.end();
  });

  it('keep at most max stores, closing the least recently used', async () => {
    const warm = warmStores(2);
    const [a, b, c] = [dir(), dir(), dir()];
    const call = warm.scope();
    for (const d of [a, b, c]) right(right(await call.open(d)).transact('s', sum, add(1), meta));
    expect(warm.size()).toBe(2);
    expect(existsSync(join(a, 'felt.db-wal'))).toBe(false); // closed, checkpointed
    expect(existsSync(join(c, 'felt.db-wal'))).toBe(true);
    call.end();
    warm.close();
  });
});
