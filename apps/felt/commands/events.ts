// felt events: the log, oldest first.

import * as E from 'fp-ts/lib/Either.js';
import { ipamStream } from '../../../core/ipam/decider.ts';
import { flag, str } from '../args.ts';
import { DATA_DIR_OPTION, JSON_OPTION, NETWORK_OPTION, openLog, type Subcommand } from '../common.ts';
import { summarize } from '../summary.ts';
import { table } from '../table.ts';

const count = (s: string | undefined, name: string): number | undefined | Error => {
  if (s === undefined) return undefined;
  return /^[0-9]+$/.test(s) ? Number(s) : new Error(`--${name}: want a non-negative integer, got "${s}"`);
};

export const eventsCommand: Subcommand = {
  name: 'events',
  summary: 'list the event log (position, time, stream, type, summary)',
  options: [
    NETWORK_OPTION,
    { name: 'stream', value: 'STREAM', help: 'only this stream (e.g. ipam/mynet)' },
    { name: 'from', value: 'POSITION', help: 'only events after this position' },
    { name: 'limit', value: 'N', help: 'at most N events' },
    DATA_DIR_OPTION,
    JSON_OPTION,
  ],
  run: (p, io) => {
    const from = count(str(p, 'from'), 'from');
    const limit = count(str(p, 'limit'), 'limit');
    for (const v of [from, limit]) {
      if (v instanceof Error) {
        io.err(`felt events: ${v.message}\n`);
        return 2;
      }
    }
    const network = str(p, 'network');
    const stream = str(p, 'stream') ?? (network !== undefined ? ipamStream(network) : undefined);
    const store = openLog('events', p, io);
    if (!store) return 1;
    try {
      const events = store.read({
        ...(stream !== undefined ? { stream } : {}),
        ...(typeof from === 'number' ? { fromPosition: from } : {}),
        ...(typeof limit === 'number' ? { limit } : {}),
      });
      if (E.isLeft(events)) {
        io.err(`felt events: ${events.left.msg}\n`);
        return 1;
      }
      if (flag(p, 'json')) io.out(JSON.stringify(events.right, null, 2) + '\n');
      else io.out(table(['POSITION', 'TIME', 'STREAM', 'TYPE', 'DATA'], events.right.map((e) => [String(e.position), e.time, e.stream, e.type, summarize(e)])));
      return 0;
    } finally {
      store.close();
    }
  },
};
