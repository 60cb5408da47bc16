// feltd serving CNI: what a forwarded call means. The socket and the frames are apps/feltd/cni-server.ts's;
// here a parsed request becomes exactly the call the plugin executable would have run:
//
//  - the plugin and the plugins bundled with it: apps/cni/entries.ts, by the type the forwarder was built for;
//  - the environment: the caller's CNI_* variables (CNI_PATH among them) and nothing else it sent;
//  - the host namespace: the caller's. feltd opens /proc/<pid>/ns/net and checks that it is the namespace the
//    caller reported (device and inode); when it is feltd's own, nothing changes; otherwise the call runs with
//    Ctx.hostNetns = feltd's descriptor of it (/proc/<feltd>/fd/<n>, held until the call ends). One that does
//    not match, or that feltd cannot see (another PID namespace), is an error, not a guess;
//  - calls on one attachment (CNI_CONTAINERID and CNI_IFNAME) run in the order they came: a DEL that follows
//    an ADD whose forwarder was killed waits for that ADD;
//  - the plugin's directory (where delegates count as felt's own): the caller's executable's (/proc/<pid>/exe);
//  - the event stores: feltd's warm ones (apps/cni/store.ts warmStores), open across calls, their transactions
//    of calls waiting at once committed together;
//  - the kernel: one wave kernel (adapters/kernel/waves.ts) per host namespace, shared by the calls in flight
//    there: their reads of the host namespace made once, their writes to it applied together.
//
// Then the same `dispatch` as the executable. Each call is counted in felt_cni_requests_total{plugin,command,
// code} and timed in felt_cni_request_duration_seconds.

import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readlinkSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { CNI_RECORD_FILE, type CniRecord } from '../../core/audit/cni.ts';
import type { AttachmentCount } from '../../core/audit/status.ts';
import { attachmentsProjection } from '../../core/bridge/attachments.ts';
import { cniError, ErrCode, type CniError } from '../../core/cni/errors.ts';
import { CNI_ENTRIES } from '../../apps/cni/entries.ts';
import { aboutText, dispatch, makeCtx } from '../../apps/cni/dispatch.ts';
import { warmStores, type WarmStores } from '../../apps/cni/store.ts';
import { linuxKernel } from '../../adapters/kernel/linux.ts';
import { batchSession, ipSession, type IpSession } from '../../adapters/kernel/ip-session.ts';
import { traceMark } from '../../adapters/kernel/exec.ts';
import { noWaveStats, waveKernel, type WaveKernel, type WaveStats } from '../../adapters/kernel/waves.ts';
import type { CniHandler, CniReply, CniRequest } from './cni-server.ts';
import type { Logger, Metrics } from './observability.ts';

const CNI_REQUESTS = 'felt_cni_requests_total';
const CNI_REQUESTS_HELP = 'CNI calls feltd served, by plugin type, command and CNI result code (0: success)';
const CNI_DURATION = 'felt_cni_request_duration_seconds';
/** Waves (adapters/kernel/waves.ts, apps/cni/store.ts): what the calls asked for, and what it took. */
const WAVE_COUNTERS: Readonly<Record<keyof WaveStats | 'storeCalls' | 'storeTransactions', readonly [string, string]>> = {
  observeRequests: ['felt_cni_wave_observe_requests_total', 'Reads of the kernel the CNI calls feltd served asked for'],
  observations: [
    'felt_cni_wave_observations_total',
    'Reads of the kernel feltd made for them (concurrent reads of one host namespace made once)',
  ],
  applyRequests: ['felt_cni_wave_apply_requests_total', 'Changes to the kernel the CNI calls feltd served asked for'],
  sharedParts: ['felt_cni_wave_shared_parts_total', 'Host-namespace parts of those changes sent to a shared apply'],
  applies: ['felt_cni_wave_applies_total', 'Applies feltd ran for them (concurrent host-namespace changes applied together)'],
  sharedApplies: ['felt_cni_wave_shared_applies_total', 'Of those, the shared applies of host-namespace parts (before any fallback)'],
  fallbacks: ['felt_cni_wave_fallbacks_total', 'Shared reads or applies that failed and were done again call by call'],
  storeCalls: ['felt_cni_store_calls_total', 'Event-log decisions the CNI calls feltd served asked for'],
  storeTransactions: [
    'felt_cni_store_transactions_total',
    'SQLite transactions feltd ran for them (decisions waiting at once committed together)',
  ],
};
const CNI_DURATION_HELP = 'How long feltd took to serve a CNI call, from the whole request to the answer';
const CNI_DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const COMMANDS = new Set(['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION']);

/** Only these of the caller's variables reach the call. */
const CNI_VAR = /^CNI_[A-Z0-9_]+$/;

export interface CniServiceDeps {
  readonly log: Logger;
  readonly metrics: Metrics;
  /** How to see a process's network namespace and executable (tests may point it elsewhere). */
  readonly proc?: string;
  readonly clock?: () => number;
}

export interface CniService {
  readonly handle: CniHandler;
  /** Calls answered in the last minute. */
  readonly perMinute: () => number;
  /** Calls answered since feltd started serving. */
  readonly total: () => number;
  /** Bridge attachments per network, in the logs feltd served the latest calls from (row counts: no log scan). */
  readonly attachments: () => AttachmentCount[];
  readonly stores: WarmStores;
  /** What the waves saved so far (also on /metrics, WAVE_COUNTERS). */
  readonly waves: () => WaveStats & { storeCalls: number; storeTransactions: number };
  readonly close: () => void;
}

const errorReply = (stdin: string, e: CniError): CniReply => {
  let version = '1.1.0';
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    if (typeof v === 'string') version = v;
  } catch {
    // not JSON: the current version
  }
  return { code: 1, stdout: `${JSON.stringify({ cniVersion: version, code: e.code, msg: e.msg })}\n`, stderr: '' };
};

/** The caller's environment: its CNI_* entries (the first of a name), nothing else. */
function callerEnv(entries: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of entries) {
    const i = e.indexOf('=');
    if (i <= 0) continue;
    const k = e.slice(0, i);
    if (CNI_VAR.test(k) && !(k in env)) env[k] = e.slice(i + 1);
  }
  return env;
}

export function cniService(deps: CniServiceDeps): CniService {
  const proc = deps.proc ?? '/proc';
  const clock = deps.clock ?? (() => performance.now());
  const stores = warmStores();
  const own = statSync(`${proc}/self/ns/net`, { bigint: true });
  const answered: number[] = []; // times of the last minute's answers, oldest first
  let total = 0;
  for (const [n, h] of [[CNI_REQUESTS, CNI_REQUESTS_HELP]] as const) deps.metrics.counter(n, h, 0);
  deps.metrics.declareHistogram(CNI_DURATION, CNI_DURATION_HELP, CNI_DURATION_BUCKETS);

  /**
   * Where the caller's host namespace is for this call: undefined (feltd's own) or a path, or an error. The
   * namespace is opened here and held by feltd until the call ends (`release`), and the call names it by
   * feltd's descriptor (/proc/<feltd>/fd/<n>): it stays the caller's namespace even if the caller dies
   * mid-call and its PID is reused.
   */
  const where = (req: CniRequest): { hostNetns?: string; nsKey: string; selfDir: string; release: () => void } | CniError => {
    const ns = `${proc}/${req.pid}/ns/net`;
    let fd: number;
    try {
      fd = openSync(ns, 'r');
    } catch (e) {
      return cniError(
        ErrCode.InvalidEnvironment,
        `feltd cannot open the caller's network namespace ${ns} (${(e as NodeJS.ErrnoException).code}): feltd must share the host's PID namespace`,
      );
    }
    const release = (): void => closeSync(fd);
    const st = fstatSync(fd, { bigint: true });
    if (st.dev !== req.netns.dev || st.ino !== req.netns.ino) {
      release();
      return cniError(
        ErrCode.InvalidEnvironment,
        `the caller's network namespace is not ${ns}'s (pid ${req.pid}): feltd must share the caller's PID namespace`,
      );
    }
    let exe: string;
    try {
      exe = readlinkSync(`${proc}/${req.pid}/exe`);
    } catch (e) {
      release();
      return cniError(ErrCode.InvalidEnvironment, `feltd cannot read ${proc}/${req.pid}/exe (${(e as NodeJS.ErrnoException).code})`);
    }
    if (st.dev === own.dev && st.ino === own.ino) {
      release();
      return { selfDir: dirname(exe), nsKey: 'self', release: () => undefined };
    }
    return { hostNetns: `/proc/${process.pid}/fd/${fd}`, nsKey: `${st.dev}:${st.ino}`, selfDir: dirname(exe), release };
  };

  /**
   * One wave kernel per host namespace (by device and inode) while calls run there, on feltd's own descriptor of
   * that namespace (the first caller's may close before the others are done).
   */
  const waves = new Map<string, { kernel: WaveKernel; users: number; close: () => void }>();
  // A pod's ip batch is started ahead (Kernel.prestart) while at most this many calls are in flight: then a
  // process's start is on the call's way; in a wave, the CPU is the limit and a start ahead only competes.
  const PRESTART_UP_TO = 2;
  let inFlight = 0;
  // How long no call must be in flight before the checks calls left run (Ctx.settle).
  const SETTLE_MS = 200;
  // feltd's own namespace (where the runtime runs, on a node): one long-lived `ip` and one `tc` for its host
  // reads and changes, kept between waves.
  let session: IpSession | undefined;
  let tcSession: IpSession | undefined;
  const ownSessions = (): { session: IpSession; tcSession: IpSession } => ({
    session: (session ??= ipSession()),
    tcSession: (tcSession ??= batchSession('tc')),
  });
  const retired = noWaveStats();
  const waveFor = (key: string, hostNetns: string | undefined): { kernel: WaveKernel; release: () => void } => {
    let w = waves.get(key);
    if (!w) {
      const fd = hostNetns === undefined ? undefined : openSync(hostNetns, 'r');
      const inner = linuxKernel({
        pid: process.pid,
        restoreSentinel: true,
        prestart: () => inFlight <= PRESTART_UP_TO,
        ...(fd !== undefined ? { hostNetns: `/proc/${process.pid}/fd/${fd}` } : ownSessions()),
      });
      w = { kernel: waveKernel(inner), users: 0, close: () => fd !== undefined && closeSync(fd) };
      waves.set(key, w);
    }
    const held = w;
    held.users++;
    return {
      kernel: held.kernel,
      release: () => {
        if (--held.users > 0) return;
        waves.delete(key);
        const s = held.kernel.stats();
        for (const k of Object.keys(retired) as (keyof WaveStats)[]) retired[k] += s[k];
        held.close();
      },
    };
  };
  const waveTotals = (): WaveStats & { storeCalls: number; storeTransactions: number } => {
    const t = { ...retired };
    for (const w of waves.values()) {
      const s = w.kernel.stats();
      for (const k of Object.keys(t) as (keyof WaveStats)[]) t[k] += s[k];
    }
    const st = stores.stats();
    return { ...t, storeCalls: st.calls, storeTransactions: st.transactions };
  };
  const counted = waveTotals();
  for (const [n, h] of Object.values(WAVE_COUNTERS)) deps.metrics.counter(n, h, 0);
  const countWaves = (): void => {
    const now = waveTotals();
    for (const k of Object.keys(WAVE_COUNTERS) as (keyof typeof WAVE_COUNTERS)[]) {
      const d = now[k] - counted[k];
      if (d > 0) deps.metrics.counter(WAVE_COUNTERS[k][0], WAVE_COUNTERS[k][1], d);
      counted[k] = now[k];
    }
  };

  /** Calls on one attachment (container ID and interface) run one after another: a DEL waits for its ADD. */
  const tails = new Map<string, Promise<unknown>>();
  const inTurn = async <A>(key: string | undefined, f: () => Promise<A>): Promise<A> => {
    if (key === undefined) return f();
    const before = tails.get(key) ?? Promise.resolve();
    const run = before.then(f, f);
    const tail = run.catch(() => undefined);
    tails.set(key, tail);
    try {
      return await run;
    } finally {
      if (tails.get(key) === tail) tails.delete(key);
    }
  };

  /**
   * Checks the calls left to settle (Ctx.settle), by attachment. Each runs in its attachment's turn: once no call
   * has been in flight for SETTLE_MS, or before the next call on the attachment, unless that call is a DEL of the
   * same plugin type, which drops it (a DEL of another plugin of the attachment's chain does not: the chain's DEL
   * may stop before it reaches this one). A check holds its call's namespace and wave until it has run or is dropped.
   */
  const unsettled = new Map<string, { readonly type: string; readonly run: () => Promise<void>; readonly drop: () => void }>();
  let idle: NodeJS.Timeout | undefined;
  const settleAll = (): void => {
    for (const [key, u] of unsettled) {
      unsettled.delete(key);
      void inTurn(key, u.run);
    }
  };
  /** At a call's start, in its attachment's turn: the attachment's pending check runs first, or goes (its DEL). */
  const settleBefore = async (key: string | undefined, type: string, command: string): Promise<void> => {
    if (key === undefined) return;
    const u = unsettled.get(key);
    if (!u) return;
    unsettled.delete(key);
    if (command === 'DEL' && type === u.type) u.drop();
    else await u.run();
  };

  const handle: CniHandler = async (req) => {
    const t0 = clock();
    const env = callerEnv(req.env);
    const command = env['CNI_COMMAND'] ?? '';
    traceMark(`request ${req.type} ${command}`);
    const entry = Object.hasOwn(CNI_ENTRIES, req.type) ? CNI_ENTRIES[req.type] : undefined;
    let reply: CniReply;
    if (!entry) {
      reply = errorReply(
        req.stdin,
        cniError(ErrCode.Internal, `feltd does not serve the plugin type ${JSON.stringify(req.type)} (another felt version's forwarder?)`),
      );
    } else if (command === '') {
      reply = { code: 0, stdout: '', stderr: aboutText(entry.plugin) };
    } else {
      const key = env['CNI_CONTAINERID'] !== undefined ? `${env['CNI_CONTAINERID']}\0${env['CNI_IFNAME'] ?? ''}` : undefined;
      inFlight++;
      clearTimeout(idle);
      try {
        reply = await inTurn(key, async () => {
          await settleBefore(key, req.type, command);
          const at = where(req);
          if ('code' in at) return errorReply(req.stdin, at);
          let wave: { kernel: WaveKernel; release: () => void } | undefined;
          const release = (): void => {
            wave?.release();
            at.release();
            countWaves();
          };
          // Checks the call leaves to settle: they hold the namespace and the wave until they have run or are dropped.
          const checks: TE.TaskEither<CniError, void>[] = [];
          try {
            wave = waveFor(at.nsKey, at.hostNetns);
            const ctx = makeCtx(env, at.selfDir, entry.bundled, {
              stores: stores.scope(),
              ...(at.hostNetns !== undefined ? { hostNetns: at.hostNetns } : {}),
              kernel: wave.kernel,
              execEnv: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
              ...(key !== undefined ? { settle: (check: TE.TaskEither<CniError, void>) => void checks.push(check) } : {}),
            });
            const out = await dispatch(entry.plugin, env, req.stdin, ctx);
            return { code: out.exitCode, stdout: out.stdout ? `${out.stdout}\n` : '', stderr: '' };
          } finally {
            if (key === undefined || checks.length === 0) release();
            else
              unsettled.set(key, {
                type: req.type,
                run: async () => {
                  for (const check of checks) {
                    const r = await check().catch((e: unknown) => E.left(cniError(ErrCode.Internal, String(e))));
                    if (E.isLeft(r)) deps.log.error('the check a CNI call left failed', { plugin: req.type, command, error: r.left.msg });
                  }
                  release();
                },
                drop: release,
              });
          }
        });
      } finally {
        if (--inFlight === 0 && unsettled.size > 0) idle = setTimeout(settleAll, SETTLE_MS).unref();
      }
    }
    let code = '0';
    if (reply.code !== 0) {
      try {
        const c = (JSON.parse(reply.stdout) as { code?: unknown }).code;
        code = typeof c === 'number' ? String(c) : 'unknown';
      } catch {
        code = 'unknown';
      }
    }
    const t1 = clock();
    traceMark(`reply ${req.type} ${command}: ${reply.code}`);
    const labels = {
      plugin: entry ? req.type : 'unknown',
      command: COMMANDS.has(command) ? command : command === '' ? 'none' : 'invalid',
      code,
    };
    deps.metrics.counter(CNI_REQUESTS, CNI_REQUESTS_HELP, 1, labels);
    deps.metrics.observe(CNI_DURATION, CNI_DURATION_HELP, CNI_DURATION_BUCKETS, (t1 - t0) / 1000, {
      plugin: labels.plugin,
      command: labels.command,
    });
    answered.push(t1);
    total++;
    while (answered.length && answered[0]! < t1 - 60_000) answered.shift();
    return reply;
  };

  return {
    handle,
    perMinute: () => {
      const now = clock();
      while (answered.length && answered[0]! < now - 60_000) answered.shift();
      return answered.length;
    },
    total: () => total,
    attachments: () => {
      const counts = new Map<string, number>();
      for (const dir of stores.dataDirs()) {
        if (!existsSync(join(dir, 'felt.db'))) continue;
        const opened = openSqliteStore(dir, { readonly: true });
        if (E.isLeft(opened)) continue;
        const store = opened.right;
        try {
          const streams = store.streams('bridge/');
          if (E.isLeft(streams)) continue;
          for (const stream of streams.right) {
            const n = store.view(stream, attachmentsProjection, (v) => E.right(v.count()));
            const network = stream.slice('bridge/'.length);
            if (E.isRight(n)) counts.set(network, (counts.get(network) ?? 0) + n.right);
          }
        } finally {
          store.close();
        }
      }
      return [...counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([network, count]) => ({ network, count }));
    },
    stores,
    waves: waveTotals,
    close: () => {
      // Checks not run yet go: what they would remove (a second copy of a jump) goes with its attachment's DEL.
      clearTimeout(idle);
      for (const u of unsettled.values()) u.drop();
      unsettled.clear();
      stores.close();
      session?.close();
      tcSession?.close();
    },
  };
}

/**
 * Write `<stateDir>/cni.json` (core/audit/cni.ts) now and every `everyMs` while feltd serves, atomically; a write
 * that fails is logged once until one succeeds. Returns the stop function (which writes a last record).
 */
export function recordCni(stateDir: string, socket: string, service: CniService, log: Logger, everyMs = 5000): () => void {
  const path = join(stateDir, CNI_RECORD_FILE);
  const since = new Date().toISOString();
  let failing = false;
  const write = (): void => {
    const rec: CniRecord = {
      socket,
      since,
      time: new Date().toISOString(),
      requestsLastMinute: service.perMinute(),
      requestsTotal: service.total(),
    };
    const tmp = `${path}.tmp-${process.pid}`;
    try {
      mkdirSync(stateDir, { recursive: true });
      writeFileSync(tmp, JSON.stringify(rec, null, 2) + '\n');
      renameSync(tmp, path);
      failing = false;
    } catch (e) {
      if (!failing) log.error('cannot write cni.json', { path, error: (e as Error).message });
      failing = true;
    }
  };
  write();
  const timer = setInterval(write, everyMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    write();
  };
}
