// sbr: source-based routing for an interface another plugin made (a chained plugin). cmdAdd reads top to
// bottom: parse the config and prevResult, observe the pod namespace (with its policy rules and the kernel's
// own routes), compute the desired rules and tables from what is there (core/sbr/desired.ts), plan, apply,
// pass prevResult through. DEL and CHECK are the same machinery.

import { existsSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import type { KernelState, Op } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { addressesOf, parseSbrConf, prevResultOf, requireAddresses } from '../../../core/sbr/config.ts';
import { sbrAdd, sbrDel } from '../../../core/sbr/desired.ts';
import { kernelError, kernelFor } from '../kernel.ts';
import type { Ctx, Plugin } from '../plugin.ts';

const noNetns = (netns: string): CniError => cniError(ErrCode.InvalidEnvironment, `CNI_NETNS: failed to open netns "${netns}": no such file`);

/** The pod namespace as sbr needs it: rules of both families and the routes the kernel made itself. */
const observe = (ctx: Ctx, netns: string): TE.TaskEither<CniError, KernelState> =>
  pipe(kernelFor(ctx).observe({ namespaces: [netns], ipRules: true, kernelRoutes: true }), TE.mapLeft(kernelError));

const apply = (ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> =>
  ops.length === 0 ? TE.right(undefined) : pipe(kernelFor(ctx).apply(ops), TE.mapLeft(kernelError));

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const sc = parseSbrConf(conf);
  if (E.isLeft(sc)) return TE.left(sc.left);
  const prev = prevResultOf(conf);
  if (E.isLeft(prev)) return TE.left(prev.left);
  const addresses = requireAddresses(prev.right, args.ifname);
  if (E.isLeft(addresses)) return TE.left(addresses.left);
  if (!existsSync(args.netns)) return TE.left(noNetns(args.netns));
  return pipe(
    observe(ctx, args.netns),
    TE.chainEitherK((observed) =>
      pipe(
        sbrAdd({ conf: sc.right, netns: args.netns, ifname: args.ifname, addresses: addresses.right, observed }),
        E.map((d) => plan(d.kernel, observed, d.scope)),
      ),
    ),
    TE.chain((ops) => apply(ctx, ops)),
    TE.map(() => prev.right),
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
  if (args.netns === '' || !existsSync(args.netns)) return TE.right(undefined);
  return pipe(
    observe(ctx, args.netns),
    TE.chain((observed) => {
      const d = sbrDel({
        conf: sc.right,
        netns: args.netns,
        ifname: args.ifname,
        addresses: prevOk ? addressesOf(prevOk, args.ifname) : [],
        ...(prevOk ? { prevRoutes: prevOk.routes ?? [] } : {}),
        observed,
      });
      return apply(ctx, plan(d.kernel, observed, d.scope));
    }),
  );
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const sc = parseSbrConf(conf);
  if (E.isLeft(sc)) return TE.left(sc.left);
  const prev = prevResultOf(conf);
  if (E.isLeft(prev)) return TE.left(prev.left);
  const addresses = requireAddresses(prev.right, args.ifname);
  if (E.isLeft(addresses)) return TE.left(addresses.left);
  if (!existsSync(args.netns)) return TE.left(noNetns(args.netns));
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
