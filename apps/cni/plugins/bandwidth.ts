// bandwidth: a chained plugin that limits a container's traffic with tbf qdiscs, as plugins/meta/bandwidth:
// to the container with a root tbf on the host veth, from the container by redirecting the host veth's
// ingress to an ifb with a root tbf of its own. cmdAdd reads top to bottom: parse, observe, find the host
// veth, compute the desired state, plan against what is there, apply, print prevResult (plus the ifb).

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import { isUnlimited, parseBandwidthConf, type BandwidthConf } from '../../../core/bandwidth/config.ts';
import { bandwidthDesired, bandwidthScope, hostInterface, ifbName, withIfb } from '../../../core/bandwidth/desired.ts';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import { macFromBytes } from '../../../core/ip/mac.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type Op, type OwnershipScope } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { kernelFor } from '../kernel.ts';
import { applyIn, liveNetns, netnsExists, noNetns, observeIn } from '../kit.ts';
import type { Ctx, Plugin } from '../plugin.ts';
import { runNetnsName } from '../../../core/kernel/names.ts';

interface Parsed {
  readonly bw: BandwidthConf;
  readonly prev: Result | undefined;
  readonly ifb: string;
}

function parse(args: CmdArgs, conf: NetConf): E.Either<CniError, Parsed> {
  const bw = parseBandwidthConf(conf.raw);
  if (E.isLeft(bw)) return bw;
  const raw = conf.raw['prevResult'];
  let prev: Result | undefined;
  if (raw !== undefined && raw !== null) {
    const r = readResult(raw);
    if (E.isLeft(r)) return E.left(invalidConfig(`prevResult: ${r.left}`));
    prev = r.right;
  }
  return E.right({ bw: bw.right, prev, ifb: ifbName(conf.name, args.containerId) });
}

/**
 * Links of both namespaces (to pair the veth ends and read the MTU) and the host's qdiscs (only the host's:
 * what the request's `desired` names), with the ingress filters of `filtersOf` (host interfaces). Deleting
 * a qdisc needs no filter (the ingress qdisc takes its filters), so DEL reads none; ADD reads the host veth's
 * only when it has an ingress qdisc already (readFilters); CHECK those of every host interface prevResult
 * names (one of them is the host veth).
 */
function observe(
  ctx: Ctx,
  netns: string | undefined,
  scope: OwnershipScope,
  ifb: string,
  filtersOf: readonly string[],
): TE.TaskEither<CniError, KernelState> {
  return observeIn(kernelFor(ctx), {
    namespaces: netns ? [HOST, netns] : [HOST],
    scope,
    desired: {
      ...emptyKernelState(),
      qdiscs: [
        { ns: HOST, dev: ifb, kind: 'tbf' },
        ...filtersOf.map((dev) => ({ ns: HOST, dev, kind: 'ingress' as const, redirect: ifb })),
      ],
    },
  });
}

/** The host interfaces prevResult names (not the ifb): one of them is the host veth. */
const hostIfsOf = (prev: Result | undefined, ifb: string): string[] =>
  (prev?.interfaces ?? []).filter((i) => !i.sandbox && i.name !== ifb).map((i) => i.name);

/**
 * The host's links and qdiscs, with the host veth of the container's interface: from the host alone when
 * prevResult names host interfaces and the namespace is one of /run/netns (the host veth tells its peer's
 * namespace), else, or when that does not find exactly one, from both namespaces (the pairing itself).
 */
function observeWithHost(
  ctx: Ctx,
  args: CmdArgs,
  prev: Result | undefined,
  p: Parsed,
  netns: string | undefined,
): TE.TaskEither<CniError, { seen: KernelState; host: E.Either<CniError, Link> | undefined }> {
  const scope = bandwidthScope(p.ifb, undefined);
  const find = (seen: KernelState, hostOnly: boolean) =>
    prev?.interfaces?.length && netns ? hostInterface(prev.interfaces, seen.links, args.ifname, netns, hostOnly) : undefined;
  const both = pipe(
    observe(ctx, netns, scope, p.ifb, []),
    TE.map((seen) => ({ seen, host: find(seen, false) })),
  );
  if (!netns || runNetnsName(netns) === undefined || hostIfsOf(prev, p.ifb).length === 0) return both;
  return pipe(
    observe(ctx, undefined, scope, p.ifb, []),
    TE.chain((seen) => {
      const host = find(seen, true);
      return host && E.isRight(host) ? TE.right({ seen, host }) : both;
    }),
  );
}

/**
 * `seen` with the redirect of `dev`'s ingress qdisc, when it has one (a repeated ADD): the host's qdiscs read
 * again with that device's ingress filters. A fresh veth has no ingress qdisc: nothing more to read.
 */
const readFilters =
  (ctx: Ctx, dev: string, ifb: string) =>
  (seen: KernelState): TE.TaskEither<CniError, KernelState> =>
    !seen.qdiscs.some((q) => q.ns === HOST && q.dev === dev && q.kind === 'ingress')
      ? TE.right(seen)
      : pipe(
          observeIn(kernelFor(ctx), {
            namespaces: [HOST],
            ip: false,
            desired: { ...emptyKernelState(), qdiscs: [{ ns: HOST, dev, kind: 'ingress', redirect: ifb }] },
          }),
          TE.map((again) => ({ ...seen, qdiscs: again.qdiscs })),
        );

function apply(ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> {
  return applyIn(kernelFor(ctx), ops);
}

/**
 * A removal's plan (nothing desired): the ifb's deletion beside the host veth's qdisc deletions, as two
 * applies at once (one `ip`, one `tc`), not one after the other. Neither needs the other first: the kernel
 * drops the ifb's own qdiscs with it (plan leaves them out), and an ingress qdisc goes with its filters
 * whether or not the ifb they redirect to is still there. The first error stands.
 */
function applyRemoval(ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> {
  const links = ops.filter((op) => op.op === 'link.del');
  const rest = ops.filter((op) => op.op !== 'link.del');
  if (links.length === 0 || rest.length === 0) return apply(ctx, ops);
  return async () => {
    const [a, b] = await Promise.all([apply(ctx, links)(), apply(ctx, rest)()]);
    return E.isLeft(a) ? a : b;
  };
}

const requirePrev = (p: Parsed, command: string): E.Either<CniError, Result> =>
  p.prev ? E.right(p.prev) : E.left(invalidConfig(`prevResult: required for ${command} (bandwidth must be called as a chained plugin)`));

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const parsed = parse(args, conf);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const p = parsed.right;
  const prevE = requirePrev(p, 'ADD');
  if (E.isLeft(prevE)) return TE.left(prevE.left);
  const prev = prevE.right;
  if (isUnlimited(p.bw)) return TE.right(prev);
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));

  const attach = (seen: KernelState, host: Link): { scope: OwnershipScope; ops: Op[]; mac: string | undefined } => {
    const scope = bandwidthScope(p.ifb, host.name);
    // A repeated ADD keeps the ifb's MAC; a new ifb gets a random one (what the kernel would do).
    const mac = p.bw.egress
      ? (seen.links.find((l) => l.ns === HOST && l.name === p.ifb && l.kind === 'ifb')?.mac ?? macFromBytes(ctx.randomBytes(6)))
      : undefined;
    const desired = bandwidthDesired({
      conf: p.bw,
      ifb: p.ifb,
      hostVeth: host.name,
      ...(host.mtu !== undefined ? { hostMtu: host.mtu } : {}),
      ...(mac ? { ifbMac: mac } : {}),
    });
    return { scope, ops: plan(desired, seen, scope), mac };
  };

  return pipe(
    observeWithHost(ctx, args, prev, p, args.netns),
    TE.chain(({ seen: first, host: found }) =>
      pipe(
        TE.fromEither(found ?? hostInterface(prev.interfaces ?? [], first.links, args.ifname, args.netns)),
        TE.chain((host) =>
          pipe(
            readFilters(ctx, host.name, p.ifb)(first),
            TE.map((seen) => attach(seen, host)),
          ),
        ),
        TE.chain((a) =>
          pipe(
            apply(ctx, a.ops),
            // Whatever failed, converge back to "no limits" (the same plan as DEL), keeping the error.
            TE.orElse((err) => async () => {
              await pipe(
                observe(ctx, args.netns, a.scope, p.ifb, []),
                TE.chain((again) => applyRemoval(ctx, plan(emptyKernelState(), again, a.scope))),
              )();
              return E.left<CniError, void>(err);
            }),
            TE.map(() => withIfb(prev, p.bw.egress ? p.ifb : undefined, a.mac)),
          ),
        ),
      ),
    ),
  );
}

/**
 * The host veth of the container's interface, when the kernel (and prevResult, if given) can say: what
 * observeWithHost found from prevResult, else the pairing of the container's end.
 */
function hostVethOf(seen: KernelState, args: CmdArgs, found: E.Either<CniError, Link> | undefined): string | undefined {
  if (found) return E.isRight(found) ? found.right.name : undefined;
  const cont = seen.links.find((l) => l.ns === args.netns && l.name === args.ifname && l.kind === 'veth');
  if (!cont) return undefined;
  if (cont.veth?.peerNs === HOST) return cont.veth.peer;
  return seen.links.find((l) => l.ns === HOST && l.kind === 'veth' && l.veth?.peerNs === args.netns && l.veth.peer === args.ifname)?.name;
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parse(args, conf);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const p = parsed.right;
  // Delete can be called many times, and after the namespace is gone (its veth, and so the host end and
  // its qdiscs, went with it): neither is an error.
  const netns = liveNetns(args.netns);
  return pipe(
    observeWithHost(ctx, args, p.prev, p, netns),
    TE.chain(({ seen, host }) => {
      const scope = bandwidthScope(p.ifb, netns ? hostVethOf(seen, args, host) : undefined);
      return applyRemoval(ctx, plan(emptyKernelState(), seen, scope));
    }),
  );
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parse(args, conf);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const p = parsed.right;
  const prevE = requirePrev(p, 'CHECK');
  if (E.isLeft(prevE)) return TE.left(prevE.left);
  const prev = prevE.right;
  // No limits configured: nothing to check, as the reference.
  if (isUnlimited(p.bw)) return TE.right(undefined);
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
  return pipe(
    observe(ctx, args.netns, bandwidthScope(p.ifb, undefined), p.ifb, hostIfsOf(prev, p.ifb)),
    TE.chainEitherK((seen) =>
      pipe(
        hostInterface(prev.interfaces ?? [], seen.links, args.ifname, args.netns),
        E.chain((host) => {
          const scope = bandwidthScope(p.ifb, host.name);
          const want = bandwidthDesired({
            conf: p.bw,
            ifb: p.ifb,
            hostVeth: host.name,
            ...(host.mtu !== undefined ? { hostMtu: host.mtu } : {}),
          });
          const wrong = drift(want, seen, scope);
          return wrong.length === 0
            ? E.right(undefined)
            : E.left(cniError(ErrCode.Drift, `bandwidth limits of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
        }),
      ),
    ),
  );
}

export const bandwidth: Plugin = {
  type: 'bandwidth',
  versions: PLUGIN_VERSIONS,
  about: "felt bandwidth: limits a container's traffic with tbf qdiscs on its host veth and an ifb",
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
};
