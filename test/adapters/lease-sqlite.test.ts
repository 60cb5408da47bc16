// The lease store contract on the embedded SQLite store (two store instances on one file = two nodes) and
// on the in-memory twin, with a simulated clock: acquire/taken, expiry, renew/lost, revoke, watch order and
// resync. Then SQLite specifics: 20 processes racing for one subnet, pruning, errors.

import { spawn } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { LeaseAttrs, LeaseEvent } from '../../core/flannel/types.ts';
import { memoryLeaseStore } from '../../adapters/memory/leases.ts';
import { sqliteLeaseStore } from '../../adapters/lease/sqlite.ts';
import type { LeaseStore, StoreError } from '../../adapters/lease/types.ts';
import { ROOT } from '../support/cni.ts';

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'felt-lease-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const T0 = Date.parse('2024-05-01T12:00:00.000Z');
const attrs = (n: number, mac = `aa:bb:cc:dd:ee:${n.toString(16).padStart(2, '0')}`): LeaseAttrs => ({
  PublicIP: `198.51.100.${n}`,
  PublicIPv6: null,
  BackendType: 'vxlan',
  BackendData: { VNI: 1, VtepMAC: mac },
});

async function ok<A>(te: () => Promise<E.Either<StoreError, A>>): Promise<A> {
  const r = await te();
  if (E.isLeft(r)) throw new Error(`store error: ${r.left.msg}`);
  return r.right;
}

/** A watch that records what it is told. */
function recorder(store: LeaseStore, from: number) {
  const events: { type: string; subnet?: string; ipv6Subnet?: string; publicIP: string; revision: number }[] = [];
  const resets: string[] = [];
  let lastRevision = from;
  const w = store.watch(
    from,
    (evs: readonly LeaseEvent[], revision: number) => {
      expect(revision).toBeGreaterThan(lastRevision);
      lastRevision = revision;
      for (const e of evs)
        events.push({
          type: e.type,
          ...(e.lease.subnet ? { subnet: e.lease.subnet } : {}),
          ...(e.lease.ipv6Subnet ? { ipv6Subnet: e.lease.ipv6Subnet } : {}),
          publicIP: e.lease.attrs.PublicIP,
          revision,
        });
    },
    (why) => resets.push(why),
  );
  const until = async (pred: () => boolean, ms = 5000): Promise<void> => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`watch: timed out; events so far ${JSON.stringify(events)}, resets ${JSON.stringify(resets)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return {
    events,
    resets,
    stop: () => w.stop(),
    until,
    get revision() {
      return lastRevision;
    },
  };
}

interface Pair {
  readonly a: LeaseStore;
  readonly b: LeaseStore;
  advance(ms: number): void;
  /** Fresh stores on the same data with a tiny change log (for pruning). */
  pruning?: (maxChanges: number) => LeaseStore;
}

type Maker = () => Pair;

const makers: [string, Maker][] = [
  [
    'sqlite (two instances on one file)',
    () => {
      const path = join(tmp(), 'leases.db');
      let now = T0;
      const clock = () => now;
      const a = sqliteLeaseStore({ path, clock, pollMs: 10 });
      const b = sqliteLeaseStore({ path, clock, pollMs: 10 });
      opened.push(a, b);
      return {
        a,
        b,
        advance: (ms) => void (now += ms),
        pruning: (maxChanges) => {
          const s = sqliteLeaseStore({ path, clock, pollMs: 10, maxChanges });
          opened.push(s);
          return s;
        },
      };
    },
  ],
  [
    'memory twin (one store seen by two nodes)',
    () => {
      let now = T0;
      const s = memoryLeaseStore({ clock: () => now });
      opened.push(s);
      return { a: s, b: s, advance: (ms) => void (now += ms) };
    },
  ],
];

const opened: LeaseStore[] = [];
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
});

describe.each(makers)('lease store contract: %s', (_name, make) => {
  it('stores the network config', async () => {
    const { a, b } = make();
    expect(await ok(a.getNetworkConfig())).toBeUndefined();
    await ok(a.putNetworkConfig('{"Network":"10.244.0.0/16"}'));
    expect(await ok(b.getNetworkConfig())).toBe('{"Network":"10.244.0.0/16"}');
  });

  it('acquire: the first node gets the subnet, the second is told taken', async () => {
    const { a, b } = make();
    const l = await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    expect(l).toEqual({ subnet: '10.244.1.0/24', attrs: attrs(1), expiration: new Date(T0 + 60_000).toISOString() });
    expect(await ok(b.acquire({ subnet: '10.244.1.0/24', attrs: attrs(2) }, 60))).toBe('taken');
    // Any spelling of the same subnet is the same key.
    expect(await ok(b.acquire({ subnet: '10.244.1.7/24', attrs: attrs(2) }, 60))).toBe('taken');
    expect(await ok(b.acquire({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 60))).not.toBe('taken');
    const snap = await ok(b.list());
    expect(snap.leases.map((x) => [x.subnet, x.attrs.PublicIP])).toEqual([
      ['10.244.1.0/24', '198.51.100.1'],
      ['10.244.2.0/24', '198.51.100.2'],
    ]);
    expect(snap.revision).toBe(2);
  });

  it('dual stack and IPv6-only leases', async () => {
    const { a, b } = make();
    await ok(
      a.acquire({ subnet: '10.244.3.0/24', ipv6Subnet: 'fd00:10:244:3::/64', attrs: { ...attrs(3), PublicIPv6: '2001:db8::3' } }, 60),
    );
    await ok(a.acquire({ ipv6Subnet: 'fd00:10:244:4::/64', attrs: { ...attrs(4), PublicIP: '0.0.0.0', PublicIPv6: '2001:db8::4' } }, 60));
    expect(await ok(b.acquire({ subnet: '10.244.3.0/24', ipv6Subnet: 'fd00:10:244:3::/64', attrs: attrs(9) }, 60))).toBe('taken');
    const snap = await ok(b.list());
    expect(snap.leases.map((x) => [x.subnet, x.ipv6Subnet])).toEqual([
      [undefined, 'fd00:10:244:4::/64'],
      ['10.244.3.0/24', 'fd00:10:244:3::/64'],
    ]);
    await ok(b.revoke('fd00:10:244:4::/64'));
    expect((await ok(a.list())).leases).toHaveLength(1);
  });

  it('refuses a request without a subnet or with a bad TTL', async () => {
    const { a } = make();
    const r = await a.acquire({ attrs: attrs(1) }, 60)();
    expect(E.isLeft(r) && !r.left.retryable).toBe(true);
    const t = await a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 0)();
    expect(E.isLeft(t) && t.left.msg).toMatch(/TTL/);
  });

  it('expiry frees a subnet, and its removal is recorded once', async () => {
    const { a, b, advance } = make();
    const start = await ok(a.list());
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 10));
    advance(9_999);
    expect(await ok(b.acquire({ subnet: '10.244.1.0/24', attrs: attrs(2) }, 10))).toBe('taken');
    advance(1);
    expect((await ok(a.list())).leases).toEqual([]);
    expect((await ok(b.list())).leases).toEqual([]);
    const got = await ok(b.acquire({ subnet: '10.244.1.0/24', attrs: attrs(2) }, 10));
    expect(got).not.toBe('taken');
    const w = recorder(a, start.revision);
    await w.until(() => w.events.length >= 3);
    expect(w.events.map((e) => [e.type, e.publicIP])).toEqual([
      ['added', '198.51.100.1'],
      ['removed', '198.51.100.1'],
      ['added', '198.51.100.2'],
    ]);
    w.stop();
  });

  it('renew extends the lease and updates its attrs; another node cannot renew it', async () => {
    const { a, b, advance } = make();
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 10));
    advance(8_000);
    const r = await ok(a.renew({ subnet: '10.244.1.0/24', attrs: attrs(1, '02:00:00:00:00:01') }, 10));
    expect(r).toEqual({ subnet: '10.244.1.0/24', attrs: attrs(1, '02:00:00:00:00:01'), expiration: new Date(T0 + 18_000).toISOString() });
    advance(8_000);
    const snap = await ok(b.list());
    expect(snap.leases).toEqual([r]);
    expect(await ok(b.renew({ subnet: '10.244.1.0/24', attrs: attrs(2) }, 10))).toBe('lost');
    advance(2_000);
    expect(await ok(a.renew({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 10))).toBe('lost');
  });

  it('renew after revoke is lost', async () => {
    const { a, b } = make();
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    await ok(b.revoke('10.244.1.0/24'));
    expect(await ok(a.renew({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60))).toBe('lost');
    expect((await ok(a.list())).leases).toEqual([]);
    // Revoking what is not there is not an error.
    await ok(b.revoke('10.244.1.0/24'));
  });

  it('watch reports every change after the revision, in order, with its revision', async () => {
    const { a, b, advance } = make();
    await ok(a.acquire({ subnet: '10.244.9.0/24', attrs: attrs(9) }, 60));
    const snap = await ok(b.list());
    const w = recorder(b, snap.revision);
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 5));
    await ok(b.acquire({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 60));
    await ok(a.renew({ subnet: '10.244.2.0/24', attrs: attrs(1) }, 60)); // not a's: no change
    await ok(b.renew({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 60));
    await ok(a.revoke('10.244.2.0/24'));
    advance(6_000);
    await ok(a.list()); // notices the expiry of 10.244.1.0/24
    await w.until(() => w.events.length >= 5);
    expect(w.events.map((e) => [e.type, e.subnet])).toEqual([
      ['added', '10.244.1.0/24'],
      ['added', '10.244.2.0/24'],
      ['added', '10.244.2.0/24'],
      ['removed', '10.244.2.0/24'],
      ['removed', '10.244.1.0/24'],
    ]);
    const revs = w.events.map((e) => e.revision);
    expect([...revs].sort((x, y) => x - y)).toEqual(revs);
    expect((await ok(a.list())).revision).toBe(w.revision);
    w.stop();

    // From a revision in the middle: only what came after it.
    const mid = recorder(a, snap.revision + 3);
    await mid.until(() => mid.events.length >= 2);
    expect(mid.events.map((e) => [e.type, e.subnet])).toEqual([
      ['removed', '10.244.2.0/24'],
      ['removed', '10.244.1.0/24'],
    ]);
    mid.stop();
  });

  it('a stopped watch is told nothing more', async () => {
    const { a } = make();
    const w = recorder(a, 0);
    const beside = recorder(a, 0);
    w.stop();
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    // A watch started with it, on the same store, is told: the stopped one had its chance too.
    await beside.until(() => beside.events.length === 1);
    beside.stop();
    expect(w.events).toEqual([]);
  });
});

describe('memory twin extras', () => {
  it('compaction resets watches behind it; unavailability fails retryably and pauses watches', async () => {
    const s = memoryLeaseStore();
    await ok(s.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    s.compact();
    const behind = recorder(s, 0);
    const current = recorder(s, s.revision);
    await s.flush();
    expect(behind.resets).toHaveLength(1);
    s.setAvailable(false);
    const r = await s.list()();
    expect(E.isLeft(r) && r.left.retryable).toBe(true);
    s.setAvailable(true);
    await ok(s.revoke('10.244.1.0/24'));
    await s.flush();
    expect(current.events.map((e) => e.type)).toEqual(['removed']);
    expect(s.sweep()).toEqual([]);
    await s.close();
  });
});

describe('sqlite lease store', () => {
  it('resets a watch whose revision was pruned from the change log', async () => {
    const path = join(tmp(), 'leases.db');
    const s = sqliteLeaseStore({ path, pollMs: 10, maxChanges: 3 });
    opened.push(s);
    for (let i = 1; i <= 6; i++) await ok(s.acquire({ subnet: `10.244.${i}.0/24`, attrs: attrs(i) }, 60));
    const snap = await ok(s.list());
    expect(snap.revision).toBe(6);
    const old = recorder(s, 2);
    await old.until(() => old.resets.length === 1);
    expect(old.resets[0]).toMatch(/revision 2 .*pruned through 3/);
    const edge = recorder(s, 3);
    await edge.until(() => edge.events.length === 3);
    expect(edge.events.map((e) => e.subnet)).toEqual(['10.244.4.0/24', '10.244.5.0/24', '10.244.6.0/24']);
    expect(edge.resets).toEqual([]);
    edge.stop();
    // A reset watch is stopped: later changes are not reported to it.
    const late = recorder(s, snap.revision);
    await ok(s.revoke('10.244.6.0/24'));
    // A live watch on the same store is told: the reset one had its chance too.
    await late.until(() => late.events.length === 1);
    late.stop();
    expect(old.events).toEqual([]);
  });

  it('survives reopening: leases, revision and config are in the file', async () => {
    const path = join(tmp(), 'sub', 'dir', 'leases.db');
    const s = sqliteLeaseStore({ path });
    await ok(s.putNetworkConfig('{}'));
    await ok(s.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    await s.close();
    const r = await s.list()();
    expect(E.isLeft(r) && r.left).toMatchObject({ kind: 'store', retryable: false });
    const t = sqliteLeaseStore({ path });
    opened.push(t);
    const snap = await ok(t.list());
    expect(snap.revision).toBe(1);
    expect(snap.leases.map((l) => l.subnet)).toEqual(['10.244.1.0/24']);
    expect(await ok(t.getNetworkConfig())).toBe('{}');
  });

  it('an unusable path is a StoreError, not an exception', async () => {
    const file = join(tmp(), 'a-file');
    writeFileSync(file, '');
    const s = sqliteLeaseStore({ path: join(file, 'leases.db') });
    const r = await s.list()();
    expect(E.isLeft(r) && r.left.kind).toBe('store');
    await s.close();
  });

  it('a leases.db with a newer schema version is refused, naming the file and both versions, and not downgraded', async () => {
    const path = join(tmp(), 'leases.db');
    const first = sqliteLeaseStore({ path });
    await ok(first.putNetworkConfig('{}'));
    await first.close();
    const raw = new Database(path);
    raw.pragma('user_version = 9');
    raw.close();
    const s = sqliteLeaseStore({ path });
    const r = await s.list()();
    expect(E.isLeft(r) && r.left.msg).toContain(`${path} has schema version 9, newer than the version 1`);
    await s.close();
    const after = new Database(path, { readonly: true });
    expect(after.pragma('user_version', { simple: true })).toBe(9);
    after.close();
  });

  it('20 processes racing to acquire the same subnet: exactly one wins', async () => {
    const dir = tmp();
    const path = join(dir, 'leases.db');
    const script = join(dir, 'race.mts');
    writeFileSync(
      script,
      `import { once } from 'node:events';
import { sqliteLeaseStore } from ${JSON.stringify(join(ROOT, 'adapters', 'lease', 'sqlite.ts'))};
const [path, id] = process.argv.slice(2) as [string, string];
const store = sqliteLeaseStore({ path });
await store.getNetworkConfig()();
process.stdout.write('ready\\n');
await once(process.stdin, 'data');
const r = await store.acquire({ subnet: '10.244.7.0/24', attrs: { PublicIP: '198.51.100.' + id, BackendType: 'vxlan' } }, 60)();
process.stdout.write(JSON.stringify(r) + '\\n');
await store.close();
process.exit(0);
`,
    );
    // Every process opens the store and says so; then all are told to go at once.
    const N = 20;
    let ready = 0;
    let go: () => void = () => undefined;
    const allReady = new Promise<void>((r) => (go = r));
    const children = Array.from({ length: N }, (_, i) => {
      const c = spawn(process.execPath, ['--import', 'tsx', script, path, String(i + 1)], { cwd: ROOT });
      let out = '';
      let err = '';
      let said = false;
      c.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        if (!said && out.includes('ready\n')) {
          said = true;
          if (++ready === N) go();
        }
      });
      c.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const done = new Promise<{ code: number; out: string; err: string }>((resolve) =>
        c.on('close', (code) => resolve({ code: code ?? -1, out: out.replace('ready\n', ''), err })),
      );
      return { c, done };
    });
    await Promise.race([allReady, Promise.all(children.map((x) => x.done))]);
    expect(ready).toBe(N);
    for (const { c } of children) c.stdin.write('go\n');
    const runs = await Promise.all(children.map((x) => x.done));
    for (const r of runs) expect(r.code, r.err).toBe(0);
    const results = runs.map((r) => JSON.parse(r.out) as E.Either<StoreError, unknown>);
    expect(results.every(E.isRight)).toBe(true);
    const winners = results.filter((r) => E.isRight(r) && r.right !== 'taken');
    expect(winners).toHaveLength(1);
    const check = sqliteLeaseStore({ path });
    opened.push(check);
    const snap = await ok(check.list());
    expect(snap.leases).toHaveLength(1);
    expect(snap.revision).toBe(1);
    expect(winners[0]).toEqual(E.right(snap.leases[0]));
  });
});

describe('sqlite lease store: a file deleted, replaced or edited under a running node', () => {
  it('a deleted leases.db: the watch is reset saying so, the store reopens a new file and puts its config back', async () => {
    const path = join(tmp(), 'leases.db');
    const s = sqliteLeaseStore({ path, pollMs: 10 });
    opened.push(s);
    await ok(s.putNetworkConfig('{"Network":"10.244.0.0/16"}'));
    await ok(s.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    const w = recorder(s, (await ok(s.list())).revision);
    for (const f of [path, `${path}-wal`, `${path}-shm`]) rmSync(f, { force: true });
    await w.until(() => w.resets.length === 1);
    expect(w.resets[0]).toContain(`${path} was deleted`);
    const snap = await ok(s.list());
    expect(snap.leases).toEqual([]);
    expect(await ok(s.getNetworkConfig())).toBe('{"Network":"10.244.0.0/16"}');
    // Another node (process) opening the path sees the same new file.
    const t = sqliteLeaseStore({ path });
    opened.push(t);
    await ok(s.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    expect((await ok(t.list())).leases.map((l) => l.subnet)).toEqual(['10.244.1.0/24']);
  });

  it('watchNetworkConfig: told the config at start and at each change, by any process', async () => {
    const path = join(tmp(), 'leases.db');
    const s = sqliteLeaseStore({ path, pollMs: 10 });
    const t = sqliteLeaseStore({ path });
    opened.push(s, t);
    await ok(s.putNetworkConfig('{"a":1}'));
    const seen: (string | undefined)[] = [];
    const w = s.watchNetworkConfig((j) => seen.push(j));
    const until = async (n: number) => {
      for (const end = Date.now() + 5000; seen.length < n; await new Promise((r) => setTimeout(r, 10)))
        if (Date.now() > end) throw new Error(`config watch: ${JSON.stringify(seen)}`);
    };
    await until(1);
    await ok(t.putNetworkConfig('{"a":2}'));
    await until(2);
    w.stop();
    expect(seen).toEqual(['{"a":1}', '{"a":2}']);
  });

  it('a file replaced by an older copy (revision below the watch): reset', async () => {
    const dir = tmp();
    const path = join(dir, 'leases.db');
    const s = sqliteLeaseStore({ path, pollMs: 10 });
    opened.push(s);
    await ok(s.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    await ok(s.acquire({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 60));
    const w = recorder(s, (await ok(s.list())).revision);
    const other = sqliteLeaseStore({ path: join(dir, 'copy.db') });
    await ok(other.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    await other.close();
    renameSync(join(dir, 'copy.db'), path);
    await w.until(() => w.resets.length === 1);
    expect(w.resets[0]).toContain('replaced');
  });

  it('a row whose attrs are not a lease lists as invalid; repair writes the value back, renew of it is lost', async () => {
    const path = join(tmp(), 'leases.db');
    const s = sqliteLeaseStore({ path, pollMs: 10 });
    opened.push(s);
    await ok(s.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60));
    const raw = new Database(path);
    raw.prepare("UPDATE leases SET attrs = 'not json' WHERE key = '10.244.1.0-24'").run();
    raw.close();
    const [l] = (await ok(s.list())).leases;
    expect(l).toMatchObject({ subnet: '10.244.1.0/24', attrs: { PublicIP: '0.0.0.0' }, invalid: expect.stringMatching(/invalid JSON/) });
    expect(await ok(s.renew({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60))).toBe('lost');
    expect(await ok(s.repair({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60))).toMatchObject({
      subnet: '10.244.1.0/24',
      attrs: { PublicIP: '198.51.100.1' },
    });
    expect((await ok(s.list())).leases).toMatchObject([{ subnet: '10.244.1.0/24', attrs: attrs(1) }]);
    expect(await ok(s.repair({ subnet: '10.244.9.0/24', attrs: attrs(1) }, 60))).toBe('absent');
  });
});
