// The kernel port: observe what is there, apply ops. Implemented by the Linux adapter (iproute2, iptables,
// /proc/sys) and by the in-memory twin (adapters/memory/kernel.ts) used in core tests.

import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { IptFamily, KernelState, NsRef, Op, OwnershipScope } from '../../core/kernel/model.ts';

export interface KernelError {
  readonly kind: 'kernel';
  /** Names the object and the namespace, e.g. `failed to add route 10.0.0.0/24 ... in /var/run/netns/x: ...`. */
  readonly msg: string;
  readonly details?: string;
}

export interface ObserveRequest {
  /** Namespaces to read links, addresses, routes and permanent neighbours from (one process each). */
  readonly namespaces: readonly NsRef[];
  /** What the caller owns; the observer may return more (plan ignores what is out of scope). */
  readonly scope?: OwnershipScope;
  /** iptables families to read (iptables-save), in every namespace that the scope's chains/markers name. */
  readonly iptables?: readonly IptFamily[];
  /** Read the bridge fdb (vxlan entries) too. */
  readonly fdb?: boolean;
  /** Sysctls to read. */
  readonly sysctls?: readonly { ns: NsRef; key: string }[];
}

export interface Kernel {
  observe(req: ObserveRequest): TE.TaskEither<KernelError, KernelState>;
  apply(ops: readonly Op[]): TE.TaskEither<KernelError, void>;
}
