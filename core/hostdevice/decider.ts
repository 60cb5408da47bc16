// What host-device remembers between ADD and DEL, as a Decider over felt's event log: per (container,
// ifname), the pod namespace and the device's original name, MAC, MTU, up state and alias, recorded before
// ADD moves it. The kernel keeps only the name (as the alias); moving a device sets it down. One stream per
// network, `host-device/<network>`. Commands: RecordAttachment (ADD, before it changes anything),
// ForgetAttachment (DEL once the device is back, or an ADD that failed and converged back). Events:
// HostDeviceAttached, HostDeviceReleased.

import { originalsDecider, type OriginalsCommand, type OriginalsEvent, type OriginalsState, type Remembered } from '../cni/originals.ts';
import type { Original } from './desired.ts';

export { attachmentKey } from '../cni/originals.ts';

/**
 * `reason`: `del` (moved back by DEL), `add-failed` (converged back), `netns-gone` (DEL after the pod's
 * namespace was gone), `gone` (the device is neither in the pod nor in the host).
 */
type Reason = 'del' | 'add-failed' | 'netns-gone' | 'gone';
export type HostDeviceEvent = OriginalsEvent<'HostDeviceAttached', 'HostDeviceReleased', Original, Reason>;
export type HostDeviceCommand = OriginalsCommand<'RecordAttachment', 'ForgetAttachment', Original, Reason>;

export type Attached = Remembered<Original>;
export type HostDeviceState = OriginalsState<Original>;

export const hostDeviceStream = (network: string): string => `host-device/${network}`;

// Every ADD records anew (its own time): other records of the same device are left alone, as one may be a
// concurrent ADD that wins the move (the loser's move fails and it forgets its own record), another a pod gone
// without DEL (its DEL forgets it).
const decider = originalsDecider<'HostDeviceAttached', 'HostDeviceReleased', 'RecordAttachment', 'ForgetAttachment', Original, Reason>({
  name: 'host-device@1',
  recorded: 'HostDeviceAttached',
  forgotten: 'HostDeviceReleased',
  record: 'RecordAttachment',
  forget: 'ForgetAttachment',
});

export const hostDeviceProjection = decider.projection;
export const decide = decider.decide;

/**
 * The attachment holding a host device (by its original name or MAC), if any: the latest, since a pod that
 * went without a DEL leaves its record until the runtime's DEL comes.
 */
export const holderOf = (s: HostDeviceState, match: (o: Original) => boolean): Attached | undefined =>
  Object.values(s.attachments)
    .filter((a) => match(a.original))
    .sort((a, b) => (a.since < b.since ? 1 : a.since > b.since ? -1 : 0))[0];
