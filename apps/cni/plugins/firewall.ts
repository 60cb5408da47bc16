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
import { parseFirewallConf, type FirewallConf } from '../../../core/firewall/config.ts';
import { attachmentScope, firewallDesired, hostPrefixes, toPlan } from '../../../core/firewall/desired.ts';
import {
  decide,
  firewallProjection,
  firewallStream,
  parseFirewallDataDir,
  recordedPrefixes,
  type FirewallCommand,
  type FirewallState,
} from '../../../core/firewall/records.ts';
import { emptyKernelState, HOST, type KernelState, type Op, type OwnershipScope } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { kernelFor } from '../kernel.ts';
import { applyIn, callStore, kernelError, withStore } from '../kit.ts';
import { resolveBackend } from '../netfilter.ts';
import { ownBackendOnly } from '../../../core/netfilter/masquerade.ts';
import type { NetfilterBackend } from '../../../core/netfilter/backend.ts';
import type { Ctx, Plugin } from '../plugin.ts';

/** The reference accepts configs from 0.4.0 on (version.VersionsStartingFrom("0.4.0")). */
const FIREWALL_VERSIONS = ['0.4.0', '1.0.0', '1.1.0'] as const;

/** The host's filter table (or nftables) as far as `scope` and `desired` name it; never the links (`ip: false`). */
function observe(ctx: Ctx, desired: KernelState, scope: OwnershipScope): TE.TaskEither<CniError, KernelState> {
  return pipe(kernelFor(ctx).observe({ namespaces: [HOST], ip: false, scope, desired, iptables: [4, 6] }), TE.mapLeft(kernelError));
}

function apply(ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> {
  return applyIn(kernelFor(ctx), ops);
}

/** "This attachment's rules do not exist": nothing desired over its scope (DEL, and a failed ADD). */
function removeRules(ctx: Ctx, scope: OwnershipScope): TE.TaskEither<CniError, void> {
  if (scope.ruleMarkers.length === 0) return TE.right(undefined);
  return pipe(
    observe(ctx, emptyKernelState(), scope),
    TE.chain((seen) => apply(ctx, plan(emptyKernelState(), seen, scope))),
  );
}

// ------------------------------------------------------------------------------------- the record

const recorded = (ctx: Ctx, dataDir: string, network: string): TE.TaskEither<CniError, FirewallState> =>
  !callStore.storeExists(dataDir)
    ? TE.right(firewallProjection.initialState())
    : withStore(callStore, ctx, dataDir, (s) =>
        E.map((l: { state: FirewallState }) => l.state)(s.load(firewallStream(network), firewallProjection)),
      );

const record = (ctx: Ctx, dataDir: string, network: string, c: FirewallCommand): TE.TaskEither<CniError, void> =>
  c.type === 'ForgetRules' && !callStore.storeExists(dataDir)
    ? TE.right(undefined)
    : withStore(callStore, ctx, dataDir, (s) =>
        E.map(() => undefined)(
          s.transact(firewallStream(network), firewallProjection, (st) => decide(c, st), { time: ctx.now().toISOString() }),
        ),
      );

const asIps = (prefixes: readonly string[]): { address: string }[] => prefixes.map((address) => ({ address }));

/** ADD and CHECK: the backend decided (the config's, else the host's default; nftables needs nft). */
const withBackend = (fc: FirewallConf): E.Either<CniError, FirewallConf> =>
  E.map((backend: NetfilterBackend) => ({ ...fc, backend }))(resolveBackend('backend', fc.backend));

// ------------------------------------------------------------------------------------- commands

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const parsed = E.chain(withBackend)(parseFirewallConf(conf, 'ADD'));
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const dataDir = parseFirewallDataDir(conf.raw);
  if (E.isLeft(dataDir)) return TE.left(dataDir.left);
  const fc = parsed.right;
  const all = firewallDesired(fc);
  // The backend's part of the scope: what the other backend may hold of these addresses is DEL's to remove.
  const want = { ...all, scope: ownBackendOnly(all.scope, fc.backend) };
  const { kernel, scope } = want;
  const prev = fc.prevResult!;
  const ref = { network: conf.name, containerId: args.containerId, ifname: args.ifname };
  const mine = hostPrefixes(prev.ips ?? []).map((p) => p.prefix);
  // The addresses are recorded before the filter table changes, so that a DEL without prevResult (the runtime
  // died before caching this ADD's result) finds the rules. Shared chains may be created by a concurrent ADD
  // between our observation and our apply: the adapter then runs the restore again without that -N. Any
  // other failure converges back to what was there before this ADD: the rules of addresses recorded before
  // it (an ADD of a live attachment) stay, as does their record.
  return async () => {
    // The read changes nothing: it runs while the record is written (a transaction of this thread's own).
    const reading = observe(ctx, kernel, scope)();
    const before = await recorded(ctx, dataDir.right, conf.name)();
    if (E.isLeft(before)) return before;
    const had = recordedPrefixes(before.right, args.containerId, args.ifname);
    const noted = await record(ctx, dataDir.right, conf.name, {
      type: 'RecordRules',
      data: { ...ref, prefixes: [...had, ...mine.filter((p) => !had.includes(p))] },
    })();
    if (E.isLeft(noted)) return noted;
    ctx.stores.closeSoon();
    const applied = await pipe(
      () => reading,
      TE.chain((seen) => apply(ctx, plan(toPlan(want, seen), seen, scope))),
    )();
    if (E.isRight(applied)) return E.right({ ...prev, cniVersion: conf.cniVersion });
    await removeRules(ctx, attachmentScope(asIps(mine.filter((p) => !had.includes(p)))))();
    await record(
      ctx,
      dataDir.right,
      conf.name,
      had.length
        ? { type: 'RecordRules', data: { ...ref, prefixes: had } }
        : { type: 'ForgetRules', data: { ...ref, reason: 'add-failed' } },
    )();
    return applied;
  };
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parseFirewallConf(conf, 'DEL');
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const dataDir = parseFirewallDataDir(conf.raw);
  if (E.isLeft(dataDir)) return TE.left(dataDir.left);
  const ref = { network: conf.name, containerId: args.containerId, ifname: args.ifname };
  // The rules carry no container ID: their addresses come from prevResult and from what ADD recorded (a DEL
  // without prevResult after the runtime died before caching the ADD's result still removes them).
  return pipe(
    recorded(ctx, dataDir.right, conf.name),
    TE.chain((st) =>
      removeRules(
        ctx,
        attachmentScope([...(parsed.right.prevResult?.ips ?? []), ...asIps(recordedPrefixes(st, args.containerId, args.ifname))]),
      ),
    ),
    TE.chain(() => record(ctx, dataDir.right, conf.name, { type: 'ForgetRules', data: { ...ref, reason: 'del' } })),
  );
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = E.chain(withBackend)(parseFirewallConf(conf, 'CHECK'));
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
