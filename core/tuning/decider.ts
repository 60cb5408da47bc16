// What the tuning plugin remembers between ADD and DEL, as a Decider over the event log (the reference writes
// a JSON file per attachment under its dataDir instead). One stream per network, `tuning/<network>`; the
// state holds, per (container, ifname), the namespace and the original values ADD recorded before changing
// anything. Commands: RecordOriginals (ADD, before it applies), ForgetOriginals (DEL once restored, or an
// ADD that failed and rolled back). Events: TuningApplied, TuningReverted.

import {
  originalsDecider,
  type ForgetData,
  type OriginalsCommand,
  type OriginalsData,
  type OriginalsEvent,
  type OriginalsState,
  type Remembered,
} from '../cni/originals.ts';
import type { Event } from '../events.ts';
import { mergeOriginals, type Originals } from './desired.ts';

export { attachmentKey, type AttachmentRef } from '../cni/originals.ts';

export type TuningApplied = Event<'TuningApplied', OriginalsData<Originals>>;
/** `reason`: `del` (restored by DEL), `netns-gone` (DEL with nothing left to restore), `add-failed` (rolled back). */
type Reason = 'del' | 'netns-gone' | 'add-failed';
export type TuningReverted = Event<'TuningReverted', ForgetData<Reason>>;
export type TuningEvent = OriginalsEvent<'TuningApplied', 'TuningReverted', Originals, Reason>;
export type TuningCommand = OriginalsCommand<'RecordOriginals', 'ForgetOriginals', Originals, Reason>;

/** `since`: the time of the first TuningApplied. */
export type Tuned = Remembered<Originals>;
export type TuningState = OriginalsState<Originals>;

export const tuningStream = (network: string): string => `tuning/${network}`;

// A repeated ADD keeps the first originals (the kernel now holds that ADD's values) and their time.
const decider = originalsDecider<'TuningApplied', 'TuningReverted', 'RecordOriginals', 'ForgetOriginals', Originals, Reason>({
  name: 'tuning@1',
  recorded: 'TuningApplied',
  forgotten: 'TuningReverted',
  record: 'RecordOriginals',
  forget: 'ForgetOriginals',
  keepFirst: mergeOriginals,
});

export const tuningProjection = decider.projection;
export const decide = decider.decide;
