// The overlay reconciler, level-triggered: full passes (observe what felt owns, plan against the whole desired
// state, apply; write subnet.env) at start, on the --iptables-resync timer and on own-lease changes; delta passes
// (only the remote leases that changed, no kernel read) on lease events; drift counting. Kernel writes run one
// at a time in one lane.

import * as E from 'fp-ts/lib/Either.js';
import type { Kernel } from '../../adapters/kernel/types.ts';
import type { Underlay } from '../../adapters/kernel/underlay.ts';
import type { NodeState } from '../../core/flannel/node.ts';
import { desiredOverlay, overlayCache, type OverlayNode } from '../../core/flannel/desired.ts';
import { leaseObjects, opObjects, overlayDelta, planInSteps, withLeases, withoutObjects } from '../../core/flannel/delta.ts';
import type { NetConfig } from '../../core/flannel/types.ts';
import { describeOp, plan } from '../../core/kernel/plan.ts';
import type { KernelState, Op } from '../../core/kernel/model.ts';
import type { Flags } from './flags.ts';
import { readFileSafe, writeAtomic } from './files.ts';
import type { FeltdHooks } from './hooks.ts';
import type { NodeLog } from './node-log.ts';
import { countByKind, type Logger } from './observability.ts';
import { reconcileRecorder } from './reconcile-record.ts';

export interface OverlayReconciler {
  /** Queue a pass (full, and/or delta passes for `keys`); resolves when no pass runs or is pending. */
  reconcile(full: boolean, keys?: readonly string[]): Promise<void>;
  /** Resolves when no reconcile pass (full or delta) runs or is pending. */
  idle(): Promise<void>;
  /** True once subnet.env is written (readyz). */
  ready(): boolean;
  /** No new pass starts (the one running finishes: await idle()). */
  stop(): void;
}

export interface OverlayReconcilerDeps {
  readonly flags: Flags;
  readonly underlay: Underlay;
  readonly kernel: Kernel;
  readonly log: Logger;
  readonly hooks: FeltdHooks;
  readonly node: NodeLog;
  readonly config: NetConfig;
  readonly vtepMac: string;
  /** flannel-v6.<VNI>'s VtepMAC, when IPv6 is on. */
  readonly vtepMacV6?: string;
}

export function startOverlayReconciler(deps: OverlayReconcilerDeps): OverlayReconciler {
  const { flags, underlay, kernel, log, hooks, node, config, vtepMac, vtepMacV6 } = deps;
  let ready = false;
  let stopped = false;

  const overlayNode: OverlayNode = {
    // flannel's PublicIP of an IPv6-only node.
    publicIP: underlay.publicIP ?? '0.0.0.0',
    ...(underlay.publicIPv6 ? { publicIPv6: underlay.publicIPv6 } : {}),
    underlayDev: underlay.dev,
    ...(underlay.cidr ? { underlayCidr: underlay.cidr } : {}),
    ...(underlay.cidr6 ? { underlayCidrV6: underlay.cidr6 } : {}),
    underlayMtu: underlay.mtu,
    vtepMac,
    ...(vtepMacV6 ? { vtepMacV6 } : {}),
    ipMasq: flags.ipMasq,
  };
  /** The node state the kernel was last brought to (by a full pass, then kept up by delta passes). */
  let appliedState: NodeState | undefined;
  // reconcile.json (felt status, felt plan): the last pass, counted from the ops applied since it began.
  const recordPass = reconcileRecorder(flags.stateDir, overlayNode, flags.renewMarginMinutes, writeAtomic, log);
  // Full and delta passes run side by side: each kind counts its own ops (and full passes the drift they found).
  const passCount = { fullOps: 0, fullDrift: 0, deltaOps: 0 };

  // Kernel writes run one at a time, in order: delta passes and the apply step of a full pass. Reading the
  // kernel and planning (a full pass's observe + plan: hundreds of ms at 10,000 nodes) happen outside, so a
  // lease change never waits for a full pass to finish observing.
  let writes: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(f: () => Promise<T>): Promise<T> => {
    const p = writes.then(f, f);
    writes = p.catch(() => undefined);
    return p;
  };
  /**
   * While a full pass runs: the leases delta passes changed since it read the state, and the kernel objects
   * those deltas touched. Its plan leaves them to the deltas (see core/flannel/delta.ts).
   */
  let overtaken: { keys: Set<string>; objects: Set<string> } | undefined;
  /** Let pending I/O callbacks (a lease change, a delta's apply finishing) run between the parts of a full pass. */
  const yieldToDeltas = (): Promise<void> => new Promise((r) => setImmediate(r));

  let lastDesired: { at: NodeState; d: ReturnType<typeof desiredOverlay> } | undefined;
  /** Remote leases parsed by earlier passes (a pass after one lease change parses one: docs/benchmarks.md). */
  const leaseCache = overlayCache();

  const applyOps = async (ops: readonly Op[], full: boolean): Promise<boolean> => {
    if (ops.length === 0) return true;
    const r = await kernel.apply(ops)();
    if (E.isLeft(r)) {
      log.error('apply failed', { error: r.left.msg });
      hooks.error();
      return false;
    }
    if (full) passCount.fullOps += ops.length;
    else passCount.deltaOps += ops.length;
    hooks.opsApplied(ops, full);
    log.info('dataplane changed', { ops: ops.length, full, first: ops.slice(0, 5).map(describeOp) });
    return true;
  };

  /**
   * Drift: how far the kernel a full pass observed was from what felt last brought it to (the desired state of
   * appliedState), by object kind; lease changes the pass also applied are not drift, nor are the objects of
   * leases delta passes changed while it ran (`skip`: the observation predates them). Computed only when the
   * pass changed something, so an idle resync costs nothing more.
   */
  const countDrift = (applied: number, seen: KernelState, skip: ReadonlySet<string> | undefined): void => {
    if (applied === 0 || !appliedState) return;
    const was = desiredOverlay(appliedState, overlayNode, leaseCache);
    if (E.isLeft(was)) return;
    const found = plan(was.right.kernel, seen, was.right.scope);
    for (const [kind, n] of countByKind(skip ? withoutObjects(found, skip) : found)) {
      hooks.driftRepaired(kind, n);
      passCount.fullDrift += n;
    }
  };

  /**
   * Observe what felt owns, plan against the whole desired state, apply: startup, resyncs, own-lease changes.
   * Delta passes run meanwhile; the plan drops what they changed since this pass read the state (they applied
   * newer state), and applies the rest inside the write lane.
   */
  const fullPass = async (): Promise<void> => {
    if (!node.state().ownLease) return;
    const mine = { keys: new Set<string>(), objects: new Set<string>() };
    // Read the state between two kernel writes, so that no delta is half applied when tracking starts.
    const at = await exclusive(async () => {
      overtaken = mine;
      return node.state();
    });
    try {
      if (!at.ownLease) return;
      // The desired state of an unchanged node state is the one computed last time (idle resyncs).
      const d = lastDesired?.at === at ? lastDesired.d : desiredOverlay(at, overlayNode, leaseCache);
      lastDesired = { at, d };
      if (E.isLeft(d)) {
        log.error('cannot compute the dataplane', { error: d.left });
        hooks.error();
        return;
      }
      for (const why of d.right.ignored) log.debug('remote lease ignored', { why });
      const { kernel: want, scope, subnetEnv } = d.right;
      if (!ready || readFileSafe(flags.subnetFile) !== subnetEnv) {
        writeAtomic(flags.subnetFile, subnetEnv);
        if (!ready) log.info('subnet.env written', { path: flags.subnetFile });
        ready = true;
      }
      await yieldToDeltas();
      const seen = await kernel.observe({
        namespaces: [''],
        scope,
        desired: want,
        iptables: flags.ipMasq ? (config.enableIPv6 ? [4, 6] : [4]) : [],
        fdb: config.backend.type === 'vxlan',
      })();
      if (E.isLeft(seen)) {
        log.error('observe failed', { error: seen.left.msg });
        hooks.error();
        return;
      }
      const steps = planInSteps(want, seen.right, scope);
      let step = steps.next();
      while (!step.done) {
        await yieldToDeltas();
        step = steps.next();
      }
      const ops = step.value;
      await exclusive(async () => {
        // Inside the lane: no delta runs until this apply is done, so `mine` is final here.
        const keys = [...mine.keys];
        let todo = ops;
        const skip = keys.length ? new Set([...mine.objects, ...leaseObjects(at, keys, overlayNode)]) : undefined;
        if (skip) {
          todo = withoutObjects(ops, skip);
          if (todo.length !== ops.length)
            log.debug('full pass left to delta passes', { leases: keys.length, ops: ops.length - todo.length });
        }
        // The kernel now holds `at`, except for the leases the deltas moved on, which hold what they applied.
        if (await applyOps(todo, true)) {
          countDrift(todo.length, seen.right, skip);
          appliedState = keys.length && appliedState ? withLeases(at, appliedState, keys) : at;
        }
      });
    } finally {
      if (overtaken === mine) overtaken = undefined;
    }
  };

  /**
   * A lease change: plan only the changed remote leases, the desired state they give now against the one they
   * gave when last applied, without reading the kernel. Cost follows the change, not the cluster; the next
   * full pass reads the kernel and settles anything a delta could not see (e.g. two leases claiming one MAC).
   * Runs in the write lane (see exclusive), never behind a full pass's observation.
   */
  const deltaPass = async (keys: readonly string[]): Promise<boolean> => {
    const before = appliedState;
    const at = node.state();
    if (!before) return false;
    const ops = overlayDelta(before, at, keys, overlayNode);
    if (E.isLeft(ops) || ops.right === 'full') return false;
    if (overtaken) {
      for (const k of keys) overtaken.keys.add(k);
      for (const o of ops.right) for (const id of opObjects(o)) overtaken.objects.add(id);
    }
    if (!(await applyOps(ops.right, false))) return false;
    appliedState = withLeases(before, at, keys);
    return true;
  };

  // Two queues: full passes (one at a time; requests while one runs coalesce into one more) and delta passes
  // (one at a time, each taking every key changed so far). They run side by side.
  let pendingFull = false;
  const pendingKeys = new Set<string>();
  let fullRunning: Promise<void> | undefined;
  let deltaRunning: Promise<void> | undefined;
  const passDone = (kind: 'full' | 'delta', t0: number, keys: number): void => {
    const seconds = (performance.now() - t0) / 1000;
    hooks.reconcileObserved(kind, seconds);
    log.debug('reconcile', { kind, keys, ms: Math.round(seconds * 1000) });
    if (kind === 'full') recordPass('full', seconds * 1000, passCount.fullOps, passCount.fullDrift);
    else recordPass('delta', seconds * 1000, passCount.deltaOps, 0);
  };
  // Each loop starts only with work to do, so its first pass suspends it before it could end synchronously
  // (which would leave a settled promise behind as the running loop).
  const runFull = (): Promise<void> | undefined =>
    stopped || !pendingFull
      ? fullRunning
      : (fullRunning ??= (async () => {
          while (!stopped && pendingFull) {
            pendingFull = false;
            const t0 = performance.now();
            passCount.fullOps = 0;
            passCount.fullDrift = 0;
            try {
              await fullPass();
            } catch (e) {
              log.error('reconcile crashed', { error: (e as Error).message });
            }
            passDone('full', t0, 0);
          }
          fullRunning = undefined;
        })());
  const runDeltas = (): Promise<void> | undefined =>
    stopped || !pendingKeys.size
      ? deltaRunning
      : (deltaRunning ??= (async () => {
          while (!stopped && pendingKeys.size) {
            const keys = [...pendingKeys];
            pendingKeys.clear();
            const t0 = performance.now();
            passCount.deltaOps = 0;
            let ok = false;
            try {
              ok = await exclusive(() => deltaPass(keys));
            } catch (e) {
              log.error('reconcile crashed', { error: (e as Error).message });
            }
            if (ok) passDone('delta', t0, keys.length);
            else {
              // Not expressible as a delta (own lease or config changed, nothing applied yet, an apply failed).
              pendingFull = true;
              void runFull();
            }
          }
          deltaRunning = undefined;
        })());
  /** Until no pass runs or is pending. */
  const idle = async (): Promise<void> => {
    while (fullRunning || deltaRunning) await Promise.all([fullRunning, deltaRunning]);
  };
  const reconcile = (full: boolean, keys: readonly string[] = []): Promise<void> => {
    if (full) pendingFull = true;
    for (const k of keys) pendingKeys.add(k);
    void runDeltas();
    void runFull();
    return idle();
  };
  const timer = setInterval(() => void reconcile(true), flags.resyncSeconds * 1000);

  return {
    reconcile,
    idle,
    ready: () => ready,
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}
