// The one place the kernel adapter starts processes. No shell, ever: every process is an argument vector
// (`nsenter --net=PATH ip -force -batch -`, `iptables-save`, `tee -- PATH...`, `sysctl -q -p-`), and what a tool must read
// (a batch, an iptables-restore input, a sysctl value) goes to its stdin. So a value can reach a tool only as
// one argv element or as part of a batch line that render.ts has checked; nothing is ever parsed as a script.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
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

/**
 * Run argv with `input` on stdin; never rejects. FELT_TRACE=1 shows argv, input and timings on stderr.
 * `doneWhen`: the run is over, a success, as soon as what the tool printed matches it (a line it prints once all
 * it was asked to do is done), and the process is left to exit on its own. Without a match, the process's exit
 * is the answer, as always.
 */
export function run(argv: readonly string[], input: string, hooks: ExecHooks = {}, doneWhen?: DoneWhen): Promise<Run> {
  hooks.onSpawn?.(argv, input);
  const t0 = trace ? performance.now() : 0;
  if (trace) process.stderr.write(`${at()} $ ${JSON.stringify(argv)}\n${input}`);
  const started = pool ? pool.run(argv, input, doneWhen) : new Promise<Run>((resolve) => spawnHere(argv, input, resolve, doneWhen));
  return trace
    ? started.then((r) => {
        process.stderr.write(`${at()} # ${argv.slice(0, 4).join(' ')}: ${(performance.now() - t0).toFixed(1)} ms, exit ${r.code}\n`);
        return r;
      })
    : started;
}

/**
 * run()'s early end. On stderr: the answer's stderr is what came before the line; its stdout, what that pipe has
 * delivered by then (for tools that print nothing there). On stdout: the answer's stdout ends with the line.
 */
export interface DoneWhen {
  readonly on: 'stdout' | 'stderr';
  readonly line: RegExp;
}

/** The answer once `doneWhen` matches what came so far; spawnHere and the helper's twin both use this. */
function doneBy(doneWhen: DoneWhen, stdout: string, stderr: string): Run | undefined {
  const m = doneWhen.line.exec(doneWhen.on === 'stdout' ? stdout : stderr);
  if (!m) return undefined;
  return doneWhen.on === 'stdout'
    ? { code: 0, stdout: stdout.slice(0, m.index + m[0].length), stderr }
    : { code: 0, stdout, stderr: stderr.slice(0, m.index) };
}

/** Start argv in this thread and call `done` once with what it printed and how it ended (see run's doneWhen). */
function spawnHere(argv: readonly string[], input: string, done: (r: Run) => void, doneWhen?: DoneWhen): void {
  let sent = false;
  const once = (r: Run): void => {
    if (sent) return;
    sent = true;
    done(r);
  };
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const over = (): boolean => {
    const r = doneWhen && doneBy(doneWhen, Buffer.concat(out).toString(), Buffer.concat(err).toString());
    if (r) once(r);
    return !!r;
  };
  child.stdout.on('data', (b: Buffer) => (out.push(b), doneWhen && over()));
  child.stderr.on('data', (b: Buffer) => (err.push(b), doneWhen && over()));
  child.on('error', (e) => once({ code: 127, stdout: '', stderr: `${argv[0]}: ${e.message}` }));
  child.on('close', (code, signal) => {
    if (doneWhen && over()) return;
    once({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
  });
  child.stdin.on('error', () => undefined);
  child.stdin.end(input);
}

// ------------------------------------------------------------------------------ spawning from helpers

// node's spawn() forks this process and blocks its thread until the child has exec'd. In feltd, serving 50 calls
// at once (~200 processes a wave), both costs are large: the fork copies the page tables of a ~150 MB process
// (~1 ms of system time each, growing with the resident size), and the event loop stops while each child waits
// for a CPU to exec on (5-15 ms on a loaded machine; measured, more than half of a 50-ADD wave's wall time).
// spawnFromHelpers moves the spawning into small long-lived node processes started for it: feltd sends each
// helper argv and stdin and gets the exit code and output back, unchanged (the helper runs spawnHere's twin);
// forking a helper a quarter of feltd's size costs a quarter, and feltd's thread never waits for an exec.
// A helper has feltd's environment, namespaces and credentials (it is feltd's child, started at feltd's start),
// so its children are the same as feltd's own would be. Short-lived processes (a CNI plugin run once) never
// start a helper: they spawn a few processes, and a helper costs more to start (~40 ms) than it saves.

interface Request {
  readonly id: number;
  readonly argv: readonly string[];
  readonly input: string;
  /** run's doneWhen: its stream, and its line's source and flags. */
  readonly doneWhen?: { readonly on: DoneWhen['on']; readonly source: string; readonly flags: string };
}
/** What a helper answers: how the process ended, or what spawn() threw (bad arguments: it rejects, as here). */
type Reply = { readonly id: number } & (
  Run | { readonly thrown: { readonly name: string; readonly message: string; readonly code?: string } }
);

// The helper's source (run with node -e: the bundles are single files). It is spawnHere's twin; the tests run
// both on the same commands. It exits when feltd does (its IPC channel closes); ps shows it as feltd-spawn.
const HELPER_SOURCE = `'use strict';
process.title = 'feltd-spawn';
const { spawn } = require('node:child_process');
process.on('disconnect', () => process.exit(0));
process.on('message', ({ id, argv, input, doneWhen }) => {
  let sent = false;
  const done = (r) => {
    if (sent) return;
    sent = true;
    process.send({ id, code: r.code, stdout: r.stdout, stderr: r.stderr });
  };
  const re = doneWhen && new RegExp(doneWhen.source, doneWhen.flags);
  const doneBy = ${doneBy.toString()};
  let child;
  try {
    child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    sent = true;
    return process.send({ id, thrown: { name: e.name, message: e.message, code: e.code } });
  }
  const out = [];
  const err = [];
  const over = () => {
    const r = re && doneBy({ on: doneWhen.on, line: re }, Buffer.concat(out).toString(), Buffer.concat(err).toString());
    if (r) done(r);
    return !!r;
  };
  child.stdout.on('data', (b) => (out.push(b), re && over()));
  child.stderr.on('data', (b) => (err.push(b), re && over()));
  child.on('error', (e) => done({ code: 127, stdout: '', stderr: argv[0] + ': ' + e.message }));
  child.on('close', (code, signal) => {
    if (re && over()) return;
    done({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
  });
  child.stdin.on('error', () => undefined);
  child.stdin.end(input);
});
`;

interface Helper {
  readonly child: ChildProcess;
  readonly waiting: Map<number, (r: Run | Error) => void>;
}

interface Pool {
  readonly run: (argv: readonly string[], input: string, doneWhen?: DoneWhen) => Promise<Run>;
  readonly close: () => Promise<void>;
}

let pool: Pool | undefined;

// An idle helper does not keep this process alive; one with a process running does (as a child of this thread would).
const hold = (h: Helper, busy: boolean): void => {
  if (busy) (h.child.ref(), h.child.channel?.ref());
  else (h.child.unref(), h.child.channel?.unref());
};

function startPool(size: number): Pool {
  let nextId = 0;
  let closed = false;
  let drained: (() => void) | undefined;
  // Helpers that died one after another without answering anything: past a few, spawn here instead.
  let deaths = 0;
  const helpers: Helper[] = [];
  const start = (): Helper => {
    // Small young generation (as feltd's own): a helper's garbage is big strings passing through, and V8
    // would otherwise grow its semi-spaces to 16 MB each under a steady stream of calls.
    const child = spawn(process.execPath, ['--max-semi-space-size=1', '-e', HELPER_SOURCE], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    const h: Helper = { child, waiting: new Map() };
    hold(h, false);
    child.on('message', (m: Reply) => {
      deaths = 0;
      const done = h.waiting.get(m.id);
      if (!done) return;
      h.waiting.delete(m.id);
      if (h.waiting.size === 0) (hold(h, false), drained?.());
      done('thrown' in m ? Object.assign(new Error(m.thrown.message), m.thrown) : { code: m.code, stdout: m.stdout, stderr: m.stderr });
    });
    // A helper that dies (killed: it only spawns) fails what it was running, as a process that could not be
    // started fails, and is replaced.
    let dead = false;
    const died = (why: string): void => {
      if (dead) return;
      dead = true;
      const k = helpers.indexOf(h);
      if (k >= 0) helpers.splice(k, 1, ...(closed || ++deaths > 5 ? [] : [start()]));
      const lost = [...h.waiting.values()];
      h.waiting.clear();
      drained?.();
      for (const done of lost) done({ code: 127, stdout: '', stderr: `feltd's spawning helper ${child.pid ?? ''} died (${why})\n` });
    };
    child.on('error', (e) => died(e.message));
    child.on('exit', (code, signal) => died(signal ?? `exit ${code}`));
    return h;
  };
  for (let i = 0; i < size; i++) helpers.push(start());
  return {
    run: (argv, input, doneWhen) =>
      new Promise<Run>((resolve, reject) => {
        if (helpers.length === 0) return spawnHere(argv, input, resolve, doneWhen);
        // The least busy helper: a spawn blocks its helper until the child has exec'd.
        let h = helpers[0]!;
        for (const o of helpers) if (o.waiting.size < h.waiting.size) h = o;
        const id = nextId++;
        if (h.waiting.size === 0) hold(h, true);
        h.waiting.set(id, (r) => (r instanceof Error ? reject(r) : resolve(r)));
        const req: Request = {
          id,
          argv: [...argv],
          input,
          ...(doneWhen ? { doneWhen: { on: doneWhen.on, source: doneWhen.line.source, flags: doneWhen.line.flags } } : {}),
        };
        h.child.send(req);
      }),
    close: async () => {
      closed = true;
      while (helpers.some((h) => h.waiting.size > 0)) await new Promise<void>((r) => (drained = r));
      for (const h of helpers.splice(0)) h.child.disconnect();
    },
  };
}

/**
 * From now on, start processes from `helpers` helper processes rather than from this one (a long-lived process
 * serving many calls at once: feltd). 0: spawn here again (once the helpers' processes have finished).
 */
export async function spawnFromHelpers(helpers: number): Promise<void> {
  const old = pool;
  pool = helpers > 0 ? startPool(helpers) : undefined;
  await old?.close();
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

/** Whether `tool` is an executable name on PATH (a file of that name in one of its directories). */
export const onPath = (tool: string): boolean =>
  (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((d) => d !== '' && existsSync(`${d}/${tool}`));

/**
 * Write sysctl files of this process's own namespace without a process. Synchronously: a /proc/sys write
 * never waits on a disk, and three trips through libuv's thread pool (open, write, close) cost a busy feltd
 * milliseconds on the way to a pod's interface.
 */
export async function writeOwn(path: string, value: string): Promise<Run> {
  if (trace) process.stderr.write(`${at()} > ${path} ${value}\n`);
  try {
    writeFileSync(path, `${value}\n`);
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
