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
 * is the answer, as always. A process of the same argv started ahead (startAhead) and still waiting for its
 * input is given `input` instead of a new one.
 */
export function run(argv: readonly string[], input: string, hooks: ExecHooks = {}, doneWhen?: DoneWhen): Promise<Run> {
  hooks.onSpawn?.(argv, input);
  const t0 = trace ? performance.now() : 0;
  const ahead = takeAhead(argv);
  if (trace) process.stderr.write(`${at()} $ ${JSON.stringify(argv)}${ahead ? ' (started ahead)' : ''}\n${input}`);
  const started = ahead
    ? ahead.feed(input, doneWhen)
    : pool
      ? pool.run(argv, input, doneWhen)
      : new Promise<Proc>((resolve) => resolve(startHere(argv))).then((p) => p.feed(input, doneWhen));
  return trace
    ? started.then((r) => {
        process.stderr.write(`${at()} # ${argv.slice(0, 4).join(' ')}: ${(performance.now() - t0).toFixed(1)} ms, exit ${r.code}\n`);
        return r;
      })
    : started;
}

/** A process started with its stdin open: `feed` writes its input, closes its stdin and waits for its answer. */
interface Proc {
  /** Whether it still waits for its input (it has not ended, or failed to start, on its own). */
  readonly waiting: () => boolean;
  /** Its input; the answer as run() gives it (what the process printed before counts too). Once. */
  readonly feed: (input: string, doneWhen?: DoneWhen) => Promise<Run>;
}

// Processes started ahead (startAhead) and not yet given their input, by argv.
const ahead = new Map<string, Proc[]>();
/** Processes started ahead: how many, and how many a run took or went unused (tests). */
export const aheadStats = { started: 0, used: 0, unused: 0 };

function takeAhead(argv: readonly string[]): Proc | undefined {
  const key = argv.join('\0');
  const list = ahead.get(key);
  let p = list?.shift();
  // One that ended on its own (its end seen) is passed over: the run starts its own.
  while (p && !p.waiting()) {
    aheadStats.unused++;
    p = list?.shift();
  }
  if (list?.length === 0) ahead.delete(key);
  if (p) aheadStats.used++;
  return p;
}

/**
 * Start `argv` now, its input to come: the next run() of the same argv (whoever calls it) gives it its input
 * instead of starting a process, so the start (fork, exec, the loader, entering a namespace) is off that run's
 * way. For a tool that reads all of stdin before it acts (ip, tc, sysctl with -batch / -p-): started ahead, it
 * only waits. The answer is `release`: an unused process gets an empty input and ends (call it once the runs it
 * was for are over; after a run took it, it does nothing).
 */
export function startAhead(argv: readonly string[]): () => void {
  const key = argv.join('\0');
  let p: Proc;
  try {
    p = pool ? pool.start(argv) : startHere(argv);
  } catch {
    return () => undefined;
  }
  aheadStats.started++;
  const list = ahead.get(key) ?? [];
  ahead.set(key, [...list, p]);
  return () => {
    const now = ahead.get(key) ?? [];
    if (!now.includes(p)) return;
    const rest = now.filter((q) => q !== p);
    if (rest.length) ahead.set(key, rest);
    else ahead.delete(key);
    aheadStats.unused++;
    void p.feed('').catch(() => undefined);
  };
}

/** End every process started ahead and still unused (the helpers are replaced, or closed). */
async function releaseAhead(): Promise<void> {
  const all = [...ahead.values()].flat();
  ahead.clear();
  aheadStats.unused += all.length;
  await Promise.all(all.map((p) => p.feed('').catch(() => undefined)));
}

/**
 * run()'s early end. On stderr: the answer's stderr is what came before the line; its stdout, what that pipe has
 * delivered by then (for tools that print nothing there). On stdout: the answer's stdout ends with the line.
 */
export interface DoneWhen {
  readonly on: 'stdout' | 'stderr';
  readonly line: RegExp;
}

/** The answer once `doneWhen` matches what came so far; startHere and the helper's twin both use this. */
function doneBy(doneWhen: DoneWhen, stdout: string, stderr: string): Run | undefined {
  const m = doneWhen.line.exec(doneWhen.on === 'stdout' ? stdout : stderr);
  if (!m) return undefined;
  return doneWhen.on === 'stdout'
    ? { code: 0, stdout: stdout.slice(0, m.index + m[0].length), stderr }
    : { code: 0, stdout, stderr: stderr.slice(0, m.index) };
}

/** Start argv in this thread, its stdin open until its input is fed (see run's doneWhen). spawn() may throw. */
function startHere(argv: readonly string[]): Proc {
  let answer: ((r: Run) => void) | undefined;
  // How it ended before its input came (it failed to start, or ended on its own).
  let early: Run | undefined;
  let doneWhen: DoneWhen | undefined;
  const once = (r: Run): void => {
    if (!answer) return void (early ??= r);
    const a = answer;
    answer = () => undefined;
    a(r);
  };
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const over = (): boolean => {
    const r = doneWhen && answer && doneBy(doneWhen, Buffer.concat(out).toString(), Buffer.concat(err).toString());
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
  return {
    waiting: () => early === undefined && answer === undefined,
    feed: (input, dw) =>
      new Promise<Run>((resolve) => {
        if (answer) throw new Error('a process is fed once');
        if (early) return resolve(early);
        answer = resolve;
        doneWhen = dw;
        if (!over()) child.stdin.end(input);
      }),
  };
}

// ------------------------------------------------------------------------------ spawning from helpers

// node's spawn() forks this process and blocks its thread until the child has exec'd. In feltd, serving 50 calls
// at once (~200 processes a wave), both costs are large: the fork copies the page tables of a ~150 MB process
// (~1 ms of system time each, growing with the resident size), and the event loop stops while each child waits
// for a CPU to exec on (5-15 ms on a loaded machine; measured, more than half of a 50-ADD wave's wall time).
// spawnFromHelpers moves the spawning into small long-lived node processes started for it: feltd sends each
// helper argv and stdin and gets the exit code and output back, unchanged (the helper runs startHere's twin);
// forking a helper a quarter of feltd's size costs a quarter, and feltd's thread never waits for an exec.
// A helper has feltd's environment, namespaces and credentials (it is feltd's child, started at feltd's start),
// so its children are the same as feltd's own would be. Short-lived processes (a CNI plugin run once) never
// start a helper: they spawn a few processes, and a helper costs more to start (~40 ms) than it saves.

/**
 * What feltd asks a helper: start argv (with its input, or, `ahead`, with stdin left open), or feed the input
 * of a process it started ahead (`feed`: the id it was started under).
 */
type Request =
  | { readonly id: number; readonly argv: readonly string[]; readonly input: string; readonly doneWhen?: WireDoneWhen }
  | { readonly id: number; readonly argv: readonly string[]; readonly ahead: true }
  | { readonly id: number; readonly feed: true; readonly input: string; readonly doneWhen?: WireDoneWhen };
/** run's doneWhen: its stream, and its line's source and flags. */
type WireDoneWhen = { readonly on: DoneWhen['on']; readonly source: string; readonly flags: string };
const wire = (d: DoneWhen | undefined): { doneWhen?: WireDoneWhen } =>
  d ? { doneWhen: { on: d.on, source: d.line.source, flags: d.line.flags } } : {};
/** What a helper answers: how the process ended, or what spawn() threw (bad arguments: it rejects, as here). */
type Reply = { readonly id: number } & (
  Run | { readonly thrown: { readonly name: string; readonly message: string; readonly code?: string } }
);

// The helper's source (run with node -e: the bundles are single files). It is startHere's twin; the tests run
// both on the same commands. It exits when feltd does (its IPC channel closes); ps shows it as feltd-spawn.
const HELPER_SOURCE = `'use strict';
process.title = 'feltd-spawn';
const { spawn } = require('node:child_process');
process.on('disconnect', () => process.exit(0));
const doneBy = ${doneBy.toString()};
// Processes started ahead, waiting for their input, by id.
const waiting = new Map();
const start = (id, argv) => {
  let fed = false;
  let sent = false;
  let re;
  let on;
  const done = (r) => {
    if (sent || !fed) return;
    sent = true;
    process.send({ id, code: r.code, stdout: r.stdout, stderr: r.stderr });
  };
  let child;
  try {
    child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    process.send({ id, thrown: { name: e.name, message: e.message, code: e.code } });
    return undefined;
  }
  const out = [];
  const err = [];
  let early;
  const over = () => {
    const r = re && doneBy({ on, line: re }, Buffer.concat(out).toString(), Buffer.concat(err).toString());
    if (r) done(r);
    return !!r;
  };
  const end = (r) => {
    if (fed) return done(r);
    if (early) return;
    early = r;
    // Ended before its input came: feltd learns it now (and starts a new one for the run that wanted it).
    waiting.delete(id);
    sent = true;
    process.send({ id, code: r.code, stdout: r.stdout, stderr: r.stderr });
  };
  child.stdout.on('data', (b) => (out.push(b), re && over()));
  child.stderr.on('data', (b) => (err.push(b), re && over()));
  child.on('error', (e) => end({ code: 127, stdout: '', stderr: argv[0] + ': ' + e.message }));
  child.on('close', (code, signal) => {
    if (re && over()) return;
    end({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
  });
  child.stdin.on('error', () => undefined);
  return (input, doneWhen) => {
    if (early) return;
    fed = true;
    re = doneWhen && new RegExp(doneWhen.source, doneWhen.flags);
    on = doneWhen && doneWhen.on;
    if (!over()) child.stdin.end(input);
  };
};
process.on('message', (m) => {
  if (m.feed) {
    const feed = waiting.get(m.id);
    waiting.delete(m.id);
    return feed && feed(m.input, m.doneWhen);
  }
  const feed = start(m.id, m.argv);
  if (!feed) return;
  if (m.ahead) waiting.set(m.id, feed);
  else feed(m.input, m.doneWhen);
});
`;

interface Helper {
  readonly child: ChildProcess;
  readonly waiting: Map<number, (r: Run | Error) => void>;
}

interface Pool {
  readonly run: (argv: readonly string[], input: string, doneWhen?: DoneWhen) => Promise<Run>;
  /** startAhead's process, started by a helper. */
  readonly start: (argv: readonly string[]) => Proc;
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
  // The least busy helper (a spawn blocks its helper until the child has exec'd), marked busy with `id`.
  const send = (id: number, done: (r: Run | Error) => void): Helper => {
    let h = helpers[0]!;
    for (const o of helpers) if (o.waiting.size < h.waiting.size) h = o;
    if (h.waiting.size === 0) hold(h, true);
    h.waiting.set(id, done);
    return h;
  };
  return {
    run: (argv, input, doneWhen) =>
      new Promise<Run>((resolve, reject) => {
        if (helpers.length === 0) return resolve(startHere(argv).feed(input, doneWhen));
        const id = nextId++;
        const h = send(id, (r) => (r instanceof Error ? reject(r) : resolve(r)));
        const req: Request = { id, argv: [...argv], input, ...wire(doneWhen) };
        h.child.send(req);
      }),
    start: (argv) => {
      if (helpers.length === 0) return startHere(argv);
      const id = nextId++;
      let answer: ((r: Run | Error) => void) | undefined;
      // How it ended before its input came: it could not start, ended on its own, or its helper died.
      let early: Run | Error | undefined;
      const h = send(id, (r) => (answer ? answer(r) : (early = r)));
      const req: Request = { id, argv: [...argv], ahead: true };
      h.child.send(req);
      return {
        waiting: () => early === undefined && answer === undefined,
        feed: (input, doneWhen) =>
          new Promise<Run>((resolve, reject) => {
            if (answer) throw new Error('a process is fed once');
            answer = (r) => (r instanceof Error ? reject(r) : resolve(r));
            if (early) return answer(early);
            const req: Request = { id, feed: true, input, ...wire(doneWhen) };
            h.child.send(req);
          }),
      };
    },
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
  await releaseAhead();
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
