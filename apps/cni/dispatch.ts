// The one CNI dispatcher every felt plugin executable runs: read env + stdin, negotiate the version, call
// the plugin's command function, print the result (converted to the config's version) or the error JSON.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { parseEnv, parseNetConf, type CmdArgs, type Command, type NetConf } from '../../core/cni/env.ts';
import { cniError, ErrCode, isCniError, type CniError } from '../../core/cni/errors.ts';
import { convertResult, CURRENT_VERSION, readResult, type Result } from '../../core/cni/result.ts';
import type { Ctx, Plugin } from './plugin.ts';
import { VERSION } from '../version.ts';
import { traceMark } from '../../adapters/kernel/exec.ts';
import { callStores, type CallStores } from './store.ts';
import { pluginTypeProblem } from '../../core/cni/conflist.ts';
import { lockEnv, withCallLock } from './call-lock.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';

type Env = Readonly<Record<string, string | undefined>>;

/** Plugins bundled into this executable that may run in-process when delegated to (e.g. host-local). */
export type Bundled = Readonly<Record<string, Plugin>>;

export interface Outcome {
  readonly stdout: string;
  readonly exitCode: 0 | 1;
}

const errorJson = (version: string, e: CniError): string =>
  JSON.stringify(e.details === undefined ? { cniVersion: version, code: e.code, msg: e.msg } : { cniVersion: version, ...e });

/** The config's network name, when stdin is an object with one (a config without it fails in invoke). */
const networkOf = (stdin: string): string | undefined => {
  try {
    const n = (JSON.parse(stdin) as { name?: unknown } | null)?.name;
    return typeof n === 'string' ? n : undefined;
  } catch {
    return undefined;
  }
};

const versionOf = (stdin: string): string => {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' ? v : CURRENT_VERSION;
  } catch {
    return CURRENT_VERSION;
  }
};

/** Run one command of `plugin`; returns the config or error and the result, unprinted. */
function invoke(plugin: Plugin, command: Command, args: CmdArgs, ctx: Ctx): TE.TaskEither<CniError, { conf: NetConf; result?: Result }> {
  return TE.chain((conf: NetConf) => {
    switch (command) {
      case 'ADD':
        return TE.map((result: Result) => ({ conf, result }))(plugin.add(args, conf, ctx));
      case 'DEL':
        return TE.map(() => ({ conf }))(plugin.del(args, conf, ctx));
      case 'CHECK':
        return TE.map(() => ({ conf }))(plugin.check(args, conf, ctx));
      case 'GC':
        return plugin.gc ? TE.map(() => ({ conf }))(plugin.gc(args, conf, ctx)) : TE.right({ conf });
      case 'STATUS':
        return plugin.status ? TE.map(() => ({ conf }))(plugin.status(args, conf, ctx)) : TE.right({ conf });
      case 'VERSION':
        return TE.right({ conf });
    }
  })(TE.fromEither(parseNetConf(args.stdin, plugin.versions, command)));
}

/** The whole CNI call, pure of process globals: env + stdin in, stdout text + exit code out. */
export async function dispatch(plugin: Plugin, env: Env, stdin: string, ctx: Ctx): Promise<Outcome> {
  const command = env['CNI_COMMAND'];
  if (command === 'VERSION') {
    return { stdout: JSON.stringify({ cniVersion: CURRENT_VERSION, supportedVersions: plugin.versions }), exitCode: 0 };
  }
  const version = versionOf(stdin);
  const fail = (e: CniError): Outcome => ({ stdout: errorJson(version, e), exitCode: 1 });
  const parsed = parseEnv(env, stdin);
  if (E.isLeft(parsed)) return fail(parsed.left);
  let out: E.Either<CniError, { conf: NetConf; result?: Result }>;
  try {
    const a = parsed.right;
    const call = () => invoke(plugin, a.command, a, ctx)();
    // One call at a time per attachment (network, container, interface), in this process and across processes.
    const network = a.command === 'ADD' || a.command === 'DEL' || a.command === 'CHECK' ? networkOf(stdin) : undefined;
    out = network === undefined ? await call() : await withCallLock({ network, containerId: a.containerId, ifname: a.ifname }, env, call);
  } catch (e) {
    // A bug, not a user error: report it without a stack trace on stdout.
    out = E.left(isCniError(e) ? e : cniError(ErrCode.Internal, `internal error in ${plugin.type}: ${(e as Error)?.message ?? String(e)}`));
  } finally {
    ctx.stores.end();
  }
  if (E.isLeft(out)) return fail(out.left);
  const { conf, result } = out.right;
  if (result) return { stdout: JSON.stringify(convertResult(result, conf.cniVersion)), exitCode: 0 };
  return { stdout: '', exitCode: 0 };
}

const isFile = (p: string): boolean => {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
};

/** The second line of every felt plugin bundle (scripts/build.mjs writes it; felt install-cni keeps it). */
export const feltMark = (type: string): string => `// felt-cni ${type}`;

/** The mark compiled into felt's forwarder of `type` (apps/cni/forwarder/forwarder.c MARK). */
const forwarderMark = (type: string): string => `felt-cni-forwarder type=${type};`;

/** The forwarder is a small ELF file (~15 KB): a bigger one is not felt's. */
const MAX_FORWARDER = 256 << 10;

/** isFeltPlugin's answers for ELF files, by type and the file's device, inode, size, mtime and ctime. */
const forwarders = new Map<string, boolean>();

/**
 * Whether the file at `path` is felt's plugin `type`: felt's forwarder of that type (an ELF file holding the
 * forwarder's mark, read whole: it is small), or a bundle (its first line a shebang, its second felt's mark:
 * dist/cni/.felt/<type>, and what older felt installs put in the bin dir). A foreign plugin of the same name next
 * to felt's (one `felt install-cni` left alone) is not: a delegation to it executes it instead of running felt's
 * code in-process.
 */
export function isFeltPlugin(path: string, type: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const head = Buffer.alloc(512);
    const n = readSync(fd, head, 0, head.length, 0);
    if (n >= 4 && head.readUInt32BE(0) === 0x7f454c46) {
      const st = fstatSync(fd, { bigint: true });
      if (st.size > MAX_FORWARDER) return false;
      // feltd asks this for every delegation (host-local under bridge, twice a pod): the answer for a file whose
      // identity and times are unchanged (any write changes its ctime, a replacement its inode) is remembered.
      const id = `${type}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      const known = forwarders.get(id);
      if (known !== undefined) return known;
      const all = Buffer.alloc(Number(st.size));
      const got = readSync(fd, all, 0, all.length, 0);
      const is = all.subarray(0, got).includes(`\0${forwarderMark(type)}\0`);
      if (forwarders.size >= 64) forwarders.clear();
      forwarders.set(id, is);
      return is;
    }
    const lines = head.subarray(0, n).toString('utf8').split('\n');
    return lines.length > 2 && lines[0]!.startsWith('#!') && lines[1] === feltMark(type);
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * The bundled plugin to run in this process for `exe` (CNI_PATH's resolution of `type`), or undefined to
 * execute it: only when `exe` is in felt's own plugin directory `selfDir` and is felt's plugin of that type.
 */
export function ownPlugin(exe: string, type: string, selfDir: string, bundled: Bundled): Plugin | undefined {
  const own = bundled[type];
  if (!own) return undefined;
  try {
    return dirname(realpathSync(exe)) === realpathSync(selfDir) && isFeltPlugin(exe, type) ? own : undefined;
  } catch {
    return undefined;
  }
}

export function findInPath(type: string, path: readonly string[]): string | undefined {
  // A type is a file name (libcni refuses a path separator): `../../bin/sh` must not reach outside CNI_PATH.
  if (pluginTypeProblem(type)) return undefined;
  for (const dir of path) {
    const p = join(dir, type);
    if (isFile(p)) return p;
  }
  return undefined;
}

/**
 * Execute a plugin binary (libcni invoke.ExecPluginWithResult); in the network namespace at `netns` (entered
 * with nsenter) when given: feltd runs a foreign delegate where the runtime ran the calling plugin.
 */
export function execPlugin(
  exe: string,
  env: Env,
  stdin: string,
  netns?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const argv = netns === undefined ? [exe] : ['nsenter', `--net=${netns}`, '--', exe];
    const child = spawn(argv[0]!, argv.slice(1), { env: env as NodeJS.ProcessEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    // A plugin may exit without reading its stdin (EPIPE): what it printed and its exit code are the answer.
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}

/** How a call differs when feltd serves it (apps/feltd/cni-service.ts); an executable passes none. */
export interface CallOptions {
  /** The call's stores (default: its own, closed when it ends). */
  readonly stores?: CallStores;
  /** The caller's network namespace, when it is not this process's (Ctx.hostNetns). */
  readonly hostNetns?: string;
  /** What a foreign delegate gets besides the CNI variables (feltd: its own PATH; the caller's env is never used). */
  readonly execEnv?: Env;
  /** The kernel of the caller's host namespace, shared by the calls in flight there (Ctx.kernel). */
  readonly kernel?: Kernel;
  /** Where checks that may wait go (Ctx.settle). */
  readonly settle?: Ctx['settle'];
}

export function makeCtx(env: Env, selfDir: string, bundled: Bundled, opts: CallOptions = {}): Ctx {
  const ctx: Ctx = {
    env,
    now: () => new Date(),
    randomBytes: (n) => randomBytes(n),
    pid: process.pid,
    ...(opts.hostNetns !== undefined ? { hostNetns: opts.hostNetns } : {}),
    ...(opts.kernel !== undefined ? { kernel: opts.kernel } : {}),
    ...(opts.settle !== undefined ? { settle: opts.settle } : {}),
    stores: opts.stores ?? callStores(),
    delegate: (type, command, stdin, args) => {
      const exe = findInPath(type, args.path);
      if (!exe) {
        const bad = pluginTypeProblem(type);
        if (bad) return TE.left(cniError(ErrCode.Delegate, `invalid plugin name ${JSON.stringify(type)}: it ${bad}`));
        return TE.left(cniError(ErrCode.Delegate, `failed to find plugin "${type}" in path [${args.path.join(' ')}]`));
      }
      const own = ownPlugin(exe, type, selfDir, bundled);
      if (own) {
        return TE.map((o: { result?: Result }) => o.result)(invoke(own, command, { ...args, command, stdin }, ctx));
      }
      return async () => {
        try {
          const r = await execPlugin(exe, { ...opts.execEnv, ...env, ...lockEnv(), CNI_COMMAND: command }, stdin, opts.hostNetns);
          let parsed: unknown;
          try {
            parsed = r.stdout.trim() === '' ? undefined : JSON.parse(r.stdout);
          } catch {
            parsed = undefined;
          }
          if (r.code !== 0) {
            if (isCniError(parsed)) return E.left(cniError(parsed.code, `${type}: ${parsed.msg}`, parsed.details));
            return E.left(cniError(ErrCode.Delegate, `${type} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`));
          }
          if (command !== 'ADD') return E.right(undefined);
          if (parsed === undefined) return E.left(cniError(ErrCode.Delegate, `${type} printed no result`));
          // A delegate's result is untrusted text: parsed into addresses and prefixes, never passed through.
          const res = readResult(parsed);
          return E.isRight(res) ? res : E.left(cniError(ErrCode.Delegate, `${type} returned an invalid result: ${res.left}`));
        } catch (e) {
          return E.left(cniError(ErrCode.Delegate, `failed to run ${exe}: ${(e as Error).message}`));
        }
      };
    },
  };
  return ctx;
}

/** As the reference plugins (skel) without CNI_COMMAND: the about text with the version, and the protocol versions. */
export const aboutText = (plugin: Plugin): string =>
  `${plugin.about} (felt v${VERSION})\nCNI protocol versions supported: ${plugin.versions.join(', ')}\n`;

/**
 * The forwarder (apps/cni/forwarder/forwarder.c) sets this when feltd accepted the call and then died or did not
 * answer in time, and hands the call to this executable with the stdin it had sent.
 */
const DAEMON_LOST = 'FELT_CNI_DAEMON_LOST';

/**
 * The call feltd lost: an ADD may have been half done there, so it is not run again here: it answers "try
 * again later" (code 11) and changes nothing (the runtime's DEL, or its retry, cleans up). DEL, CHECK, GC,
 * STATUS and VERSION are idempotent: they run here. undefined: run the call.
 */
function lostCall(env: Env, stdin: string): Outcome | undefined {
  if (env[DAEMON_LOST] !== '1' || env['CNI_COMMAND'] !== 'ADD') return undefined;
  const e = cniError(
    ErrCode.TryAgainLater,
    'feltd accepted this ADD and then stopped or did not answer in time; nothing more was done here: try again later',
  );
  return { stdout: errorJson(versionOf(stdin), e), exitCode: 1 };
}

/** Entry point of a plugin executable (the forwarder's fallback: the call runs in this process). */
export async function main(plugin: Plugin, bundled: Bundled = {}): Promise<void> {
  traceMark('main');
  const lost = process.env[DAEMON_LOST];
  // Not passed on to the plugins this call executes: their calls were not lost.
  delete process.env[DAEMON_LOST];
  const env = process.env;
  if (!env['CNI_COMMAND']) {
    process.stderr.write(aboutText(plugin));
    return;
  }
  let stdin = '';
  try {
    stdin = readFileSync(0, 'utf8');
  } catch {
    stdin = '';
  }
  // The forwarder runs this bundle from the support directory (dist/cni/.felt/<type>.cjs): the plugin's own
  // directory (where delegates are found as felt's own) is the forwarder's, which it passes as argv[2].
  const selfDir = dirname(process.argv[2] ?? process.argv[1] ?? '.');
  const outcome =
    lostCall({ ...env, [DAEMON_LOST]: lost }, stdin) ??
    (await dispatch(plugin, env, stdin, makeCtx(env, selfDir, { ...bundled, [plugin.type]: plugin })));
  traceMark('done');
  if (outcome.stdout) process.stdout.write(outcome.stdout + '\n');
  process.exitCode = outcome.exitCode;
}
