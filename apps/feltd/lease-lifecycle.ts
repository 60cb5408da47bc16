// The own lease's lifecycle: the lease machine (core/flannel/lease-machine.ts; acquire, renew, lose) with its
// effects provided here, and the watch on the lease store (list, then follow events; list again on a reset).
// Every lease change goes into the node's log and asks the overlay reconciler for a pass.

import { randomInt } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import { createActor, fromPromise } from 'xstate';
import type { LeaseStore, Watch } from '../../adapters/lease/types.ts';
import { underlayIdentity, type Underlay } from '../../adapters/kernel/underlay.ts';
import { chooseSubnet } from '../../core/flannel/subnets.ts';
import { previousSubnets, subnetKey } from '../../core/flannel/lease.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { configChanges, ownLeaseStatus, screenLeases, trackRefusals, type OwnLeaseStatus } from '../../core/flannel/trust.ts';
import type { NodeCommand } from '../../core/flannel/node.ts';
import { leaseMachine } from '../../core/flannel/lease-machine.ts';
import type { Lease, LeaseEvent, NetConfig } from '../../core/flannel/types.ts';
import type { Flags } from './flags.ts';
import { readFileSafe } from './files.ts';
import type { FeltdHooks } from './hooks.ts';
import type { NodeLog } from './node-log.ts';
import type { Logger } from './observability.ts';

export interface LeaseLifecycle {
  /** Stop the lease machine and the watch (the lease stays in the store until it expires). */
  stop(): void;
}

export interface LeaseLifecycleDeps {
  readonly flags: Flags;
  readonly underlay: Underlay;
  readonly leases: LeaseStore;
  readonly log: Logger;
  readonly hooks: FeltdHooks;
  readonly node: NodeLog;
  readonly config: NetConfig;
  readonly vtepMac: string;
  /** flannel-v6.<VNI>'s VtepMAC, when IPv6 is on. */
  readonly vtepMacV6?: string;
  /** Ask for a reconcile pass: full (own lease, snapshot), or deltas for the remote lease keys that changed. */
  readonly reconcile: (full: boolean, keys?: readonly string[]) => Promise<void>;
}

const now = (): string => new Date().toISOString();

export function startLeaseLifecycle(deps: LeaseLifecycleDeps): LeaseLifecycle {
  const { flags, underlay, leases, log, hooks, node, config, vtepMac, vtepMacV6, reconcile } = deps;
  /** What names this node's lease: its public IPv4 address, or its IPv6 one when IPv4 is off. */
  const own = underlayIdentity(underlay);
  const record = node.record;
  let stopped = false;
  let watch: Watch | undefined;
  let revision = 0;

  // ---------------------------------------------------------------- watch the lease store
  const isOwn = (l: Lease): boolean =>
    underlay.publicIP ? l.attrs.PublicIP === underlay.publicIP : l.attrs.PublicIPv6 === underlay.publicIPv6;
  const state = (): ReturnType<NodeLog['state']> => node.state();
  const me = {
    publicIP: config.enableIPv4 && underlay.publicIP ? underlay.publicIP : '0.0.0.0',
    publicIPv6: underlay.publicIPv6 ?? null,
    backendType: config.backend.type,
    ...(config.backend.type === 'vxlan' ? { vtepMac: config.enableIPv4 ? vtepMac : vtepMacV6 } : {}),
  };
  /** Leases refused (core/flannel/trust.ts), by key: each refusal is logged once, not on every listing. */
  let refusalsLogged: ReadonlyMap<string, string> = new Map();
  const logRefusals = (candidates: readonly Lease[], present: Iterable<string>, complete: boolean): void => {
    const st = state();
    const ownKey = st.ownLease?.key;
    const others = candidates.filter((l) => subnetKey(l) !== ownKey && !isOwn(l));
    const dual = config.enableIPv4 && config.enableIPv6;
    const s = screenLeases({
      config,
      leases: others,
      own: st.ownLease,
      ...(dual ? { known: Object.values(st.remotes) } : {}),
      isKnown: (k) => k in st.remotes,
    });
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
    const ownLease = state().ownLease;
    if (!ownLease || stopped) return;
    const subnet = ownLease.subnet ?? ownLease.ipv6Subnet;
    switch (st.kind) {
      case 'ok':
        return;
      case 'missing':
        log.error('own lease missing from the lease store: re-creating it with the same subnet', {
          key: ownLease.key,
          why: afterReset ?? 'absent from a listing',
        });
        actor.send({ type: 'REVOKED' });
        return;
      case 'duplicate':
        if (duplicatesLogged.has(st.why)) return;
        duplicatesLogged.add(st.why);
        log.error("another feltd with this public IP renews this node's lease: both nodes claim one subnet", {
          key: ownLease.key,
          publicIP: own,
          why: st.why,
          fix: 'give every node its own public IP (--public-ip or --iface); flanneld shares a lease by public IP the same way',
        });
        return;
      case 'foreign': {
        if (afterReset) {
          log.error('own subnet taken by another node after the lease store was reset', {
            key: ownLease.key,
            holder: st.holder ?? 'unknown',
            why: `${afterReset}; ${st.why}`,
            action: `keeping subnet.env and the pods on ${subnet}; restart feltd to take another subnet`,
          });
          return;
        }
        log.error("own lease changed in the store behind feltd's back: writing it back", { key: ownLease.key, why: st.why });
        const req = {
          ...(ownLease.subnet ? { subnet: ownLease.subnet } : {}),
          ...(ownLease.ipv6Subnet ? { ipv6Subnet: ownLease.ipv6Subnet } : {}),
          attrs: attrs(),
        };
        const r = await leases.repair(req, flags.leaseTTLSeconds)();
        if (E.isLeft(r)) {
          log.error('cannot write the own lease back', { key: ownLease.key, error: r.left.msg });
          hooks.storeError('leases');
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
      hooks.storeError('leases');
      setTimeout(() => void (stopped || startWatch(why)), 1000);
      return;
    }
    revision = snap.right.revision;
    logRefusals(snap.right.leases, snap.right.leases.map(subnetKey), true);
    record({ type: 'ObserveLeases', data: { snapshot: snap.right, own } } as NodeCommand);
    void reconcile(true);
    const ownKey = state().ownLease?.key;
    if (ownKey)
      void checkOwn(
        ownLeaseStatus(
          snap.right.leases.find((l) => subnetKey(l) === ownKey),
          me,
        ),
        why,
      );
    watch = leases.watch(
      revision,
      (evs: readonly LeaseEvent[], rev: number) => {
        revision = rev;
        const key = state().ownLease?.key;
        const ownEvents = key ? evs.filter((e) => subnetKey(e.lease) === key) : [];
        const ownLast = ownEvents.at(-1);
        // Removed (and maybe taken by another node since): a revocation. Changed without a removal: check it.
        const ownRemoved = ownEvents.some((e) => e.type === 'removed');
        logRefusals(
          evs.flatMap((e) => (e.type === 'added' ? [e.lease] : [])),
          evs.map((e) => subnetKey(e.lease)),
          false,
        );
        const changed = record({ type: 'ApplyLeaseEvents', data: { events: evs, own } } as NodeCommand);
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
      log.error(
        'network config changed in the lease store: keeping the config feltd started with, as flanneld does; restart feltd to apply it',
        { changes },
      );
    }
  };
  leases.watchNetworkConfig(checkConfig);

  // ---------------------------------------------------------------- lease lifecycle
  const { subnet: previous, ipv6Subnet: previousIPv6 } = (() => {
    const text = readFileSafe(flags.subnetFile);
    return text ? previousSubnets(text) : {};
  })();
  // flanneld's LeaseAttrs: PublicIP and BackendData for IPv4 (PublicIP 0.0.0.0 when IPv4 is off), PublicIPv6
  // and BackendV6Data for IPv6 (pkg/backend/vxlan/vxlan.go newSubnetAttrs, pkg/backend/hostgw/hostgw.go).
  const attrs = () => ({
    PublicIP: config.enableIPv4 && underlay.publicIP ? underlay.publicIP : '0.0.0.0',
    PublicIPv6: config.enableIPv6 && underlay.publicIPv6 ? underlay.publicIPv6 : null,
    BackendType: config.backend.type,
    ...(config.backend.type === 'vxlan' && config.enableIPv4 ? { BackendData: { VNI: config.backend.vni, VtepMAC: vtepMac } } : {}),
    ...(config.backend.type === 'vxlan' && config.enableIPv6 && vtepMacV6
      ? { BackendV6Data: { VNI: config.backend.vni, VtepMAC: vtepMacV6 } }
      : {}),
  });
  const leaseStoreError = (msg: string): Error => {
    hooks.storeError('leases');
    return new Error(msg);
  };
  /**
   * `prev`: the lease this node held (revoked, expired, lost in a wiped store). Its subnets are taken back, as
   * docs/feltd.md says; if another node holds them now, feltd says so and keeps subnet.env, cni0 and the pods
   * on them (acquiring again later, in case they free up) rather than moving to a subnet its pods are not in.
   */
  const acquire = async (prev: Lease | null): Promise<Lease> => {
    const want = prev ? prev.subnet : previous;
    const wantIPv6 = prev ? prev.ipv6Subnet : previousIPv6;
    for (let attempt = 0; ; attempt++) {
      const snap = await leases.list()();
      if (E.isLeft(snap)) throw leaseStoreError(snap.left.msg);
      const choice = chooseSubnet({
        config,
        leases: snap.right.leases,
        publicIP: underlay.publicIP ?? '0.0.0.0',
        ...(underlay.publicIPv6 ? { publicIPv6: underlay.publicIPv6 } : {}),
        ...(want ? { previous: want } : {}),
        ...(wantIPv6 ? { previousIPv6: wantIPv6 } : {}),
        // Subnets other nodes held when this node last looked: after a wiped store they may not be leased again
        // yet while their kernels still route them.
        avoid: Object.values(state().remotes).flatMap((r) => [r.subnet, r.ipv6Subnet].filter((x): x is string => !!x)),
        now: now(),
        rand: (n: number) => randomInt(n),
      });
      if (E.isLeft(choice)) throw new Error(choice.left);
      if (prev && subnetKey(choice.right) !== subnetKey(prev)) {
        const holder = snap.right.leases.find((l) => subnetKey(l) === subnetKey(prev));
        const name = prev.subnet ?? prev.ipv6Subnet;
        const msg = `this node's subnet ${name} is ${holder ? `leased to ${holder.invalid ? 'a value that is not a lease' : holder.attrs.PublicIP !== '0.0.0.0' ? holder.attrs.PublicIP : holder.attrs.PublicIPv6}` : 'not available'} (${choice.right.why}): keeping subnet.env and the pods on it; restart feltd to take another subnet`;
        log.error('own subnet taken', { subnet: name, why: msg });
        throw new Error(msg);
      }
      if (prev) log.info('taking the subnet held before back', { subnet: prev.subnet ?? prev.ipv6Subnet, source: choice.right.source });
      if (choice.right.source === 'reused') {
        const found = snap.right.leases.find((l) => subnetKey(l) === subnetKey(choice.right));
        const st = ownLeaseStatus(found, me);
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
      const r =
        choice.right.source === 'reused'
          ? await leases.renew(req, flags.leaseTTLSeconds)()
          : await leases.acquire(req, flags.leaseTTLSeconds)();
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
        log.error("own lease changed in the store behind feltd's back: writing it back", { key: subnetKey(lease), why: found.invalid });
        const req = {
          ...(lease.subnet ? { subnet: lease.subnet } : {}),
          ...(lease.ipv6Subnet ? { ipv6Subnet: lease.ipv6Subnet } : {}),
          attrs: attrs(),
        };
        const fixed = await leases.repair(req, flags.leaseTTLSeconds)();
        if (E.isRight(fixed) && fixed.right !== 'absent') return fixed.right;
      }
    }
    return r.right;
  };
  const held = (lease: Lease): void => {
    record({ type: 'RecordOwnLease', data: { lease, vtepMac, ...(vtepMacV6 ? { vtepMacV6 } : {}) } });
    hooks.leaseRenewed();
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
          hooks.leaseLost();
          record({ type: 'LoseOwnLease', data: { reason: context.lastError ?? 'lost' } });
        },
      },
    }),
    { input: { renewMarginMs: flags.renewMarginMinutes * 60_000, now: () => Date.now() } },
  );
  actor.subscribe({ error: (e) => log.error('lease machine failed', { error: String(e) }) });
  actor.start();

  return {
    stop: () => {
      stopped = true;
      actor.stop();
      watch?.stop();
    },
  };
}
