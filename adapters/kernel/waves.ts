// Waves: concurrent calls on one host namespace share its reads and writes (feltd serving CNI, where 50 pods
// started at once are 50 calls in one process). A `waveKernel` wraps the kernel of one host namespace:
//
//  - observe: the requests made within one turn of the event loop are read together, as one request over the
//    union of their namespaces and scopes (the host namespace read once: one `ip -batch`, one iptables-save per
//    family, instead of one per call; each pod namespace still read on its own). Every call gets the whole
//    observation: an observer may return more than a scope names, and plan() acts only on what the call's own
//    scope owns (test/adapters/kernel-waves.test.ts checks that the plans are the same). When the shared read
//    fails (e.g. one call's CNI_NETNS is not a namespace), each request is read again on its own, so one call's
//    bad input is never another's error. Requests with `desired` or `kernelRoutes`, or without a scope, are
//    read on their own (their reads depend on them in ways a union would change).
//  - apply: what calls change in the host namespace within one turn is applied together, in shared applies
//    whose failure can be undone exactly, or does not need to be:
//      - the host's iptables ops, one shared apply per family and table: one iptables-restore, which commits
//        all of it or nothing;
//      - a call's other host ops when every one of them may be applied twice with the same outcome (a link's
//        settings, a link's or address's deletion, routes and neighbours replaced or deleted, sysctls: a DEL's
//        host veth, an ADD's port of the bridge), one shared `ip -batch` for all of them;
//    identical ops once (several ADDs of a fresh node want the same forwarding sysctls). Anything else (making
//    a link or an address, which fails when it exists) is applied by the call alone. An ADD's list, "the veth
//    pair (which reaches across namespaces), then ops each in one namespace", is applied in the adapter's own
//    order: the pair first, then the pod's ops beside the host's (shared). When a shared apply fails, each
//    call's part is applied again on its own (nothing of an iptables-restore that failed was applied; the ip
//    ops may be applied twice), so a call's result never depends on another's failure.
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

/** `defer`: when the turn ends (setImmediate); tests may pass their own. */
export function waveKernel(inner: Kernel, defer: (f: () => void) => void = (f) => void setImmediate(f)): WaveKernel {
  const stats = noWaveStats();
  const observeOne = (r: ObserveRequest): Promise<Obs> => (stats.observations++, inner.observe(r)());
  const applyOne = (ops: readonly Op[]): Promise<Applied> => (stats.applies++, inner.apply(ops)());

  let reads: Waiting<ObserveRequest, Obs>[] = [];
  const flushReads = async (): Promise<void> => {
    const batch = reads;
    reads = [];
    const groups = new Map<string, Waiting<ObserveRequest, Obs>[]>();
    for (const w of batch) {
      if (!mergeable(w.what)) {
        void observeOne(w.what).then(w.resolve);
        continue;
      }
      const key = w.what.ip === false ? 'noip' : 'ip';
      groups.set(key, [...(groups.get(key) ?? []), w]);
    }
    for (const g of groups.values()) {
      if (g.length === 1) {
        void observeOne(g[0]!.what).then(g[0]!.resolve);
        continue;
      }
      void observeOne(unionRequest(g.map((w) => w.what))).then(async (shared) => {
        if (E.isRight(shared)) return g.forEach((w) => w.resolve(shared));
        stats.fallbacks++;
        for (const w of g) void observeOne(w.what).then(w.resolve);
      });
    }
  };

  // One queue per shared apply: 'ip' (repeatable host ops) and one per iptables family and table.
  const writes = new Map<string, Waiting<readonly Op[], Applied>[]>();
  const flushWrites = (channel: string): void => {
    const batch = writes.get(channel) ?? [];
    writes.delete(channel);
    stats.sharedApplies++;
    if (batch.length === 1) {
      void applyOne(batch[0]!.what).then(batch[0]!.resolve);
      return;
    }
    // The host's ip ops, when the kernel tells each part's failures apart: one apply, a verdict per call.
    if (channel === 'ip' && inner.applyParts) {
      stats.applies++;
      void inner
        .applyParts(batch.map((w) => w.what))()
        .then((rs) => batch.forEach((w, i) => w.resolve(rs[i]!)));
      return;
    }
    void applyOne(dedupe(batch.flatMap((w) => w.what))).then((together) => {
      if (E.isRight(together)) return batch.forEach((w) => w.resolve(together));
      stats.fallbacks++;
      for (const w of batch) void applyOne(w.what).then(w.resolve);
    });
  };
  const enqueue = (channel: string, ops: readonly Op[]): Promise<Applied> =>
    new Promise((resolve) => {
      stats.sharedParts++;
      let q = writes.get(channel);
      if (!q) {
        q = [];
        writes.set(channel, q);
        defer(() => flushWrites(channel));
      }
      q.push({ what: ops, resolve });
    });
  /** The host's iptables ops, by family and table, each group in order. */
  const sharedIpt = async (ops: readonly Op[]): Promise<Applied> => {
    const groups = new Map<string, Op[]>();
    for (const op of ops) if (isIpt(op)) groups.set(iptGroup(op), [...(groups.get(iptGroup(op)) ?? []), op]);
    const rs = await Promise.all([...groups].map(([g, part]) => enqueue(g, part)));
    return rs.find(E.isLeft) ?? E.right(undefined);
  };
  /**
   * Host ops that are not iptables': shared when every one is repeatable, or (where the kernel judges each
   * part of a shared apply on its own) makes a veth pair from the host into another namespace, under the
   * call's own random name; else the call's own apply.
   */
  const shareable = (op: Op): boolean =>
    REPEATABLE.has(op.op) || (inner.applyParts !== undefined && op.op === 'link.add' && op.link.veth !== undefined && reachesOut(op));
  const hostIp = (ops: readonly Op[]): Promise<Applied> =>
    ops.length === 0 ? done : ops.every(shareable) ? enqueue('ip', ops) : applyOne(ops);

  return {
    stats: () => ({ ...stats }),
    observe:
      (req): TE.TaskEither<KernelError, KernelState> =>
      () =>
        new Promise((resolve) => {
          stats.observeRequests++;
          if (reads.length === 0) defer(() => void flushReads());
          reads.push({ what: req, resolve });
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
