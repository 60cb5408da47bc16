// The events of a feltd node's own log (stream `node/<public IP>`): what the node learned about the network
// config, its own subnet lease and every remote lease, each stored with the time the app passed in with the
// command (StoredEvent.time), so `felt events` shows when a remote node appeared, changed its VtepMAC or
// public IP, and left. Names are past tense; data is plain JSON. The Decider that emits them is node.ts.

import type { Event } from '../events.ts';
import type { LeaseAttrs, NetConfig } from './types.ts';

/** Which lease an event is about: its etcd key (`10.244.3.0-24[&fd00:...-64]`) and its subnets as CIDRs. */
export interface Subnets {
  readonly key: string;
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
}

/** The network config the node runs with (recorded when it first loads, and when it changes). */
type ConfigLoaded = Event<'ConfigLoaded', { readonly config: NetConfig }>;

/** This node acquired, re-acquired or renewed its own lease. */
export type SubnetLeased = Event<
  'SubnetLeased',
  Subnets & {
    readonly publicIP: string;
    readonly publicIPv6?: string;
    readonly backendType: string;
    readonly vtepMac?: string;
    readonly vtepMacV6?: string;
    readonly expiration: string;
    /** True when the same subnet was held before (a renewal or a re-acquisition of it). */
    readonly renewal: boolean;
  }
>;

/** This node no longer holds its lease: revoked (deleted by someone), expired, or replaced by another. */
export type SubnetLeaseLost = Event<'SubnetLeaseLost', Subnets & { readonly reason: string }>;

/** A remote node's lease appeared, or changed in something other than its expiration. */
export type RemoteLeaseSeen = Event<
  'RemoteLeaseSeen',
  Subnets & {
    readonly attrs: LeaseAttrs;
    readonly expiration: string;
    readonly change: 'appeared' | 'changed';
    /** For `changed`: what changed, in words ("VtepMAC 3e:..:01 -> 3e:..:02"). */
    readonly changes?: readonly string[];
  }
>;

/** A remote node's lease is gone. */
export type RemoteLeaseRemoved = Event<
  'RemoteLeaseRemoved',
  Subnets & {
    readonly publicIP: string;
    /**
     * `removed`: a watch event; `expired`: past its expiration; `gone`: absent from a full listing; `ours`: this
     * node now holds it; `refused`: it now fails the checks of core/flannel/trust.ts (outside the network, another
     * length, overlapping, not a lease).
     */
    readonly reason: 'removed' | 'expired' | 'gone' | 'ours' | 'refused';
  }
>;

export type NodeEvent = ConfigLoaded | SubnetLeased | SubnetLeaseLost | RemoteLeaseSeen | RemoteLeaseRemoved;
