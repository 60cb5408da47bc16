// The kernel port: observe what is there, apply ops. Implemented by the Linux adapter (adapters/kernel/linux.ts:
// iproute2, iptables, /proc/sys) and by the in-memory twin (adapters/memory/kernel.ts) used in core and plugin
// tests. Both read the same ObserveRequest the same way (adapters/kernel/request.ts).

import type * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { IptFamily, KernelState, NsRef, Op, OwnershipScope } from '../../core/kernel/model.ts';

export interface KernelError {
  readonly kind: 'kernel';
  /** Names the object and the namespace, e.g. `failed to add route 10.0.0.0/24 ... in /var/run/netns/x: ...`. */
  readonly msg: string;
  readonly details?: string;
}

export interface ObserveRequest {
  /** Namespaces to read links, addresses, routes and permanent neighbours from (one pass each). */
  readonly namespaces: readonly NsRef[];
  /**
   * Read links, addresses, routes and neighbours (one `ip -batch` per namespace); default true. False reads
   * only the other things asked for (e.g. one more iptables family): the links etc. are then left out, or
   * (the memory twin) may be returned anyway.
   */
  readonly ip?: boolean;
  /** What the caller owns; the observer may return more (plan ignores what is out of scope). */
  readonly scope?: OwnershipScope;
  /**
   * What the caller wants, when it knows already: the iptables chains and rules, sysctls, fdb entries and
   * qdiscs it names are read too, so that `plan(desired, observe(...))` sees everything it compares.
   */
  readonly desired?: KernelState;
  /**
   * iptables families to read (iptables-save / ip6tables-save, one call per family per namespace), in the
   * namespaces whose chains or rule markers the scope (or desired) names; with neither, in the host namespace.
   */
  readonly iptables?: readonly IptFamily[];
  /** Read the fdb (vxlan remote entries) too. The CNI path leaves it off: it costs a `bridge` process. */
  readonly fdb?: boolean;
  /** Read root/ingress qdiscs (tbf, ingress) too. */
  readonly qdiscs?: boolean;
  /** Sysctls to read. */
  readonly sysctls?: readonly { ns: NsRef; key: string }[];
  /**
   * Read the policy routing rules (IPv4 and IPv6) too, in every namespace read: `ip -json rule show` and
   * `ip -6 -json rule show`. Also read where `desired` has rules.
   */
  readonly ipRules?: boolean;
  /**
   * Also report routes the kernel made itself (`proto kernel`: the prefix route of an address, IPv6 fe80::/64),
   * which observers otherwise leave out because nobody manages them. The sbr plugin moves them.
   */
  readonly kernelRoutes?: boolean;
}

export interface Kernel {
  observe(req: ObserveRequest): TE.TaskEither<KernelError, KernelState>;
  apply(ops: readonly Op[]): TE.TaskEither<KernelError, void>;
  /**
   * Several callers' ops at once, each part with its own verdict, as if each part were applied alone: where
   * the parts make one `ip -force -batch` in one namespace, one process whose failed lines are told apart by
   * part; otherwise each part on its own. For parts that cannot fail one another (waves.ts sends only ops a
   * second application leaves as they are, and veth pairs made under names of their own).
   */
  applyParts?(parts: readonly (readonly Op[])[]): () => Promise<readonly E.Either<KernelError, void>[]>;
  /**
   * A namespace (a pod's) whose ip changes the caller will most likely apply soon: the adapter may start their
   * process now, so that its start is off the caller's way. The answer ends it when it was left unused: call
   * it once the caller's applies are over.
   */
  prestart?(ns: NsRef): () => void;
}
