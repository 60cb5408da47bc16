// feltd's observability hooks: the metrics the node services (node log, overlay reconciler, lease lifecycle)
// report through, declared once at start so that every series scrapes before anything happened. The services
// call these hooks and never name a metric themselves.

import type { Op } from '../../core/kernel/model.ts';
import type { NodeState } from '../../core/flannel/node.ts';
import { countByKind, OP_KINDS, type Metrics } from './observability.ts';

export interface FeltdHooks {
  /** Ops a pass applied (full passes also count into felt_full_pass_ops_total). */
  opsApplied(ops: readonly Op[], full: boolean): void;
  /** Objects a full pass found changed behind felt's back and repaired, of one kind. */
  driftRepaired(kind: string, n: number): void;
  /** A failed read or write of the event log or the lease store. */
  storeError(store: 'events' | 'leases'): void;
  /** Any other error (computing, observing or applying the dataplane). */
  error(): void;
  leaseRenewed(): void;
  leaseLost(): void;
  /** The lease gauges, from the node's state. */
  leaseGauges(state: NodeState): void;
  /** A finished reconcile pass. */
  reconcileObserved(kind: 'full' | 'delta', seconds: number): void;
}

const OPS = ['felt_ops_applied_total', 'Kernel ops applied, by the kind of object they change'] as const;
const DRIFT = [
  'felt_drift_repaired_total',
  "Kernel objects a full resync found changed behind felt's back and repaired (drift), by object kind",
] as const;
const FULL_OPS = [
  'felt_full_pass_ops_total',
  'Kernel ops applied by full passes (drift repairs, and lease changes a full pass took up)',
] as const;
const STORE_ERRORS = [
  'felt_store_errors_total',
  'Failed reads and writes of the event log (store="events") and the lease store (store="leases")',
] as const;
const ERRORS = [
  'felt_errors_total',
  'Errors of any kind other than store errors (computing, observing or applying the dataplane)',
] as const;
const RENEWALS = ['felt_lease_renewals_total', 'Own lease acquisitions and renewals'] as const;
const LOST = ['felt_lease_lost_total', 'Own lease losses (expired, revoked, taken)'] as const;

export function feltdHooks(metrics: Metrics): FeltdHooks {
  for (const kind of OP_KINDS) {
    metrics.counter(OPS[0], OPS[1], 0, { kind });
    metrics.counter(DRIFT[0], DRIFT[1], 0, { kind });
  }
  for (const store of ['events', 'leases']) metrics.counter(STORE_ERRORS[0], STORE_ERRORS[1], 0, { store });
  metrics.counter(ERRORS[0], ERRORS[1], 0);
  metrics.counter(FULL_OPS[0], FULL_OPS[1], 0);
  metrics.counter(RENEWALS[0], RENEWALS[1], 0);
  metrics.counter(LOST[0], LOST[1], 0);
  return {
    opsApplied: (ops, full) => {
      if (full) metrics.counter(FULL_OPS[0], FULL_OPS[1], ops.length);
      for (const [kind, n] of countByKind(ops)) metrics.counter(OPS[0], OPS[1], n, { kind });
    },
    driftRepaired: (kind, n) => metrics.counter(DRIFT[0], DRIFT[1], n, { kind }),
    storeError: (store) => metrics.counter(STORE_ERRORS[0], STORE_ERRORS[1], 1, { store }),
    error: () => metrics.counter(ERRORS[0], ERRORS[1]),
    leaseRenewed: () => metrics.counter(RENEWALS[0], RENEWALS[1]),
    leaseLost: () => metrics.counter(LOST[0], LOST[1]),
    leaseGauges: (state) => {
      metrics.gauge(
        'felt_leases',
        "Subnet leases known: this node's own plus every remote one",
        Object.keys(state.remotes).length + (state.ownLease ? 1 : 0),
      );
      const exp = state.ownLease ? Date.parse(state.ownLease.expiration) / 1000 : 0;
      metrics.gauge(
        'felt_lease_expiry_timestamp_seconds',
        "When this node's own lease expires (unix seconds; 0: no lease)",
        Number.isFinite(exp) ? exp : 0,
      );
    },
    reconcileObserved: (kind, seconds) => metrics.observeReconcile(kind, seconds),
  };
}
