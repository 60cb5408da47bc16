// One long-lived `ip -json -d -force -batch -` in feltd's own namespace: the host's reads and `ip` changes of
// the CNI calls feltd serves go to it one request after another, instead of a process each (a process costs
// more than the netlink work of a pod's host side). iproute2 flushes each command's JSON as the command ends
// and reports a failed command on stderr as "Command failed -:N" (N counted from the session's start), so a
// request ends with a sentinel no device can match (`link show dev felt/sync<N>`: a name with '/' is never an
// interface), and the request is answered once the sentinel's failure and every JSON document are in.
//
// What a request gets is what a process of its own would have printed: stdout, and stderr with the line
// numbers counted from the request's first line. iproute2 keeps a name -> index cache for the devices lines
// name; a device another process deleted and made again under the same name has a new index, which the cache
// does not know. So lines of a change that failed for any other reason than EEXIST are run again in a fresh
// `ip -force -batch -` (a failed line changed nothing: each is one netlink request), whose verdict is the
// request's, and the session starts anew (empty cache) at its next request; a read that failed anywhere is
// done again by a process of its own. Other failures (a device that exists already) are the answer.
// Requests never wait for one another's processes: one at a time in the session, in arrival order.
//
// tc's batch mode works the same way (same library: "Command failed -:N", a JSON document per show, a name
// cache), so a `tc -json -force -batch -` session serves the host's qdisc and filter reads and changes
// (the bandwidth plugin's) with its own read commands and sentinel (`qdisc show dev felt/sync<N>`).

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { run, traceMark, type ExecHooks, type Run } from './exec.ts';

/** The batch tools a session can run: its argv, the argv of a fresh process, its reads and its sentinel. */
const TOOLS = {
  ip: {
    session: ['ip', '-json', '-d', '-force', '-batch', '-'],
    fresh: ['ip', '-force', '-batch', '-'],
    read: /^(?:link show|addr show|route show|neigh show|netns list-id|rule show)\b/,
    sentinel: (n: number) => `link show dev felt/sync${n}`,
  },
  tc: {
    session: ['tc', '-json', '-force', '-batch', '-'],
    fresh: ['tc', '-force', '-batch', '-'],
    read: /^(?:qdisc show|filter show|class show)\b/,
    sentinel: (n: number) => `qdisc show dev felt/sync${n}`,
  },
} as const satisfies Record<
  string,
  { session: readonly string[]; fresh: readonly string[]; read: RegExp; sentinel: (n: number) => string }
>;
export type SessionTool = keyof typeof TOOLS;

export interface IpSession {
  /** `input` (ip batch lines): reads print one JSON document each; undefined when the session could not. */
  readonly request: (input: string) => Promise<Run | undefined>;
  /** Processes started and requests answered (tests, metrics). */
  readonly stats: () => { readonly spawned: number; readonly requests: number; readonly reruns: number };
  readonly close: () => void;
}

/**
 * What a stale cache entry cannot explain: a device (or address, route) that exists already. A name resolved
 * to an index that is gone gets back anything from "No such device" to "Invalid argument" (a master).
 */
const NOT_STALE = /File exists/;

/** `pre`: the argv prefix that enters the namespace (none for this process's own). */
export const ipSession = (pre: readonly string[] = [], hooks: ExecHooks = {}): IpSession => batchSession('ip', pre, hooks);

/** A long-lived `tool` (ip or tc) in the namespace `pre` enters; `ipSession` is the ip one. */
export function batchSession(tool: SessionTool, pre: readonly string[] = [], hooks: ExecHooks = {}): IpSession {
  const t = TOOLS[tool];
  const READ = t.read;
  const argv = [...pre, ...t.session];
  let child: ChildProcessWithoutNullStreams | undefined;
  let lines = 0;
  let out = '';
  let err = '';
  let wake: (() => void) | undefined;
  let chain: Promise<unknown> = Promise.resolve();
  let closed = false;
  const counts = { spawned: 0, requests: 0, reruns: 0 };

  const stop = (): void => {
    child?.kill();
    child = undefined;
  };
  const start = (): ChildProcessWithoutNullStreams => {
    counts.spawned++;
    hooks.onSpawn?.(argv, '');
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    lines = 0;
    out = '';
    err = '';
    c.stdout.on('data', (b: Buffer) => ((out += b.toString()), wake?.()));
    c.stderr.on('data', (b: Buffer) => ((err += b.toString()), wake?.()));
    c.stdin.on('error', () => undefined);
    // Gone (it died, or could not start: no ip on PATH): the request in flight runs in a process of its own.
    const gone = (): void => {
      if (child === c) child = undefined;
      wake?.();
    };
    c.on('error', gone);
    c.on('close', gone);
    return c;
  };

  const once = async (input: string): Promise<Run | undefined> => {
    if (closed) return undefined;
    const c = child ?? (child = start());
    const mine = input.split('\n').filter((_, i, all) => i < all.length - 1 || all[i] !== '');
    const base = lines;
    const sentinel = base + mine.length + 1;
    lines = sentinel;
    out = '';
    err = '';
    const reads = mine.filter((l) => READ.test(l)).length;
    const done = new RegExp(`(?:^|\\n)Command failed -:${sentinel}\\n`);
    c.stdin.write(`${mine.join('\n')}${mine.length ? '\n' : ''}${t.sentinel(sentinel)}\n`);
    const complete = (): boolean => {
      if (!done.test(err)) return false;
      const failedReads = [...err.matchAll(/Command failed -:(\d+)/g)]
        .map((m) => Number(m[1]) - base)
        .filter((n) => n >= 1 && n <= mine.length && READ.test(mine[n - 1]!)).length;
      return out.split('\n').length - 1 >= reads - failedReads;
    };
    while (!complete()) {
      if (child !== c) return undefined; // died: the caller runs its own process
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
    counts.requests++;
    // Per request: its own failures, numbered from its first line; the sentinel's dropped.
    const failed = new Map<number, string>();
    let acc: string[] = [];
    for (const line of err.split('\n')) {
      const m = /^Command failed -:(\d+)$/.exec(line.trim());
      if (!m) {
        if (line.trim()) acc.push(line);
        continue;
      }
      const n = Number(m[1]) - base;
      if (n >= 1 && n <= mine.length) failed.set(n, acc.join('\n'));
      acc = [];
    }
    const stdout = out;
    if (failed.size === 0) return { code: 0, stdout, stderr: '' };
    const stale = [...failed].filter(([, msg]) => !NOT_STALE.test(msg));
    // Failures a stale name cache cannot explain (something that exists already) are the answer as they are.
    if (stale.length === 0 && reads === 0) {
      let stderr = '';
      for (const [n, msg] of failed) stderr += `${msg}\nCommand failed -:${n}\n`;
      return { code: 1, stdout, stderr };
    }
    // A device the cache may name wrongly: the next request starts a fresh session, and the failed lines run
    // again in a process of their own (a read: all of it).
    stop();
    if (reads > 0) return undefined;
    counts.reruns++;
    const again = [...failed.keys()].sort((a, b) => a - b);
    const r = await run([...pre, ...t.fresh], again.map((n) => `${mine[n - 1]}\n`).join(''), hooks);
    if (r.code === 0) return { code: 0, stdout, stderr: '' };
    // The fresh process's line numbers, back to the request's.
    const renumbered = r.stderr.replace(/Command failed -:(\d+)/g, (_, k: string) => `Command failed -:${again[Number(k) - 1] ?? 0}`);
    return { code: r.code, stdout, stderr: renumbered };
  };

  return {
    request: (input) => {
      const t0 = performance.now();
      const p = chain.then(() => once(input));
      void p.then((r) =>
        traceMark(
          `session ${tool}: ${input.split('\n').length - 1} lines, ${(performance.now() - t0).toFixed(1)} ms, ${r ? `exit ${r.code}` : 'not answered'}`,
        ),
      );
      chain = p.catch(() => undefined);
      return p;
    },
    stats: () => ({ ...counts }),
    close: () => {
      closed = true;
      stop();
    },
  };
}
