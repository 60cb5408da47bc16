// What host-device remembers between ADD and DEL, as a Decider over felt's event log: per (container,
// ifname), the pod namespace and the device's original name, MAC, MTU, up state and alias, recorded before
// ADD moves it. The kernel keeps only the name (as the alias); moving a device sets it down. One stream per
// network, `host-device/<network>`. Commands: RecordAttachment (ADD, before it changes anything),
// ForgetAttachment (DEL once the device is back, or an ADD that failed and converged back). Events:
// HostDeviceAttached, HostDeviceReleased.

import * as E from 'fp-ts/lib/Either.js';
import type { CniError } from '../cni/errors.ts';
import type { Event, Projection } from '../events.ts';
import type { Original } from './desired.ts';

export interface AttachmentRef {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
}

export type HostDeviceAttached = Event<'HostDeviceAttached', AttachmentRef & { readonly netns: string; readonly original: Original }>;
/**
 * `reason`: `del` (moved back by DEL), `add-failed` (converged back), `netns-gone` (DEL after the pod's
 * namespace was gone), `gone` (the device is neither in the pod nor in the host).
 */
export type HostDeviceReleased = Event<'HostDeviceReleased', AttachmentRef & { readonly reason: 'del' | 'add-failed' | 'netns-gone' | 'gone' }>;
export type HostDeviceEvent = HostDeviceAttached | HostDeviceReleased;

export type HostDeviceCommand =
  | { readonly type: 'RecordAttachment'; readonly data: AttachmentRef & { readonly netns: string; readonly original: Original } }
  | { readonly type: 'ForgetAttachment'; readonly data: AttachmentRef & { readonly reason: HostDeviceReleased['data']['reason'] } };

export interface Attached {
  readonly containerId: string;
  readonly ifname: string;
  readonly netns: string;
  readonly original: Original;
  readonly since: string;
}

export interface HostDeviceState {
  /** By attachmentKey. */
  readonly attachments: Readonly<Record<string, Attached>>;
}

export const hostDeviceStream = (network: string): string => `host-device/${network}`;
/** Container IDs and interface names hold no '/' (core/cni/env.ts). */
export const attachmentKey = (containerId: string, ifname: string): string => `${containerId}/${ifname}`;

export const hostDeviceProjection: Projection<HostDeviceState, HostDeviceEvent> = {
  name: 'host-device@1',
  initialState: () => ({ attachments: {} }),
  evolve: (s, e) => {
    const k = attachmentKey(e.data.containerId, e.data.ifname);
    switch (e.type) {
      case 'HostDeviceAttached':
        return { attachments: { ...s.attachments, [k]: { containerId: e.data.containerId, ifname: e.data.ifname, netns: e.data.netns, original: e.data.original, since: e.time } } };
      case 'HostDeviceReleased': {
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

/**
 * The attachment holding a host device (by its original name or MAC), if any: the latest, since a pod that
 * went without a DEL leaves its record until the runtime's DEL comes.
 */
export const holderOf = (s: HostDeviceState, match: (o: Original) => boolean): Attached | undefined =>
  Object.values(s.attachments)
    .filter((a) => match(a.original))
    .sort((a, b) => (a.since < b.since ? 1 : a.since > b.since ? -1 : 0))[0];

export function decide(c: HostDeviceCommand, s: HostDeviceState): E.Either<CniError, readonly HostDeviceEvent[]> {
  const k = attachmentKey(c.data.containerId, c.data.ifname);
  switch (c.type) {
    case 'RecordAttachment':
      // Other records of the same device are left alone: one may be a concurrent ADD that wins the move (the
      // loser's move fails and it forgets its own record), another a pod gone without DEL (its DEL forgets it).
      return E.right([{ type: 'HostDeviceAttached', data: c.data }]);
    case 'ForgetAttachment':
      return E.right(s.attachments[k] ? [{ type: 'HostDeviceReleased', data: c.data }] : []);
    default: {
      const never: never = c;
      return never;
    }
  }
}
