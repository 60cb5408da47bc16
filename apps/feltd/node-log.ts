// The node's event log: every change the node sees (config, lease snapshots and events, its own lease) goes
// through its Decider and into the log; `state()` is the NodeState evolved from it (a cache, for desired()),
// `recent()` the last events for the status page. Shared by the overlay reconciler and the lease lifecycle.

import * as E from 'fp-ts/lib/Either.js';
import type { EventStore } from '../../adapters/store/types.ts';
import { decideNodeIn, nodeProjection, nodeStream, type NodeCommand, type NodeEvent, type NodeState } from '../../core/flannel/node.ts';
import { cniError, ErrCode } from '../../core/cni/errors.ts';
import { fold, type StoredEvent } from '../../core/events.ts';
import type { FeltdHooks } from './hooks.ts';
import type { Logger } from './observability.ts';

export interface NodeLog {
  /** The node's state as of the last event recorded (or read). */
  state(): NodeState;
  /** The node's last events, for the status page. */
  recent(): readonly StoredEvent[];
  /** Decide a command against the log and append its events; [] when the write failed (logged and counted). */
  record(cmd: Omit<NodeCommand, 'metadata'>): NodeEvent[];
}

export interface NodeLogDeps {
  readonly publicIP: string;
  readonly events: EventStore;
  readonly log: Logger;
  readonly hooks: FeltdHooks;
}

const now = (): string => new Date().toISOString();

/** The node's last lease events, for the status page. */
const RECENT = 20;

export function openNodeLog(deps: NodeLogDeps): NodeLog {
  const { events, log, hooks } = deps;
  const stream = nodeStream(deps.publicIP);
  let state: NodeState = nodeProjection.initialState();
  let recent: StoredEvent[] = [];

  // Every change the node sees goes through its Decider and into its event log.
  const record = (cmd: Omit<NodeCommand, 'metadata'>): NodeEvent[] => {
    const time = now();
    const command = { ...cmd, metadata: { time } } as NodeCommand;
    const t0 = performance.now();
    // Over the table's view: the transaction reads the remote leases the command names and writes the rows its
    // events change, never all 10,000; `state` (the whole NodeState, for desired()) is a cache evolved here.
    const r = events.transactRows(
      stream,
      nodeProjection,
      (v) => E.mapLeft((msg: string) => cniError(ErrCode.Internal, msg))(decideNodeIn(command, v)),
      {
        time,
      },
    );
    log.debug('recorded', { command: cmd.type, ms: Math.round(performance.now() - t0) });
    if (E.isLeft(r)) {
      log.error('event log write failed', { error: r.left.msg });
      hooks.storeError('events');
      return [];
    }
    if (r.right.replayed.length) {
      // Someone else wrote this stream (or its table was rebuilt): read the whole state again.
      const again = events.load(stream, nodeProjection);
      if (E.isRight(again)) state = again.right.state;
    } else if (r.right.events.length) state = fold(nodeProjection, r.right.events, state);
    if (r.right.events.length) recent = [...recent, ...(r.right.events as readonly StoredEvent[])].slice(-RECENT);
    hooks.leaseGauges(state);
    for (const e of r.right.events) log.info(e.type, e.data as Record<string, unknown>);
    return r.right.events.map((e) => ({ type: e.type, data: e.data }) as NodeEvent);
  };

  const loaded = events.load(stream, nodeProjection);
  if (E.isRight(loaded)) state = loaded.right.state;
  else hooks.storeError('events');
  // The last events before this start, for the status page. Positions are global (the CNI plugins' events
  // share the log), so look back in growing windows rather than reading the node's whole history.
  if (E.isRight(loaded) && loaded.right.position > 0) {
    const end = loaded.right.position;
    for (let window = 1000; ; window *= 4) {
      const before = events.read({ stream, fromPosition: Math.max(0, end - window) });
      if (E.isLeft(before)) break;
      recent = before.right.slice(-RECENT);
      if (recent.length >= RECENT || end - window <= 0) break;
    }
  }

  return { state: () => state, recent: () => recent, record };
}
