// What feltd keeps of its last reconcile pass in `<state-dir>/reconcile.json`, for `felt status` and
// `felt plan`: when it ran, full or delta, how long it took, how many kernel ops it applied, and the running
// totals; with the node parameters the overlay was computed with (the underlay, the VtepMAC, --ip-masq) and
// the lease renew margin, which are flags and kernel facts the event log does not hold. Pure: the daemon
// passes in the time and writes the file.

import type { OverlayNode } from '../flannel/desired.ts';

export const RECONCILE_FILE = 'reconcile.json';

export interface ReconcileRecord {
  /** ISO time the pass ended. */
  readonly time: string;
  readonly kind: 'full' | 'delta';
  readonly durationMs: number;
  /** Kernel ops the pass applied. */
  readonly ops: number;
  /** Objects this pass repaired because they had drifted from what felt last applied; 0 for a delta pass. */
  readonly driftRepaired: number;
  /** Passes since feltd started, and the drift repaired by all of them. */
  readonly passes: number;
  readonly totalDriftRepaired: number;
  /** feltd's --subnet-lease-renew-margin, in minutes. */
  readonly renewMarginMinutes: number;
  /** The node parameters of the overlay (core/flannel/desired.ts OverlayNode). */
  readonly node: OverlayNode;
  /** The network namespace feltd runs in, as the kernel names it (`net:[4026531840]`), when it could tell. */
  readonly hostNs?: string;
}

export interface Pass {
  readonly time: string;
  readonly kind: 'full' | 'delta';
  readonly durationMs: number;
  readonly ops: number;
  /**
   * Objects the pass found changed behind felt's back and repaired (feltd counts them against the state it last
   * applied, as felt_drift_repaired_total does); when absent, a full pass's ops.
   */
  readonly drift?: number;
}

export function nextReconcile(
  prev: ReconcileRecord | undefined,
  pass: Pass,
  node: OverlayNode,
  renewMarginMinutes: number,
  hostNs?: string,
): ReconcileRecord {
  const drift = pass.drift ?? (pass.kind === 'full' ? pass.ops : 0);
  return {
    time: pass.time,
    kind: pass.kind,
    durationMs: Math.round(pass.durationMs * 10) / 10,
    ops: pass.ops,
    driftRepaired: drift,
    passes: (prev?.passes ?? 0) + 1,
    totalDriftRepaired: (prev?.totalDriftRepaired ?? 0) + drift,
    renewMarginMinutes,
    node,
    ...(hostNs ? { hostNs } : {}),
  };
}

/** reconcile.json as read back; undefined when it is not one (a partial or foreign file). */
export function parseReconcile(text: string): ReconcileRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  const o = typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  if (!o) return undefined;
  const nums = ['durationMs', 'ops', 'driftRepaired', 'passes', 'totalDriftRepaired', 'renewMarginMinutes'];
  if (typeof o['time'] !== 'string' || (o['kind'] !== 'full' && o['kind'] !== 'delta') || nums.some((k) => typeof o[k] !== 'number'))
    return undefined;
  return v as ReconcileRecord;
}
