// felt import FILE|- [--data-dir DIR] [--merge]: append the events of an export (JSON lines: time, stream, type,
// data; positions are ignored and given anew) to the log at DIR, creating it if needed; streams the log already
// has are refused unless --merge. Every line is checked before anything is written (for the streams felt
// writes, the data of each event against its type: core/event-checks.ts), and the events go in in one
// transaction: a bad line (named by its number) imports nothing. The snapshots of the streams imported are then brought up to date from the log.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { streamKindOf } from '../../../core/projections.ts';
import { DB_FILE, openSqliteStore } from '../../../adapters/store/sqlite.ts';
import type { EventStore, RecordedEvent } from '../../../adapters/store/types.ts';
import { flag } from '../args.ts';
import { DATA_DIR_OPTION, dataDirOf, type Subcommand } from '../common.ts';

/** ISO 8601 with a time and an offset, as felt records times. */
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;
const printable = (s: string): boolean => !/[\u0000-\u001f\u007f]/.test(s);

/** The events of an export's text, or the first bad line's number and what is wrong with it. */
function parseExport(text: string): E.Either<string, RecordedEvent[]> {
  const lines = text.split('\n');
  const out: RecordedEvent[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    const at = `line ${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      return E.left(`${at}: not JSON (${(e as Error).message})`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      return E.left(`${at}: want a JSON object with time, stream, type and data`);
    const o = v as Record<string, unknown>;
    const { stream, type, time } = o;
    if (typeof stream !== 'string' || stream === '' || !printable(stream))
      return E.left(`${at}: stream: want a non-empty string of printable characters, got ${JSON.stringify(stream) ?? 'nothing'}`);
    if (typeof type !== 'string' || !/^[A-Za-z][A-Za-z0-9]*$/.test(type))
      return E.left(`${at}: type: want an event type name (e.g. AddressAllocated), got ${JSON.stringify(type) ?? 'nothing'}`);
    const kind = streamKindOf(stream);
    if (kind && !Object.hasOwn(kind.checks, type))
      return E.left(`${at}: type: "${type}" is not an event of ${kind.prefix} streams (${kind.types.join(', ')})`);
    if (typeof time !== 'string' || !TIME.test(time) || !Number.isFinite(Date.parse(time))) {
      return E.left(`${at}: time: want an ISO 8601 time such as 2024-01-01T00:00:00.000Z, got ${JSON.stringify(time) ?? 'nothing'}`);
    }
    if (!('data' in o)) return E.left(`${at}: data: missing`);
    if (o['position'] !== undefined && !(Number.isSafeInteger(o['position']) && (o['position'] as number) > 0)) {
      return E.left(`${at}: position: want a positive integer (it is renumbered) or none, got ${JSON.stringify(o['position'])}`);
    }
    // The data as the stream's decider would have made it (a numeric ip, a newline in a name, a `..` path are
    // refused here): imported state is read by the plugins, GC and the CLI as if they had written it.
    if (kind) {
      const checked = kind.checks[type]!(o['data'], { stream, name: stream.slice(kind.prefix.length) });
      if (E.isLeft(checked)) return E.left(`${at}: ${type} in ${stream}: ${checked.left}`);
    }
    out.push({ stream, type, data: o['data'], time });
  }
  return E.right(out);
}

/** Bring the snapshots of `streams` up to date: `transact` with no new events folds the log onto each. */
function refreshSnapshots(store: EventStore, streams: Iterable<string>, time: string): E.Either<string, void> {
  for (const stream of streams) {
    const kind = streamKindOf(stream);
    if (!kind) continue;
    const r = store.transact(stream, kind.projection, () => E.right([]), { time });
    if (E.isLeft(r)) return E.left(`${stream}: ${r.left.msg}`);
  }
  return E.right(undefined);
}

export const importCommand: Subcommand = {
  name: 'import',
  summary: 'append an export (JSON lines) to the log, all or nothing',
  positional: 'FILE|-',
  options: [{ name: 'merge', help: 'also append to streams the log already has (their histories are folded together)' }, DATA_DIR_OPTION],
  run: (p, io) => {
    const source = p.positionals[0];
    if (source === undefined) {
      io.err('felt import: which file? (FILE, or - for stdin)\n');
      return 2;
    }
    let text: string;
    try {
      text = readFileSync(source === '-' ? 0 : source, 'utf8');
    } catch (e) {
      io.err(`felt import: ${source === '-' ? 'stdin' : source}: ${(e as Error).message}\n`);
      return 1;
    }
    const events = parseExport(text);
    if (E.isLeft(events)) {
      io.err(`felt import: ${source === '-' ? 'stdin' : source}: ${events.left}; nothing imported\n`);
      return 1;
    }
    const dir = dataDirOf(p, io);
    const store = openSqliteStore(dir);
    if (E.isLeft(store)) {
      io.err(`felt import: ${store.left.msg}\n`);
      return 1;
    }
    try {
      const streams = [...new Set(events.right.map((e) => e.stream))].sort();
      if (!flag(p, 'merge')) {
        // Two histories of one stream fold into a state neither had (an address held in both is overwritten
        // by the later one): only on request.
        for (const stream of streams) {
          const has = store.right.read({ stream, limit: 1 });
          if (E.isLeft(has)) {
            io.err(`felt import: ${has.left.msg}; nothing imported\n`);
            return 1;
          }
          if (has.right.length) {
            io.err(
              `felt import: stream ${stream} already has events in ${join(dir, DB_FILE)}; nothing imported (import into a new --data-dir, or pass --merge to fold both histories together)\n`,
            );
            return 1;
          }
        }
      }
      const r = store.right.append(events.right);
      if (E.isLeft(r)) {
        io.err(`felt import: ${r.left.msg}; nothing imported\n`);
        return 1;
      }
      const now = (io.now ? io.now() : new Date()).toISOString();
      const s = refreshSnapshots(store.right, streams, now);
      if (E.isLeft(s))
        io.err(`felt import: imported, but a snapshot was not updated (it is rebuilt from the log on next use): ${s.left}\n`);
      const range = r.right.first ? ` (positions ${r.right.first}-${r.right.last})` : '';
      io.out(
        `imported ${events.right.length} events${range} into ${join(dir, DB_FILE)}: ${streams.length} stream${streams.length === 1 ? '' : 's'}\n`,
      );
      return 0;
    } finally {
      store.right.close();
    }
  },
};
