// Waves: concurrent calls on one host namespace share its reads and writes (feltd serving CNI, where 50 pods
// started at once are 50 calls in one process). A `waveKernel` wraps the kernel of one host namespace:
//
// Reads and shared applies are group commits: one batch at a time per queue, what arrives meanwhile in the next
// (so calls spread over time under load still share; a lone call on an idle queue waits for nothing).
//
//  - observe: the requests waiting when a read starts are read together, as one request over the
//    union of their namespaces and scopes (the host namespace read once: one `ip -batch`, one iptables-save per
//    family, instead of one per call; each pod namespace still read on its own). Every call gets the whole
//    observation: an observer may return more than a scope names, and plan() acts only on what the call's own
//    scope owns (test/adapters/kernel-waves.test.ts checks that the plans are the same). When the shared read
//    fails (e.g. one call's CNI_NETNS is not a namespace), each request is read again on its own, so one call's
//    bad input is never another's error. Requests with `desired` or `kernelRoutes`, or without a scope, are
//    read on their own (their reads depend on them in ways a union would change).
//  - apply: the host namespace's changes of the calls waiting when a shared apply starts are applied together:
//      - the host's iptables ops, one shared apply per family and table: one iptables-restore, which commits
//        all of it or nothing (when it fails, each call's part is applied again on its own: nothing of it was
//        applied);
//      - a call's other host ops (every ADD's veth pair made into its pod with its bridge port, a fresh node's
//        bridge, a DEL's host veth): one shared `ip -force -batch`, where the kernel adapter judges each call
//        by its own lines (Kernel.applyParts: as if the calls' parts ran one after another, each alone), so a
//        call's result never depends on another's failure; without applyParts (the twin has it too), only ops
//        that may be applied twice with the same outcome are shared, and the rest is the call's own apply.
//    An ADD's host ops come first (they make the pair), then its pod's ops, on their own.
//
// Pure of any particular kernel: the memory twin or the Linux adapter goes inside.

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { HOST, opNs as modelOpNs, type KernelState, type NsRef, type Op, type OwnershipScope } from '../../core/kernel/model.ts';
import type { Kernel, KernelError, ObserveRequest } from './types.ts';
import { reachesOut } from './linux.ts';

export interface WaveStats {
  /** observe() calls, and the reads they became. */
  observeRequests: number;
  observations: number;
  /** apply() calls, the host parts sent to a shared apply, the applies run in all, and those of them shared. */
  applyRequests: number;
  sharedParts: number;
  applies: number;
  sharedApplies: number;
  /** Shared reads or applies that failed and were done again call by call. */
  fallbacks: number;
}

export interface WaveKernel extends Kernel {
  readonly stats: () => Readonly<WaveStats>;
}

/** The namespace an op runs in (the model's table, nftables ops included). */
const opNs = (op: Op): NsRef => modelOpNs(op);

/** Ops whose second application changes nothing and fails only where the first would have. */
const REPEATABLE: ReadonlySet<Op['op']> = new Set([
  'link.set',
  'link.del',
  'addr.del',
  'route.replace',
  'route.del',
  'neigh.replace',
  'neigh.del',
  'fdb.replace',
  'fdb.del',
  'sysctl.set',
]);

const isIpt = (op: Op): op is Extract<Op, { op: 'chain.sync' | 'chain.del' | 'chain.add' | 'rule.add' | 'rule.del' }> =>
  op.op === 'chain.sync' || op.op === 'chain.del' || op.op === 'chain.add' || op.op === 'rule.add' || op.op === 'rule.del';

/** An iptables op's family and table. */
const iptGroup = (op: Extract<Op, { op: 'chain.sync' | 'chain.del' | 'chain.add' | 'rule.add' | 'rule.del' }>): string => {
  const c = op.op === 'chain.sync' ? op.chain : op.op === 'rule.add' || op.op === 'rule.del' ? op.rule : op;
  return `ipt${c.family}:${c.table}`;
};

const mergeable = (r: ObserveRequest): boolean => r.scope !== undefined && r.desired === undefined && !r.kernelRoutes;

const SCOPE_KEYS = ['links', 'devices', 'chains', 'ruleMarkers', 'routeDsts', 'qdiscDevices', 'routeIds', 'ipRules'] as const;

/** The union of requests (all mergeable, with the same `ip`). */
export function unionRequest(rs: readonly ObserveRequest[]): ObserveRequest {
  const scope: Record<string, unknown[]> = {};
  for (const r of rs) {
    for (const [k, v] of Object.entries(r.scope ?? {})) if (Array.isArray(v)) (scope[k] ??= []).push(...(v as unknown[]));
  }
  for (const k of SCOPE_KEYS.slice(0, 4)) scope[k] ??= [];
  const families = [...new Set(rs.flatMap((r) => r.iptables ?? []))].sort();
  const sysctls = rs.flatMap((r) => r.sysctls ?? []);
  return {
    namespaces: [...new Set(rs.flatMap((r) => r.namespaces))],
    ...(rs[0]!.ip === false ? { ip: false } : {}),
    scope: scope as unknown as OwnershipScope,
    ...(families.length ? { iptables: families } : {}),
    ...(rs.some((r) => r.fdb) ? { fdb: true } : {}),
    ...(rs.some((r) => r.qdiscs) ? { qdiscs: true } : {}),
    ...(rs.some((r) => r.ipRules) ? { ipRules: true } : {}),
    ...(sysctls.length ? { sysctls } : {}),
  };
}

/** Identical ops once, the first occurrence's place kept. */
const dedupe = (ops: readonly Op[]): Op[] => {
  const seen = new Set<string>();
  return ops.filter((op) => {
    const k = JSON.stringify(op);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
};

interface Waiting<A, R> {
  readonly what: A;
  readonly resolve: (r: R) => void;
}

type Obs = E.Either<KernelError, KernelState>;
type Applied = E.Either<KernelError, void>;
const done: Promise<Applied> = Promise.resolve(E.right(undefined));

/** Counters at zero. */
export const noWaveStats = (): WaveStats => ({
  observeRequests: 0,
  observations: 0,
  applyRequests: 0,
  sharedParts: 0,
  applies: 0,
  sharedApplies: 0,
  fallbacks: 0,
});

/**
 * A queue whose batches run one at a time (group commit): what arrives while a batch runs waits for it and
 * goes in the next one, however the calls are spread in time; an idle queue starts a batch when the turn
 * ends, so a lone call waits for nothing else.
 */
function groupCommit<W>(defer: (f: () => void) => void, run: (batch: W[]) => Promise<void>): (w: W) => void {
  let queue: W[] = [];
  let busy = false;
  const next = (): void => {
    if (busy || queue.length === 0) return;
    busy = true;
    defer(() => {
      const batch = queue;
      queue = [];
      void run(batch).finally(() => {
        busy = false;
        next();
      });
    });
  };
  return (w) => {
    queue.push(w);
    next();
  };
}

/** `defer`: when the turn ends (setImmediate); tests may pass their own. */
export function waveKernel(inner: Kernel, defer: (f: () => void) => void = (f) => void setImmediate(f)): WaveKernel {
  const stats = noWaveStats();
  const observeOne = (r: ObserveRequest): Promise<Obs> => (stats.observations++, inner.observe(r)());
  const applyOne = (ops: readonly Op[]): Promise<Applied> => (stats.applies++, inner.apply(ops)());

  // Mergeable reads, by whether they read links etc. ('ip') or not ('noip'): one read per batch.
  const readBatch = async (g: Waiting<ObserveRequest, Obs>[]): Promise<void> => {
    if (g.length === 1) return g[0]!.resolve(await observeOne(g[0]!.what));
    const shared = await observeOne(unionRequest(g.map((w) => w.what)));
    if (E.isRight(shared)) return g.forEach((w) => w.resolve(shared));
    stats.fallbacks++;
    await Promise.all(g.map((w) => observeOne(w.what).then(w.resolve)));
  };
  const readQueues = new Map<string, (w: Waiting<ObserveRequest, Obs>) => void>();
  const readQueue = (key: string): ((w: Waiting<ObserveRequest, Obs>) => void) => {
    let q = readQueues.get(key);
    if (!q) readQueues.set(key, (q = groupCommit(defer, readBatch)));
    return q;
  };

  // One queue per shared apply: 'ip' (the host's ip ops) and one per iptables family and table.
  const writeBatch = async (channel: string, batch: Waiting<readonly Op[], Applied>[]): Promise<void> => {
    stats.sharedApplies++;
    if (batch.length === 1) return batch[0]!.resolve(await applyOne(batch[0]!.what));
    // The host's ip ops, when the kernel tells each part's failures apart: one apply, a verdict per call.
    if (channel === 'ip' && inner.applyParts) {
      stats.applies++;
      const rs = await inner.applyParts(batch.map((w) => w.what))();
      return batch.forEach((w, i) => w.resolve(rs[i]!));
    }
    const together = await applyOne(dedupe(batch.flatMap((w) => w.what)));
    if (E.isRight(together)) return batch.forEach((w) => w.resolve(together));
    stats.fallbacks++;
    await Promise.all(batch.map((w) => applyOne(w.what).then(w.resolve)));
  };
  const writeQueues = new Map<string, (w: Waiting<readonly Op[], Applied>) => void>();
  const enqueue = (channel: string, ops: readonly Op[]): Promise<Applied> =>
    new Promise((resolve) => {
      stats.sharedParts++;
      let q = writeQueues.get(channel);
      if (!q) writeQueues.set(channel, (q = groupCommit(defer, (b) => writeBatch(channel, b))));
      q({ what: ops, resolve });
    });
  /** The host's iptables ops, by family and table, each group in order. */
  const sharedIpt = async (ops: readonly Op[]): Promise<Applied> => {
    const groups = new Map<string, Op[]>();
    for (const op of ops) if (isIpt(op)) groups.set(iptGroup(op), [...(groups.get(iptGroup(op)) ?? []), op]);
    const rs = await Promise.all([...groups].map(([g, part]) => enqueue(g, part)));
    return rs.find(E.isLeft) ?? E.right(undefined);
  };
  /**
   * Host ops that are not iptables': shared when every one is repeatable, or whatever they are where the kernel
   * judges each part of a shared apply on its own (Kernel.applyParts: the parts run one after another as if
   * each were applied alone, a part's failed lines its own); else the call's own apply.
   */
  const shareable = (op: Op): boolean => REPEATABLE.has(op.op) || inner.applyParts !== undefined;
  const hostIp = (ops: readonly Op[]): Promise<Applied> =>
    ops.length === 0 ? done : ops.every(shareable) ? enqueue('ip', ops) : applyOne(ops);

  return {
    stats: () => ({ ...stats }),
    ...(inner.prestart ? { prestart: (ns: NsRef) => inner.prestart!(ns) } : {}),
    observe:
      (req): TE.TaskEither<KernelError, KernelState> =>
      () =>
        new Promise((resolve) => {
          stats.observeRequests++;
          if (!mergeable(req)) void observeOne(req).then(resolve);
          else readQueue(req.ip === false ? 'noip' : 'ip')({ what: req, resolve });
        }),
    apply:
      (ops): TE.TaskEither<KernelError, void> =>
      async () => {
        stats.applyRequests++;
        if (ops.length === 0) return E.right(undefined);
        const hostIpt = (op: Op): boolean => isIpt(op) && opNs(op) === HOST;
        const ipt = ops.filter(hostIpt);
        const rest = ops.filter((op) => !hostIpt(op));
        const iptDone = ipt.length ? sharedIpt(ipt) : done;
        const first = (rs: readonly Applied[]): Applied => rs.find(E.isLeft) ?? E.right(undefined);
        // The host's ops first (plan orders a namespace that makes a pair before the one it reaches into).
        const k = rest.findIndex((op) => opNs(op) !== HOST);
        const host = k < 0 ? rest : rest.slice(0, k);
        const pod = k < 0 ? [] : rest.slice(k);
        // A pod that reaches into the host (a link moved out, a pair made from inside), or host ops after the
        // pod's: the call's own apply, in the adapter's order.
        if (pod.some((op) => reachesOut(op) || opNs(op) === HOST)) return first(await Promise.all([applyOne(rest), iptDone]));
        // An ADD's: the host's (shared: the veth pair made into the pod, the bridge port), then the pod's own.
        const made = await hostIp(host);
        if (E.isLeft(made) || pod.length === 0) return first([made, await iptDone]);
        return first(await Promise.all([applyOne(pod), iptDone]));
      },
  };
}
