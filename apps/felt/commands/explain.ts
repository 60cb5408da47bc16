// felt explain: the older name of `felt why` (apps/felt/commands/why.ts), kept as an alias with the same output.

import type { Subcommand } from '../common.ts';
import { whyCommand, whyRun } from './why.ts';

export const explainCommand: Subcommand = {
  ...whyCommand,
  name: 'explain',
  summary: 'the same as felt why (kept for scripts that use this name)',
  run: whyRun('explain'),
};
