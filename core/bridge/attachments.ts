// The bridge plugin's record of its attachments, as a Decider over stream `bridge/<network>`. ADD records an
// attachment before it changes the kernel, so that a plugin killed half-way leaves a record naming what it
// may have created (the host veth especially, whose name is random); DEL, a rolled-back ADD and GC record its
// removal once the kernel objects are gone. GC uses the records to find attachments whose DEL never came.
//
// Commands: RecordAttachment (ADD), RecordAttachmentReady (the end of a successful ADD), RemoveAttachments
// (DEL, rollback), CollectAttachments (GC).
// Events: AttachmentRecorded, AttachmentReady (how long the ADD took: feltd's felt_cni_add_duration_seconds;
// it changes no state), AttachmentRemoved. State: the recorded attachments by host veth (random per ADD, so a
// second ADD of the same container/ifname never overwrites the first one's record), kept by the store as a
// table (one row per host veth, indexed by container/ifname); decide reads it through a view.

import * as E from 'fp-ts/lib/Either.js';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import { HOST, type Link } from '../kernel/model.ts';
import { stateView, tableProjection, type Event, type RowChange, type RowView, type Table } from '../events.ts';

export interface AttachmentRecord {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  /** CNI_NETNS of the ADD. */
  readonly netns: string;
  readonly hostVeth: string;
  /** Where the log (and host-local's allocations) live. */
  readonly dataDir: string;
  /**
   * What `felt plan` and `felt why` need to compute the attachment's desired kernel state from the log alone
   * (records made before these fields existed lack them): the network config of the ADD (stdin, without
   * prevResult), its CNI_ARGS, the host veth's MAC, and the network namespace the plugin ran in, as the kernel
   * names it (`net:[4026531840]`, the link /proc/self/ns/net points to).
   */
  readonly conf?: Readonly<Record<string, unknown>>;
  readonly cniArgs?: Readonly<Record<string, string>>;
  readonly hostVethMac?: string;
  readonly hostNs?: string;
}

/** `del` (CNI DEL), `rollback` (an ADD that failed and converged back), `gc` (not in valid-attachments). */
type RemovalReason = 'del' | 'rollback' | 'gc';

type AttachmentRecorded = Event<'AttachmentRecorded', AttachmentRecord>;
type AttachmentRemoved = Event<
  'AttachmentRemoved',
  {
    readonly network: string;
    readonly containerId: string;
    readonly ifname: string;
    readonly hostVeth: string;
    readonly reason: RemovalReason;
  }
>;
export type AttachmentReady = Event<
  'AttachmentReady',
  {
    readonly network: string;
    readonly containerId: string;
    readonly ifname: string;
    readonly hostVeth: string;
    readonly durationMs: number;
  }
>;
export type AttachmentEvent = AttachmentRecorded | AttachmentReady | AttachmentRemoved;

export type AttachmentCommand =
  | { readonly type: 'RecordAttachment'; readonly data: AttachmentRecord }
  /** The ADD of the attachment recorded under `hostVeth` finished after `durationMs`. */
  | { readonly type: 'RecordAttachmentReady'; readonly data: AttachmentReady['data'] }
  /** Remove the records of (containerId, ifname); only the one of `hostVeth` when given. */
  | {
      readonly type: 'RemoveAttachments';
      readonly data: {
        readonly network: string;
        readonly containerId: string;
        readonly ifname: string;
        readonly hostVeth?: string;
        readonly reason: RemovalReason;
      };
    }
  /** Remove these records (GC has removed their kernel objects). */
  | { readonly type: 'CollectAttachments'; readonly data: { readonly records: readonly AttachmentRecord[] } };

export interface AttachmentsState {
  /** By host veth. */
  readonly attachments: Readonly<Record<string, AttachmentRecord>>;
}

/** Which plugin's records: bridge's (`bridge/<network>`) or ptp's (`ptp/<network>`, the same records). */
export type RecordKind = 'bridge' | 'ptp';

export const attachmentStream = (network: string, kind: RecordKind = 'bridge'): string => `${kind}/${network}`;

/**
 * Why the host link that has the name of a record's host veth is not that veth, or undefined when it is (or
 * no link has the name): a name is reused, and a record may come from an imported or edited log, so DEL and
 * GC delete by identity. The veth is a veth with the recorded MAC (a record without one, made before MACs
 * were recorded: at least a port of `master`), and a port of `master` or of nothing (an ADD killed before it
 * enslaved it). `master` is the attachment's bridge, or null for ptp (its veths have no master).
 */
export function recordedVethMismatch(rec: AttachmentRecord, links: readonly Link[], master: string | null): string | undefined {
  const l = links.find((x) => x.ns === HOST && x.name === rec.hostVeth);
  if (!l) return undefined;
  const who = `${rec.containerId}/${rec.ifname}`;
  if (l.kind !== 'veth') return `${rec.hostVeth} is a ${l.kind}, not the veth recorded for ${who}: left as it is`;
  const on = l.master ?? null;
  if (on !== null && on !== master)
    return `${rec.hostVeth} is a port of ${on}, not of ${master ?? 'nothing'} as the veth recorded for ${who}: left as it is`;
  if (rec.hostVethMac !== undefined) {
    if ((l.mac ?? '').toLowerCase() !== rec.hostVethMac.toLowerCase())
      return `${rec.hostVeth} has MAC ${l.mac ?? 'none'}, not ${rec.hostVethMac} as the veth recorded for ${who}: left as it is`;
  } else if (master !== null && on !== master) {
    return `${rec.hostVeth} is not a port of ${master} and ${who}'s record has no MAC to tell: left as it is`;
  }
  return undefined;
}

/** The table has no header: everything is in the rows. */
export type AttachmentsHeader = Readonly<Record<string, never>>;
/** A row: the record and the position of its first AttachmentRecorded (records are listed oldest first). */
export interface AttachmentRow {
  readonly position: number;
  readonly record: AttachmentRecord;
}
export type AttachmentsView = RowView<AttachmentsHeader, AttachmentRow>;

const attachmentIndex = (containerId: string, ifname: string): string => JSON.stringify([containerId, ifname]);
const oldestFirst = (a: AttachmentRow, b: AttachmentRow): number => a.position - b.position;

/** What each event changes: one record's row (the one fold: attachmentsProjection's evolve is these changes). */
const attachmentsTable: Table<AttachmentsState, AttachmentsHeader, AttachmentRow, AttachmentEvent> = {
  initialHeader: () => ({}),
  changes: (view, event): RowChange<AttachmentsHeader, AttachmentRow>[] => {
    switch (event.type) {
      case 'AttachmentRecorded': {
        const before = view.get(event.data.hostVeth);
        return [{ op: 'put', key: event.data.hostVeth, row: { position: before ? before.position : event.position, record: event.data } }];
      }
      case 'AttachmentReady':
        return [];
      case 'AttachmentRemoved':
        return view.get(event.data.hostVeth) ? [{ op: 'del', key: event.data.hostVeth }] : [];
      default: {
        // Not an attachment event: nothing to fold.
        const never: never = event;
        void never;
        return [];
      }
    }
  },
  index: (r) => attachmentIndex(r.record.containerId, r.record.ifname),
  assemble: (_header, rows) => ({
    attachments: Object.fromEntries(
      Object.entries(rows)
        .sort(([, a], [, b]) => oldestFirst(a, b))
        .map(([k, r]) => [k, r.record]),
    ),
  }),
  // A folded state lists its records oldest first: that order stands in for the positions, below any event's
  // (a record folded onto it comes after every one it holds).
  split: (s) => {
    const entries = Object.entries(s.attachments);
    return { header: {}, rows: Object.fromEntries(entries.map(([k, record], i) => [k, { position: i - entries.length, record }])) };
  },
};

export const attachmentsProjection = tableProjection('bridge-attachments@2', attachmentsTable);

export const { initialState: initialAttachments } = attachmentsProjection;

const attachmentsView = (state: AttachmentsState): AttachmentsView =>
  stateView(attachmentsTable as Table<AttachmentsState, AttachmentsHeader, AttachmentRow, never>, state);

/** The records of one (container, ifname), oldest first. */
const recordsIn = (view: AttachmentsView, containerId: string, ifname: string): AttachmentRecord[] =>
  view
    .find(attachmentIndex(containerId, ifname))
    .sort(oldestFirst)
    .map((r) => r.record);

export const recordsOf = (state: AttachmentsState, containerId: string, ifname: string): AttachmentRecord[] =>
  recordsIn(attachmentsView(state), containerId, ifname);

/** The records GC removes: those whose (container, ifname) is not in the valid set. */
export const outsideValid = (
  state: AttachmentsState,
  valid: readonly { readonly containerId: string; readonly ifname: string }[],
): AttachmentRecord[] => {
  const keep = new Set(valid.map((v) => `${v.containerId}\u0000${v.ifname}`));
  return Object.values(state.attachments).filter((a) => !keep.has(`${a.containerId}\u0000${a.ifname}`));
};

const removed = (a: AttachmentRecord, reason: RemovalReason): AttachmentRemoved => ({
  type: 'AttachmentRemoved',
  data: { network: a.network, containerId: a.containerId, ifname: a.ifname, hostVeth: a.hostVeth, reason },
});

/** decide over the store's view (bridge's transaction): point and index lookups only. */
export function decideAttachmentsIn(command: AttachmentCommand, view: AttachmentsView): E.Either<CniError, AttachmentEvent[]> {
  switch (command.type) {
    case 'RecordAttachment': {
      const same = view.get(command.data.hostVeth)?.record;
      return E.right(
        same && JSON.stringify(same) === JSON.stringify(command.data) ? [] : [{ type: 'AttachmentRecorded', data: command.data }],
      );
    }
    case 'RecordAttachmentReady': {
      const d = command.data;
      if (typeof d.durationMs !== 'number' || !Number.isFinite(d.durationMs) || d.durationMs < 0) {
        return E.left(invalidConfig(`RecordAttachmentReady: durationMs ${JSON.stringify(d.durationMs)} is not a duration >= 0`));
      }
      // Only an attachment that is still recorded (a DEL may have raced the end of its ADD).
      const rec = view.get(d.hostVeth)?.record;
      return E.right(rec && rec.containerId === d.containerId && rec.ifname === d.ifname ? [{ type: 'AttachmentReady', data: d }] : []);
    }
    case 'RemoveAttachments': {
      const { containerId, ifname, hostVeth, reason } = command.data;
      const gone = recordsIn(view, containerId, ifname).filter((a) => hostVeth === undefined || a.hostVeth === hostVeth);
      return E.right(gone.map((a) => removed(a, reason)));
    }
    case 'CollectAttachments':
      return E.right(command.data.records.filter((a) => view.get(a.hostVeth) !== undefined).map((a) => removed(a, 'gc')));
    default: {
      const never: never = command;
      return never;
    }
  }
}

/** decide over a folded state. */
export const decideAttachments = (command: AttachmentCommand, state: AttachmentsState): E.Either<CniError, AttachmentEvent[]> =>
  decideAttachmentsIn(command, attachmentsView(state));
