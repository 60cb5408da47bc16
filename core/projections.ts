// Every kind of stream felt records, with the projection that folds it and the event types it holds: an
// explicit table (adding a stream kind means adding a row here), so `felt replay`, `felt import` and the
// replay property test cover all of them. Pure: no I/O.

import { attachmentsProjection, type AttachmentsState } from './bridge/attachments.ts';
import { runtimeProjection, type RuntimeState } from './cni/attachments.ts';
import type { Event, Projection } from './events.ts';
import {
  BRIDGE_CHECKS,
  FIREWALL_CHECKS,
  PTP_CHECKS,
  HOST_DEVICE_CHECKS,
  IPAM_CHECKS,
  NODE_CHECKS,
  RUNTIME_CHECKS,
  TUNING_CHECKS,
} from './event-checks.ts';
import type { DataCheck, DataChecks } from './event-data.ts';
import type { AttachmentEvent } from './bridge/attachments.ts';
import type { RuntimeEvent } from './cni/attachments.ts';
import type { NodeEvent } from './flannel/events.ts';
import { firewallProjection, type FirewallEvent, type FirewallState } from './firewall/records.ts';
import { remoteLeases, nodeProjection, type NodeState } from './flannel/node.ts';
import { hostDeviceProjection, type HostDeviceEvent, type HostDeviceState } from './hostdevice/decider.ts';
import { ipamProjection, type IpamEvent, type IpamState } from './ipam/decider.ts';
import { tuningProjection, type TuningEvent, type TuningState } from './tuning/decider.ts';

export interface StreamKind<S = unknown> {
  /** Streams of this kind start with it: `ipam/`. */
  readonly prefix: string;
  /** Who writes it, for messages. */
  readonly writer: string;
  readonly projection: Projection<S, Event>;
  /** The event types its projection folds; anything else in such a stream is not felt's. */
  readonly types: readonly string[];
  /**
   * By event type, the check of an event's data (`felt import`): what the kind's decider could have emitted,
   * in this stream. Its keys are `types`.
   */
  readonly checks: Readonly<Record<string, DataCheck<unknown>>>;
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

/**
 * A row of the table. `Ev` is the projection's event union: `checks` must have exactly one check per event type
 * of it (the compiler says which is missing), and `types` is made from them.
 */
const kind = <S, Ev extends Event>(
  k: Omit<StreamKind<S>, 'projection' | 'types' | 'checks'> & { readonly projection: Projection<S, Ev>; readonly checks: DataChecks<Ev> },
): StreamKind => ({ ...k, types: Object.keys(k.checks), checks: k.checks }) as unknown as StreamKind;

export const STREAM_KINDS: readonly StreamKind[] = [
  kind<IpamState, IpamEvent>({
    prefix: 'ipam/',
    writer: 'host-local (IPAM)',
    projection: ipamProjection,
    checks: IPAM_CHECKS,
    view: (s) => ({ allocations: byKey(s.allocations), lastReserved: s.lastReserved }),
  }),
  kind<NodeState, NodeEvent>({
    prefix: 'node/',
    writer: 'feltd',
    projection: nodeProjection,
    checks: NODE_CHECKS,
    view: (s) => ({ config: s.config, ownLease: s.ownLease, remoteLeases: remoteLeases(s) }),
  }),
  kind<AttachmentsState, AttachmentEvent>({
    prefix: 'bridge/',
    writer: 'the bridge plugin',
    projection: attachmentsProjection,
    checks: BRIDGE_CHECKS,
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  // ptp records its attachments as bridge does, without bridge's AttachmentReady.
  kind<AttachmentsState, Exclude<AttachmentEvent, { readonly type: 'AttachmentReady' }>>({
    prefix: 'ptp/',
    writer: 'the ptp plugin',
    projection: attachmentsProjection,
    checks: PTP_CHECKS,
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<HostDeviceState, HostDeviceEvent>({
    prefix: 'host-device/',
    writer: 'the host-device plugin',
    projection: hostDeviceProjection,
    checks: HOST_DEVICE_CHECKS,
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<TuningState, TuningEvent>({
    prefix: 'tuning/',
    writer: 'the tuning plugin',
    projection: tuningProjection,
    checks: TUNING_CHECKS,
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<FirewallState, FirewallEvent>({
    prefix: 'firewall/',
    writer: 'the firewall plugin',
    projection: firewallProjection,
    checks: FIREWALL_CHECKS,
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
  kind<RuntimeState, RuntimeEvent>({
    prefix: 'cni/',
    writer: 'felt cni',
    projection: runtimeProjection,
    checks: RUNTIME_CHECKS,
    view: (s) => ({ attachments: byKey(s.attachments) }),
  }),
];

/** The kind of a stream, by its prefix; undefined for a stream felt does not write. */
export const streamKindOf = (stream: string): StreamKind | undefined =>
  STREAM_KINDS.find((k) => stream.startsWith(k.prefix) && stream.length > k.prefix.length);

/** The prefixes, for messages: `ipam/..., node/..., ...`. */
export const streamPrefixes = (): string => STREAM_KINDS.map((k) => `${k.prefix}...`).join(', ');
