// bridge: attach a container to a Linux bridge with a veth pair, addresses from an IPAM plugin, optional
// gateway address on the bridge and masquerade. cmdAdd reads top to bottom: parse, observe, IPAM, compute the
// desired kernel state, plan against what is there, apply in batches, print the result.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import { attachmentPlan, attachmentScope, bridgeAddressConflicts, type AttachmentPlan } from '../../../core/bridge/desired.ts';
import {
  initialAttachments,
  outsideValid,
  recordedVethMismatch,
  recordsOf,
  type AttachmentCommand,
  type AttachmentRecord,
  type AttachmentsState,
} from '../../../core/bridge/attachments.ts';
import { parseAttachments } from '../../../core/ipam/config.ts';
import { parseBridgeConf, type BridgeConf } from '../../../core/bridge/config.ts';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import { hex, macFromBytes } from '../../../core/ip/mac.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type Op, type OwnershipScope } from '../../../core/kernel/model.ts';
import { routesOfAnyTable } from '../../../core/kernel/keys.ts';
import { netfilterScope, netfilterState, withoutNetfilterScope, withoutNetfilterState } from '../../../core/kernel/scope.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { kernelFor } from '../kernel.ts';
import { applyIn, cleaningUp, kernelError, liveNetns, netnsExists, noNetns, notANetns } from '../kit.ts';
import { gcMasquerade, resolveBackend, withMasqBackend } from '../netfilter.ts';
import type { NetfilterBackend } from '../../../core/netfilter/backend.ts';
import { ownBackendOnly } from '../../../core/netfilter/masquerade.ts';
import { traceMark } from '../../../adapters/kernel/exec.ts';
import { NEEDS_INTERFACE, toIpam, type Ctx, type Plugin } from '../plugin.ts';
import { attachmentsIn, decideIn, logDir, hostNetnsName, recordedConf, sqliteLog } from './bridge-log.ts';

/** What to look at in the kernel for one attachment: its scope plus the (shared) bridge. */
const observeScope = (bc: BridgeConf, scope: OwnershipScope): OwnershipScope => ({
  ...scope,
  links: [...scope.links, { ns: HOST, name: bc.bridge }],
  devices: [...scope.devices, { ns: HOST, dev: bc.bridge }],
});

type Families = readonly (4 | 6)[];

function observe(
  ctx: Ctx,
  bc: BridgeConf,
  scope: OwnershipScope,
  netns: string | undefined,
  families: Families = [4, 6],
): TE.TaskEither<CniError, KernelState> {
  return pipe(
    kernelFor(ctx).observe({
      namespaces: netns ? [HOST, netns] : [HOST],
      scope: observeScope(bc, scope),
      iptables: bc.ipMasq && (scope.chains.length > 0 || scope.ruleMarkers.length > 0) ? families : [],
    }),
    TE.mapLeft(kernelError),
  );
}

/**
 * ADD reads the IPv4 masquerade chains with everything else (before IPAM has answered), and the IPv6 ones
 * only when IPAM gave an IPv6 address: an IPv4-only attachment wants no IPv6 chain, and one it does not see
 * it does not touch. `seen` plus the host's IPv6 nat chains and rules when they are wanted.
 */
const ADD_FAMILIES: Families = [4];
function withIpv6Masq(
  ctx: Ctx,
  bc: BridgeConf,
  scope: OwnershipScope,
  seen: KernelState,
  ipam: Result | undefined,
): TE.TaskEither<CniError, KernelState> {
  const v6 = (ipam?.ips ?? []).some((i) => i.address.includes(':'));
  if (!bc.ipMasq || !v6 || scope.chains.length === 0) return TE.right(seen);
  return pipe(
    kernelFor(ctx).observe({ namespaces: [HOST], scope: observeScope(bc, scope), iptables: [6], ip: false }),
    TE.mapLeft(kernelError),
    TE.map((more) => ({
      ...seen,
      chains: [...seen.chains, ...more.chains.filter((c) => c.family === 6)],
      rules: [...seen.rules, ...more.rules.filter((r) => r.family === 6)],
    })),
  );
}

/** The host's masquerade chains and rules of `scope` (its nftables rules, or iptables of `families`). */
const observeNetfilter = (ctx: Ctx, scope: OwnershipScope, families: Families): TE.TaskEither<CniError, KernelState> =>
  pipe(
    kernelFor(ctx).observe({
      namespaces: [HOST],
      scope,
      iptables: scope.chains.length > 0 || scope.ruleMarkers.length > 0 ? families : [],
      ip: false,
    }),
    TE.mapLeft(kernelError),
  );

function apply(ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> {
  return applyIn(kernelFor(ctx), ops);
}

function ipamAdd(ctx: Ctx, bc: BridgeConf, args: CmdArgs): TE.TaskEither<CniError, Result | undefined> {
  if (bc.ipamType === '') return TE.right(undefined);
  return ctx.delegate(bc.ipamType, 'ADD', args.stdin, args);
}

function ipamDel(ctx: Ctx, bc: BridgeConf, args: CmdArgs): TE.TaskEither<CniError, void> {
  if (bc.ipamType === '') return TE.right(undefined);
  return TE.map(() => undefined)(ctx.delegate(bc.ipamType, 'DEL', args.stdin, args));
}

/**
 * The end of a successful ADD: one small transaction recording how long it took (AttachmentReady, read by
 * feltd for felt_cni_add_duration_seconds). The attachment is made by now, so a log that cannot take the
 * record does not fail the ADD: only the measurement is lost.
 */
const markReady = (
  journal: (c: AttachmentCommand) => TE.TaskEither<CniError, void>,
  who: { network: string; containerId: string; ifname: string },
  hostVeth: string,
  ctx: Ctx,
  startedMs: number,
): TE.TaskEither<CniError, void> =>
  pipe(
    TE.fromIO(() => Math.max(0, ctx.now().getTime() - startedMs)),
    TE.chain((durationMs) => journal({ type: 'RecordAttachmentReady', data: { ...who, hostVeth, durationMs } })),
    TE.orElse(() => TE.right<CniError, void>(undefined)),
  );

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const startedMs = ctx.now().getTime();
  const parsed = E.chain(withMasqBackend)(parseBridgeConf(conf, args.args));
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const bc = parsed.right;
  const badNetns = notANetns(args.netns);
  if (badNetns) return TE.left(badNetns);
  const rnd = ctx.randomBytes(16);
  const hostVeth = `veth${hex(rnd.slice(0, 4))}`;
  const hostVethMac = macFromBytes(rnd.slice(4, 10));
  // Drawn once: a retry after a conflict (below) must desire the same MACs, or it would change the MAC of
  // the container interface it has just made.
  const containerMac = bc.mac ?? macFromBytes(ctx.randomBytes(6));
  // Only the masquerade of the backend in use: the other's is not read (DEL removes what either left).
  const scope = ownBackendOnly(attachmentScope(bc, args.containerId, args.ifname, args.netns, hostVeth), bc.ipMasqBackend);
  // Links, addresses, routes and sysctls; and the masquerade, apart: neither needs the other, so the host's
  // netfilter read (iptables-save, the slowest) and its restore run beside the way to the pod's interface.
  const kscope = withoutNetfilterScope(scope);
  const nscope = netfilterScope(scope);
  // The attachment is recorded before the kernel changes, so that DEL and GC find a half-made one (the host
  // veth's name is random) when this process dies; a failed ADD removes the record once it has converged back.
  const dataDir = logDir(conf);
  if (E.isLeft(dataDir)) return TE.left(dataDir.left);
  const journal = (command: AttachmentCommand) => decideIn(sqliteLog, ctx, dataDir.right, bc.name, command);
  const who = { network: bc.name, containerId: args.containerId, ifname: args.ifname };
  const hostNs = hostNetnsName(ctx);
  const record = journal({
    type: 'RecordAttachment',
    data: {
      ...who,
      netns: args.netns,
      hostVeth,
      dataDir: dataDir.right,
      conf: recordedConf(conf),
      cniArgs: args.args,
      hostVethMac,
      ...(hostNs ? { hostNs } : {}),
    },
  });
  const forget = journal({ type: 'RemoveAttachments', data: { ...who, hostVeth, reason: 'rollback' } });

  const attach = (
    seen: KernelState,
    ipam: Result | undefined,
    conf: BridgeConf = bc,
  ): E.Either<CniError, { p: AttachmentPlan; ops: Op[] }> => {
    const br = seen.links.find((l) => l.ns === HOST && l.name === bc.bridge);
    if (br && br.kind !== 'bridge') return E.left(invalidConfig(`bridge: "${bc.bridge}" already exists but is not a bridge`));
    const p = attachmentPlan({
      conf,
      containerId: args.containerId,
      ifname: args.ifname,
      netns: args.netns,
      hostVeth,
      hostVethMac,
      containerMac,
      bridgeMac: br?.mac ?? macFromBytes(rnd.slice(10, 16)),
      ...(ipam ? { ipam } : {}),
    });
    if (E.isLeft(p)) return p;
    const conflicts = bridgeAddressConflicts(bc, seen.addresses, p.right.kernel.addresses);
    if (E.isLeft(conflicts)) return conflicts;
    const ops: Op[] = [
      ...conflicts.right.map((addr): Op => ({ op: 'addr.del', addr })),
      ...plan(withoutNetfilterState(p.right.kernel), seen, kscope),
    ];
    traceMark(`planned ${ops.length} ops`);
    return E.right({ p: p.right, ops });
  };

  // The container's interface name is taken when the pod has a link of that name that is not the other end
  // of this ADD's own pair.
  const ours = (seen: KernelState): boolean =>
    seen.links.some(
      (l) =>
        (l.ns === HOST && l.name === hostVeth && l.veth?.peer === args.ifname) ||
        (l.ns === args.netns && l.name === args.ifname && l.veth?.peer === hostVeth),
    );
  const taken = (seen: KernelState): boolean => seen.links.some((l) => l.ns === args.netns && l.name === args.ifname) && !ours(seen);
  const interfaceExists = (): CniError =>
    cniError(ErrCode.InterfaceExists, `container veth name provided (${args.ifname}) already exists in ${args.netns}`);

  // The bridge, its gateway address and the forwarding sysctls are shared by every attachment: a concurrent
  // ADD may create them between our observation and our apply, which then fails with EEXIST. Observe again
  // (the pod too) and converge from there (a few times: several ADDs may race on a fresh node). The first
  // plan of an ADD is made without reading the pod, whose namespace is new: the pair made into it fails
  // with EEXIST when the interface name is taken after all, and the read that follows names the culprit.
  // `masq`: the masquerade's own plan and apply, run beside the first apply (a retry is the links' alone).
  const converge = (
    seen: KernelState,
    ipam: Result | undefined,
    attempt: number,
    conf: BridgeConf = bc,
    masq?: (p: AttachmentPlan) => TE.TaskEither<CniError, void>,
  ): TE.TaskEither<CniError, { p: AttachmentPlan; ops: Op[] }> =>
    pipe(
      TE.fromEither(attach(seen, ipam, conf)),
      TE.chainFirst(({ p, ops }) =>
        masq
          ? async () => {
              const [links, nat] = await Promise.all([apply(ctx, ops)(), masq(p)()]);
              // The masquerade's failure first: a retry (File exists) would not make it again.
              return E.isLeft(nat) ? nat : links;
            }
          : apply(ctx, ops),
      ),
      TE.orElse((err) =>
        attempt < 4 && /File exists/.test(`${err.msg} ${err.details ?? ''}`)
          ? pipe(
              observe(ctx, bc, kscope, args.netns, ADD_FAMILIES),
              TE.chain((again) => (taken(again) ? TE.left(interfaceExists()) : TE.right(again))),
              TE.chain((again) => converge(again, ipam, attempt + 1, conf)),
            )
          : TE.left(err),
      ),
    );
  // The masquerade of the plan against the host's chains and rules as `nf` reads them.
  const masqWith =
    (nf: TE.TaskEither<CniError, KernelState>) =>
    (p: AttachmentPlan): TE.TaskEither<CniError, void> =>
      pipe(
        nf,
        TE.chain((seen) => apply(ctx, plan(netfilterState(p.kernel), seen, nscope))),
      );

  // IPAM's DEL releases every address of (container, ifname): while another attachment of that key is
  // recorded (live, or half-made by a killed ADD), it would take that one's address too. Then the address
  // this ADD was given stays allocated to the key, and goes with the key's DEL or GC.
  const releaseOwn: TE.TaskEither<CniError, void> = async () => {
    const st = await attachmentsIn(sqliteLog, ctx, dataDir.right, bc.name)();
    const others = E.isRight(st) && recordsOf(st.right, args.containerId, args.ifname).some((r) => r.hostVeth !== hostVeth);
    if (others) {
      process.stderr.write(
        `bridge: ${args.containerId}/${args.ifname} has another recorded attachment: the address of this failed ADD stays allocated to it until its DEL\n`,
      );
      return E.right(undefined);
    }
    return ipamDel(ctx, bc, args)();
  };

  // Back to "not attached": what this ADD owns, without the pod's interface when it is someone else's (then
  // true: the ADD failed because the name is taken, whatever the plan stumbled on first, since the pod was
  // not read before it).
  const undoAdd: TE.TaskEither<CniError, boolean> = pipe(
    observe(ctx, bc, scope, args.netns),
    // A pod that cannot be read (gone meanwhile): what this ADD made in the host still goes.
    TE.orElse(() => observe(ctx, bc, scope, undefined)),
    TE.chain((seen) => {
      const foreign = taken(seen);
      const own = foreign
        ? {
            ...scope,
            links: scope.links.filter((l) => l.ns !== args.netns),
            devices: scope.devices.filter((d) => d.ns !== args.netns),
          }
        : scope;
      return TE.map(() => foreign)(apply(ctx, plan(emptyKernelState(), seen, own)));
    }),
  );

  // Give the address back, keeping the error that made the ADD fail.
  const release =
    <A>(err: CniError): TE.TaskEither<CniError, A> =>
    async () => {
      await releaseOwn();
      await forget();
      return E.left(err);
    };

  // feltd (ctx.settle) writes the masquerade of this attachment without reading the host's chains first, and
  // checks it once it is idle. The masquerade is the attachment's own chain (written whole: the restore declares
  // it, which creates it or empties it) and one jump to it from POSTROUTING. Only the jump could be there
  // already: a second ADD of the same container and address with no DEL between, which the CNI spec rules out
  // and a killed ADD's DEL or GC would have removed; its copy does what it does. The check removes such a copy
  // (a DEL of the attachment, which reads and removes all of it, makes the check moot). So iptables-save, the
  // slowest read, is off the way to the answer.
  const blindMasq = ctx.settle !== undefined && bc.ipMasq && bc.ipMasqBackend === 'iptables' && !NEEDS_INTERFACE.has(bc.ipamType);
  const checkMasq = (p: AttachmentPlan): TE.TaskEither<CniError, void> => {
    const want = netfilterState(p.kernel);
    const families = [...new Set([...(want.chains ?? []), ...(want.rules ?? [])].map((c) => c.family))].sort();
    if (families.length === 0) return TE.right(undefined);
    return pipe(
      observeNetfilter(ctx, nscope, families),
      TE.chain((seen) => {
        const ops = plan(want, seen, nscope);
        if (ops.length === 0) return TE.right(undefined);
        process.stderr.write(
          `bridge: ${args.containerId}/${args.ifname}: the masquerade check found what the ADD did not expect; ${ops.map((o) => o.op).join(', ')}\n`,
        );
        return apply(ctx, ops);
      }),
    );
  };

  // Reading the kernel and allocating the address are independent: do both at once. If reading fails (e.g.
  // CNI_NETNS is not a network namespace) after IPAM succeeded, the address must not stay allocated.
  // The host's IPv4 masquerade is read from the start, beside everything else (its IPv6 one once IPAM gave an
  // IPv6 address: an IPv4-only attachment wants no IPv6 chain, and one it does not see it does not touch).
  type Observed = { seen: KernelState; ipam: Result | undefined; madeHere: boolean; nf: TE.TaskEither<CniError, KernelState> };
  const observeAndAllocate: TE.TaskEither<CniError, Observed> = async () => {
    if (NEEDS_INTERFACE.has(bc.ipamType)) return interfaceFirst();
    const nf4 = blindMasq
      ? Promise.resolve(E.right<CniError, KernelState>(emptyKernelState()))
      : observeNetfilter(ctx, nscope, ADD_FAMILIES)();
    const [seen, ipam] = await Promise.all([
      observe(ctx, bc, kscope, undefined, ADD_FAMILIES)(),
      pipe(
        record,
        TE.chain(() => ipamAdd(ctx, bc, args)),
      )(),
    ]);
    if (E.isLeft(ipam)) {
      await nf4;
      await forget();
      return ipam;
    }
    if (E.isLeft(seen)) {
      await nf4;
      return release<Observed>(seen.left)();
    }
    const nf: TE.TaskEither<CniError, KernelState> = blindMasq
      ? () => nf4
      : pipe(
          () => nf4,
          TE.chain((four) => withIpv6Masq(ctx, bc, nscope, four, ipam.right)),
        );
    return E.right({ seen: seen.right, ipam: ipam.right, madeHere: false, nf });
  };

  // An IPAM plugin that talks on the interface (dhcp) needs it first, as the reference orders it: the layer-2
  // attachment (bridge, veth pair, up), then IPAM, then a fresh observation to plan the rest from.
  const undo = async (): Promise<void> => {
    await undoAdd();
    await forget();
  };
  const interfaceFirst: TE.TaskEither<CniError, Observed> = pipe(
    record,
    TE.chain(() => cleaningUp(forget)(observe(ctx, bc, scope, args.netns, ADD_FAMILIES))),
    TE.chain((seen) =>
      taken(seen)
        ? cleaningUp(forget)(
            TE.left(cniError(ErrCode.InterfaceExists, `container veth name provided (${args.ifname}) already exists in ${args.netns}`)),
          )
        : TE.right(seen),
    ),
    TE.chain((seen) => cleaningUp(undo)(converge(seen, undefined, 1, { ...bc, ipamType: '' }))),
    TE.chain(() => cleaningUp(undo)(ipamAdd(ctx, bc, args))),
    TE.chain((ipam) =>
      pipe(
        observe(ctx, bc, scope, args.netns, ADD_FAMILIES),
        TE.chain((s) => withIpv6Masq(ctx, bc, scope, s, ipam)),
        cleaningUp(async () => {
          await ipamDel(ctx, bc, args)();
          await undo();
        }),
        TE.map((now): Observed => ({ seen: now, ipam, madeHere: true, nf: TE.right(netfilterState(now)) })),
      ),
    ),
  );

  // The pod's ip batch starts ahead once the host is read and IPAM has answered, while the host part is planned
  // and made (feltd, while few calls run: Kernel.prestart); unused, it ends with the ADD.
  let prestarted = (): void => undefined;
  const added = pipe(
    observeAndAllocate,
    TE.chainFirstIOK(() => () => (prestarted = kernelFor(ctx).prestart?.(args.netns) ?? prestarted)),
    // The log is not needed again unless this ADD fails: it is closed while the kernel is changed.
    TE.chainFirstIOK(() => () => (traceMark('observed and allocated'), ctx.stores.closeSoon())),
    TE.chain(({ seen, ipam, madeHere, nf }) =>
      // The interface name is taken by something that is not ours: only give the address back (the rollback
      // below would delete that interface).
      !madeHere && taken(seen)
        ? release<{ p: AttachmentPlan; ops: Op[] }>(interfaceExists())
        : pipe(
            converge(seen, ipam, 1, bc, masqWith(nf)),
            // Whatever failed after IPAM, converge back to "not attached" and give the address back; a
            // container interface that is not this ADD's stays.
            TE.orElse((err) => async () => {
              let foreign = false;
              await pipe(
                undoAdd,
                TE.chain((f) => ((foreign = f), releaseOwn)),
                TE.chain(() => forget),
              )();
              return E.left<CniError, { p: AttachmentPlan; ops: Op[] }>(foreign ? interfaceExists() : err);
            }),
          ),
    ),
    TE.chainFirstIOK(
      ({ p }) =>
        () =>
          blindMasq && ctx.settle?.(checkMasq(p)),
    ),
    TE.chainFirst(() => markReady(journal, who, hostVeth, ctx, startedMs)),
    TE.map(({ p }) => p.result),
  );
  return () => added().finally(() => prestarted());
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parseBridgeConf(conf, args.args);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const bc = parsed.right;
  // Delete can be called many times, and after the namespace is gone: neither is an error.
  const netns = liveNetns(args.netns);
  const scope = attachmentScope(bc, args.containerId, args.ifname, netns ?? '');
  const ownScope: OwnershipScope = netns ? scope : { ...scope, links: [], devices: [] };
  const dataDir = logDir(conf);
  if (E.isLeft(dataDir)) return TE.left(dataDir.left);
  const who = { network: bc.name, containerId: args.containerId, ifname: args.ifname };
  // An IPAM plugin that talks on the interface (dhcp releases through it) goes before the interface does;
  // any other releases while the kernel objects go (the reference releases before removing anything).
  const first = NEEDS_INTERFACE.has(bc.ipamType) ? ipamDel(ctx, bc, args) : TE.right<CniError, void>(undefined);
  const meanwhile = NEEDS_INTERFACE.has(bc.ipamType) ? TE.right<CniError, void>(undefined) : ipamDel(ctx, bc, args);
  // The recorded host veths too: an ADD killed half-way may have left one. An unreadable log still lets DEL
  // remove what it finds without it; the error comes from recording the removal. What is read from the
  // kernel does not depend on the records: both are read at once.
  const recorded = pipe(
    attachmentsIn(sqliteLog, ctx, dataDir.right, bc.name),
    TE.orElse(() => TE.right<CniError, AttachmentsState>(initialAttachments())),
  );
  // The pod is read only when no record names a host veth that is there and is the one recorded: deleting
  // that veth takes the pod's end with it (everything on it goes too). Else (an attachment the reference
  // made, a record of a veth that is gone) the pod is read as well, as before.
  const present = (recs: readonly AttachmentRecord[], links: readonly Link[]): boolean =>
    recs.some(
      (r) =>
        links.some((l) => l.ns === HOST && l.name === r.hostVeth && l.kind === 'veth') &&
        recordedVethMismatch(r, links, recordedBridge(r, bc)) === undefined,
    );
  const remove: TE.TaskEither<CniError, void> = async () => {
    const st = await recorded();
    if (E.isLeft(st)) return st;
    const recs = recordsOf(st.right, args.containerId, args.ifname);
    const hostOnly = netns !== undefined && recs.length > 0;
    // Only the masquerade backend the recorded ADDs used, when they agree; both without a record.
    const own = ownBackendOnly(ownScope, recordedBackend(recs));
    // What `scope` owns, read from the host alone when a record names a host veth that is there, else with the
    // pod; then removed. The release (in-process for felt's host-local) runs once the read is in, while the
    // removal's processes work (its transaction is synchronous: during the read it would hold the answer back).
    const removeAll = async (scope: OwnershipScope): Promise<E.Either<CniError, void>> => {
      let seen = await observe(ctx, bc, hostOnly ? withHostVeths(scope, recs) : scope, hostOnly ? undefined : netns)();
      if (hostOnly && E.isRight(seen) && !present(recs, seen.right.links)) seen = await observe(ctx, bc, scope, netns)();
      if (E.isLeft(seen)) return seen;
      const removing = apply(ctx, plan(emptyKernelState(), seen.right, withHostVeths(scope, identified(recs, seen.right, bc))))();
      const [removed, released] = await Promise.all([removing, meanwhile()]);
      return E.isLeft(removed) ? removed : released;
    };
    // Run once (standalone): one read of the links and the masquerade, one plan, one apply. Served by feltd
    // (ctx.kernel: its long-lived ip reads the host in a millisecond): the masquerade is read, planned and
    // removed beside the links, so the veth's deletion does not wait for iptables-save. Standalone, the split
    // measured ~15 ms slower: both reads are processes there and end together, and the restore's deletion,
    // closing, holds nf_tables' lock through a grace period that the veth's unregistration then waits for.
    const nscope = netfilterScope(own);
    const masquerade = ctx.kernel
      ? pipe(
          observeNetfilter(ctx, nscope, [4, 6]),
          TE.chain((seen) => apply(ctx, plan(emptyKernelState(), seen, nscope))),
        )
      : TE.right<CniError, void>(undefined);
    const [nf, removed] = await Promise.all([masquerade(), removeAll(ctx.kernel ? withoutNetfilterScope(own) : own)]);
    return E.isLeft(nf) ? nf : removed;
  };
  return pipe(
    first,
    TE.chain(() => remove),
    TE.chain(() => decideIn(sqliteLog, ctx, dataDir.right, bc.name, { type: 'RemoveAttachments', data: { ...who, reason: 'del' } })),
  );
}

/**
 * The masquerade backend the recorded ADDs used: each record's config resolved as its ADD resolved it (the
 * config's choice, else by the tools on this host); undefined when there is no record or they differ.
 */
const recordedBackend = (recs: readonly AttachmentRecord[]): NetfilterBackend | undefined => {
  const used = new Set(
    recs.map((r) => {
      const asked = r.conf?.['ipMasqBackend'];
      const b = resolveBackend('ipMasqBackend', asked === 'iptables' || asked === 'nftables' ? asked : undefined);
      return E.isRight(b) ? b.right : undefined;
    }),
  );
  return used.size === 1 ? [...used][0] : undefined;
};

/** The bridge an attachment's host veth was put on: the recorded config's, else the current one's. */
const recordedBridge = (rec: AttachmentRecord, bc: BridgeConf): string => {
  const b = rec.conf?.['bridge'];
  return typeof b === 'string' && b !== '' ? b : bc.bridge;
};

/**
 * The records whose host veth, if the kernel has a link of that name, is that veth (recordedVethMismatch);
 * for the others the link is left alone and stderr says why.
 */
const identified = (recs: readonly AttachmentRecord[], seen: KernelState, bc: BridgeConf): AttachmentRecord[] =>
  recs.filter((r) => {
    const why = recordedVethMismatch(r, seen.links, recordedBridge(r, bc));
    if (why) process.stderr.write(`bridge: ${why}\n`);
    return why === undefined;
  });

const withHostVeths = (scope: OwnershipScope, recs: readonly AttachmentRecord[]): OwnershipScope => ({
  ...scope,
  links: [...scope.links, ...recs.map((r) => ({ ns: HOST, name: r.hostVeth }))],
  devices: [...scope.devices, ...recs.map((r) => ({ ns: HOST, dev: r.hostVeth }))],
});

/**
 * GC: every recorded attachment of this network outside cni.dev/valid-attachments loses its host veth
 * (which takes the container end with it) and its masquerade chain and rule, then its record; then the IPAM
 * plugin collects the addresses, as the reference does. Only the host namespace is looked at: a recorded
 * netns path may have been reused by another pod. A chain is kept while a valid attachment of the same
 * container uses it (chains are per network and container, not per interface).
 */
function cmdGc(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parseBridgeConf(conf, args.args);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const bc = parsed.right;
  const errs: string[] = [];
  const valid = parseAttachments(conf.raw['cni.dev/valid-attachments'], errs);
  if (errs.length) return TE.left(invalidConfig(errs.join('; ')));
  if (!valid) return TE.left(invalidConfig('cni.dev/valid-attachments: required for GC'));
  const dataDir = logDir(conf);
  if (E.isLeft(dataDir)) return TE.left(dataDir.left);
  const collect = (rec: AttachmentRecord): TE.TaskEither<CniError, void> => {
    const full = attachmentScope(bc, rec.containerId, rec.ifname, '', rec.hostVeth);
    const chainInUse = valid.some((v) => v.containerId === rec.containerId);
    const scope: OwnershipScope = {
      links: full.links.filter((l) => l.ns === HOST),
      devices: full.devices.filter((d) => d.ns === HOST),
      chains: chainInUse ? [] : full.chains,
      ruleMarkers: chainInUse ? [] : full.ruleMarkers,
    };
    return pipe(
      observe(ctx, bc, scope, undefined),
      // A link that has the record's name but is not its veth stays; the record goes (it names nothing of ours).
      TE.map((seen) => ({ seen, own: identified([rec], seen, bc).length === 1 ? scope : { ...scope, links: [], devices: [] } })),
      TE.chain(({ seen, own }) => apply(ctx, plan(emptyKernelState(), seen, own))),
      TE.chain(() => decideIn(sqliteLog, ctx, dataDir.right, bc.name, { type: 'CollectAttachments', data: { records: [rec] } })),
    );
  };
  const t = bc.ipamType;
  return pipe(
    attachmentsIn(sqliteLog, ctx, dataDir.right, bc.name),
    TE.chain((st) => TE.traverseSeqArray(collect)(outsideValid(st, valid))),
    // Masquerade rules of the network (nftables) that no valid attachment has, recorded or not.
    TE.chain(() => gcMasquerade(ctx, bc.name, valid)),
    TE.chain(() => (t !== '' ? TE.map(() => undefined)(ctx.delegate(t, 'GC', args.stdin, args)) : TE.right(undefined))),
  );
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = E.chain(withMasqBackend)(parseBridgeConf(conf, args.args));
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const bc = parsed.right;
  if (conf.raw['prevResult'] === undefined) return TE.left(invalidConfig('prevResult: required for CHECK'));
  const read = readResult(conf.raw['prevResult']);
  if (E.isLeft(read)) return TE.left(invalidConfig(`prevResult: ${read.left}`));
  const prev = read.right;
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
  const ifs = prev.interfaces ?? [];
  const br = ifs.find((i) => i.name === bc.bridge && !i.sandbox);
  const cont = ifs.find((i) => i.name === args.ifname && i.sandbox === args.netns);
  const host = ifs.find((i) => i !== br && !i.sandbox);
  if (!br || !cont || !host) {
    return TE.left(
      invalidConfig(`prevResult.interfaces: expected the bridge "${bc.bridge}", a host veth and "${args.ifname}" in ${args.netns}`),
    );
  }
  const ipam = { ips: prev.ips ?? [], routes: prev.routes ?? [] };
  const expected = attachmentPlan({
    conf: bc,
    containerId: args.containerId,
    ifname: args.ifname,
    netns: args.netns,
    hostVeth: host.name,
    hostVethMac: host.mac ?? '',
    containerMac: cont.mac ?? '',
    bridgeMac: br.mac ?? '',
    ipam,
  });
  if (E.isLeft(expected)) return TE.left(expected.left);
  // CHECK compares what ADD made; sysctls are settings, not objects, and the bridge MAC may legitimately move.
  const want: KernelState = {
    ...expected.right.kernel,
    sysctls: [],
    links: expected.right.kernel.links.map((l) => (l.kind === 'bridge' ? { ...l, mac: undefined } : l)),
  };
  const scope = expected.right.scope;
  return pipe(
    bc.ipamType === '' ? TE.right(undefined) : ctx.delegate(bc.ipamType, 'CHECK', args.stdin, args),
    TE.chain(() => observe(ctx, bc, scope, args.netns)),
    TE.chainEitherK((seen) => {
      // A plugin chained after bridge (sbr) may have moved the pod's routes into a table of its own.
      const wrong = drift(want, routesOfAnyTable(seen, want, args.netns), scope);
      return wrong.length === 0
        ? E.right(undefined)
        : E.left(cniError(ErrCode.Drift, `bridge attachment of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
    }),
  );
}

export const bridge: Plugin = {
  type: 'bridge',
  versions: PLUGIN_VERSIONS,
  about: 'felt bridge: attaches containers to a Linux bridge with a veth pair',
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
  gc: cmdGc,
  status: toIpam('STATUS'),
};
