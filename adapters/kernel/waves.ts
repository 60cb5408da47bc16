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
//  - apply: the op lists of the host namespace alone (a DEL's: its masquerade chain and rule, its host veth) made
//    within one turn are applied together, identical ops once (the bridge, the forwarding sysctls several
//    ADDs of a fresh node want): one iptables-restore per family and one `ip -batch` for all of them. Of a list
//    that also reaches a pod namespace (an ADD's), the host's iptables ops go with the others (rules need no
//    link or address, and the adapter runs them in a lane of their own anyway); when the list is "ops that
//    reach across namespaces (the veth pair), then ops each in one namespace", the first part is applied on its
//    own, then the pod's ops beside the host's, which go to the shared apply (the adapter's own order: a step
//    that reaches across waits for all before it, the namespaces' lanes run beside each other after it). Any
//    other list is applied as it is, in the call's own order. When the shared apply fails, each list is applied again on its own (its
//    deletions of what is already gone are no failures, additions that were made meanwhile are EEXIST, which
//    bridge's ADD converges from), so a call's result never depends on another's failure.
//
// Pure of any particular kernel: the memory twin or the Linux adapter goes inside.

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { HOST, type KernelState, type NsRef, type Op, type OwnershipScope } from '../../core/kernel/model.ts';
import type { Kernel, KernelError, ObserveRequest } from './types.ts';
import { reachesOut } from './linux.ts';

export interface WaveStats {
  /** observe() calls, and the reads they became. */
  observeRequests: number;
  observations: number;
  /** apply() calls, the host parts sent to the shared apply, and the applies run in all. */
  applyRequests: number;
  sharedParts: number;
  applies: number;
  /** Shared reads or applies that failed and were done again call by call. */
  fallbacks: number;
}

export interface WaveKernel extends Kernel {
  readonly stats: () => Readonly<WaveStats>;
}

/** The namespace an op runs in. */
export const opNs = (op: Op): NsRef => {
  switch (op.op) {
    case 'link.add':
    case 'link.set':
      return op.link.ns;
    case 'link.del':
    case 'link.move':
    case 'chain.del':
    case 'chain.add':
      return op.ns;
    case 'addr.add':
    case 'addr.del':
      return op.addr.ns;
    case 'route.replace':
    case 'route.del':
      return op.route.ns;
    case 'neigh.replace':
    case 'neigh.del':
      return op.neigh.ns;
    case 'fdb.replace':
    case 'fdb.del':
      return op.fdb.ns;
    case 'chain.sync':
      return op.chain.ns;
    case 'rule.add':
    case 'rule.del':
      return op.rule.ns;
    case 'sysctl.set':
      return op.sysctl.ns;
    case 'qdisc.replace':
    case 'qdisc.del':
      return op.qdisc.ns;
    case 'iprule.add':
    case 'iprule.del':
      return op.ipRule.ns;
  }
};

/** An op of the host namespace that changes only the host namespace (a host link's deletion takes its peer: that peer is the call's own). */
const hostOnly = (op: Op): boolean => {
  if (opNs(op) !== HOST) return false;
  if (op.op === 'link.move') return false;
  if (op.op === 'link.add') return op.link.veth === undefined || op.link.veth.peerNs === HOST;
  return true;
};

const isIpt = (op: Op): boolean => op.op === 'chain.sync' || op.op === 'chain.del' || op.op === 'chain.add' || op.op === 'rule.add' || op.op === 'rule.del';

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

/** `defer`: when the turn ends (setImmediate); tests may pass their own. */
export function waveKernel(inner: Kernel, defer: (f: () => void) => void = (f) => void setImmediate(f)): WaveKernel {
  const stats: WaveStats = { observeRequests: 0, observations: 0, applyRequests: 0, sharedParts: 0, applies: 0, fallbacks: 0 };
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

  let writes: Waiting<readonly Op[], Applied>[] = [];
  const flushWrites = (): void => {
    const batch = writes;
    writes = [];
    if (batch.length === 1) {
      void applyOne(batch[0]!.what).then(batch[0]!.resolve);
      return;
    }
    void applyOne(dedupe(batch.flatMap((w) => w.what))).then((shared) => {
      if (E.isRight(shared)) return batch.forEach((w) => w.resolve(shared));
      stats.fallbacks++;
      for (const w of batch) void applyOne(w.what).then(w.resolve);
    });
  };

  const shared = (ops: readonly Op[]): Promise<Applied> =>
    new Promise((resolve) => {
      stats.sharedParts++;
      if (writes.length === 0) defer(flushWrites);
      writes.push({ what: ops, resolve });
    });

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
        if (ops.every(hostOnly)) return shared(ops);
        const hostIpt = (op: Op): boolean => isIpt(op) && opNs(op) === HOST;
        const ipt = ops.filter(hostIpt);
        const rest = ops.filter((op) => !hostIpt(op));
        const iptDone = ipt.length ? shared(ipt) : done;
        // An ADD's: the ops that reach across namespaces (the veth pair) first, then the pod's ops beside the
        // host's, which go to the shared apply. Any other shape is applied as it is.
        const k = rest.findIndex((op) => !reachesOut(op));
        const after = k < 0 ? [] : rest.slice(k);
        const host = after.filter((op) => opNs(op) === HOST);
        if (after.some(reachesOut) || host.length === 0) {
          const [a, b] = await Promise.all([iptDone, rest.length ? applyOne(rest) : done]);
          return E.isLeft(b) ? b : a;
        }
        const first = k > 0 ? await applyOne(rest.slice(0, k)) : E.right(undefined);
        if (E.isLeft(first)) return (await iptDone, first);
        const pod = after.filter((op) => opNs(op) !== HOST);
        const results = await Promise.all([pod.length ? applyOne(pod) : done, shared(host), iptDone]);
        return results.find(E.isLeft) ?? E.right(undefined);
      },
  };
}
