// The CNI flow of a container interface made on a lower device (ipvlan, vlan; macvlan is the same shape). cmdAdd:
// parse, observe and allocate at once, find the master (the config's or prevResult's, else the interface of
// the default route where the master lives), compute the desired state, plan, apply, print; a failure after
// IPAM converges back to "not attached" and gives the address back. cmdDel is the plan with nothing desired.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import { HOST, lowerOf, type KernelState, type NsRef, type Op, type OwnershipScope } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { lowerLinkScope, type Addressing, type LowerLinkConf } from '../../../core/l2/attachment.ts';
import { applyIn, delegateIpam, liveNetns, netnsExists, noNetns, observeIn, removeIn, type KernelOf } from '../kit.ts';
import { toIpam, type Ctx, type Plugin } from '../plugin.ts';

interface LowerLinkAttachment<C> {
  readonly conf: C;
  readonly master: string;
  readonly masterMtu?: number;
  readonly masterMac?: string;
  readonly ifname: string;
  readonly netns: string;
  readonly addressing: Addressing;
}

/** What one kind of lower-device plugin supplies; the flow is the same for all. */
export interface LowerLinkKind<C extends LowerLinkConf> {
  readonly type: string;
  readonly about: string;
  readonly parse: (conf: NetConf) => E.Either<CniError, C>;
  /** Whether ADD reads prevResult (ipvlan: the master and the addresses may come from it). */
  readonly chained: boolean;
  /** The master's name and the field that named it; undefined: the default route's interface. */
  readonly master: (conf: C, prev: Result | undefined) => E.Either<CniError, { name: string; from: string } | undefined>;
  readonly addressing: (conf: C, prev: Result | undefined, ipam: Result | undefined) => E.Either<CniError, Addressing>;
  readonly desired: (a: LowerLinkAttachment<C>) => E.Either<CniError, { kernel: KernelState; scope: OwnershipScope; result: Result }>;
}

function prevResultOf(conf: NetConf): E.Either<CniError, Result | undefined> {
  const raw = conf.raw['prevResult'];
  if (raw === undefined || raw === null) return E.right(undefined);
  const r = readResult(raw);
  return E.isLeft(r) ? E.left(invalidConfig(`prevResult: ${r.left}`)) : r;
}

interface Master {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
}

/** The master where it lives: by name, else the interface of the default route there. */
function findMaster(named: { name: string; from: string } | undefined, seen: KernelState, where: NsRef): E.Either<CniError, Master> {
  const name = named?.name ?? seen.routes.find((r) => r.ns === where && (r.dst === '0.0.0.0/0' || r.dst === '::/0') && r.dev)?.dev;
  if (name === undefined) return E.left(invalidConfig('master: not set, and no default route interface found'));
  const l = seen.links.find((x) => x.ns === where && x.name === name);
  const field = named && named.from !== 'master' ? `master (from ${named.from})` : 'master';
  if (!l) return E.left(invalidConfig(`${field}: failed to find "${name}" in ${where === HOST ? 'the host namespace' : where}`));
  return E.right({ name, ...(l.mtu !== undefined ? { mtu: l.mtu } : {}), ...(l.mac !== undefined ? { mac: l.mac } : {}) });
}

export function makeLowerLinkPlugin<C extends LowerLinkConf>(kind: LowerLinkKind<C>, kernel: KernelOf): Plugin {
  const observe = (ctx: Ctx, namespaces: readonly NsRef[], scope: OwnershipScope): TE.TaskEither<CniError, KernelState> =>
    observeIn(kernel(ctx), { namespaces, scope });
  const apply = (ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> => applyIn(kernel(ctx), ops);
  /** "Not attached": the container interface gone (with everything on it). */
  const remove = (ctx: Ctx, netns: string | undefined, ifname: string): TE.TaskEither<CniError, void> =>
    netns ? removeIn(kernel(ctx), [netns], lowerLinkScope(ifname, netns)) : TE.right(undefined);

  function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
    const parsed = kind.parse(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const c = parsed.right;
    const prev = kind.chained ? prevResultOf(conf) : E.right(undefined);
    if (E.isLeft(prev)) return TE.left(prev.left);
    const named = kind.master(c, prev.right);
    if (E.isLeft(named)) return TE.left(named.left);
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const where = c.linkInContainer ? args.netns : HOST;
    const scope = lowerLinkScope(args.ifname, args.netns);
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
      const master = findMaster(named.right, seen, where);
      if (E.isLeft(master)) return release(master.left);
      const addressing = kind.addressing(c, prev.right, res);
      if (E.isLeft(addressing)) return release(addressing.left);
      const m = master.right;
      const p = kind.desired({
        conf: c,
        master: m.name,
        ...(m.mtu !== undefined ? { masterMtu: m.mtu } : {}),
        ...(m.mac !== undefined ? { masterMac: m.mac } : {}),
        ifname: args.ifname,
        netns: args.netns,
        addressing: addressing.right,
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
      const [seen, res] = await Promise.all([observe(ctx, [HOST, args.netns], scope)(), delegateIpam(ctx, c, args, 'ADD')()]);
      if (E.isLeft(res)) return res;
      if (E.isLeft(seen)) return release(seen.left)();
      return attach(seen.right, res.right)();
    };
  }

  function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
    const parsed = kind.parse(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    // The master need not exist any more; DEL may come many times, and after the namespace is gone.
    const netns = liveNetns(args.netns);
    return pipe(
      remove(ctx, netns, args.ifname),
      TE.chain(() => TE.map(() => undefined)(delegateIpam(ctx, parsed.right, args, 'DEL'))),
    );
  }

  function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
    const parsed = kind.parse(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const c = parsed.right;
    const prev = prevResultOf(conf);
    if (E.isLeft(prev)) return TE.left(prev.left);
    if (!prev.right) return TE.left(invalidConfig('prevResult: required for CHECK'));
    const result = prev.right;
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const cont = (result.interfaces ?? []).find((i) => i.name === args.ifname && i.sandbox === args.netns);
    if (!cont) return TE.left(invalidConfig(`prevResult.interfaces: expected "${args.ifname}" in ${args.netns}`));
    const scope = lowerLinkScope(args.ifname, args.netns);
    const where = c.linkInContainer ? args.netns : HOST;
    return pipe(
      delegateIpam(ctx, c, args, 'CHECK'),
      TE.chain(() => observe(ctx, [HOST, args.netns], scope)),
      TE.chainEitherK((seen) => {
        // At CHECK prevResult is this plugin's own result: only a configured master is looked up (as the reference).
        const own = seen.links.find((l) => l.ns === args.netns && l.name === args.ifname);
        let masterName = own ? (lowerOf(own)?.master ?? '') : '';
        if (c.master) {
          const m = findMaster({ name: c.master, from: 'master' }, seen, where);
          if (E.isLeft(m)) return m;
          masterName = m.right.name;
        }
        const p = kind.desired({
          conf: c,
          master: masterName,
          ifname: args.ifname,
          netns: args.netns,
          addressing: { source: 'prevResult', result },
        });
        if (E.isLeft(p)) return p;
        const links = p.right.kernel.links.map((l) => (l.name === args.ifname && cont.mac ? { ...l, mac: cont.mac } : l));
        const wrong = drift({ ...p.right.kernel, links, sysctls: [] }, seen, scope);
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
