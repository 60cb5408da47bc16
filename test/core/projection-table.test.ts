// A table projection (one row per allocation, remote lease, attachment record) always equals the fold of its
// log: generated command sequences over host-local's, feltd's and bridge's streams, run through the real
// deciders over the memory twin's view; after every transaction the stored rows, assembled, equal the log
// folded one event at a time with `evolve` (the table's changes folded in memory: tableProjection, so this
// checks the store's rows, overlay, count and rebuild against the pure fold). Also after the tables are dropped
// (rebuilt from the log), and for a batch folded at once from any cut (evolveAll). The same property on SQLite:
// test/adapters/store-tables.test.ts.

import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { fold, foldTable, type Event, type Stored } from '../../core/events.ts';
import { nodeProjection } from '../../core/flannel/node.ts';
import { memoryStore } from '../../adapters/memory/store.ts';
import { referenceFold, stepsArb } from '../support/projection-gen.ts';
import { runs } from '../support/runs.ts';

describe('table projections equal the fold of the log (memory twin)', () => {
  it('after every transaction, and after the tables are dropped', () => {
    const outcomes = new Set<string>();
    fc.assert(
      fc.property(stepsArb(40), fc.nat(40), (steps, dropAt) => {
        const store = memoryStore();
        steps.forEach((step, i) => {
          if (i === dropAt) store.dropTables();
          const r = step.run(store);
          outcomes.add(`${step.label} ${E.isLeft(r) ? 'left' : 'right'}`);
          const log = store.events.filter((e) => e.stream === step.stream) as Stored<Event>[];
          const want = referenceFold(step.projection, log);
          const stored = store.snapshot(step.projection.name, step.stream);
          if (stored) {
            expect(stored.position).toBe(log.at(-1)?.position ?? 0);
            expect(stored.state).toEqual(want);
          } else expect(log.length === 0 || (i >= dropAt && E.isLeft(r))).toBe(true); // dropped, and nothing committed since
          // The row count the store keeps is the number of rows.
          const rows = store.rows(step.projection.name, step.stream);
          if (rows)
            expect(store.view(step.stream, step.projection, (v) => E.right(v.count()))).toEqual(E.right(Object.keys(rows.rows).length));
          expect(E.map((l: { state: unknown }) => l.state)(store.load(step.stream, step.projection))).toEqual(E.right(want));
        });
      }),
      { numRuns: runs(150) },
    );
    // The generators reach every command.
    for (const c of [
      'AllocateAddresses',
      'ReleaseAddresses',
      'CollectGarbage',
      'ObserveLeases',
      'ApplyLeaseEvents',
      'RecordOwnLease',
      'LoseOwnLease',
      'LoadConfig',
      'RecordAttachment',
      'RemoveAttachments',
      'CollectAttachments',
    ]) {
      expect([...outcomes].some((o) => o.startsWith(`${c} right`))).toBe(true);
    }
  });

  it('a batch folded through the table (foldTable, feltd evolveAll) equals evolve one event at a time, from any cut', () => {
    fc.assert(
      fc.property(stepsArb(40), fc.nat(100), (steps, cut) => {
        const store = memoryStore();
        for (const s of steps) s.run(store);
        for (const stream of new Set(steps.map((s) => s.stream))) {
          const p = steps.find((s) => s.stream === stream)!.projection;
          const log = store.events.filter((e) => e.stream === stream) as Stored<Event>[];
          const at = cut % (log.length + 1);
          const head = fold(p, log.slice(0, at));
          expect(JSON.parse(JSON.stringify(foldTable(p.table, head, log.slice(at))))).toEqual(referenceFold(p, log));
        }
        const node = store.events.filter((e) => e.stream.startsWith('node/')) as Stored<never>[];
        expect(JSON.parse(JSON.stringify(fold(nodeProjection, node)))).toEqual(referenceFold(nodeProjection as never, node));
      }),
      { numRuns: runs(150) },
    );
  });
});
