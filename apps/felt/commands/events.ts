// felt events: the log, oldest first, filtered by stream, position, time and type; as a table or JSON lines;
// with --follow, then every new event as it is appended (by any process: the read-only connection sees each
// commit of the writers, WAL), until SIGINT or SIGTERM.

import * as E from 'fp-ts/lib/Either.js';
import type { StoredEvent } from '../../../core/events.ts';
import { ipamStream } from '../../../core/ipam/decider.ts';
import type { ReadQuery } from '../../../adapters/store/types.ts';
import { flag, str, type Parsed } from '../args.ts';
import { DATA_DIR_OPTION, JSON_OPTION, NETWORK_OPTION, openLog, type IO, type Subcommand } from '../common.ts';
import { summarize } from '../summary.ts';
import { table } from '../table.ts';

const count = (s: string | undefined, name: string): number | undefined | Error => {
  if (s === undefined) return undefined;
  return /^[0-9]+$/.test(s) ? Number(s) : new Error(`--${name}: want a non-negative integer, got "${s}"`);
};

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * A time option: ISO 8601 (`2024-01-01`, `2024-01-01T10:00:00Z`, `...+02:00`; without an offset it is UTC),
 * `now`, or a duration before now (`90s`, `10m`, `2h`, `1d`, `1w`, `500ms`). Returned as felt records times
 * (toISOString), so it compares with the log's times as text.
 */
export function parseTime(text: string, now: Date, name: string): string | Error {
  const t = text.trim();
  if (t === 'now') return now.toISOString();
  const rel = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/.exec(t);
  if (rel) return new Date(now.getTime() - Number(rel[1]) * UNITS[rel[2]!]!).toISOString();
  const m = ISO.exec(t);
  if (m) {
    const [, y, mo, d, h = '00', mi = '00', s = '00', frac = '', zone = 'Z'] = m;
    const ms = Date.parse(
      `${y}-${mo}-${d}T${h}:${mi}:${s}${frac.slice(0, 4)}${zone.toUpperCase() === 'Z' ? 'Z' : zone.length === 5 ? `${zone.slice(0, 3)}:${zone.slice(3)}` : zone}`,
    );
    if (Number.isFinite(ms)) return new Date(ms).toISOString();
  }
  return new Error(
    `--${name}: "${text}" is not a time (want ISO 8601 such as 2024-01-01T10:00:00Z, or a duration before now such as 10m, 2h, 1d)`,
  );
}

/** One event as a JSON line: what `--json`, `felt export` print and `felt import` reads. */
export const eventLine = (e: StoredEvent): string =>
  JSON.stringify({ position: e.position, time: e.time, stream: e.stream, type: e.type, data: e.data });

/** The comma list of a repeatable option: `--type A,B --type C`. */
export const listOf = (s: string | undefined): string[] | undefined =>
  s === undefined
    ? undefined
    : s
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x !== '');

/** The time filters shared by events and export: `--since`, `--until`. */
export function timeFilter(p: Parsed, io: IO): { since?: string; until?: string } | Error {
  const now = io.now ? io.now() : new Date();
  const out: { since?: string; until?: string } = {};
  for (const name of ['since', 'until'] as const) {
    const v = str(p, name);
    if (v === undefined) continue;
    const t = parseTime(v, now, name);
    if (t instanceof Error) return t;
    out[name] = t;
  }
  if (out.since !== undefined && out.until !== undefined && out.since > out.until)
    return new Error(`--since ${out.since} is after --until ${out.until}`);
  return out;
}

export const SINCE_OPTION = {
  name: 'since',
  value: 'TIME',
  help: 'only events recorded at or after TIME (ISO 8601, or 10m, 2h, 1d ago)',
} as const;
export const UNTIL_OPTION = { name: 'until', value: 'TIME', help: 'only events recorded at or before TIME' } as const;
export const STREAM_OPTION = { name: 'stream', value: 'STREAM', help: 'only this stream (e.g. ipam/mynet)' } as const;

/** How often --follow looks for new events. */
const FOLLOW_INTERVAL_MS = 200;

const HEADER = ['POSITION', 'TIME', 'STREAM', 'TYPE', 'DATA'];
const rowOf = (e: StoredEvent): string[] => [String(e.position), e.time, e.stream, e.type, summarize(e)];

/** Resolves after `ms`, or as soon as `signal` aborts. */
const pause = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });

export const eventsCommand: Subcommand = {
  name: 'events',
  summary: 'list the event log (position, time, stream, type, summary); --follow for new events',
  options: [
    NETWORK_OPTION,
    STREAM_OPTION,
    { name: 'type', value: 'TYPE', help: 'only events of this type (repeat it, or a comma list)', repeatable: true },
    SINCE_OPTION,
    UNTIL_OPTION,
    { name: 'from', value: 'POSITION', help: 'only events after this position' },
    { name: 'limit', value: 'N', help: 'at most N events (the first N)' },
    { name: 'follow', help: 'then print new events as they are appended, until SIGINT or SIGTERM' },
    DATA_DIR_OPTION,
    { ...JSON_OPTION, help: 'print one JSON object per line (position, time, stream, type, data)' },
  ],
  run: async (p, io) => {
    const fail = (msg: string): number => {
      io.err(`felt events: ${msg}\n`);
      return 2;
    };
    const from = count(str(p, 'from'), 'from');
    const limit = count(str(p, 'limit'), 'limit');
    for (const v of [from, limit]) if (v instanceof Error) return fail(v.message);
    const times = timeFilter(p, io);
    if (times instanceof Error) return fail(times.message);
    const types = listOf(str(p, 'type'));
    if (types !== undefined && types.length === 0) return fail('--type: want an event type (e.g. AddressAllocated)');
    const follow = flag(p, 'follow');
    if (follow && times.until !== undefined) return fail('--until cannot be combined with --follow (new events are always later)');
    if (follow && limit !== undefined) return fail('--limit cannot be combined with --follow (it would skip the events after the first N)');
    const network = str(p, 'network');
    const stream = str(p, 'stream') ?? (network !== undefined ? ipamStream(network) : undefined);
    const json = flag(p, 'json');
    const query: ReadQuery = {
      ...(stream !== undefined ? { stream } : {}),
      ...times,
      ...(types !== undefined ? { types } : {}),
    };

    const store = openLog('events', p, io);
    if (!store) return 1;
    try {
      const head = store.lastPosition();
      if (E.isLeft(head)) {
        io.err(`felt events: ${head.left.msg}\n`);
        return 1;
      }
      // Bounded by the head read first, so that --follow goes on exactly from there.
      const events = store.read({
        ...query,
        ...(typeof from === 'number' ? { fromPosition: from } : {}),
        ...(follow ? { toPosition: head.right } : {}),
        ...(typeof limit === 'number' ? { limit } : {}),
      });
      if (E.isLeft(events)) {
        io.err(`felt events: ${events.left.msg}\n`);
        return 1;
      }
      const print = (batch: readonly StoredEvent[], header: boolean): void => {
        if (batch.length === 0) return;
        if (json) io.out(batch.map((e) => eventLine(e) + '\n').join(''));
        else {
          const t = table(HEADER, batch.map(rowOf));
          io.out(header ? t : t.slice(t.indexOf('\n') + 1));
        }
      };
      if (json || follow) print(events.right, true);
      else io.out(table(HEADER, events.right.map(rowOf)));
      if (!follow) return 0;
      return await followLog(
        io,
        Math.max(head.right, typeof from === 'number' ? from : 0),
        (after, upTo) => {
          const r = store.read({ ...query, fromPosition: after, toPosition: upTo });
          if (E.isRight(r)) print(r.right, false);
          return E.map(() => undefined)(r);
        },
        () => store.lastPosition(),
      );
    } finally {
      store.close();
    }
  },
};

/**
 * Poll the log's head every FOLLOW_INTERVAL_MS; when it moved, hand the new range to `printRange`. Stops with 0
 * when io.signal aborts (or, without one, on the process's SIGINT or SIGTERM), with 1 when the log fails.
 */
async function followLog(
  io: IO,
  start: number,
  printRange: (after: number, upTo: number) => E.Either<{ msg: string }, void>,
  headOf: () => E.Either<{ msg: string }, number>,
): Promise<number> {
  let signal = io.signal;
  let unlisten = (): void => {};
  if (!signal) {
    const c = new AbortController();
    const stop = (): void => c.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    unlisten = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    };
    signal = c.signal;
  }
  try {
    let last = start;
    while (!signal.aborted) {
      await pause(FOLLOW_INTERVAL_MS, signal);
      if (signal.aborted) break;
      const head = headOf();
      if (E.isLeft(head)) {
        io.err(`felt events: ${head.left.msg}\n`);
        return 1;
      }
      if (head.right <= last) continue;
      const r = printRange(last, head.right);
      if (E.isLeft(r)) {
        io.err(`felt events: ${r.left.msg}\n`);
        return 1;
      }
      last = head.right;
    }
    return 0;
  } finally {
    unlisten();
  }
}
