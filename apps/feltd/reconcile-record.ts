// feltd's reconcile.json (core/audit/reconcile.ts): after every pass, the pass and the running totals, written
// atomically (tmp file + rename) so `felt status` never reads half a file. A write that fails is logged (once until a
// write succeeds again) and never stops the daemon.

import { readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { OverlayNode } from '../../core/flannel/desired.ts';
import { nextReconcile, RECONCILE_FILE, type ReconcileRecord } from '../../core/audit/reconcile.ts';
import type { Logger } from './observability.ts';

export function reconcileRecorder(
  stateDir: string,
  node: OverlayNode,
  renewMarginMinutes: number,
  writeAtomic: (path: string, text: string) => void,
  log: Logger,
): (kind: 'full' | 'delta', durationMs: number, ops: number, drift: number) => void {
  const path = join(stateDir, RECONCILE_FILE);
  let last: ReconcileRecord | undefined;
  let hostNs: string | undefined;
  let failing = false;
  try {
    hostNs = readlinkSync('/proc/self/ns/net');
  } catch {
    hostNs = undefined;
  }
  return (kind, durationMs, ops, drift) => {
    last = nextReconcile(last, { time: new Date().toISOString(), kind, durationMs, ops, drift }, node, renewMarginMinutes, hostNs);
    try {
      writeAtomic(path, JSON.stringify(last, null, 2) + '\n');
      failing = false;
    } catch (e) {
      // Once per run of failures, not once per pass.
      if (!failing) log.error('cannot write reconcile.json', { path, error: (e as Error).message });
      failing = true;
    }
  };
}
