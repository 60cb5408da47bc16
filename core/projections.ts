// Every kind of stream felt records, with the projection that folds it and the event types it holds: an
// explicit table (adding a stream kind means adding a row here), so `felt replay`, `felt import` and the
// replay property test cover all of them. Pure: no I/O.

import { attachmentsProjection, type AttachmentsState } from './bridge/attachments.ts';
import { runtimeProjection, type RuntimeState } from './cni/attachments.ts';
import type { Event, Projection } from './events.ts';
import { firewallProjection, type FirewallState } from './firewall/records.ts';
import { remoteLeases, nodeProjection, type NodeState } from './flannel/node.ts';
import { hostDeviceProjection, type HostDeviceState } from './hostdevice/decider.ts';
import { ipamProjection, type IpamState } from './ipam/decider.ts';
import { tuningProjection, type TuningState } from './tuning/decider.ts';

export interface StreamKind<S = unknown> {
  /** Streams of this kind start with it: `ipam/`. */
  readonly prefix: string;
  /** Who writes it, for messages. */
  readonly writer: string;
  readonly projection: Projection<S, Event>;
  /** The event types its projection folds; anything else in such a stream is not felt's. */
  readonly types: readonly string[];
  /**
   * What the state means for the network, for `felt replay --desired`: the allocations, leases or
   * attachments the stream's state keeps, as plain JSON in a stable order.
   */
  readonly view: (state: S) => Record<string, unknown>;
}

const byKey = <T>(record: Readonly<Record<string, T>>): T[] =>
  Object.keys(record)
    .sort()
    .map((k) => record[k]!);

const kind = <S>(k: StreamKind<S>): StreamKind => k as unknown as StreamKind;

export const STREAM_KINDS: readonly StreamKind[] = [
  kind<IpamState>({
    prefix: 'ipam/',
    writer: 'host-local (IPAM)',
    projection: ipamProjection as unknown as Projection<IpamState, Event>,
    types: ['AddressAllocated', 'AddressReleased'],
    view: (s) => ({ allocations: byKey(s.allocations), lastReserved: s.lastReserved }),
  }),
  kind<NodeState>({
    prefix: 'node/',
    writer: 'feltd',
    projection: nodeProjection as unknown as Projection<NodeState, Event>,
    types: ['ConfigLoaded', 'SubnetLeased', 'SubnetLeaseLost', 'RemoteLeaseSeen', 'RemoteLeaseRemoved'],
    view: (s) => ({ config: s.config, ownLease: s.ownLease, remoteLeases: remoteLeases(s) }),
  }),
  kind<AttachmentsState>({
    prefix: 'bridge/',
    writer: 'the bridge plugin',
    projection: attachmentsProjection as unknown as Projection<AttachmentsState, Event>,
    types: ['AttachmentRecorded', 'AttachmentRemoved'],
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<AttachmentsState>({
    prefix: 'ptp/',
    writer: 'the ptp plugin',
    projection: attachmentsProjection as unknown as Projection<AttachmentsState, Event>,
    types: ['AttachmentRecorded', 'AttachmentRemoved'],
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<HostDeviceState>({
    prefix: 'host-device/',
    writer: 'the host-device plugin',
    projection: hostDeviceProjection as unknown as Projection<HostDeviceState, Event>,
    types: ['HostDeviceAttached', 'HostDeviceReleased'],
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<TuningState>({
    prefix: 'tuning/',
    writer: 'the tuning plugin',
    projection: tuningProjection as unknown as Projection<TuningState, Event>,
    types: ['TuningApplied', 'TuningReverted'],
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<FirewallState>({
    prefix: 'firewall/',
    writer: 'the firewall plugin',
    projection: firewallProjection as unknown as Projection<FirewallState, Event>,
    types: ['FirewallRulesRecorded', 'FirewallRulesRemoved'],
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<RuntimeState>({
    prefix: 'cni/',
    writer: 'felt cni',
    projection: runtimeProjection as unknown as Projection<RuntimeState, Event>,
    types: ['AttachmentAdded', 'AttachmentAddFailed', 'AttachmentDeleted'],
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
];

/** The kind of a stream, by its prefix; undefined for a stream felt does not write. */
export const streamKindOf = (stream: string): StreamKind | undefined => STREAM_KINDS.find((k) => stream.startsWith(k.prefix) && stream.length > k.prefix.length);

/** The prefixes, for messages: `ipam/..., node/..., ...`. */
export const streamPrefixes = (): string => STREAM_KINDS.map((k) => `${k.prefix}...`).join(', ');
