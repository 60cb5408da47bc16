// The subnet lease store feltd talks to: etcd v3 for a real cluster (adapters/lease/etcd.ts), an embedded
// SQLite store shared by the nodes of one machine (adapters/lease/sqlite.ts), and an in-memory twin
// (adapters/memory/leases.ts). All three keep flannel's semantics: create-if-absent with a TTL, renew,
// watch from a revision, resync after compaction.

import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { Lease, LeaseAttrs, LeaseEvent, LeaseSnapshot } from '../../core/flannel/types.ts';

export interface StoreError {
  readonly kind: 'store';
  readonly msg: string;
  /** True when trying again later may succeed (store unreachable, timeout). */
  readonly retryable: boolean;
}

export interface LeaseRequest {
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
  readonly attrs: LeaseAttrs;
}

export interface Watch {
  stop(): void;
}

export interface LeaseStore {
  /** The network config JSON (etcd: `<prefix>/config`; embedded: what `putNetworkConfig` stored). */
  getNetworkConfig(): TE.TaskEither<StoreError, string | undefined>;
  putNetworkConfig(json: string): TE.TaskEither<StoreError, void>;
  /**
   * Told the network config's text when it changes (undefined: deleted), and once when the watch starts (or
   * re-connects) with what it is then. feltd runs with the config it started with, as flanneld does, and
   * uses this only to say when the store holds another.
   */
  watchNetworkConfig(onConfig: (json: string | undefined) => void): Watch;
  /** All unexpired leases and the revision they were read at (one consistent read). */
  list(): TE.TaskEither<StoreError, LeaseSnapshot>;
  /** Create the lease if its key is absent; 'taken' if another holds it. TTL in seconds. */
  acquire(req: LeaseRequest, ttlSeconds: number): TE.TaskEither<StoreError, Lease | 'taken'>;
  /** Extend a lease this node holds (and update its attrs); 'lost' if the key is gone or not ours. */
  renew(req: LeaseRequest, ttlSeconds: number): TE.TaskEither<StoreError, Lease | 'lost'>;
  /**
   * Write this node's value over a lease key that exists, whatever it holds now (the own lease found tampered
   * with: another PublicIP, not JSON), with a new TTL; 'absent' when the key is gone (then acquire it).
   */
  repair(req: LeaseRequest, ttlSeconds: number): TE.TaskEither<StoreError, Lease | 'absent'>;
  /** Remove a lease (tests, and operators revoking a node). */
  revoke(subnet: string): TE.TaskEither<StoreError, void>;
  /**
   * Changes after `fromRevision`, in order. `onReset` is called when the store can no longer replay from
   * that revision (etcd compaction), or when it is no longer the store the revision belongs to (an etcd
   * wiped or restored: another cluster id or a revision gone backwards; a leases.db deleted or replaced):
   * the caller lists again and watches from the new revision. A lease key whose value is not a flannel lease
   * comes as a lease with `invalid` set.
   */
  watch(fromRevision: number, onEvents: (events: readonly LeaseEvent[], revision: number) => void, onReset: (why: string) => void): Watch;
  close(): Promise<void>;
}
