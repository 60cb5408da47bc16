// The own lease's lifecycle: the lease machine (core/flannel/lease-machine.ts; acquire, renew, lose) with its
// effects provided here, and the watch on the lease store (list, then follow events; list again on a reset).
// Every lease change goes into the node's log and asks the overlay reconciler for a pass.

import { randomInt } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import { createActor, fromPromise } from 'xstate';
import type { LeaseStore, Watch } from '../../adapters/lease/types.ts';
import { underlayIdentity, type Underlay } from '../../adapters/kernel/underlay.ts';
import { chooseSubnet } from '../../core/flannel/subnets.ts';
import { previousSubnets } from '../../core/flannel/lease.ts';
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
  const isOwn = (l: Lease): boolean => (underlay.publicIP ? l.attrs.PublicIP === underlay.publicIP : l.attrs.PublicIPv6 === underlay.publicIPv6);
  const startWatch = async (): Promise<void> => {
    watch?.stop();
    const snap = await leases.list()();
    if (E.isLeft(snap)) {
      log.error('cannot list leases', { error: snap.left.msg });
      hooks.storeError('leases');
      setTimeout(() => void (stopped || startWatch()), 1000);
      return;
    }
    revision = snap.right.revision;
    record({ type: 'ObserveLeases', data: { snapshot: snap.right, own } } as NodeCommand);
    void reconcile(true);
    watch = leases.watch(
      revision,
      (evs: readonly LeaseEvent[], rev: number) => {
        revision = rev;
        const ownRemoved = evs.some((e) => e.type === 'removed' && isOwn(e.lease));
        const changed = record({ type: 'ApplyLeaseEvents', data: { events: evs, own } } as NodeCommand);
        if (ownRemoved && !stopped) actor.send({ type: 'REVOKED' });
        const keys = changed.flatMap((e) => (e.type === 'RemoteLeaseSeen' || e.type === 'RemoteLeaseRemoved' ? [e.data.key] : []));
        if (keys.length) void reconcile(false, keys);
      },
      (why) => {
        log.info('lease watch reset, listing again', { why });
        void startWatch();
      },
    );
  };

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
    ...(config.backend.type === 'vxlan' && config.enableIPv6 && vtepMacV6 ? { BackendV6Data: { VNI: config.backend.vni, VtepMAC: vtepMacV6 } } : {}),
  });
  const leaseStoreError = (msg: string): Error => {
    hooks.storeError('leases');
    return new Error(msg);
  };
  const acquire = async (): Promise<Lease> => {
    for (let attempt = 0; ; attempt++) {
      const snap = await leases.list()();
      if (E.isLeft(snap)) throw leaseStoreError(snap.left.msg);
      const choice = chooseSubnet({
        config,
        leases: snap.right.leases,
        publicIP: underlay.publicIP ?? '0.0.0.0',
        ...(underlay.publicIPv6 ? { publicIPv6: underlay.publicIPv6 } : {}),
        ...(previous ? { previous } : {}),
        ...(previousIPv6 ? { previousIPv6 } : {}),
        now: now(),
        rand: (n: number) => randomInt(n),
      });
      if (E.isLeft(choice)) throw new Error(choice.left);
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
        acquire: fromPromise(() => acquire()),
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
