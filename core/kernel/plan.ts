// The kernel plan, as one import: plan(desired, observed, scope) (diff.ts: the link step and one keyed delta,
// delta.ts, per object kind, kinds.ts), the apply order (order.ts), and ops and drift in words (words.ts,
// drift.ts). plan(d, d, s) = [].

export { plan } from './diff.ts';
export { order, PHASE } from './order.ts';
export { describeOp, describeRoute, diffSummary } from './words.ts';
export { drift } from './drift.ts';
