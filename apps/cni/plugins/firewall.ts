// firewall: a chained plugin that lets a container's traffic through the host's FORWARD chain (CNI-FORWARD,
// with CNI-ADMIN for the administrator's overrides) and optionally isolates bridges from each other
// (ingressPolicy same-bridge / isolated), with the reference plugin's chains and rules. It touches only the
// host's filter table: parse, observe, compute the desired rules, plan, apply, print prevResult.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, type CniError } from '../../../core/cni/errors.ts';
import type { Result } from '../../../core/cni/result.ts';
import { parseFirewallConf } from '../../../core/firewall/config.ts';
import { attachmentScope, firewallDesired, toPlan } from '../../../core/firewall/desired.ts';
import { emptyKernelState, HOST, type KernelState, type Op, type OwnershipScope } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { kernelError, kernelFor } from '../kernel.ts';
import type { Ctx, Plugin } from '../plugin.ts';

/** The reference accepts configs from 0.4.0 on (version.VersionsStartingFrom("0.4.0")). */
const FIREWALL_VERSIONS = ['0.4.0', '1.0.0', '1.1.0'] as const;

function observe(ctx: Ctx, desired: KernelState, scope: OwnershipScope): TE.TaskEither<CniError, KernelState> {
  return pipe(kernelFor(ctx).observe({ namespaces: [HOST], scope, desired, iptables: [4, 6] }), TE.mapLeft(kernelError));
}

function apply(ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> {
  return ops.length === 0 ? TE.right(undefined) : pipe(kernelFor(ctx).apply(ops), TE.mapLeft(kernelError));
}

/** "This attachment's rules do not exist": nothing desired over its scope (DEL, and a failed ADD). */
function removeRules(ctx: Ctx, scope: OwnershipScope): TE.TaskEither<CniError, void> {
  if (scope.ruleMarkers.length === 0) return TE.right(undefined);
  return pipe(
    observe(ctx, emptyKernelState(), scope),
    TE.chain((seen) => apply(ctx, plan(emptyKernelState(), seen, scope))),
  );
}

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const parsed = parseFirewallConf(conf, 'ADD');
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const fc = parsed.right;
  const want = firewallDesired(fc);
  const { kernel, scope } = want;
  const prev = fc.prevResult!;
  // Shared chains may be created by a concurrent ADD between our observation and our apply: the adapter
  // then runs the restore again without that -N. Any other failure converges back to "no rules of ours".
  return pipe(
    observe(ctx, kernel, scope),
    TE.chain((seen) => apply(ctx, plan(toPlan(want, seen), seen, scope))),
    TE.orElse((err) => async () => {
      await removeRules(ctx, scope)();
      return E.left<CniError, void>(err);
    }),
    TE.map(() => ({ ...prev, cniVersion: conf.cniVersion })),
  );
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parseFirewallConf(conf, 'DEL');
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  // Without prevResult there is nothing known to remove (the rules carry no container ID), as in the reference.
  return removeRules(ctx, attachmentScope(parsed.right.prevResult?.ips ?? []));
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parseFirewallConf(conf, 'CHECK');
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const want = firewallDesired(parsed.right);
  const { kernel, scope } = want;
  return pipe(
    observe(ctx, kernel, scope),
    TE.chainEitherK((seen) => {
      // A duplicated shared jump is not drift (see toPlan); a missing one is.
      const wrong = drift(toPlan(want, seen), seen, scope);
      return wrong.length === 0
        ? E.right(undefined)
        : E.left(cniError(ErrCode.Drift, `firewall rules of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
    }),
  );
}

export const firewall: Plugin = {
  type: 'firewall',
  versions: FIREWALL_VERSIONS,
  about: 'felt firewall: lets container traffic through the host FORWARD chain (CNI-FORWARD, CNI-ADMIN), optional bridge isolation',
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
};
