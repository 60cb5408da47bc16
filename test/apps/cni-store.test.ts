// apps/cni/store.ts: one event store per dataDir per CNI call, closed at the end of the call (or earlier),
// and handles that survive an early close.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterEach, describe, expect, it } from 'vitest';
import type { Projection } from '../../core/events.ts';
import { closeCallStoresSoon, openCallStore, withCallStores } from '../../apps/cni/store.ts';

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
    await withCallStores(async () => {
      const a = right(await openCallStore(d));
      const b = right(await openCallStore(d));
      right(a.transact('s', sum, add(1), meta));
      a.close(); // left to the call
      right(b.transact('s', sum, add(2), meta));
      expect(right(b.load('s', sum)).state).toBe(3);
      expect(existsSync(join(d, 'felt.db-wal'))).toBe(true);
    });
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(false);
    const after = right(await openCallStore(d));
    expect(right(after.load('s', sum)).state).toBe(3);
    after.close();
  });

  it('a handle still works after an early close: it opens the store again', async () => {
    const d = dir();
    await withCallStores(async () => {
      const s = right(await openCallStore(d));
      right(s.transact('s', sum, add(5), meta));
      closeCallStoresSoon();
      await new Promise((r) => setImmediate(r));
      expect(existsSync(join(d, 'felt.db-wal'))).toBe(false);
      right(s.transact('s', sum, add(1), meta));
      expect(right(s.load('s', sum)).state).toBe(6);
    });
  });

  it('calls running at once share the store; it closes when the last one ends', async () => {
    const d = dir();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const first = withCallStores(async () => {
      const s = right(await openCallStore(d));
      right(s.transact('s', sum, add(1), meta));
      await held;
      right(s.transact('s', sum, add(1), meta));
    });
    await withCallStores(async () => {
      const s = right(await openCallStore(d));
      right(s.transact('s', sum, add(10), meta));
    });
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(true); // the first call still runs
    release();
    await first;
    expect(existsSync(join(d, 'felt.db-wal'))).toBe(false);
  });

  it('an open that fails is an error naming the store', async () => {
    const r = await withCallStores(() => openCallStore('/proc/felt-nope'));
    expect(E.isLeft(r)).toBe(true);
  });
});
