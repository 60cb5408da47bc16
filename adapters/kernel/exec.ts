// The one place the kernel adapter starts processes. No shell, ever: every process is an argument vector
// (`nsenter --net=PATH ip -force -batch -`, `iptables-save`, `tee -- PATH...`, `sysctl -q -p-`), and what a tool must read
// (a batch, an iptables-restore input, a sysctl value) goes to its stdin. So a value can reach a tool only as
// one argv element or as part of a batch line that render.ts has checked; nothing is ever parsed as a script.

import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import type { NsRef } from '../../core/kernel/model.ts';
import { HOST } from '../../core/kernel/model.ts';

export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecHooks {
  /** Called once per child process (tests count them to prove batching, and read the argv). */
  readonly onSpawn?: (argv: readonly string[], input: string) => void;
}

const trace = !!process.env['FELT_TRACE'];
const at = (): string => `@${performance.now().toFixed(1)}`;

/** FELT_TRACE=1: a line on stderr with the time since this process started, naming a phase of the call. */
export function traceMark(what: string): void {
  if (trace) process.stderr.write(`${at()} ${what}\n`);
}

/** Run argv with `input` on stdin; never rejects. FELT_TRACE=1 shows argv, input and timings on stderr. */
export function run(argv: readonly string[], input: string, hooks: ExecHooks = {}): Promise<Run> {
  hooks.onSpawn?.(argv, input);
  const t0 = trace ? performance.now() : 0;
  if (trace) process.stderr.write(`${at()} $ ${JSON.stringify(argv)}\n${input}`);
  return new Promise((resolve) => {
    const done = (r: Run): void => {
      if (trace)
        process.stderr.write(`${at()} # ${argv.slice(0, 4).join(' ')}: ${(performance.now() - t0).toFixed(1)} ms, exit ${r.code}\n`);
      resolve(r);
    };
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => done({ code: 127, stdout: '', stderr: `${argv[0]}: ${e.message}` }));
    child.on('close', (code, signal) =>
      done({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/**
 * The argv prefix that runs a tool in `ns`: nothing for this process's own namespace, else
 * `nsenter --net=PATH` (PATH is one argv element, whatever it holds). `hostNetns`: where HOST is when it is
 * not this process's namespace (tests).
 */
export const inNetns = (ns: NsRef, hostNetns: string | undefined): string[] => {
  const path = ns === HOST ? hostNetns : ns;
  return path === undefined ? [] : ['nsenter', `--net=${path}`];
};

/** Write sysctl files of this process's own namespace without a process. */
export async function writeOwn(path: string, value: string): Promise<Run> {
  if (trace) process.stderr.write(`${at()} > ${path} ${value}\n`);
  try {
    await writeFile(path, `${value}\n`);
    return { code: 0, stdout: '', stderr: '' };
  } catch (e) {
    return {
      code: 1,
      stdout: '',
      stderr: `${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (e as Error).message}\n`,
    };
  }
}

/** Read sysctl files of this process's own namespace as `grep -H ''` prints them ("path:value" lines). */
export async function readOwn(paths: readonly string[]): Promise<Run> {
  const lines = await Promise.all(
    paths.map(async (p) =>
      readFile(p, 'utf8').then(
        (v) => `${p}:${v.trim()}\n`,
        () => '',
      ),
    ),
  );
  return { code: 0, stdout: lines.join(''), stderr: '' };
}
