// ptp: a point-to-point veth pair per container, routed through the host (no bridge). cmdAdd reads top to
// bottom like bridge's: parse, observe and allocate at once, compute the desired kernel state, plan against
// what is there, apply, print the result; any failure after IPAM converges back to "not attached" and gives
// the address back.

import { existsSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import { hex, macFromBytes } from '../../../core/ip/mac.ts';
import { emptyKernelState, HOST, type KernelState, type Op, type OwnershipScope } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { parsePtpConf, ptpPlan, ptpScope, type PtpConf } from '../../../core/ptp/desired.ts';
import { kernelError, kernelFor } from '../kernel.ts';
import { toIpam, type Ctx, type Plugin } from '../plugin.ts';

const noNetns = (netns: string): CniError => cniError(ErrCode.InvalidEnvironment, `CNI_NETNS: failed to open netns "${netns}": no such file`);

const observe = (ctx: Ctx, pc: PtpConf, scope: OwnershipScope, netns: string | undefined): TE.TaskEither<CniError, KernelState> =>
  pipe(kernelFor(ctx).observe({ namespaces: netns ? [HOST, netns] : [HOST], scope, iptables: pc.ipMasq ? [4, 6] : [] }), TE.mapLeft(kernelError));

const apply = (ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> =>
  ops.length === 0 ? TE.right(undefined) : pipe(kernelFor(ctx).apply(ops), TE.mapLeft(kernelError));

const remove = (ctx: Ctx, pc: PtpConf, scope: OwnershipScope, netns: string | undefined): TE.TaskEither<CniError, void> =>
  pipe(observe(ctx, pc, scope, netns), TE.chain((seen) => apply(ctx, plan(emptyKernelState(), seen, scope))));

const ipam = (ctx: Ctx, pc: PtpConf, args: CmdArgs, command: 'ADD' | 'DEL' | 'CHECK') => ctx.delegate(pc.ipamType, command, args.stdin, args);

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const parsed = parsePtpConf(conf);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const pc = parsed.right;
  if (!existsSync(args.netns)) return TE.left(noNetns(args.netns));
  const rnd = ctx.randomBytes(16);
  const hostVeth = `veth${hex(rnd.slice(0, 4))}`;
  const scope = ptpScope(pc, args.containerId, args.ifname, args.netns, hostVeth);
  const release = (err: CniError): TE.TaskEither<CniError, never> => async () => {
    await ipam(ctx, pc, args, 'DEL')();
    return E.left(err);
  };
  const attach = (seen: KernelState, res: Result | undefined): TE.TaskEither<CniError, Result> => {
    if (seen.links.some((l) => l.ns === args.netns && l.name === args.ifname)) {
      return release(cniError(ErrCode.InterfaceExists, `container veth name provided (${args.ifname}) already exists in ${args.netns}`));
    }
    const p = ptpPlan({
      conf: pc,
      containerId: args.containerId,
      ifname: args.ifname,
      netns: args.netns,
      hostVeth,
      hostVethMac: macFromBytes(rnd.slice(4, 10)),
      containerMac: macFromBytes(rnd.slice(10, 16)),
      ipam: res ?? {},
    });
    if (E.isLeft(p)) return release(p.left);
    return pipe(
      apply(ctx, plan(p.right.kernel, seen, scope)),
      TE.map(() => p.right.result),
      // Whatever failed, converge back to "not attached" and give the address back.
      TE.orElse((err) => async () => {
        await pipe(remove(ctx, pc, scope, args.netns), TE.chain(() => ipam(ctx, pc, args, 'DEL')))();
        return E.left<CniError, Result>(err);
      }),
    );
  };
  // Reading the kernel and allocating the address are independent: both at once.
  return async () => {
    const [seen, res] = await Promise.all([observe(ctx, pc, scope, args.netns)(), ipam(ctx, pc, args, 'ADD')()]);
    if (E.isLeft(res)) return res;
    if (E.isLeft(seen)) return release(seen.left)();
    return attach(seen.right, res.right)();
  };
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parsePtpConf(conf);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const pc = parsed.right;
  // DEL may come many times, and after the namespace is gone (its veth end, and so the pair, went with it).
  const netns = args.netns !== '' && existsSync(args.netns) ? args.netns : undefined;
  return pipe(
    remove(ctx, pc, ptpScope(pc, args.containerId, args.ifname, netns ?? ''), netns),
    TE.chain(() => TE.map(() => undefined)(ipam(ctx, pc, args, 'DEL'))),
  );
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parsePtpConf(conf);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const pc = parsed.right;
  if (conf.raw['prevResult'] === undefined) return TE.left(invalidConfig('prevResult: required for CHECK'));
  const prev = readResult(conf.raw['prevResult']);
  if (E.isLeft(prev)) return TE.left(invalidConfig(`prevResult: ${prev.left}`));
  if (!existsSync(args.netns)) return TE.left(noNetns(args.netns));
  const ifs = prev.right.interfaces ?? [];
  const cont = ifs.find((i) => i.name === args.ifname && i.sandbox === args.netns);
  const host = ifs.find((i) => !i.sandbox);
  if (!cont || !host) return TE.left(invalidConfig(`prevResult.interfaces: expected a host veth and "${args.ifname}" in ${args.netns}`));
  const expected = ptpPlan({
    conf: pc,
    containerId: args.containerId,
    ifname: args.ifname,
    netns: args.netns,
    hostVeth: host.name,
    hostVethMac: host.mac ?? '',
    containerMac: cont.mac ?? '',
    ipam: { ips: prev.right.ips ?? [], routes: prev.right.routes ?? [] },
  });
  if (E.isLeft(expected)) return TE.left(expected.left);
  const want: KernelState = { ...expected.right.kernel, sysctls: [] };
  const scope = expected.right.scope;
  return pipe(
    ipam(ctx, pc, args, 'CHECK'),
    TE.chain(() => observe(ctx, pc, scope, args.netns)),
    TE.chainEitherK((seen) => {
      const wrong = drift(want, seen, scope);
      return wrong.length === 0 ? E.right(undefined) : E.left(cniError(ErrCode.Drift, `ptp attachment of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
    }),
  );
}

export const ptp: Plugin = {
  type: 'ptp',
  versions: PLUGIN_VERSIONS,
  about: 'felt ptp: a routed veth pair per container',
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
  gc: toIpam('GC'),
  status: toIpam('STATUS'),
};
