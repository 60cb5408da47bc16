// feltd's wiring: lease lifecycle (xstate machine, effects provided here), the watch on the lease store, the
// node's event log, and the level-triggered reconcile loop (observe what felt owns, plan, apply, resync).

import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { createActor, fromPromise } from 'xstate';
import type { EventStore } from '../../adapters/store/types.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';
import type { LeaseStore, Watch } from '../../adapters/lease/types.ts';
import type { Underlay } from '../../adapters/kernel/underlay.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { chooseSubnet } from '../../core/flannel/subnets.ts';
import { previousSubnets, subnetKey } from '../../core/flannel/lease.ts';
import { configChanges, ownLeaseStatus, screenLeases, trackRefusals, type OwnLeaseStatus } from '../../core/flannel/trust.ts';
import { decideNodeIn, nodeProjection, nodeStream, type NodeCommand, type NodeEvent, type NodeState } from '../../core/flannel/node.ts';
import { cniError, ErrCode } from '../../core/cni/errors.ts';
import { fold } from '../../core/events.ts';
import { desiredOverlay } from '../../core/flannel/desired.ts';
import { leaseObjects, opObject, overlayDelta, planInSteps, withLeases, withoutObjects } from '../../core/flannel/delta.ts';
import { leaseMachine } from '../../core/flannel/lease-machine.ts';
import type { Lease, LeaseEvent, NetConfig } from '../../core/flannel/types.ts';
import { macFromBytes } from '../../core/ip/mac.ts';
import { describeOp, plan } from '../../core/kernel/plan.ts';
import type { KernelState, Op } from '../../core/kernel/model.ts';
import type { StoredEvent } from '../../core/events.ts';
import type { Flags } from './flags.ts';
import { countByKind, OP_KINDS, type Logger, type Metrics } from './observability.ts';
import type { DaemonView } from './status-page.ts';
import { reconcileRecorder } from './reconcile-record.ts';

export interface DaemonDeps {
  readonly flags: Flags;
  readonly underlay: Underlay;
  readonly leases: LeaseStore;
  readonly events: EventStore;
  readonly kernel: Kernel;
  readonly log: Logger;
  readonly metrics: Metrics;
}

export interface Daemon {
  /** True once subnet.env is written (readyz). */
  ready(): boolean;
  /** What the status page shows of this node. */
  view(): DaemonView;
  /** Resolves when the daemon has stopped (after stop()). */
  readonly done: Promise<void>;
  /** A full resync now, as the --iptables-resync timer does; resolves when no pass runs or is pending. */
  resync(): Promise<void>;
  /** Resolves when no reconcile pass (full or delta) runs or is pending. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

const now = (): string => new Date().toISOString();

function writeAtomic(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** The VtepMAC survives restarts so that remote nodes' fdb entries stay right. */
function stableVtepMac(stateDir: string, vni: number): string {
  const path = join(stateDir, `vtep-mac.${vni}`);
  if (existsSync(path)) {
    const mac = readFileSync(path, 'utf8').trim();
    if (mac) return mac;
  }
  const mac = macFromBytes(randomBytes(6));
  writeAtomic(path, mac + '\n');
  return mac;
}

/** net-conf.json for the embedded store: its text, once it is known to be readable and a valid config. */
export function readNetConfigFile(path: string): E.Either<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    return E.left(`--net-config-path: cannot read ${path}: ${(e as Error).message}`);
  }
  const parsed = parseNetConfig(text);
  return E.isLeft(parsed) ? E.left(`network config ${path}: ${parsed.left}`) : E.right(text);
}

export async function loadNetConfig(deps: DaemonDeps): Promise<E.Either<string, NetConfig>> {
  const { flags, leases, log } = deps;
  let text: string | undefined;
  if (flags.etcdEndpoints.length) {
    const r = await leases.getNetworkConfig()();
    if (E.isLeft(r)) return E.left(`etcd: cannot read ${flags.etcdPrefix}/config: ${r.left.msg}`);
    text = r.right;
    if (text === undefined) return E.left(`etcd: ${flags.etcdPrefix}/config does not exist: write the network config there first`);
  } else {
    const file = readNetConfigFile(flags.netConfigPath);
    if (E.isLeft(file)) return file;
    text = file.right;
    const put = await leases.putNetworkConfig(text)();
    if (E.isLeft(put)) return E.left(`embedded store: ${put.left.msg}`);
  }
  const parsed = parseNetConfig(text);
  if (E.isLeft(parsed)) return E.left(`network config: ${parsed.left}`);
  for (const n of parsed.right.notices) log.info(n);
  return E.right(parsed.right.config);
}

export async function startDaemon(deps: DaemonDeps, config: NetConfig): Promise<Daemon> {
  const { flags, underlay, leases, events, kernel, log, metrics } = deps;
  const stream = nodeStream(underlay.publicIP);
  const vni = config.backend.type === 'vxlan' ? config.backend.vni : 0;
  const vtepMac = stableVtepMac(flags.stateDir, vni);
  let state: NodeState = nodeProjection.initialState();
  let ready = false;
  let stopped = false;
  let watch: Watch | undefined;
  let revision = 0;

  // ---------------------------------------------------------------- metrics (declared so they scrape from the start)
  const OPS = ['felt_ops_applied_total', 'Kernel ops applied, by the kind of object they change'] as const;
  const DRIFT = ['felt_drift_repaired_total', 'Kernel objects a full resync found changed behind felt\'s back and repaired (drift), by object kind'] as const;
  const FULL_OPS = ['felt_full_pass_ops_total', 'Kernel ops applied by full passes (drift repairs, and lease changes a full pass took up)'] as const;
  const STORE_ERRORS = ['felt_store_errors_total', 'Failed reads and writes of the event log (store="events") and the lease store (store="leases")'] as const;
  const ERRORS = ['felt_errors_total', 'Errors of any kind other than store errors (computing, observing or applying the dataplane)'] as const;
  for (const kind of OP_KINDS) {
    metrics.counter(OPS[0], OPS[1], 0, { kind });
    metrics.counter(DRIFT[0], DRIFT[1], 0, { kind });
  }
  for (const store of ['events', 'leases']) metrics.counter(STORE_ERRORS[0], STORE_ERRORS[1], 0, { store });
  metrics.counter(ERRORS[0], ERRORS[1], 0);
  metrics.counter(FULL_OPS[0], FULL_OPS[1], 0);
  metrics.counter('felt_lease_renewals_total', 'Own lease acquisitions and renewals', 0);
  metrics.counter('felt_lease_lost_total', 'Own lease losses (expired, revoked, taken)', 0);
  /** The node's last lease events, for the status page. */
  const RECENT = 20;
  let recent: StoredEvent[] = [];
  const leaseGauges = (): void => {
    metrics.gauge('felt_leases', 'Subnet leases known: this node\'s own plus every remote one', Object.keys(state.remotes).length + (state.ownLease ? 1 : 0));
    const exp = state.ownLease ? Date.parse(state.ownLease.expiration) / 1000 : 0;
    metrics.gauge('felt_lease_expiry_timestamp_seconds', 'When this node\'s own lease expires (unix seconds; 0: no lease)', Number.isFinite(exp) ? exp : 0);
  };

  // Every change the node sees goes through its Decider and into its event log.
  const record = (cmd: Omit<NodeCommand, 'metadata'>): NodeEvent[] => {
    const time = now();
    const command = { ...cmd, metadata: { time } } as NodeCommand;
    const t0 = performance.now();
    // Over the table's view: the transaction reads the remote leases the command names and writes the rows its
    // events change, never all 10,000; `state` (the whole NodeState, for desired()) is a cache evolved here.
    const r = events.transactRows(stream, nodeProjection, (v) => E.mapLeft((msg: string) => cniError(ErrCode.Internal, msg))(decideNodeIn(command, v)), {
      time,
    });
    log.debug('recorded', { command: cmd.type, ms: Math.round(performance.now() - t0) });
    if (E.isLeft(r)) {
      log.error('event log write failed', { error: r.left.msg });
      metrics.counter(STORE_ERRORS[0], STORE_ERRORS[1], 1, { store: 'events' });
      return [];
    }
    if (r.right.replayed.length) {
      // Someone else wrote this stream (or its table was rebuilt): read the whole state again.
      const again = events.load(stream, nodeProjection);
      if (E.isRight(again)) state = again.right.state;
    } else if (r.right.events.length) state = fold(nodeProjection, r.right.events, state);
    if (r.right.events.length) recent = [...recent, ...(r.right.events as readonly StoredEvent[])].slice(-RECENT);
    leaseGauges();
    for (const e of r.right.events) log.info(e.type, e.data as Record<string, unknown>);
    return r.right.events.map((e) => ({ type: e.type, data: e.data }) as NodeEvent);
  };

  const loaded = events.load(stream, nodeProjection);
  if (E.isRight(loaded)) state = loaded.right.state;
  else metrics.counter(STORE_ERRORS[0], STORE_ERRORS[1], 1, { store: 'events' });
  // The last events before this start, for the status page. Positions are global (the CNI plugins' events
  // share the log), so look back in growing windows rather than reading the node's whole history.
  if (E.isRight(loaded) && loaded.right.position > 0) {
    const end = loaded.right.position;
    for (let window = 1000; ; window *= 4) {
      const before = events.read({ stream, fromPosition: Math.max(0, end - window) });
      if (E.isLeft(before)) break;
      recent = before.right.slice(-RECENT);
      if (recent.length >= RECENT || end - window <= 0) break;
    }
  }
  record({ type: 'LoadConfig', data: { config } } as NodeCommand);

  // ---------------------------------------------------------------- reconcile (level-triggered)
  const overlayNode = {
    publicIP: underlay.publicIP,
    underlayDev: underlay.dev,
    underlayCidr: underlay.cidr,
    underlayMtu: underlay.mtu,
    vtepMac,
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

  const applyOps = async (ops: readonly Op[], full: boolean): Promise<boolean> => {
    if (ops.length === 0) return true;
    const r = await kernel.apply(ops)();
    if (E.isLeft(r)) {
      log.error('apply failed', { error: r.left.msg });
      metrics.counter(ERRORS[0], ERRORS[1]);
      return false;
    }
    if (full) {
      passCount.fullOps += ops.length;
      metrics.counter(FULL_OPS[0], FULL_OPS[1], ops.length);
    }
    else passCount.deltaOps += ops.length;
    for (const [kind, n] of countByKind(ops)) metrics.counter(OPS[0], OPS[1], n, { kind });
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
    const was = desiredOverlay(appliedState, overlayNode);
    if (E.isLeft(was)) return;
    const found = plan(was.right.kernel, seen, was.right.scope);
    for (const [kind, n] of countByKind(skip ? withoutObjects(found, skip) : found)) {
      metrics.counter(DRIFT[0], DRIFT[1], n, { kind });
      passCount.fullDrift += n;
    }
  };

  /**
   * Observe what felt owns, plan against the whole desired state, apply: startup, resyncs, own-lease changes.
   * Delta passes run meanwhile; the plan drops what they changed since this pass read the state (they applied
   * newer state), and applies the rest inside the write lane.
   */
  const fullPass = async (): Promise<void> => {
    if (!state.ownLease) return;
    const mine = { keys: new Set<string>(), objects: new Set<string>() };
    // Read the state between two kernel writes, so that no delta is half applied when tracking starts.
    const at = await exclusive(async () => {
      overtaken = mine;
      return state;
    });
    try {
      if (!at.ownLease) return;
      // The desired state of an unchanged node state is the one computed last time (idle resyncs).
      const d = lastDesired?.at === at ? lastDesired.d : desiredOverlay(at, overlayNode);
      lastDesired = { at, d };
      if (E.isLeft(d)) {
        log.error('cannot compute the dataplane', { error: d.left });
        metrics.counter(ERRORS[0], ERRORS[1]);
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
        metrics.counter(ERRORS[0], ERRORS[1]);
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
          if (todo.length !== ops.length) log.debug('full pass left to delta passes', { leases: keys.length, ops: ops.length - todo.length });
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
    const at = state;
    if (!before) return false;
    const ops = overlayDelta(before, at, keys, overlayNode);
    if (E.isLeft(ops) || ops.right === 'full') return false;
    if (overtaken) {
      for (const k of keys) overtaken.keys.add(k);
      for (const o of ops.right) {
        const id = opObject(o);
        if (id !== undefined) overtaken.objects.add(id);
      }
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
    metrics.observeReconcile(kind, seconds);
    log.debug('reconcile', { kind, keys, ms: Math.round(seconds * 1000) });
    if (kind === 'full') recordPass('full', seconds * 1000, passCount.fullOps, passCount.fullDrift);
    else recordPass('delta', seconds * 1000, passCount.deltaOps, 0);
  };
  // Each loop starts only with work to do, so its first pass suspends it before it could end synchronously
  // (which would leave a settled promise behind as the running loop).
  const runFull = (): Promise<void> | undefined =>
    stopped || !pendingFull ? fullRunning : (fullRunning ??= (async () => {
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
    stopped || !pendingKeys.size ? deltaRunning : (deltaRunning ??= (async () => {
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

  // ---------------------------------------------------------------- watch the lease store
  const isOwn = (l: Lease): boolean => l.attrs.PublicIP === underlay.publicIP;
  const me = { publicIP: underlay.publicIP, backendType: config.backend.type, ...(config.backend.type === 'vxlan' ? { vtepMac } : {}) };
  /** Leases refused (core/flannel/trust.ts), by key: each refusal is logged once, not on every listing. */
  let refusalsLogged: ReadonlyMap<string, string> = new Map();
  const logRefusals = (candidates: readonly Lease[], present: Iterable<string>, complete: boolean): void => {
    const ownKey = state.ownLease?.key;
    const others = candidates.filter((l) => subnetKey(l) !== ownKey && !isOwn(l));
    const dual = config.enableIPv4 && config.enableIPv6;
    const s = screenLeases({ config, leases: others, own: state.ownLease, ...(dual ? { known: Object.values(state.remotes) } : {}), isKnown: (k) => k in state.remotes });
    const t = trackRefusals(refusalsLogged, s.refused, present, complete);
    refusalsLogged = t.logged;
    for (const r of t.log) log.error('lease refused: not routed', { key: r.key, publicIP: r.publicIP, why: r.why });
  };
  /** Warnings about a second feltd renewing this node's lease, once each. */
  const duplicatesLogged = new Set<string>();
  /**
   * The own lease as the store holds it. `afterReset`: the store was wiped or replaced (then another node
   * holding our key took it legitimately: say so, do not fight); otherwise a foreign value on our live key is
   * tampering, and is written back.
   */
  const checkOwn = async (st: OwnLeaseStatus, afterReset: string | undefined): Promise<void> => {
    const own = state.ownLease;
    if (!own || stopped) return;
    const subnet = own.subnet ?? own.ipv6Subnet;
    switch (st.kind) {
      case 'ok':
        return;
      case 'missing':
        log.error('own lease missing from the lease store: re-creating it with the same subnet', { key: own.key, why: afterReset ?? 'absent from a listing' });
        actor.send({ type: 'REVOKED' });
        return;
      case 'duplicate':
        if (duplicatesLogged.has(st.why)) return;
        duplicatesLogged.add(st.why);
        log.error('another feltd with this public IP renews this node\'s lease: both nodes claim one subnet', {
          key: own.key,
          publicIP: underlay.publicIP,
          why: st.why,
          fix: 'give every node its own public IP (--public-ip or --iface); flanneld shares a lease by public IP the same way',
        });
        return;
      case 'foreign': {
        if (afterReset) {
          log.error('own subnet taken by another node after the lease store was reset', {
            key: own.key,
            holder: st.holder ?? 'unknown',
            why: `${afterReset}; ${st.why}`,
            action: `keeping subnet.env and the pods on ${subnet}; restart feltd to take another subnet`,
          });
          return;
        }
        log.error('own lease changed in the store behind feltd\'s back: writing it back', { key: own.key, why: st.why });
        const req = { ...(own.subnet ? { subnet: own.subnet } : {}), ...(own.ipv6Subnet ? { ipv6Subnet: own.ipv6Subnet } : {}), attrs: attrs() };
        const r = await leases.repair(req, flags.leaseTTLSeconds)();
        if (E.isLeft(r)) {
          log.error('cannot write the own lease back', { key: own.key, error: r.left.msg });
          metrics.counter(STORE_ERRORS[0], STORE_ERRORS[1], 1, { store: 'leases' });
        } else if (r.right === 'absent') actor.send({ type: 'REVOKED' });
        else if (!stopped) {
          actor.send({ type: 'LEASE_UPDATED', lease: r.right });
          held(r.right);
        }
        return;
      }
    }
  };
  const startWatch = async (why?: string): Promise<void> => {
    watch?.stop();
    const snap = await leases.list()();
    if (E.isLeft(snap)) {
      log.error('cannot list leases', { error: snap.left.msg });
      metrics.counter(STORE_ERRORS[0], STORE_ERRORS[1], 1, { store: 'leases' });
      setTimeout(() => void (stopped || startWatch(why)), 1000);
      return;
    }
    revision = snap.right.revision;
    logRefusals(snap.right.leases, snap.right.leases.map(subnetKey), true);
    record({ type: 'ObserveLeases', data: { snapshot: snap.right, own: underlay.publicIP } } as NodeCommand);
    void reconcile(true);
    const ownKey = state.ownLease?.key;
    if (ownKey) void checkOwn(ownLeaseStatus(snap.right.leases.find((l) => subnetKey(l) === ownKey), me), why);
    watch = leases.watch(
      revision,
      (evs: readonly LeaseEvent[], rev: number) => {
        revision = rev;
        const key = state.ownLease?.key;
        const ownEvents = key ? evs.filter((e) => subnetKey(e.lease) === key) : [];
        const ownLast = ownEvents.at(-1);
        // Removed (and maybe taken by another node since): a revocation. Changed without a removal: check it.
        const ownRemoved = ownEvents.some((e) => e.type === 'removed');
        logRefusals(
          evs.flatMap((e) => (e.type === 'added' ? [e.lease] : [])),
          evs.map((e) => subnetKey(e.lease)),
          false,
        );
        const changed = record({ type: 'ApplyLeaseEvents', data: { events: evs, own: underlay.publicIP } } as NodeCommand);
        if (ownRemoved && !stopped) actor.send({ type: 'REVOKED' });
        else if (ownLast?.type === 'added') void checkOwn(ownLeaseStatus(ownLast.lease, me), undefined);
        const keys = changed.flatMap((e) => (e.type === 'RemoteLeaseSeen' || e.type === 'RemoteLeaseRemoved' ? [e.data.key] : []));
        if (keys.length) void reconcile(false, keys);
      },
      (why) => {
        log.info('lease watch reset, listing again', { why });
        void startWatch(why);
      },
    );
  };
  // The network config in the store: flanneld reads it once at start and runs with it until restarted; feltd
  // does the same, and says when the store holds another (or an unreadable) one.
  let configSeen: string | undefined;
  const checkConfig = (text: string | undefined): void => {
    if (stopped || text === undefined || text === configSeen) return;
    configSeen = text;
    const parsed = parseNetConfig(text);
    if (E.isLeft(parsed)) {
      log.error('network config in the lease store refused: keeping the config feltd started with', { why: parsed.left });
      return;
    }
    const changes = configChanges(config, parsed.right.config);
    if (changes.length) {
      log.error('network config changed in the lease store: keeping the config feltd started with, as flanneld does; restart feltd to apply it', { changes });
    }
  };
  leases.watchNetworkConfig(checkConfig);

  // ---------------------------------------------------------------- lease lifecycle
  const previous = (() => {
    const text = readFileSafe(flags.subnetFile);
    return text ? previousSubnets(text).subnet : undefined;
  })();
  const attrs = () => ({
    PublicIP: underlay.publicIP,
    PublicIPv6: null,
    BackendType: config.backend.type,
    ...(config.backend.type === 'vxlan' ? { BackendData: { VNI: config.backend.vni, VtepMAC: vtepMac } } : {}),
  });
  const leaseStoreError = (msg: string): Error => {
    metrics.counter(STORE_ERRORS[0], STORE_ERRORS[1], 1, { store: 'leases' });
    return new Error(msg);
  };
  /**
   * `prev`: the lease this node held (revoked, expired, lost in a wiped store). Its subnet is taken back, as
   * docs/feltd.md says; if another node holds it now, feltd says so and keeps subnet.env, cni0 and the pods on
   * it (acquiring again later, in case it frees up) rather than moving to a subnet its pods are not in.
   */
  const acquire = async (prev: Lease | null): Promise<Lease> => {
    const want = prev?.subnet ?? previous;
    for (let attempt = 0; ; attempt++) {
      const snap = await leases.list()();
      if (E.isLeft(snap)) throw leaseStoreError(snap.left.msg);
      const choice = chooseSubnet({
        config,
        leases: snap.right.leases,
        publicIP: underlay.publicIP,
        ...(want ? { previous: want } : {}),
        // Subnets other nodes held when this node last looked: after a wiped store they may not be leased again
        // yet while their kernels still route them.
        avoid: Object.values(state.remotes).flatMap((r) => [r.subnet, r.ipv6Subnet].filter((x): x is string => !!x)),
        now: now(),
        rand: (n: number) => randomInt(n),
      });
      if (E.isLeft(choice)) throw new Error(choice.left);
      if (prev && subnetKey(choice.right) !== subnetKey(prev)) {
        const holder = snap.right.leases.find((l) => subnetKey(l) === subnetKey(prev));
        const msg = `this node's subnet ${prev.subnet ?? prev.ipv6Subnet} is ${holder ? `leased to ${holder.invalid ? 'a value that is not a lease' : holder.attrs.PublicIP}` : 'not available'} (${choice.right.why}): keeping subnet.env and the pods on it; restart feltd to take another subnet`;
        log.error('own subnet taken', { subnet: prev.subnet ?? prev.ipv6Subnet, why: msg });
        throw new Error(msg);
      }
      if (prev) log.info('taking the subnet held before back', { subnet: prev.subnet ?? prev.ipv6Subnet, source: choice.right.source });
      if (choice.right.source === 'reused') {
        const held = snap.right.leases.find((l) => subnetKey(l) === subnetKey(choice.right));
        const st = ownLeaseStatus(held, me);
        if (st.kind === 'duplicate') {
          log.error('reusing a lease of this public IP that another feltd holds: both nodes claim one subnet', {
            key: subnetKey(choice.right),
            why: st.why,
            fix: 'give every node its own public IP (--public-ip or --iface); flanneld shares a lease by public IP the same way',
          });
        }
      }
      for (const stale of choice.right.stale) {
        if (stale.subnet) await leases.revoke(stale.subnet)();
      }
      log.info('subnet chosen', { why: choice.right.why });
      const req = {
        ...(choice.right.subnet ? { subnet: choice.right.subnet } : {}),
        ...(choice.right.ipv6Subnet ? { ipv6Subnet: choice.right.ipv6Subnet } : {}),
        attrs: attrs(),
      };
      const r = choice.right.source === 'reused' ? await leases.renew(req, flags.leaseTTLSeconds)() : await leases.acquire(req, flags.leaseTTLSeconds)();
      if (E.isLeft(r)) throw leaseStoreError(r.left.msg);
      if (r.right !== 'taken' && r.right !== 'lost') return r.right;
      if (attempt > 10) throw new Error('could not acquire a subnet: every candidate was taken concurrently');
    }
  };
  const renew = async (lease: Lease): Promise<Lease | 'lost'> => {
    const r = await leases.renew(
      { ...(lease.subnet ? { subnet: lease.subnet } : {}), ...(lease.ipv6Subnet ? { ipv6Subnet: lease.ipv6Subnet } : {}), attrs: attrs() },
      flags.leaseTTLSeconds,
    )();
    if (E.isLeft(r)) throw leaseStoreError(r.left.msg);
    if (r.right === 'lost') {
      // A value that is not a lease on our key (nobody's lease): write ours back. Another node's is a loss.
      const snap = await leases.list()();
      const found = E.isRight(snap) ? snap.right.leases.find((l) => subnetKey(l) === subnetKey(lease)) : undefined;
      if (found?.invalid) {
        log.error('own lease changed in the store behind feltd\'s back: writing it back', { key: subnetKey(lease), why: found.invalid });
        const req = { ...(lease.subnet ? { subnet: lease.subnet } : {}), ...(lease.ipv6Subnet ? { ipv6Subnet: lease.ipv6Subnet } : {}), attrs: attrs() };
        const fixed = await leases.repair(req, flags.leaseTTLSeconds)();
        if (E.isRight(fixed) && fixed.right !== 'absent') return fixed.right;
      }
    }
    return r.right;
  };
  const held = (lease: Lease): void => {
    record({ type: 'RecordOwnLease', data: { lease, vtepMac } });
    metrics.counter('felt_lease_renewals_total', 'Own lease acquisitions and renewals');
    if (!watch) void startWatch();
    void reconcile(true);
  };
  const actor = createActor(
    leaseMachine.provide({
      actors: {
        acquire: fromPromise(({ input }: { input: { previous: Lease | null } }) => acquire(input.previous)),
        renew: fromPromise(({ input }: { input: { lease: Lease } }) => renew(input.lease)),
      },
      actions: {
        leaseAcquired: ({ context }) => context.lease && held(context.lease),
        leaseRenewed: ({ context }) => context.lease && held(context.lease),
        leaseLost: ({ context }) => {
          log.error('own lease lost', { why: context.lastError });
          metrics.counter('felt_lease_lost_total', 'Own lease losses (expired, revoked, taken)');
          record({ type: 'LoseOwnLease', data: { reason: context.lastError ?? 'lost' } });
        },
      },
    }),
    { input: { renewMarginMs: flags.renewMarginMinutes * 60_000, now: () => Date.now() } },
  );
  actor.subscribe({ error: (e) => log.error('lease machine failed', { error: String(e) }) });
  actor.start();

  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((r) => (resolveDone = r));
  return {
    ready: () => ready,
    view: () => ({ publicIP: underlay.publicIP, backendType: config.backend.type, ...(config.backend.type === 'vxlan' ? { vtepMac } : {}), ready, state, recent }),
    done,
    resync: () => reconcile(true),
    idle,
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      actor.stop();
      watch?.stop();
      await idle();
      resolveDone();
    },
  };
}

function readFileSafe(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
