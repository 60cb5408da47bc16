// macvlan: the container interface is a macvlan on a host device. cmdAdd: parse, observe and allocate at once,
// pick the master (the config's, else the interface of the host's default route), compute the desired state,
// plan, apply, print; a failure after IPAM converges back to "not attached" and gives the address back.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import { macFromBytes } from '../../../core/ip/mac.ts';
import { macvlanPlan, macvlanScope, parseMacvlanConf, type MacvlanConf } from '../../../core/macvlan/desired.ts';
import { HOST, type KernelState, type NsRef, type Op, type OwnershipScope } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { kernelFor } from '../kernel.ts';
import { applyIn, delegateIpam, liveNetns, netnsExists, noNetns, observeIn, removeIn } from '../kit.ts';
import { NEEDS_INTERFACE, toIpam, type Ctx, type Plugin } from '../plugin.ts';

const observe = (ctx: Ctx, namespaces: readonly NsRef[], scope: OwnershipScope): TE.TaskEither<CniError, KernelState> =>
  observeIn(kernelFor(ctx), { namespaces, scope });

const apply = (ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> => applyIn(kernelFor(ctx), ops);

const remove = (ctx: Ctx, netns: string | undefined, ifname: string): TE.TaskEither<CniError, void> =>
  netns ? removeIn(kernelFor(ctx), [netns], macvlanScope(ifname, netns)) : TE.right(undefined);

/** The master and its MTU: the config's, else the interface of the default route where the master lives. */
function masterOf(mc: MacvlanConf, seen: KernelState, where: NsRef): E.Either<CniError, { name: string; mtu?: number }> {
  const name = mc.master ?? seen.routes.find((r) => r.ns === where && (r.dst === '0.0.0.0/0' || r.dst === '::/0') && r.dev)?.dev;
  if (name === undefined) return E.left(invalidConfig('master: not set, and no default route interface found'));
  const l = seen.links.find((x) => x.ns === where && x.name === name);
  if (!l) return E.left(invalidConfig(`master: failed to find "${name}" in ${where === HOST ? 'the host namespace' : where}`));
  return E.right({ name, ...(l.mtu !== undefined ? { mtu: l.mtu } : {}) });
}

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const parsed = parseMacvlanConf(conf, args.args);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const mc = parsed.right;
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
  const where = mc.linkInContainer ? args.netns : HOST;
  const scope = macvlanScope(args.ifname, args.netns);
  const mac = mc.mac ?? macFromBytes(ctx.randomBytes(6));
  const release =
    (err: CniError): TE.TaskEither<CniError, never> =>
    async () => {
      await delegateIpam(ctx, mc, args, 'DEL')();
      return E.left(err);
    };
  const exists = (seen: KernelState): boolean => seen.links.some((l) => l.ns === args.netns && l.name === args.ifname);
  const taken = (): CniError =>
    cniError(ErrCode.InterfaceExists, `container interface name provided (${args.ifname}) already exists in ${args.netns}`);
  /** Plan and apply the attachment (`madeHere`: the interface is this ADD's own, made before IPAM ran). */
  const attach = (seen: KernelState, res: Result | undefined, madeHere = false, conf = mc): TE.TaskEither<CniError, Result> => {
    if (!madeHere && exists(seen)) return release(taken());
    const master = masterOf(mc, seen, where);
    if (E.isLeft(master)) return release(master.left);
    const p = macvlanPlan({
      conf,
      master: master.right.name,
      ...(master.right.mtu !== undefined ? { masterMtu: master.right.mtu } : {}),
      ifname: args.ifname,
      netns: args.netns,
      mac,
      ...(res ? { ipam: res } : {}),
    });
    if (E.isLeft(p)) return release(p.left);
    return pipe(
      apply(ctx, plan(p.right.kernel, seen, scope)),
      TE.map(() => p.right.result),
      TE.orElse((err) => async () => {
        await pipe(
          remove(ctx, args.netns, args.ifname),
          TE.chain(() => delegateIpam(ctx, mc, args, 'DEL')),
        )();
        return E.left<CniError, Result>(err);
      }),
    );
  };
  // An IPAM plugin that talks on the interface (dhcp) needs it first, as the reference orders it: make the
  // interface alone, then ask IPAM, then plan the rest from what is there now.
  if (NEEDS_INTERFACE.has(mc.ipamType)) {
    return async () => {
      const seen = await observe(ctx, [HOST, args.netns], scope)();
      if (E.isLeft(seen)) return seen;
      if (exists(seen.right)) return E.left(taken());
      const made = await attach(seen.right, undefined, false, { ...mc, ipamType: '' })();
      if (E.isLeft(made)) return made;
      const res = await delegateIpam(ctx, mc, args, 'ADD')();
      if (E.isLeft(res)) {
        await remove(ctx, args.netns, args.ifname)();
        return res;
      }
      const now = await observe(ctx, [HOST, args.netns], scope)();
      if (E.isLeft(now)) {
        await pipe(
          remove(ctx, args.netns, args.ifname),
          TE.chain(() => delegateIpam(ctx, mc, args, 'DEL')),
        )();
        return now;
      }
      return attach(now.right, res.right, true)();
    };
  }
  return async () => {
    const [seen, res] = await Promise.all([observe(ctx, [HOST, args.netns], scope)(), delegateIpam(ctx, mc, args, 'ADD')()]);
    if (E.isLeft(res)) return res;
    if (E.isLeft(seen)) return release(seen.left)();
    return attach(seen.right, res.right)();
  };
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parseMacvlanConf(conf, args.args);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  // The master need not exist any more; DEL may come many times, and after the namespace is gone.
  const netns = liveNetns(args.netns);
  const release = TE.map(() => undefined)(delegateIpam(ctx, parsed.right, args, 'DEL'));
  // An IPAM plugin that talks on the interface (dhcp releases its lease through it) goes first, as in the
  // reference; one that only hands out addresses goes last, so a failed removal keeps the address.
  if (NEEDS_INTERFACE.has(parsed.right.ipamType))
    return pipe(
      release,
      TE.chain(() => remove(ctx, netns, args.ifname)),
    );
  return pipe(
    remove(ctx, netns, args.ifname),
    TE.chain(() => release),
  );
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parseMacvlanConf(conf, args.args);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const mc = parsed.right;
  if (conf.raw['prevResult'] === undefined) return TE.left(invalidConfig('prevResult: required for CHECK'));
  const prev = readResult(conf.raw['prevResult']);
  if (E.isLeft(prev)) return TE.left(invalidConfig(`prevResult: ${prev.left}`));
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
  const cont = (prev.right.interfaces ?? []).find((i) => i.name === args.ifname && i.sandbox === args.netns);
  if (!cont) return TE.left(invalidConfig(`prevResult.interfaces: expected "${args.ifname}" in ${args.netns}`));
  const scope = macvlanScope(args.ifname, args.netns);
  const where = mc.linkInContainer ? args.netns : HOST;
  return pipe(
    delegateIpam(ctx, mc, args, 'CHECK'),
    TE.chain(() => observe(ctx, [HOST, args.netns], scope)),
    TE.chainEitherK((seen) => {
      const master = masterOf(mc, seen, where);
      if (E.isLeft(master)) return master;
      const p = macvlanPlan({
        conf: mc,
        master: master.right.name,
        ifname: args.ifname,
        netns: args.netns,
        mac: cont.mac ?? '',
        ipam: { ips: prev.right.ips ?? [], routes: prev.right.routes ?? [] },
      });
      if (E.isLeft(p)) return p;
      const wrong = drift({ ...p.right.kernel, sysctls: [] }, seen, scope);
      return wrong.length === 0
        ? E.right(undefined)
        : E.left(cniError(ErrCode.Drift, `macvlan attachment of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
    }),
  );
}

export const macvlan: Plugin = {
  type: 'macvlan',
  versions: PLUGIN_VERSIONS,
  about: 'felt macvlan: a macvlan on a host device per container',
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
  gc: toIpam('GC'),
  status: toIpam('STATUS'),
};
