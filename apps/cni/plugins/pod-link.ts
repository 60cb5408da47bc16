// The CNI flow of a container interface made inside the pod's namespace from nothing (tap, dummy): parse,
// observe the pod and allocate at once, check what the kind needs there (tap: its bridge), compute the desired
// state, plan, apply, print; a failure after IPAM converges back to "not attached" and gives the address back.
// DEL is the plan with nothing desired; CHECK compares the desired state of prevResult with the kernel.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import { macFromBytes } from '../../../core/ip/mac.ts';
import type { KernelState, NsRef, Op, OwnershipScope } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { lowerLinkScope, type Addressing } from '../../../core/l2/attachment.ts';
import { applyIn, delegateIpam, liveNetns, netnsExists, noNetns, observeIn, removeIn, type KernelOf } from '../kit.ts';
import { toIpam, type Ctx, type Plugin } from '../plugin.ts';

interface PodLinkAttachment<C> {
  readonly conf: C;
  readonly ifname: string;
  readonly netns: string;
  readonly mac: string;
  /** undefined without an IPAM plugin. */
  readonly addressing?: Addressing;
}

/** What one kind of in-pod interface plugin supplies; the flow is the same for all. */
export interface PodLinkKind<C extends { readonly ipamType: string; readonly mac?: string }> {
  readonly type: string;
  readonly about: string;
  readonly parse: (conf: NetConf, args: CmdArgs) => E.Either<CniError, C>;
  /** What must already be in the pod (tap: the bridge), checked before anything is made. */
  readonly precondition?: (conf: C, seen: KernelState, netns: string) => CniError | undefined;
  readonly desired: (a: PodLinkAttachment<C>) => E.Either<CniError, { kernel: KernelState; scope: OwnershipScope; result: Result }>;
}

export function makePodLinkPlugin<C extends { readonly ipamType: string; readonly mac?: string }>(
  kind: PodLinkKind<C>,
  kernel: KernelOf,
): Plugin {
  const observe = (ctx: Ctx, namespaces: readonly NsRef[], scope: OwnershipScope): TE.TaskEither<CniError, KernelState> =>
    observeIn(kernel(ctx), { namespaces, scope });
  const apply = (ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> => applyIn(kernel(ctx), ops);
  /** "Not attached": the container interface gone (with everything on it). */
  const remove = (ctx: Ctx, netns: string | undefined, ifname: string): TE.TaskEither<CniError, void> =>
    netns ? removeIn(kernel(ctx), [netns], lowerLinkScope(ifname, netns)) : TE.right(undefined);

  function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
    const parsed = kind.parse(conf, args);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const c = parsed.right;
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const scope = lowerLinkScope(args.ifname, args.netns);
    const mac = c.mac ?? macFromBytes(ctx.randomBytes(6));
    const release =
      (err: CniError): TE.TaskEither<CniError, never> =>
      async () => {
        await delegateIpam(ctx, c, args, 'DEL')();
        return E.left(err);
      };
    const attach = (seen: KernelState, res: Result | undefined): TE.TaskEither<CniError, Result> => {
      if (seen.links.some((l) => l.ns === args.netns && l.name === args.ifname)) {
        return release(
          cniError(ErrCode.InterfaceExists, `container interface name provided (${args.ifname}) already exists in ${args.netns}`),
        );
      }
      const bad = kind.precondition?.(c, seen, args.netns);
      if (bad) return release(bad);
      const p = kind.desired({
        conf: c,
        ifname: args.ifname,
        netns: args.netns,
        mac,
        ...(res ? { addressing: { source: c.ipamType, result: res } } : {}),
      });
      if (E.isLeft(p)) return release(p.left);
      return pipe(
        apply(ctx, plan(p.right.kernel, seen, scope)),
        TE.map(() => p.right.result),
        TE.orElse((err) => async () => {
          await pipe(
            remove(ctx, args.netns, args.ifname),
            TE.chain(() => delegateIpam(ctx, c, args, 'DEL')),
          )();
          return E.left<CniError, Result>(err);
        }),
      );
    };
    return async () => {
      const [seen, res] = await Promise.all([observe(ctx, [args.netns], scope)(), delegateIpam(ctx, c, args, 'ADD')()]);
      if (E.isLeft(res)) return res;
      if (E.isLeft(seen)) return release(seen.left)();
      return attach(seen.right, res.right)();
    };
  }

  function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
    const parsed = kind.parse(conf, args);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    // DEL may come many times, and after the namespace is gone.
    const netns = liveNetns(args.netns);
    return pipe(
      remove(ctx, netns, args.ifname),
      TE.chain(() => TE.map(() => undefined)(delegateIpam(ctx, parsed.right, args, 'DEL'))),
    );
  }

  function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
    const parsed = kind.parse(conf, args);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const c = parsed.right;
    const raw = conf.raw['prevResult'];
    if (raw === undefined || raw === null) return TE.left(invalidConfig('prevResult: required for CHECK'));
    const prev = readResult(raw);
    if (E.isLeft(prev)) return TE.left(invalidConfig(`prevResult: ${prev.left}`));
    const result = prev.right;
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const cont = (result.interfaces ?? []).find((i) => i.name === args.ifname && i.sandbox === args.netns);
    if (!cont) return TE.left(invalidConfig(`prevResult.interfaces: expected "${args.ifname}" in ${args.netns}`));
    const scope = lowerLinkScope(args.ifname, args.netns);
    return pipe(
      delegateIpam(ctx, c, args, 'CHECK'),
      TE.chain(() => observe(ctx, [args.netns], scope)),
      TE.chainEitherK((seen) => {
        const own = seen.links.find((l) => l.ns === args.netns && l.name === args.ifname);
        // The MAC is prevResult's (else whatever is there: the drift then concerns the rest).
        const mac = cont.mac ?? c.mac ?? own?.mac ?? '';
        const addressing = c.ipamType === '' && !result.ips?.length ? undefined : { source: 'prevResult', result };
        const p = kind.desired({ conf: c, ifname: args.ifname, netns: args.netns, mac, ...(addressing ? { addressing } : {}) });
        if (E.isLeft(p)) return p;
        const wrong = drift({ ...p.right.kernel, sysctls: [] }, seen, scope);
        return wrong.length === 0
          ? E.right(undefined)
          : E.left(cniError(ErrCode.Drift, `${kind.type} attachment of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
      }),
    );
  }

  return {
    type: kind.type,
    versions: PLUGIN_VERSIONS,
    about: kind.about,
    add: cmdAdd,
    del: cmdDel,
    check: cmdCheck,
    gc: toIpam('GC'),
    status: toIpam('STATUS'),
  };
}
