// The felt CLI: a table of subcommands, each with its options, summary and run function. main.ts only
// wires process I/O; tests call `cli` directly.

import { parseArgs } from './args.ts';
import { allocationsCommand } from './commands/allocations.ts';
import { cniCommand } from './commands/cni.ts';
import { dhcpClientCommand } from './commands/dhcp-client.ts';
import { dhcpDaemonCommand } from './commands/dhcp-daemon.ts';
import { eventsCommand } from './commands/events.ts';
import { explainCommand } from './commands/explain.ts';
import { exportCommand } from './commands/export.ts';
import { importCommand } from './commands/import.ts';
import { installCniCommand } from './commands/install-cni.ts';
import { planCommand } from './commands/plan.ts';
import { statusCommand } from './commands/status.ts';
import { whyCommand } from './commands/why.ts';
import { replayCommand } from './commands/replay.ts';
import { VERSION } from '../version.ts';

import type { Subcommand } from './common.ts';
import type { IO } from './common.ts';
import { cell, forTerminal, hasControl } from './terminal.ts';

export type { IO };

const SUBCOMMANDS: readonly Subcommand[] = [
  eventsCommand,
  allocationsCommand,
  replayCommand,
  exportCommand,
  importCommand,
  planCommand,
  statusCommand,
  whyCommand,
  explainCommand,
  cniCommand,
  installCniCommand,
  dhcpDaemonCommand,
  dhcpClientCommand,
];

const usageOf = (c: Subcommand): string => {
  const opts = c.options.map((o) => `  --${o.name}${o.value ? ` ${o.value}` : ''}`.padEnd(24) + o.help);
  return `usage: felt ${c.name} [options]${c.positional ? ` ${c.positional}` : ''}\n\n${c.summary}\n\noptions:\n${opts.join('\n')}\n  --help                show this help\n`;
};

export const usage = (): string =>
  [
    'felt: container networking on an event log',
    '',
    'usage: felt <command> [options]',
    '',
    'commands:',
    ...SUBCOMMANDS.filter((c) => !c.hidden).map((c) => `  ${c.name.padEnd(14)}${c.summary}`),
    '',
    'Run `felt <command> --help` for its options, `felt --version` for the version.',
    '',
  ].join('\n');

export async function cli(argv: readonly string[], raw: IO): Promise<number> {
  // Everything printed passes through one escape (terminal.ts): arguments and the log are untrusted text.
  const io: IO = { ...raw, out: (s) => raw.out(forTerminal(s)), err: (s) => raw.err(forTerminal(s)) };
  // No argument of felt's needs a control character (names, paths, times, addresses): refused here, once,
  // so that no message echoing an argument can carry one (or a newline that fakes a line of output).
  const bad = argv.findIndex(hasControl);
  if (bad >= 0) {
    io.err(`felt: argument ${bad + 1} ("${cell(argv[bad]!)}") contains control characters; refused\n`);
    return 2;
  }
  const [name, ...rest] = argv;
  if (name === undefined) {
    // Not what was asked for: usage on stderr, and a failure, so a script calling `felt $cmd` with an empty
    // $cmd notices.
    io.err(usage());
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? SUBCOMMANDS.find((c) => c.name === rest[0]) : undefined;
    io.out(topic ? usageOf(topic) : usage());
    return 0;
  }
  if (name === '--version' || name === 'version') {
    io.out(`felt v${VERSION}\n`);
    return 0;
  }
  const cmd = SUBCOMMANDS.find((c) => c.name === name);
  if (!cmd) {
    io.err(`felt: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  const parsed = parseArgs(rest, cmd.options);
  if (!parsed.ok) {
    io.err(`felt ${cmd.name}: ${parsed.error}\n\n${usageOf(cmd)}`);
    return 2;
  }
  if (parsed.parsed.options['help']) {
    io.out(usageOf(cmd));
    return 0;
  }
  const most = cmd.maxPositionals ?? (cmd.positional ? 1 : 0);
  if (parsed.parsed.positionals.length > most) {
    io.err(`felt ${cmd.name}: unexpected argument "${parsed.parsed.positionals[most]}"\n\n${usageOf(cmd)}`);
    return 2;
  }
  return cmd.run(parsed.parsed, io);
}
