// The one place the kernel adapter starts processes. Every observe and every apply is ONE `sh -s` spawned from
// node (spawning from node costs several times what sh's fork+exec does); the script enters namespaces with
// nsenter and feeds batches to ip, bridge, tc and iptables-restore.

import { spawn } from 'node:child_process';

export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecHooks {
  /** Called once per child process node spawns (tests count them to prove batching). */
  readonly onSpawn?: (argv: readonly string[]) => void;
  /** Called with every script before it runs (tests count the ip/bridge/tc processes in it). */
  readonly onScript?: (script: string) => void;
}

const trace = !!process.env['FELT_TRACE'];

/** Run a script with `sh -s`; never rejects. FELT_TRACE=1 shows scripts and timings on stderr (never stdout). */
export function runScript(script: string, hooks: ExecHooks = {}): Promise<Run> {
  hooks.onScript?.(script);
  const argv = ['sh', '-s'];
  hooks.onSpawn?.(argv);
  const t0 = trace ? performance.now() : 0;
  if (trace) process.stderr.write(script);
  return new Promise((resolve) => {
    const done = (r: Run): void => {
      if (trace) process.stderr.write(`# ${(performance.now() - t0).toFixed(1)} ms, exit ${r.code}\n`);
      resolve(r);
    };
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => done({ code: 127, stdout: '', stderr: e.message }));
    child.on('close', (code, signal) =>
      done({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
    child.stdin.on('error', () => undefined);
    child.stdin.end(script);
  });
}

/** Single-quote for sh. */
export const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
