// What the tuning plugin remembers between ADD and DEL, as a Decider over the event log (the reference writes
// a JSON file per attachment under its dataDir instead). One stream per network, `tuning/<network>`; the
// state holds, per (container, ifname), the namespace and the original values ADD recorded before changing
// anything. Commands: RecordOriginals (ADD, before it applies), ForgetOriginals (DEL once restored, or an
// ADD that failed and rolled back). Events: TuningApplied, TuningReverted.

import { originalsDecider, type OriginalsCommand, type OriginalsEvent, type OriginalsState } from '../cni/originals.ts';
import { mergeOriginals, type Originals } from './desired.ts';

export { attachmentKey } from '../cni/originals.ts';

/** `reason`: `del` (restored by DEL), `netns-gone` (DEL with nothing left to restore), `add-failed` (rolled back). */
type Reason = 'del' | 'netns-gone' | 'add-failed';
export type TuningEvent = OriginalsEvent<'TuningApplied', 'TuningReverted', Originals, Reason>;
export type TuningCommand = OriginalsCommand<'RecordOriginals', 'ForgetOriginals', Originals, Reason>;

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
