// What the tuning plugin remembers between ADD and DEL, as a Decider over the event log (the reference writes
// a JSON file per attachment under its dataDir instead). One stream per network, `tuning/<network>`; the
// state holds, per (container, ifname), the namespace and the original values ADD recorded before changing
// anything. Commands: RecordOriginals (ADD, before it applies), ForgetOriginals (DEL once restored, or an
// ADD that failed and rolled back). Events: TuningApplied, TuningReverted.

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../cni/errors.ts';
import type { Event, Projection } from '../events.ts';
import { mergeOriginals, type Originals } from './desired.ts';

export interface AttachmentRef {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
}

export type TuningApplied = Event<'TuningApplied', AttachmentRef & { readonly netns: string; readonly original: Originals }>;
/** `reason`: `del` (restored by DEL), `netns-gone` (DEL with nothing left to restore), `add-failed` (rolled back). */
export type TuningReverted = Event<'TuningReverted', AttachmentRef & { readonly reason: 'del' | 'netns-gone' | 'add-failed' }>;
export type TuningEvent = TuningApplied | TuningReverted;

export type TuningCommand =
  | { readonly type: 'RecordOriginals'; readonly data: AttachmentRef & { readonly netns: string; readonly original: Originals } }
  | { readonly type: 'ForgetOriginals'; readonly data: AttachmentRef & { readonly reason: TuningReverted['data']['reason'] } };

export interface Tuned {
  readonly containerId: string;
  readonly ifname: string;
  readonly netns: string;
  readonly original: Originals;
  /** Time of the first TuningApplied. */
  readonly since: string;
}

export interface TuningState {
  /** By attachmentKey. */
  readonly attachments: Readonly<Record<string, Tuned>>;
}

export const tuningStream = (network: string): string => `tuning/${network}`;
/** Container IDs and interface names hold no '/' (core/cni/env.ts). */
export const attachmentKey = (containerId: string, ifname: string): string => `${containerId}/${ifname}`;

export const tuningProjection: Projection<TuningState, TuningEvent> = {
  name: 'tuning@1',
  initialState: () => ({ attachments: {} }),
  evolve: (s, e) => {
    const k = attachmentKey(e.data.containerId, e.data.ifname);
    switch (e.type) {
      case 'TuningApplied': {
        const before = s.attachments[k];
        const since = before && before.netns === e.data.netns ? before.since : e.time;
        return { attachments: { ...s.attachments, [k]: { containerId: e.data.containerId, ifname: e.data.ifname, netns: e.data.netns, original: e.data.original, since } } };
      }
      case 'TuningReverted': {
        const { [k]: _gone, ...rest } = s.attachments;
        return { attachments: rest };
      }
      default: {
        const never: never = e;
        return never;
      }
    }
  },
};

export function decide(c: TuningCommand, s: TuningState): E.Either<CniError, readonly TuningEvent[]> {
  const k = attachmentKey(c.data.containerId, c.data.ifname);
  const known = s.attachments[k];
  switch (c.type) {
    case 'RecordOriginals': {
      // A repeated ADD keeps the first originals (the kernel now holds that ADD's values); a record of another
      // namespace (the container was re-created under the same ID) is stale and replaced.
      const original = known && known.netns === c.data.netns ? mergeOriginals(known.original, c.data.original) : c.data.original;
      if (known && known.netns === c.data.netns && JSON.stringify(known.original) === JSON.stringify(original)) return E.right([]);
      return E.right([{ type: 'TuningApplied', data: { ...c.data, original } }]);
    }
    case 'ForgetOriginals':
      return E.right(known ? [{ type: 'TuningReverted', data: c.data }] : []);
    default: {
      const never: never = c;
      return never;
    }
  }
}
