import { cli } from './cli.ts';

void cli(process.argv.slice(2), {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  env: process.env,
  now: () => new Date(),
}).then((code) => {
  process.exitCode = code;
});
