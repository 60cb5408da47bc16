// What a plugin remembers between ADD and DEL of an attachment, as a Decider over felt's event log: per
// (container, ifname), the pod namespace and the original values ADD recorded before changing anything, so
// that DEL can put them back. host-device (core/hostdevice/decider.ts: the device's name, MAC, MTU, up state
// and alias) and tuning (core/tuning/decider.ts: link attributes and sysctls) are this Decider with their own
// event and command names and their own rule for a repeated ADD. One stream per network.
//
// Commands: record (ADD, before it changes anything), forget (DEL once restored, or an ADD that failed and
// converged back). Events: recorded, forgotten (with the reason).

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from './errors.ts';
import type { Event, Projection } from '../events.ts';

interface AttachmentRef {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
}

/** What ADD records: the attachment, its pod namespace and the original values. */
type OriginalsData<O> = AttachmentRef & { readonly netns: string; readonly original: O };
/** What DEL (or a failed ADD) says when it forgets them. */
type ForgetData<Reason extends string> = AttachmentRef & { readonly reason: Reason };

export type OriginalsEvent<Recorded extends string, Forgotten extends string, O, Reason extends string> =
  Event<Recorded, OriginalsData<O>> | Event<Forgotten, ForgetData<Reason>>;

export type OriginalsCommand<Record extends string, Forget extends string, O, Reason extends string> =
  { readonly type: Record; readonly data: OriginalsData<O> } | { readonly type: Forget; readonly data: ForgetData<Reason> };

export interface Remembered<O> {
  readonly containerId: string;
  readonly ifname: string;
  readonly netns: string;
  readonly original: O;
  /** Time of the record (of the first one, where a repeated ADD keeps it: `keepFirst`). */
  readonly since: string;
}

export interface OriginalsState<O> {
  /** By attachmentKey. */
  readonly attachments: Readonly<Record<string, Remembered<O>>>;
}

/** Container IDs and interface names hold no '/' (core/cni/env.ts). */
export const attachmentKey = (containerId: string, ifname: string): string => `${containerId}/${ifname}`;

export interface OriginalsSpec<Recorded extends string, Forgotten extends string, Record extends string, Forget extends string, O> {
  /** The projection's name (its snapshots). */
  readonly name: string;
  readonly recorded: Recorded;
  readonly forgotten: Forgotten;
  readonly record: Record;
  readonly forget: Forget;
  /**
   * A repeated ADD in the same namespace: without it, every record is recorded anew (with its own time); with
   * it, the originals are `keepFirst(known, now)` (the kernel now holds the first ADD's values), the record
   * keeps its first time, and nothing is recorded when that changes nothing. A record of another namespace (the
   * container was re-created under the same ID) is stale and replaced either way.
   */
  readonly keepFirst?: (known: O, now: O) => O;
}

export function originalsDecider<
  Recorded extends string,
  Forgotten extends string,
  Record extends string,
  Forget extends string,
  O,
  Reason extends string,
>(
  spec: OriginalsSpec<Recorded, Forgotten, Record, Forget, O>,
): {
  readonly projection: Projection<OriginalsState<O>, OriginalsEvent<Recorded, Forgotten, O, Reason>>;
  readonly decide: (
    c: OriginalsCommand<Record, Forget, O, Reason>,
    s: OriginalsState<O>,
  ) => E.Either<CniError, readonly OriginalsEvent<Recorded, Forgotten, O, Reason>[]>;
} {
  type Ev = OriginalsEvent<Recorded, Forgotten, O, Reason>;
  const isRecorded = (e: { readonly type: string }): e is Event<Recorded, OriginalsData<O>> => e.type === spec.recorded;
  const projection: Projection<OriginalsState<O>, Ev> = {
    name: spec.name,
    initialState: () => ({ attachments: {} }),
    evolve: (s, e) => {
      const k = attachmentKey(e.data.containerId, e.data.ifname);
      if (isRecorded(e)) {
        const before = s.attachments[k];
        const since = spec.keepFirst && before && before.netns === e.data.netns ? before.since : e.time;
        return {
          attachments: {
            ...s.attachments,
            [k]: { containerId: e.data.containerId, ifname: e.data.ifname, netns: e.data.netns, original: e.data.original, since },
          },
        };
      }
      if (e.type !== spec.forgotten) return s;
      const { [k]: _gone, ...rest } = s.attachments;
      return { attachments: rest };
    },
  };
  const decide = (c: OriginalsCommand<Record, Forget, O, Reason>, s: OriginalsState<O>): E.Either<CniError, readonly Ev[]> => {
    const known = s.attachments[attachmentKey(c.data.containerId, c.data.ifname)];
    if (c.type === spec.record) {
      const d = c.data as OriginalsData<O>;
      const same = spec.keepFirst && known && known.netns === d.netns ? spec.keepFirst : undefined;
      if (!same || !known) return E.right([{ type: spec.recorded, data: d } as Ev]);
      const original = same(known.original, d.original);
      if (JSON.stringify(known.original) === JSON.stringify(original)) return E.right([]);
      return E.right([{ type: spec.recorded, data: { ...d, original } } as Ev]);
    }
    return E.right(known ? [{ type: spec.forgotten, data: c.data } as Ev] : []);
  };
  return { projection, decide };
}
