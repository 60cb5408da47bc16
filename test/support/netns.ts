// Throwaway network namespaces for kernel and CNI tests. Nothing here touches the root namespace: every
// command runs under `ip netns exec <name>`.
//
//   import { createNetns, withNetns, runInNs, cleanupNetns } from '../support/netns.ts';
//
//   // One test, namespaces removed when fn settles (even when it throws):
//   await withNetns(2, async ([host, pod]) => {
//     await host.exec(['ip', 'link', 'add', 'name', 'br0', 'type', 'bridge']);   // never throws; see .code
//     await host.run(['ip', 'link', 'set', 'dev', 'br0', 'up']);                // throws on failure
//     const r = await runInNs(host, ['/path/to/plugin'], { env: { CNI_NETNS: pod.path, ... }, input: conf });
//   });
//
//   // Or per file: createNetns() in beforeAll/it, cleanupNetns() in afterAll (removes all this process made).
//
// Names are `<prefix>-<pid>-<counter>-<random>` (unique across parallel test files); `path` is
// /var/run/netns/<name>, what a runtime passes as CNI_NETNS. Deleting a namespace takes its veth ends (and
// so their peers elsewhere) with it.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** The environment of the program (PATH is added when missing). Default: this process's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** Written to the program's stdin. */
  readonly input?: string;
}

export interface Netns {
  readonly name: string;
  /** /var/run/netns/<name> */
  readonly path: string;
  /** Run a program inside the namespace; resolves with its outcome, never rejects. */
  exec(argv: readonly string[], opts?: RunOptions): Promise<Run>;
  /** Run a program inside the namespace; resolves with stdout, rejects with stderr when it fails. */
  run(argv: readonly string[], opts?: RunOptions): Promise<string>;
  /** Delete the namespace now (idempotent). */
  del(): Promise<void>;
}

/** Run a program (no shell); never rejects. */
export function execFile(argv: readonly string[], opts: RunOptions = {}): Promise<Run> {
  return new Promise((resolve) => {
    const env = opts.env ? { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env } : process.env;
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => resolve({ code: 127, stdout: '', stderr: e.message }));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

const nameOf = (ns: Netns | string): string => (typeof ns === 'string' ? ns.replace(/^\/(?:var\/)?run\/netns\//, '') : ns.name);

/** Run a program inside a namespace (a Netns, its name or its path) via `ip netns exec`. */
export const runInNs = (ns: Netns | string, argv: readonly string[], opts: RunOptions = {}): Promise<Run> =>
  execFile(['ip', 'netns', 'exec', nameOf(ns), ...argv], opts);

const made = new Set<string>();
let counter = 0;

/** A fresh, empty namespace (loopback down, as the kernel makes it). */
export async function createNetns(prefix = 'felt'): Promise<Netns> {
  const name = `${prefix}-${process.pid}-${++counter}-${randomBytes(3).toString('hex')}`;
  const r = await execFile(['ip', 'netns', 'add', name]);
  if (r.code !== 0) throw new Error(`ip netns add ${name}: ${r.stderr.trim()}`);
  made.add(name);
  const ns: Netns = {
    name,
    path: `/var/run/netns/${name}`,
    exec: (argv, opts) => runInNs(name, argv, opts),
    run: async (argv, opts) => {
      const x = await runInNs(name, argv, opts);
      if (x.code !== 0) throw new Error(`${argv.join(' ')} in ${name} failed (${x.code}): ${x.stderr.trim()}`);
      return x.stdout;
    },
    del: () => deleteNetns(name),
  };
  return ns;
}

async function deleteNetns(name: string): Promise<void> {
  if (!made.has(name)) return;
  await execFile(['ip', 'netns', 'del', name]);
  made.delete(name);
}

/** `count` fresh namespaces for the duration of `fn`; removed afterwards whatever happens. */
export async function withNetns<T>(count: number, fn: (nss: Netns[]) => Promise<T>, prefix = 'felt'): Promise<T> {
  const nss: Netns[] = [];
  try {
    for (let i = 0; i < count; i++) nss.push(await createNetns(prefix));
    return await fn(nss);
  } finally {
    for (const ns of nss) await ns.del();
  }
}

/** Remove every namespace this process created and has not removed yet (for afterAll). */
export async function cleanupNetns(): Promise<void> {
  for (const name of [...made]) await deleteNetns(name);
}

// A test process that dies on a signal still cleans up.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void cleanupNetns().finally(() => process.exit(130));
  });
}
