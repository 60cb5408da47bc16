// What the subcommands share: the IO they write to, the subcommand shape, the data-dir option and opening
// the log read-only.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { DEFAULT_DATA_DIR } from '../../core/ipam/config.ts';
import { DB_FILE, openSqliteStore } from '../../adapters/store/sqlite.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import { str, type OptionSpec, type Parsed } from './args.ts';

export interface IO {
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The clock (relative times such as `--since 10m`); main.ts passes the real one. Default: the real one. */
  readonly now?: () => Date;
  /**
   * Aborted when a long-running command (`felt events --follow`) should stop (tests). Without it, such a
   * command stops on the process's SIGINT or SIGTERM, which it listens for only while it runs.
   */
  readonly signal?: AbortSignal;
}

export interface Subcommand {
  readonly name: string;
  readonly summary: string;
  readonly options: readonly OptionSpec[];
  /** The name of the positional arguments the command takes, if any (for usage). */
  readonly positional?: string;
  /** How many positionals it takes (default: 1 when `positional` is set, else 0). */
  readonly maxPositionals?: number;
  /** Left out of the command list (internal commands, e.g. dhcp-client). */
  readonly hidden?: boolean;
  /** Returns the exit code. */
  readonly run: (args: Parsed, io: IO) => number | Promise<number>;
}

export const DATA_DIR_OPTION: OptionSpec = {
  name: 'data-dir',
  value: 'DIR',
  help: 'where felt.db lives (default $FELT_DATA_DIR, else /var/lib/felt)',
};
export const NETWORK_OPTION: OptionSpec = { name: 'network', value: 'NAME', help: 'only this network' };
export const JSON_OPTION: OptionSpec = { name: 'json', help: 'print JSON instead of a table' };

export const dataDirOf = (p: Parsed, io: IO): string => str(p, 'data-dir') ?? io.env['FELT_DATA_DIR'] ?? DEFAULT_DATA_DIR;

/** Open `<dataDir>/felt.db` read-only; on failure say why on stderr and return undefined. */
export function openLog(command: string, p: Parsed, io: IO): EventStore | undefined {
  const dir = dataDirOf(p, io);
  if (!existsSync(join(dir, DB_FILE))) {
    io.err(`felt ${command}: no event log at ${join(dir, DB_FILE)} (nothing recorded yet, or pass --data-dir)\n`);
    return undefined;
  }
  const s = openSqliteStore(dir, { readonly: true });
  if (E.isLeft(s)) {
    io.err(`felt ${command}: ${s.left.msg}\n`);
    return undefined;
  }
  return s.right;
}
