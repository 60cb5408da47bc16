// felt export [--stream S] [--since T] [--until T] [--type X] [--out FILE]: the log as JSON lines (position,
// time, stream, type, data; the format of `felt events --json`), oldest first, read page by page from one
// read transaction, so a large log is never held in memory. `felt import` reads them back.

import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import { ipamStream } from '../../../core/ipam/decider.ts';
import { str } from '../args.ts';
import { DATA_DIR_OPTION, NETWORK_OPTION, openLog, type Subcommand } from '../common.ts';
import { eventLine, listOf, SINCE_OPTION, STREAM_OPTION, timeFilter, UNTIL_OPTION } from './events.ts';

export const exportCommand: Subcommand = {
  name: 'export',
  summary: 'write the log (or part of it) as JSON lines, for felt import',
  options: [
    STREAM_OPTION,
    NETWORK_OPTION,
    { name: 'type', value: 'TYPE', help: 'only events of this type (repeat it, or a comma list)', repeatable: true },
    SINCE_OPTION,
    UNTIL_OPTION,
    { name: 'out', value: 'FILE', help: 'write to FILE (replaced when complete) instead of stdout' },
    DATA_DIR_OPTION,
  ],
  run: (p, io) => {
    const times = timeFilter(p, io);
    if (times instanceof Error) {
      io.err(`felt export: ${times.message}\n`);
      return 2;
    }
    const types = listOf(str(p, 'type'));
    if (types !== undefined && types.length === 0) {
      io.err('felt export: --type: want an event type (e.g. AddressAllocated)\n');
      return 2;
    }
    const network = str(p, 'network');
    const stream = str(p, 'stream') ?? (network !== undefined ? ipamStream(network) : undefined);
    const out = str(p, 'out');
    const store = openLog('export', p, io);
    if (!store) return 1;
    // A file is written under a temporary name and renamed when complete: never half an export under FILE.
    const tmp = out !== undefined ? `${out}.tmp-${process.pid}` : undefined;
    let fd: number | undefined;
    try {
      if (tmp !== undefined) fd = openSync(tmp, 'w', 0o600);
      const write = fd !== undefined ? (s: string) => void writeSync(fd!, s) : io.out;
      let n = 0;
      const r = store.scan({ ...(stream !== undefined ? { stream } : {}), ...times, ...(types !== undefined ? { types } : {}) }, (page) => {
        let text = '';
        for (const e of page) text += eventLine(e) + '\n';
        write(text);
        n += page.length;
      });
      if (E.isLeft(r)) {
        io.err(`felt export: ${r.left.msg}\n`);
        return 1;
      }
      if (fd !== undefined) {
        closeSync(fd);
        fd = undefined;
        renameSync(tmp!, out!);
        io.err(`felt export: ${n} events written to ${out}\n`);
      }
      return 0;
    } catch (e) {
      io.err(`felt export: ${out ?? 'stdout'}: ${(e as Error).message}\n`);
      return 1;
    } finally {
      if (fd !== undefined) closeSync(fd);
      if (tmp !== undefined) rmSync(tmp, { force: true });
      store.close();
    }
  },
};
