// sbr: source-based routing for an interface another plugin made (a chained plugin). cmdAdd reads top to
// bottom: parse the config and prevResult, observe the pod namespace (with its policy rules and the kernel's
// own routes), compute the desired rules and tables from what is there (core/sbr/desired.ts), plan, apply,
// pass prevResult through; a change the kernel refuses is rolled back the same way. DEL and CHECK are the
// same machinery.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import type { KernelState, Op } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { addressesOf, parseSbrConf, prevResultOf, requireAddresses, type SbrConf } from '../../../core/sbr/config.ts';
import { sbrAdd, sbrDel, type SbrDesired } from '../../../core/sbr/desired.ts';
import { kernelFor } from '../kernel.ts';
import { applyIn, liveNetns, netnsExists, noNetns, observeIn } from '../kit.ts';
import type { Ctx, Plugin } from '../plugin.ts';

/** The pod namespace as sbr needs it: rules of both families and the routes the kernel made itself. */
const observe = (ctx: Ctx, netns: string): TE.TaskEither<CniError, KernelState> =>
  observeIn(kernelFor(ctx), { namespaces: [netns], ipRules: true, kernelRoutes: true });

const apply = (ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> => applyIn(kernelFor(ctx), ops);

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const sc = parseSbrConf(conf);
  if (E.isLeft(sc)) return TE.left(sc.left);
  const prev = prevResultOf(conf);
  if (E.isLeft(prev)) return TE.left(prev.left);
  const addresses = requireAddresses(prev.right, args.ifname);
  if (E.isLeft(addresses)) return TE.left(addresses.left);
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
  // A change the kernel refuses converges back to the namespace as it was observed, keeping the error.
  const rollback =
    (undo: SbrDesired['undo']) =>
    (err: CniError): TE.TaskEither<CniError, void> =>
    async () => {
      if (undo)
        await pipe(
          observe(ctx, args.netns),
          TE.chain((now) => apply(ctx, plan(undo.kernel, now, undo.scope))),
        )();
      return E.left(err);
    };
  return pipe(
    observe(ctx, args.netns),
    TE.chainEitherK((observed) =>
      pipe(
        sbrAdd({ conf: sc.right, netns: args.netns, ifname: args.ifname, addresses: addresses.right, observed }),
        E.map((d) => ({ d, ops: plan(d.kernel, observed, d.scope) })),
      ),
    ),
    TE.chain(({ d, ops }) => pipe(apply(ctx, ops), TE.orElse(rollback(d.undo)))),
    TE.map(() => prev.right),
  );
}

/** Observe, then plan and apply "no source-based routing for this interface" (DEL). */
function remove(ctx: Ctx, args: CmdArgs, conf: SbrConf, prev: Result | undefined): TE.TaskEither<CniError, void> {
  return pipe(
    observe(ctx, args.netns),
    TE.chain((observed) => {
      const d = sbrDel({
        conf,
        netns: args.netns,
        ifname: args.ifname,
        addresses: prev ? addressesOf(prev, args.ifname) : [],
        ...(prev ? { prevRoutes: prev.routes ?? [] } : {}),
        observed,
      });
      return apply(ctx, plan(d.kernel, observed, d.scope));
    }),
  );
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const sc = parseSbrConf(conf);
  if (E.isLeft(sc)) return TE.left(sc.left);
  // DEL may come without prevResult, or with one that no longer parses: the interface's own addresses still tell.
  const raw = conf.raw['prevResult'];
  const prev = raw === undefined || raw === null ? undefined : readResult(raw);
  const prevOk = prev && E.isRight(prev) ? prev.right : undefined;
  // Delete can be called many times, and after the namespace is gone: neither is an error.
  if (!liveNetns(args.netns)) return TE.right(undefined);
  return remove(ctx, args, sc.right, prevOk);
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const sc = parseSbrConf(conf);
  if (E.isLeft(sc)) return TE.left(sc.left);
  const prev = prevResultOf(conf);
  if (E.isLeft(prev)) return TE.left(prev.left);
  const addresses = requireAddresses(prev.right, args.ifname);
  if (E.isLeft(addresses)) return TE.left(addresses.left);
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
  return pipe(
    observe(ctx, args.netns),
    TE.chainEitherK((observed) =>
      pipe(
        sbrAdd({ conf: sc.right, netns: args.netns, ifname: args.ifname, addresses: addresses.right, observed }),
        E.chain((d) => {
          const wrong = drift(d.kernel, observed, d.scope);
          return wrong.length === 0
            ? E.right(undefined)
            : E.left(cniError(ErrCode.Drift, `source-based routing of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
        }),
      ),
    ),
  );
}

export const sbr: Plugin = {
  type: 'sbr',
  versions: PLUGIN_VERSIONS,
  about: 'felt sbr: source-based routing (a policy rule and a routing table per address) for a chained interface',
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
};
