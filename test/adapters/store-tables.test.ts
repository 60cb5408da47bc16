// The projection-table property on SQLite (test/core/projection-table.test.ts has it on the memory twin):
// for generated command sequences through the real deciders, after every transaction the table another
// connection reads back equals the stream's log folded with `evolve`; so does it after reopening the file,
// read-only from a version-1 file (no projection_rows yet), after the writer migrates that file and rebuilds
// the tables from the log, and when a table's snapshot is gone but stale rows are left.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import type { Event, Stored } from '../../core/events.ts';
import { openSqliteStore, type SqliteStore } from '../../adapters/store/sqlite.ts';
import { attachmentsProjection, attachmentStream, decideAttachmentsIn, type AttachmentCommand } from '../../core/bridge/attachments.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import { referenceFold, stepsArb, type Step } from '../support/projection-gen.ts';
import { runs } from '../support/runs.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const open = (dir: string, readonly = false): EventStore => {
  const s = openSqliteStore(dir, { readonly });
  if (E.isLeft(s)) throw new Error(s.left.msg);
  return s.right;
};

const logOf = (s: EventStore, stream: string): Stored<Event>[] => {
  const r = s.read({ stream });
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right as Stored<Event>[];
};

/** Every stream of the run equals its fold, as `store` loads it. */
function allEqual(store: EventStore, streams: ReadonlyMap<string, Step['projection']>): void {
  for (const [stream, p] of streams) {
    const log = logOf(store, stream);
    const l = store.load(stream, p);
    expect(E.isRight(l)).toBe(true);
    if (E.isRight(l)) {
      expect(l.right.state).toEqual(referenceFold(p, log));
      expect(l.right.position).toBe(log.at(-1)?.position ?? 0);
    }
  }
}

describe('SQLite table projections equal the fold of the log', () => {
  it('after every transaction, after reopening, read-only from a version-1 file, after migrating it, and over stale rows', () => {
    fc.assert(
      fc.property(stepsArb(30), (steps) => {
        const dir = mkdtempSync(join(tmpdir(), 'felt-store-tables-'));
        dirs.push(dir);
        const writer = open(dir);
        const streams = new Map<string, Step['projection']>();
        try {
          for (const step of steps) {
            step.run(writer);
            streams.set(step.stream, step.projection);
            // Another connection (another process) reads what was committed.
            const reader = open(dir, true);
            try {
              allEqual(reader, new Map([[step.stream, step.projection]]));
            } finally {
              reader.close();
            }
          }
          // The writer's own cached rows agree too.
          allEqual(writer, streams);
        } finally {
          writer.close();
        }
        if (streams.size === 0) return;

        // The stored row count is the number of rows.
        const raw = new Database(join(dir, 'felt.db'));
        for (const [stream, p] of streams) {
          const snap = raw.prepare('SELECT state FROM snapshots WHERE name = ? AND stream = ?').get(p.name, stream) as
            { state: string } | undefined;
          const n = (
            raw.prepare('SELECT count(*) AS n FROM projection_rows WHERE name = ? AND stream = ?').get(p.name, stream) as { n: number }
          ).n;
          if (snap) expect((JSON.parse(snap.state) as { count: number }).count).toBe(n);
        }
        // Reopened.
        const again = open(dir);
        allEqual(again, streams);
        again.close();

        // A version-1 file: no projection_rows, no table snapshots.
        raw.exec('DROP TABLE projection_rows');
        for (const p of new Set(streams.values())) raw.prepare('DELETE FROM snapshots WHERE name = ?').run(p.name);
        raw.pragma('user_version = 1');
        raw.close();
        const ro = open(dir, true);
        allEqual(ro, streams);
        ro.close();
        // The next writer migrates it; its first look rebuilds from the log, and so does its first transaction.
        const migrated = open(dir);
        allEqual(migrated, streams);
        for (const step of steps) step.run(migrated);
        allEqual(migrated, streams);
        migrated.close();

        // A snapshot gone but its rows left (stale): the rebuild ignores and replaces them.
        const raw2 = new Database(join(dir, 'felt.db'));
        for (const p of new Set(streams.values())) raw2.prepare('DELETE FROM snapshots WHERE name = ?').run(p.name);
        raw2
          .prepare(
            "INSERT OR REPLACE INTO projection_rows (name, stream, key, ix, value) SELECT name, stream, 'stale', NULL, '{}' FROM projection_rows",
          )
          .run();
        raw2.close();
        const stale = open(dir);
        allEqual(stale, streams);
        for (const step of steps.slice(0, 3)) step.run(stale);
        allEqual(stale, streams);
        stale.close();
        const last = open(dir, true);
        allEqual(last, streams);
        last.close();
      }),
      { numRuns: runs(25) },
    );
  });
});

describe('a long-lived writer (feltd serving CNI) keeps its row caches bounded', () => {
  it('a deleted row is forgotten: 500 attachments recorded and removed one after the other leave no cached row behind', () => {
    const dir = mkdtempSync(join(tmpdir(), 'felt-store-cache-'));
    dirs.push(dir);
    const store = open(dir) as SqliteStore;
    const run = (c: AttachmentCommand) => {
      const r = store.transactRows(attachmentStream('net'), attachmentsProjection, (v) => decideAttachmentsIn(c, v), {
        time: '2026-12-07T00:00:00.000Z',
      });
      if (E.isLeft(r)) throw new Error(r.left.msg);
    };
    try {
      for (let i = 0; i < 500; i++) {
        const who = { network: 'net', containerId: `c${i}`, ifname: 'eth0' };
        run({ type: 'RecordAttachment', data: { ...who, netns: `/run/netns/p${i}`, hostVeth: `veth${i}`, dataDir: dir } });
        run({ type: 'RemoveAttachments', data: { ...who, reason: 'del' } });
      }
      expect(store.cachedRows()).toBeLessThan(10);
      const l = store.load(attachmentStream('net'), attachmentsProjection);
      expect(E.isRight(l) && Object.keys(l.right.state.attachments).length).toBe(0);
    } finally {
      store.close();
    }
  });
});
