// What a plugin module hands to the dispatcher: a table of command functions (as the reference plugins'
// skel.CNIFuncs). The dispatcher owns env parsing, version negotiation, result conversion and error JSON;
// a plugin owns only its behaviour.

import * as TE from 'fp-ts/lib/TaskEither.js';
import type { CmdArgs, Command, NetConf } from '../../core/cni/env.ts';
import type { CniError } from '../../core/cni/errors.ts';
import type { Result } from '../../core/cni/result.ts';
import type { CallStores } from './store.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';

/** Effects a plugin may use, passed in so the plugin code stays testable. */
export interface Ctx {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly now: () => Date;
  readonly randomBytes: (n: number) => Uint8Array;
  /** PID of this process: names the host network namespace to `ip ... netns <pid>`. */
  readonly pid: number;
  /**
   * Where the host network namespace is when it is not this process's: feltd serving a call from a runtime in
   * another namespace sets it to the caller's `/proc/<pid>/ns/net` (valid while the caller waits). Every
   * reach into the host namespace (the kernel adapter, foreign delegates, the namespace recorded) uses it.
   * Unset: this process's own namespace, as an executable.
   */
  readonly hostNetns?: string;
  /**
   * The kernel of this call's host namespace, when it is shared with other calls (feltd: a wave kernel,
   * adapters/kernel/waves.ts, per host namespace). Unset: the Linux adapter, this call's own.
   */
  readonly kernel?: Kernel;
  /**
   * A check of what this call made that may wait (feltd): it runs once no CNI call has been in flight for a
   * moment, or before the next call on the same attachment; a DEL of that attachment by the same plugin type
   * drops it (the DEL reads and removes all of the attachment). A failure is logged. Unset (a plugin run once): nothing may wait, and the
   * plugin reads before it writes.
   */
  readonly settle?: (check: TE.TaskEither<CniError, void>) => void;
  /** The event stores of this call (apps/cni/store.ts): per call in an executable, warm in feltd. */
  readonly stores: CallStores;
  /**
   * Run another plugin (an IPAM plugin, or bridge from flannel) with `stdin` as its config. Plugins felt
   * bundles and that CNI_PATH resolves to felt's own executables run in-process; others are executed.
   * ADD/CHECK/DEL semantics as in libcni's invoke.DelegateAdd/Check/Del. Returns the delegate's result
   * (ADD), or undefined.
   */
  readonly delegate: (
    type: string,
    command: Extract<Command, 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS'>,
    stdin: string,
    args: CmdArgs,
  ) => TE.TaskEither<CniError, Result | undefined>;
}

export type CmdFn<T> = (args: CmdArgs, conf: NetConf, ctx: Ctx) => TE.TaskEither<CniError, T>;

export interface Plugin {
  readonly type: string;
  /** Config versions this plugin accepts. */
  readonly versions: readonly string[];
  readonly about: string;
  readonly add: CmdFn<Result>;
  readonly del: CmdFn<void>;
  readonly check: CmdFn<void>;
  readonly gc?: CmdFn<void>;
  readonly status?: CmdFn<void>;
}

/**
 * GC or STATUS of an interface plugin: they concern the addresses, so they go to the config's IPAM plugin, as
 * the reference plugins do (nothing to do without one).
 */
export const toIpam =
  (command: 'GC' | 'STATUS'): CmdFn<void> =>
  (args, conf, ctx) => {
    const t = (conf.raw['ipam'] as { type?: unknown } | undefined)?.type;
    return typeof t === 'string' && t !== '' ? TE.map(() => undefined)(ctx.delegate(t, command, args.stdin, args)) : TE.right(undefined);
  };

/**
 * IPAM plugins that talk on the container interface (dhcp), so the interface must exist before they run and
 * until they are done. Every other one runs while the kernel is read, and fails before anything is made.
 */
export const NEEDS_INTERFACE: ReadonlySet<string> = new Set(['dhcp']);
