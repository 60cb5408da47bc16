// The event store contract, run against SQLite and the in-memory twin; then SQLite specifics: the snapshot
// is written in the same transaction as the events, a stale snapshot is caught up from the log, and a store
// reopened per call (as each plugin process does) keeps allocating.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import { cniError } from '../../core/cni/errors.ts';
import { fold, type Event, type Projection } from '../../core/events.ts';
import { parseIpamConf } from '../../core/ipam/config.ts';
import { decide, decideIpam, ipamProjection, ipamStream, type IpamCommand, type IpamState } from '../../core/ipam/decider.ts';
import { memoryStore } from '../../adapters/memory/store.ts';
import { replay } from '../../adapters/store/replay.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { ensureSchema } from '../../adapters/store/sqlite-schema.ts';
import type { EventStore } from '../../adapters/store/types.ts';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'felt-store-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

type Added = Event<'Added', { n: number }>;
const sum: Projection<{ total: number; count: number }, Added> = {
  name: 'sum@1',
  initialState: () => ({ total: 0, count: 0 }),
  evolve: (s, e) => ({ total: s.total + e.data.n, count: s.count + 1 }),
};
const addN =
  (...ns: number[]) =>
  () =>
    E.right(ns.map((n): Added => ({ type: 'Added', data: { n } })));
const T = '2024-05-01T12:00:00.000Z';

const open = (dir: string): EventStore => {
  const s = openSqliteStore(dir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  return s.right;
};

const impls: [string, () => EventStore][] = [
  ['sqlite', () => open(tmp())],
  ['memory', () => memoryStore()],
];

describe.each(impls)('event store contract (%s)', (_name, make) => {
  it('appends with global positions, the time passed in, and folds the snapshot', () => {
    const s = make();
    const r1 = s.transact('a', sum, addN(1, 2), { time: T });
    const r2 = s.transact('b', sum, addN(10), { time: 'later' });
    const r3 = s.transact('a', sum, addN(3), { time: T });
    expect(E.isRight(r1) && r1.right.events.map((e) => e.position)).toEqual([1, 2]);
    expect(E.isRight(r2) && r2.right.events[0]).toEqual({ position: 3, stream: 'b', type: 'Added', data: { n: 10 }, time: 'later' });
    expect(E.isRight(r3) && r3.right).toMatchObject({ state: { total: 6, count: 3 }, position: 4 });
    expect(s.load('a', sum)).toEqual(E.right({ state: { total: 6, count: 3 }, position: 4 }));
    expect(s.load('nothing', sum)).toEqual(E.right({ state: { total: 0, count: 0 }, position: 0 }));
    s.close();
  });

  it('a Left from decide changes nothing and comes back unchanged', () => {
    const s = make();
    s.transact('a', sum, addN(1), { time: T });
    const err = cniError(100, 'full');
    expect(s.transact('a', sum, () => E.left(err), { time: T })).toEqual(E.left(err));
    expect(s.read()).toEqual(E.right([{ position: 1, stream: 'a', type: 'Added', data: { n: 1 }, time: T }]));
    expect(s.load('a', sum)).toEqual(E.right({ state: { total: 1, count: 1 }, position: 1 }));
  });

  it('an empty decision appends nothing', () => {
    const s = make();
    const r = s.transact('a', sum, () => E.right([]), { time: T });
    expect(r).toEqual(E.right({ state: { total: 0, count: 0 }, position: 0, events: [] }));
    expect(s.read()).toEqual(E.right([]));
  });

  it('reads by stream, prefix, position and limit; lists streams', () => {
    const s = make();
    s.transact('ipam/x', sum, addN(1, 2), { time: T });
    s.transact('ipam/y', sum, addN(3), { time: T });
    s.transact('other', sum, addN(4), { time: T });
    const pos = (q: Parameters<EventStore['read']>[0]) => {
      const r = s.read(q);
      return E.isRight(r) ? r.right.map((e) => e.position) : [];
    };
    expect(pos({})).toEqual([1, 2, 3, 4]);
    expect(pos({ stream: 'ipam/x' })).toEqual([1, 2]);
    expect(pos({ streamPrefix: 'ipam/' })).toEqual([1, 2, 3]);
    expect(pos({ fromPosition: 2 })).toEqual([3, 4]);
    expect(pos({ fromPosition: 1, limit: 2 })).toEqual([2, 3]);
    expect(s.streams('ipam/')).toEqual(E.right(['ipam/x', 'ipam/y']));
    expect(s.streams()).toEqual(E.right(['ipam/x', 'ipam/y', 'other']));
  });

  it('replay in chunks equals the snapshot', () => {
    const s = make();
    for (let i = 1; i <= 25; i++) s.transact(i % 2 ? 'a' : 'b', sum, addN(i), { time: T });
    for (const chunk of [1, 3, 7, 1000]) expect(replay(s, 'a', sum, { chunk })).toEqual(s.load('a', sum));
  });
});

describe('SQLite event store', () => {
  it('writes the snapshot in the same transaction as the events (a failing snapshot leaves no events)', () => {
    const dir = tmp();
    const s = open(dir);
    s.transact('a', sum, addN(1), { time: T });
    // A state JSON cannot hold: the snapshot write throws after the event insert, and both roll back.
    const bad: Projection<{ total: unknown }, Added> = { name: 'sum@1', initialState: () => ({ total: 0 }), evolve: () => ({ total: 1n }) };
    const r = s.transact('a', bad, addN(5), { time: T });
    expect(E.isLeft(r) && r.left.code).toBe(110);
    const raw = new Database(join(dir, 'felt.db'), { readonly: true });
    expect(raw.prepare('SELECT count(*) AS n FROM events').get()).toEqual({ n: 1 });
    expect(raw.prepare('SELECT name, stream, position, state FROM snapshots').all()).toEqual([
      { name: 'sum@1', stream: 'a', position: 1, state: '{"total":1,"count":1}' },
    ]);
    raw.close();
    // A decide that throws (a bug) rolls back too.
    expect(
      E.isLeft(
        s.transact(
          'a',
          sum,
          () => {
            throw new Error('boom');
          },
          { time: T },
        ),
      ),
    ).toBe(true);
    expect(s.transact('a', sum, addN(2), { time: T })).toMatchObject(E.right({ position: 2, state: { total: 3 } }));
    s.close();
  });

  it('every committed transaction has its snapshot at the stream head', () => {
    const dir = tmp();
    const s = open(dir);
    const c = parseIpamConf(
      {
        cniVersion: '1.0.0',
        name: 'n',
        type: 'bridge',
        raw: { ipam: { ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: 'fd00::/64' }]] } },
      },
      {},
    );
    if (E.isLeft(c)) throw new Error(c.left.msg);
    for (let i = 0; i < 20; i++) {
      const cmd: IpamCommand =
        i % 3 === 2
          ? { type: 'ReleaseAddresses', data: { network: 'n', containerId: `c${i - 1}`, ifname: 'eth0' } }
          : { type: 'AllocateAddresses', data: { conf: c.right, containerId: `c${i}`, ifname: 'eth0' } };
      s.transact(ipamStream('n'), ipamProjection, (st) => decide(cmd, st), { time: T });
    }
    const raw = new Database(join(dir, 'felt.db'), { readonly: true });
    const head = raw.prepare("SELECT max(position) AS p FROM events WHERE stream = 'ipam/n'").get() as { p: number };
    const snap = raw.prepare("SELECT position, state FROM snapshots WHERE stream = 'ipam/n'").get() as { position: number; state: string };
    // host-local's projection is a table: one row per allocation, the header (cursors) and count in the snapshot.
    const rows = raw
      .prepare("SELECT key, ix, value FROM projection_rows WHERE name = ? AND stream = 'ipam/n'")
      .all(ipamProjection.name) as {
      key: string;
      ix: string;
      value: string;
    }[];
    raw.close();
    expect(snap.position).toBe(head.p);
    const log = s.read({ stream: 'ipam/n' });
    expect(E.isRight(log)).toBe(true);
    if (E.isRight(log)) {
      const folded = JSON.parse(JSON.stringify(fold(ipamProjection, log.right as never))) as IpamState;
      expect(JSON.parse(snap.state)).toEqual({
        header: { lastReserved: folded.lastReserved },
        count: Object.keys(folded.allocations).length,
      });
      expect(Object.fromEntries(rows.map((r) => [r.key, JSON.parse(r.value)]))).toEqual(folded.allocations);
      for (const r of rows) expect(r.ix).toBe(JSON.stringify([folded.allocations[r.key]!.containerId, folded.allocations[r.key]!.ifname]));
    }
    s.close();
  });

  it('catches up a missing or stale snapshot from the log, and a new projection name rebuilds', () => {
    const dir = tmp();
    const s = open(dir);
    s.transact('a', sum, addN(1, 2, 3), { time: T });
    const raw = new Database(join(dir, 'felt.db'));
    raw.prepare('UPDATE snapshots SET position = 1, state = \'{"total":1,"count":1}\'').run();
    expect(s.load('a', sum)).toEqual(E.right({ state: { total: 6, count: 3 }, position: 3 }));
    raw.prepare('DELETE FROM snapshots').run();
    expect(s.load('a', sum)).toEqual(E.right({ state: { total: 6, count: 3 }, position: 3 }));
    // The next transaction writes the caught-up snapshot, even with nothing to append.
    s.transact('a', sum, () => E.right([]), { time: T });
    expect(raw.prepare('SELECT position FROM snapshots').get()).toEqual({ position: 3 });
    raw.close();
    const v2: Projection<number, Added> = { name: 'sum@2', initialState: () => 100, evolve: (n, e) => n + e.data.n };
    expect(s.load('a', v2)).toEqual(E.right({ state: 106, position: 3 }));
    s.close();
  });

  it('a version-1 file: the next writer adds the table, rebuilds it from the log and drops the old whole-state snapshot', () => {
    const dir = tmp();
    const s = open(dir);
    const c = parseIpamConf(
      { cniVersion: '1.0.0', name: 'n', type: 'bridge', raw: { ipam: { ranges: [[{ subnet: '10.0.0.0/24' }]] } } },
      {},
    );
    if (E.isLeft(c)) throw new Error(c.left.msg);
    const v1: Projection<IpamState, never> = {
      name: 'ipam@1',
      initialState: ipamProjection.initialState,
      evolve: ipamProjection.evolve as never,
    };
    for (let i = 0; i < 3; i++) {
      s.transact(
        ipamStream('n'),
        v1,
        (st) => decide({ type: 'AllocateAddresses', data: { conf: c.right, containerId: `c${i}`, ifname: 'eth0' } }, st) as never,
        { time: T },
      );
    }
    s.close();
    const raw = new Database(join(dir, 'felt.db'));
    raw.exec('DROP TABLE projection_rows');
    raw.pragma('user_version = 1');
    raw.close();
    const ro = openSqliteStore(dir, { readonly: true });
    if (E.isLeft(ro)) throw new Error(ro.left.msg);
    expect(E.map((l: { state: IpamState }) => Object.keys(l.state.allocations))(ro.right.load(ipamStream('n'), ipamProjection))).toEqual(
      E.right(['10.0.0.2', '10.0.0.3', '10.0.0.4']),
    );
    ro.right.close();
    const w = open(dir);
    const r = w.transactRows(
      ipamStream('n'),
      ipamProjection,
      (v) => decideIpam({ type: 'AllocateAddresses', data: { conf: c.right, containerId: 'c3', ifname: 'eth0' } }, v),
      {
        time: T,
      },
    );
    expect(E.isRight(r) && r.right.replayed.length).toBe(3);
    expect(E.isRight(r) && r.right.events.map((e) => e.data.ip)).toEqual(['10.0.0.5']);
    w.close();
    const after = new Database(join(dir, 'felt.db'), { readonly: true });
    expect(after.pragma('user_version', { simple: true })).toBe(2);
    expect(after.prepare('SELECT name FROM snapshots').all()).toEqual([{ name: ipamProjection.name }]);
    expect((after.prepare('SELECT count(*) AS n FROM projection_rows').get() as { n: number }).n).toBe(4);
    after.close();
  });

  it('persists across opens, WAL, and opens read-only', () => {
    const dir = tmp();
    const s = open(dir);
    s.transact('a', sum, addN(7), { time: T });
    s.close();
    const raw = new Database(join(dir, 'felt.db'), { readonly: true });
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    raw.close();
    const ro = openSqliteStore(dir, { readonly: true });
    expect(E.isRight(ro) && ro.right.load('a', sum)).toEqual(E.right({ state: { total: 7, count: 1 }, position: 1 }));
    if (E.isRight(ro)) ro.right.close();
    expect(E.isLeft(openSqliteStore(join(dir, 'none'), { readonly: true }))).toBe(true);
  });

  it('a file with a newer schema version is refused (code 5, naming the file and both versions), read-only too, and not downgraded', () => {
    const dir = tmp();
    const s = open(dir);
    s.transact('a', sum, addN(7), { time: T });
    s.close();
    const file = join(dir, 'felt.db');
    const raw = new Database(file);
    raw.pragma('user_version = 3');
    raw.close();
    for (const opts of [{}, { readonly: true }]) {
      const r = openSqliteStore(dir, opts);
      expect(E.isLeft(r) && r.left.code, JSON.stringify(opts)).toBe(5);
      expect(E.isLeft(r) && r.left.msg).toContain(`${file} has schema version 3, newer than the version 2`);
    }
    const after = new Database(file, { readonly: true });
    expect(after.pragma('user_version', { simple: true })).toBe(3);
    after.close();
  });

  it.each([
    ['an event that is not JSON', "UPDATE events SET data = '{' WHERE position = 2", 'corrupt data of event 2 (ipam/n)'],
    ['an event its projection cannot fold', "UPDATE events SET data = 'null' WHERE position = 2", 'corrupt stream ipam/n'],
    ['a snapshot that is not JSON', "UPDATE snapshots SET state = 'x'", 'corrupt snapshot of ipam/n'],
    ['a table row that is not JSON', "UPDATE projection_rows SET value = '{'", 'corrupt row of ipam/n'],
  ])('%s: an I/O error (code 5) naming the file and what is corrupt, never an internal error', (_what, sql, message) => {
    const dir = tmp();
    const c = parseIpamConf(
      { cniVersion: '1.0.0', name: 'n', type: 'bridge', raw: { ipam: { ranges: [[{ subnet: '10.0.0.0/29' }]] } } },
      {},
    );
    if (E.isLeft(c)) throw new Error(c.left.msg);
    const add = (st: EventStore, id: string) =>
      st.transactRows(
        ipamStream('n'),
        ipamProjection,
        (v) => decideIpam({ type: 'AllocateAddresses', data: { conf: c.right, containerId: id, ifname: 'eth0' } }, v),
        { time: T },
      );
    const s = open(dir);
    expect(E.isRight(add(s, 'c0'))).toBe(true);
    s.close();
    // Events after the snapshot are replayed by the next transaction: append one more behind the snapshot.
    const raw = new Database(join(dir, 'felt.db'));
    raw
      .prepare('INSERT INTO events (stream, type, data, time) VALUES (?, ?, ?, ?)')
      .run(
        'ipam/n',
        'AddressAllocated',
        JSON.stringify({ network: 'n', containerId: 'c1', ifname: 'eth0', rangeSet: 0, ip: '10.0.0.3' }),
        T,
      );
    raw.exec(sql);
    raw.close();
    for (const st of [open(dir), openSqliteStore(dir, { readonly: true }) as E.Right<EventStore>]) {
      const store = 'right' in st ? st.right : st;
      const release = store.transactRows(
        ipamStream('n'),
        ipamProjection,
        (v) => decideIpam({ type: 'ReleaseAddresses', data: { network: 'n', containerId: 'c0', ifname: 'eth0' } }, v),
        { time: T },
      );
      const results = [release, store.load(ipamStream('n'), ipamProjection)];
      for (const r of results.slice('right' in st ? 1 : 0)) {
        expect(E.isLeft(r) && r.left.code, JSON.stringify(r)).toBe(5);
        expect(E.isLeft(r) && r.left.msg).toContain(join(dir, 'felt.db'));
        expect(E.isLeft(r) && r.left.msg).toContain(message);
      }
      store.close();
    }
  });

  it('reports an unusable data dir as an I/O error naming the file', () => {
    const r = openSqliteStore('/proc/felt-cannot-be-here');
    expect(E.isLeft(r) && r.left.code).toBe(5);
    expect(E.isLeft(r) && r.left.msg).toContain('/proc/felt-cannot-be-here');
  });

  it('creates the schema in one transaction: a failure half-way leaves no table and the version unset', () => {
    const file = join(tmp(), 'felt.db');
    const db = new Database(file);
    try {
      const half = 'CREATE TABLE events (position INTEGER PRIMARY KEY); CREATE TABLE snapshots (oops';
      expect(() => ensureSchema(db, half, 1, Date.now() + 1000)).toThrow();
      expect(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([]);
      expect(db.pragma('user_version', { simple: true })).toBe(0);
    } finally {
      db.close();
    }
    // Such a file is an empty log to a reader, and the next writer completes it.
    const ro = openSqliteStore(dirname(file), { readonly: true });
    if (E.isLeft(ro)) throw new Error(ro.left.msg);
    expect(ro.right.read()).toEqual(E.right([]));
    expect(ro.right.streams()).toEqual(E.right([]));
    expect(E.map((l: { state: unknown }) => l.state)(ro.right.load('s', sum))).toEqual(E.right({ total: 0, count: 0 }));
    ro.right.close();
    const w = open(dirname(file));
    expect(E.isRight(w.transact('s', sum, addN(1), { time: T }))).toBe(true);
    w.close();
  });

  // How long an open and a transaction take is measured by test/bench/store.bench.ts (npm run bench:store).
  it('200 processes in a row (open, one ADD transaction, close) each allocate a new address', () => {
    const dir = tmp();
    open(dir).close(); // create the schema once
    const c = parseIpamConf(
      { cniVersion: '1.0.0', name: 'n', type: 'bridge', raw: { ipam: { ranges: [[{ subnet: '10.0.0.0/16' }]] } } },
      {},
    );
    if (E.isLeft(c)) throw new Error(c.left.msg);
    for (let i = 0; i < 200; i++) {
      const s = open(dir);
      const r = s.transact(
        ipamStream('n'),
        ipamProjection,
        (st) => decide({ type: 'AllocateAddresses', data: { conf: c.right, containerId: `c${i}`, ifname: 'eth0' } }, st),
        { time: T },
      );
      s.close();
      expect(E.isRight(r)).toBe(true);
    }
    const s = open(dir);
    const loaded = s.load(ipamStream('n'), ipamProjection);
    s.close();
    if (E.isLeft(loaded)) throw new Error(loaded.left.msg);
    const held = Object.values(loaded.right.state.allocations);
    expect(held).toHaveLength(200);
    expect(new Set(held.map((a) => a.containerId)).size).toBe(200);
    expect(loaded.right.position).toBe(200);
  });
});
