// The plugin kit: what every CNI plugin module (apps/cni/plugins/*) takes its effects from, so that each is
// written once. A plugin declares none of these itself (test/apps/plugin-kit.test.ts checks it):
//
//  - the kernel: a `KernelOf` (the call's Linux kernel, `kernelFor` in ./kernel.ts, unless a test passes its
//    twin), read and changed through `observeIn`/`applyIn`, which map its errors to CNI errors (code 11,
//    `kernelError`; `refusedAt` names the step, as the Windows plugins do for HNS);
//  - CNI_NETNS checks: `netnsExists` and the error ADD/CHECK answer when it does not (`noNetns`), `liveNetns`
//    for DEL (an empty or vanished path: nothing to do there);
//  - the event store of a dataDir: `StoreAccess` (open it, ask whether it exists), `callStore` (the call's
//    stores, ctx.stores), and `withStore`, one use of it;
//  - the IPAM delegate of an interface plugin (`delegateIpam`: none configured, nothing to do), and the
//    removal of an attachment's interface (`removeIn`: its scope with nothing desired).
//
// A plugin's deps interface (the effects its tests swap) extends `PluginDeps` or a part of it.
//
// The Linux binding (`kernelFor`, and `callDeps` with it) is in ./kernel.ts, not here: a plugin that never
// touches the kernel (host-local, static, win-bridge, win-overlay) then does not bundle the Linux adapter.

import { existsSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { Kernel, KernelError, ObserveRequest } from '../../adapters/kernel/types.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import type { CmdArgs } from '../../core/cni/env.ts';
import { cniError, ErrCode, type CniError } from '../../core/cni/errors.ts';
import type { Result } from '../../core/cni/result.ts';
import { emptyKernelState, type KernelState, type NsRef, type Op, type OwnershipScope } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';
import type { Ctx } from './plugin.ts';
import { batched } from './store.ts';

// ------------------------------------------------------------------------------------- the kernel

/** How a plugin gets the kernel of a call: `kernelFor` (Linux, the call's host namespace), or a test's twin. */
export type KernelOf = (ctx: Ctx) => Kernel;

/** What the kernel refused, as a CNI error (code 11). */
export const kernelError = (e: KernelError): CniError => cniError(ErrCode.Kernel, e.msg, e.details);

/** Observe, with the kernel's errors as CNI errors. */
export const observeIn = (kernel: Kernel, req: ObserveRequest): TE.TaskEither<CniError, KernelState> =>
  pipe(kernel.observe(req), TE.mapLeft(kernelError));

/** Apply a plan (nothing to run for an empty one), with the kernel's errors as CNI errors. */
export const applyIn = (kernel: Kernel, ops: readonly Op[]): TE.TaskEither<CniError, void> =>
  ops.length === 0 ? TE.right(undefined) : pipe(kernel.apply(ops), TE.mapLeft(kernelError));

/** A step the host's networking (the kernel; HNS on Windows) refused, as a CNI error (code 11) naming the step. */
export const refusedAt =
  (what: string) =>
  (e: { readonly msg: string; readonly details?: string }): CniError =>
    cniError(ErrCode.Kernel, `${what}: ${e.msg}`, e.details);

// ------------------------------------------------------------------------------------- CNI_NETNS

/** ADD and CHECK of a CNI_NETNS that is not there: the reference's ns.GetNS error. */
export const noNetns = (netns: string): CniError =>
  cniError(ErrCode.InvalidEnvironment, `CNI_NETNS: failed to open netns "${netns}": no such file`);

/** Whether the namespace CNI_NETNS names is there. */
export const netnsExists = (netns: string): boolean => existsSync(netns);

/** nsfs's magic number (statfs f_type of a namespace file, bind-mounted or under /proc/<pid>/ns). */
const NSFS_MAGIC = 0x6e736673;

/**
 * CNI_NETNS names a namespace file (not some other file), checked without a process; undefined when it does.
 * A plugin that changes the pod's namespace from the host's (a veth pair made into it) asks before anything.
 */
export function notANetns(netns: string): CniError | undefined {
  try {
    if (statfsSync(netns).type === NSFS_MAGIC) return undefined;
  } catch {
    return noNetns(netns);
  }
  return cniError(ErrCode.InvalidEnvironment, `CNI_NETNS: "${netns}" is not a network namespace`);
}

/** DEL's namespace: CNI_NETNS when it is given and still there, else undefined (nothing to clean in it). */
export const liveNetns = (netns: string): string | undefined => (netns !== '' && netnsExists(netns) ? netns : undefined);

// ------------------------------------------------------------------------------------- the event store

/** Open the event store under `dataDir` for this call. */
type OpenStore = (dataDir: string, ctx: Ctx) => Promise<E.Either<CniError, EventStore>>;

export interface StoreAccess {
  /** Open the event store under `dataDir` (the call's: `ctx.stores`). */
  readonly openStore: OpenStore;
  /** Whether a store exists under `dataDir` (DEL, CHECK and GC of a never-used dataDir create nothing). */
  readonly storeExists: (dataDir: string) => boolean;
}

/** The call's stores (apps/cni/store.ts): `<dataDir>/felt.db`. */
export const callStore: StoreAccess = {
  openStore: (dataDir, ctx) => ctx.stores.open(dataDir),
  storeExists: (dataDir) => existsSync(join(dataDir, 'felt.db')),
};

/** `t`; when it fails, `cleanup` runs (its own outcome aside) and the failure stands. */
export const cleaningUp =
  (cleanup: () => Promise<unknown>) =>
  <A>(t: TE.TaskEither<CniError, A>): TE.TaskEither<CniError, A> =>
    pipe(
      t,
      TE.orElse((err) =>
        pipe(
          TE.fromTask(cleanup),
          TE.chain(() => TE.left<CniError, A>(err)),
        ),
      ),
    );

/**
 * One use of the store under `dataDir`: opened, `f`, closed (the handle's close leaves that to the call's scope).
 * `batch`: `f` is a decision that may be group-committed with those of the calls running at once (feltd's waves,
 * apps/cni/store.ts `batched`); in a plugin process it runs at once, as without.
 */
export const withStore =
  <A>(
    access: Pick<StoreAccess, 'openStore'>,
    ctx: Ctx,
    dataDir: string,
    f: (s: EventStore) => E.Either<CniError, A>,
    batch = false,
  ): TE.TaskEither<CniError, A> =>
  async () => {
    const opened = await access.openStore(dataDir, ctx);
    if (E.isLeft(opened)) return opened;
    try {
      return batch ? await batched(opened.right, f) : f(opened.right);
    } finally {
      opened.right.close();
    }
  };

// ------------------------------------------------------------------------------------- deps

/** The effects a plugin's tests swap: the kernel and the store. A plugin's own deps extend these. */
export interface PluginDeps extends StoreAccess {
  readonly kernel: KernelOf;
}

// ------------------------------------------------------------------------------------- IPAM

/** Run the config's IPAM plugin (`ipamType`; '' when there is none: nothing to do). */
export const delegateIpam = (
  ctx: Ctx,
  { ipamType }: { readonly ipamType: string },
  args: CmdArgs,
  command: 'ADD' | 'DEL' | 'CHECK',
): TE.TaskEither<CniError, Result | undefined> =>
  ipamType === '' ? TE.right(undefined) : ctx.delegate(ipamType, command, args.stdin, args);

/** "Not attached": nothing desired over an attachment's scope in `namespaces` (what is there and in it goes). */
export const removeIn = (kernel: Kernel, namespaces: readonly NsRef[], scope: OwnershipScope): TE.TaskEither<CniError, void> =>
  pipe(
    observeIn(kernel, { namespaces, scope }),
    TE.chain((seen) => applyIn(kernel, plan(emptyKernelState(), seen, scope))),
  );
