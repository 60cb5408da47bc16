// vrf: a chained plugin putting the container interface into a VRF device in the pod (core/vrf/desired.ts).
// cmdAdd: parse, observe the pod, compute the desired state (the VRF, the interface in it, its routes in the
// VRF's table), plan, apply, print prevResult; an apply that fails converges back to what the pod had.
// cmdDel: the interface out, its routes back in the main table, the VRF gone when it is empty.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import type { KernelState, Op, OwnershipScope } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { parseVrfConf, vrfAddState, vrfCheckState, vrfDelState, vrfRollbackState, vrfScope } from '../../../core/vrf/desired.ts';
import { kernelFor } from '../kernel.ts';
import { applyIn, liveNetns, netnsExists, noNetns, observeIn, type KernelOf } from '../kit.ts';
import type { Ctx, Plugin } from '../plugin.ts';

function prevResultOf(conf: NetConf): E.Either<CniError, Result> {
  const raw = conf.raw['prevResult'];
  if (raw === undefined || raw === null)
    return E.left(invalidConfig('prevResult: missing; vrf must be called as a chained plugin, after the one that made the interface'));
  const r = readResult(raw);
  return E.isLeft(r) ? E.left(invalidConfig(`prevResult: ${r.left}`)) : r;
}

/** The plugin on a kernel of the caller's choosing (tests pass the memory twin). */
export function makeVrf(kernel: KernelOf = kernelFor): Plugin {
  const observe = (ctx: Ctx, netns: string, scope: OwnershipScope): TE.TaskEither<CniError, KernelState> =>
    observeIn(kernel(ctx), { namespaces: [netns], scope });
  const apply = (ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> => applyIn(kernel(ctx), ops);

  function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
    const parsed = parseVrfConf(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const prev = prevResultOf(conf);
    if (E.isLeft(prev)) return TE.left(prev.left);
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const c = parsed.right;
    const scope = vrfScope(c.vrfname, args.ifname, args.netns);
    return pipe(
      observe(ctx, args.netns, scope),
      TE.chain((seen) => {
        const a = { conf: c, ifname: args.ifname, netns: args.netns, seen };
        const want = vrfAddState(a);
        if (E.isLeft(want)) return TE.left(want.left);
        return pipe(
          apply(ctx, plan(want.right.kernel, seen, want.right.scope)),
          TE.orElse((err) => async () => {
            const back = vrfRollbackState(a);
            await pipe(
              observe(ctx, args.netns, back.scope),
              TE.chain((now) => apply(ctx, plan(back.kernel, now, back.scope))),
            )();
            return E.left<CniError, void>(err);
          }),
        );
      }),
      TE.map(() => ({ ...prev.right, cniVersion: c.cniVersion })),
    );
  }

  function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
    const parsed = parseVrfConf(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    // DEL may come many times, and after the namespace is gone.
    if (!liveNetns(args.netns)) return TE.right(undefined);
    const c = parsed.right;
    return pipe(
      observe(ctx, args.netns, vrfScope(c.vrfname, args.ifname, args.netns)),
      TE.chain((seen) => {
        const want = vrfDelState({ conf: c, ifname: args.ifname, netns: args.netns, seen });
        if (E.isLeft(want)) return TE.left(want.left);
        return want.right ? apply(ctx, plan(want.right.kernel, seen, want.right.scope)) : TE.right(undefined);
      }),
    );
  }

  function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
    const parsed = parseVrfConf(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const prev = prevResultOf(conf);
    if (E.isLeft(prev)) return TE.left(prev.left);
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const c = parsed.right;
    return pipe(
      observe(ctx, args.netns, vrfScope(c.vrfname, args.ifname, args.netns)),
      TE.chainEitherK((seen) => {
        const want = vrfCheckState({ conf: c, ifname: args.ifname, netns: args.netns, seen });
        if (E.isLeft(want)) return want;
        const wrong = drift(want.right.kernel, seen, want.right.scope);
        return wrong.length === 0
          ? E.right(undefined)
          : E.left(cniError(ErrCode.Drift, `vrf attachment of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
      }),
    );
  }

  return {
    type: 'vrf',
    // As the reference: from 0.3.1.
    versions: PLUGIN_VERSIONS.filter((v) => v !== '0.3.0'),
    about: 'felt vrf: puts the container interface into a VRF',
    add: cmdAdd,
    del: cmdDel,
    check: cmdCheck,
    gc: () => TE.right(undefined),
    status: () => TE.right(undefined),
  };
}

export const vrf: Plugin = makeVrf();
