// ptp: a point-to-point veth pair per container, routed through the host (no bridge). cmdAdd reads top to
// bottom like bridge's: parse, observe and allocate at once, compute the desired kernel state, plan against
// what is there, apply, print the result; any failure after IPAM converges back to "not attached" and gives
// the address back. Attachments are recorded before the kernel changes, as bridge's (its records, in stream
// `ptp/<network>`): DEL and GC remove a recorded host veth (only if it still is that veth: a veth with the
// recorded MAC and no master), GC every attachment outside the valid set.

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
import { kernelFor } from '../kernel.ts';
import { applyIn, kernelError, liveNetns, netnsExists, noNetns } from '../kit.ts';
import { gcMasquerade, withMasqBackend } from '../netfilter.ts';
import { ownBackendOnly } from '../../../core/netfilter/masquerade.ts';
import { toIpam, type Ctx, type Plugin } from '../plugin.ts';
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
import { attachmentsIn, decideIn, logDir, hostNetnsName, recordedConf, sqliteLog } from './bridge-log.ts';

const observe = (ctx: Ctx, pc: PtpConf, scope: OwnershipScope, netns: string | undefined): TE.TaskEither<CniError, KernelState> =>
  pipe(
    kernelFor(ctx).observe({
      namespaces: netns ? [HOST, netns] : [HOST],
      scope,
      iptables: pc.ipMasq && (scope.chains.length > 0 || scope.ruleMarkers.length > 0) ? [4, 6] : [],
    }),
    TE.mapLeft(kernelError),
  );

const apply = (ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> => applyIn(kernelFor(ctx), ops);

const remove = (ctx: Ctx, pc: PtpConf, scope: OwnershipScope, netns: string | undefined): TE.TaskEither<CniError, void> =>
  pipe(
    observe(ctx, pc, scope, netns),
    TE.chain((seen) => apply(ctx, plan(emptyKernelState(), seen, scope))),
  );

const ipam = (ctx: Ctx, pc: PtpConf, args: CmdArgs, command: 'ADD' | 'DEL' | 'CHECK') =>
  ctx.delegate(pc.ipamType, command, args.stdin, args);

/** ptp's attachment records: bridge's, in stream `ptp/<network>` of the log host-local uses. */
const journal = (ctx: Ctx, dataDir: string, network: string, command: AttachmentCommand): TE.TaskEither<CniError, void> =>
  decideIn(sqliteLog, ctx, dataDir, network, command, 'ptp');

/**
 * The records whose host veth, if a host link has its name, is that veth (a veth with the recorded MAC and
 * no master); for the others the link is left alone and stderr says why.
 */
const identified = (recs: readonly AttachmentRecord[], seen: KernelState): AttachmentRecord[] =>
  recs.filter((r) => {
    const why = recordedVethMismatch(r, seen.links, null);
    if (why) process.stderr.write(`ptp: ${why}\n`);
    return why === undefined;
  });

const withHostVeths = (scope: OwnershipScope, recs: readonly AttachmentRecord[]): OwnershipScope => ({
  ...scope,
  links: [...scope.links, ...recs.map((r) => ({ ns: HOST, name: r.hostVeth }))],
  devices: [...scope.devices, ...recs.map((r) => ({ ns: HOST, dev: r.hostVeth }))],
});

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const parsed = E.chain(withMasqBackend)(parsePtpConf(conf));
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const pc = parsed.right;
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
  const dataDir = logDir(conf);
  if (E.isLeft(dataDir)) return TE.left(dataDir.left);
  const rnd = ctx.randomBytes(16);
  const hostVeth = `veth${hex(rnd.slice(0, 4))}`;
  const hostVethMac = macFromBytes(rnd.slice(4, 10));
  // Only the masquerade of the backend in use: the other's is not read (DEL removes what either left).
  const scope = ownBackendOnly(ptpScope(pc, args.containerId, args.ifname, args.netns, hostVeth), pc.ipMasqBackend);
  const who = { network: pc.name, containerId: args.containerId, ifname: args.ifname };
  // Recorded before the kernel changes (as bridge does): DEL and GC find the host veth of an ADD killed half-way.
  const hostNs = hostNetnsName(ctx);
  const record = journal(ctx, dataDir.right, pc.name, {
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
  const forget = journal(ctx, dataDir.right, pc.name, { type: 'RemoveAttachments', data: { ...who, hostVeth, reason: 'rollback' } });
  // IPAM's DEL releases every address of (container, ifname): while another attachment of the key is recorded
  // (an ADD again for a live one), the address this ADD was given stays allocated to the key until its DEL.
  const releaseOwn: TE.TaskEither<CniError, void> = async () => {
    const st = await attachmentsIn(sqliteLog, ctx, dataDir.right, pc.name, 'ptp')();
    if (E.isRight(st) && recordsOf(st.right, args.containerId, args.ifname).some((r) => r.hostVeth !== hostVeth)) {
      process.stderr.write(
        `ptp: ${args.containerId}/${args.ifname} has another recorded attachment: the address of this failed ADD stays allocated to it until its DEL\n`,
      );
      return E.right(undefined);
    }
    return TE.map(() => undefined)(ipam(ctx, pc, args, 'DEL'))();
  };
  const release =
    (err: CniError): TE.TaskEither<CniError, never> =>
    async () => {
      await releaseOwn();
      await forget();
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
      hostVethMac,
      containerMac: macFromBytes(rnd.slice(10, 16)),
      ipam: res ?? {},
    });
    if (E.isLeft(p)) return release(p.left);
    return pipe(
      apply(ctx, plan(p.right.kernel, seen, scope)),
      TE.map(() => p.right.result),
      // Whatever failed, converge back to "not attached" and give the address back.
      TE.orElse((err) => async () => {
        await pipe(
          remove(ctx, pc, scope, args.netns),
          TE.chain(() => releaseOwn),
          TE.chain(() => forget),
        )();
        return E.left<CniError, Result>(err);
      }),
    );
  };
  // Reading the kernel and allocating the address are independent: both at once.
  return async () => {
    const [seen, res] = await Promise.all([
      observe(ctx, pc, scope, args.netns)(),
      pipe(
        record,
        TE.chain(() => ipam(ctx, pc, args, 'ADD')),
      )(),
    ]);
    if (E.isLeft(res)) {
      await forget();
      return res;
    }
    ctx.stores.closeSoon();
    if (E.isLeft(seen)) return release(seen.left)();
    return attach(seen.right, res.right)();
  };
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parsePtpConf(conf);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const pc = parsed.right;
  const dataDir = logDir(conf);
  if (E.isLeft(dataDir)) return TE.left(dataDir.left);
  // DEL may come many times, and after the namespace is gone (its veth end, and so the pair, went with it).
  const netns = liveNetns(args.netns);
  const own = ptpScope(pc, args.containerId, args.ifname, netns ?? '');
  // The recorded host veths too (an ADD killed half-way may have left one), each only if it is that veth.
  const recorded = pipe(
    attachmentsIn(sqliteLog, ctx, dataDir.right, pc.name, 'ptp'),
    TE.orElse(() => TE.right<CniError, AttachmentsState>(initialAttachments())),
  );
  const removeAll: TE.TaskEither<CniError, void> = async () => {
    const [seen, st] = await Promise.all([observe(ctx, pc, own, netns)(), recorded()]);
    if (E.isLeft(seen)) return seen;
    if (E.isLeft(st)) return st;
    const scope = withHostVeths(own, identified(recordsOf(st.right, args.containerId, args.ifname), seen.right));
    return apply(ctx, plan(emptyKernelState(), seen.right, scope))();
  };
  return pipe(
    removeAll,
    TE.chain(() => TE.map(() => undefined)(ipam(ctx, pc, args, 'DEL'))),
    TE.chain(() =>
      journal(ctx, dataDir.right, pc.name, {
        type: 'RemoveAttachments',
        data: { network: pc.name, containerId: args.containerId, ifname: args.ifname, reason: 'del' },
      }),
    ),
  );
}

/**
 * GC as bridge's: every recorded attachment of this network outside cni.dev/valid-attachments loses its host
 * veth (which takes the pod's end with it; only if it is that veth) and its masquerade chain and rule (kept
 * while a valid attachment of the container uses it), then its record; then IPAM collects the addresses. Only
 * the host namespace is looked at: a recorded netns path may have been reused by another pod.
 */
function cmdGc(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = parsePtpConf(conf);
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const pc = parsed.right;
  const errs: string[] = [];
  const valid = parseAttachments(conf.raw['cni.dev/valid-attachments'], errs);
  if (errs.length) return TE.left(invalidConfig(errs.join('; ')));
  if (!valid) return TE.left(invalidConfig('cni.dev/valid-attachments: required for GC'));
  const dataDir = logDir(conf);
  if (E.isLeft(dataDir)) return TE.left(dataDir.left);
  const collect = (rec: AttachmentRecord): TE.TaskEither<CniError, void> => {
    const full = ptpScope(pc, rec.containerId, rec.ifname, '', rec.hostVeth);
    const chainInUse = valid.some((v) => v.containerId === rec.containerId);
    const scope: OwnershipScope = { ...full, chains: chainInUse ? [] : full.chains, ruleMarkers: chainInUse ? [] : full.ruleMarkers };
    return pipe(
      observe(ctx, pc, scope, undefined),
      TE.map((seen) => ({ seen, own: identified([rec], seen).length === 1 ? scope : { ...scope, links: [], devices: [] } })),
      TE.chain(({ seen, own }) => apply(ctx, plan(emptyKernelState(), seen, own))),
      TE.chain(() => journal(ctx, dataDir.right, pc.name, { type: 'CollectAttachments', data: { records: [rec] } })),
    );
  };
  return pipe(
    attachmentsIn(sqliteLog, ctx, dataDir.right, pc.name, 'ptp'),
    TE.chain((st) => TE.traverseSeqArray(collect)(outsideValid(st, valid))),
    // Masquerade rules of the network (nftables) that no valid attachment has, recorded or not.
    TE.chain(() => gcMasquerade(ctx, pc.name, valid)),
    TE.chain(() => TE.map(() => undefined)(ctx.delegate(pc.ipamType, 'GC', args.stdin, args))),
  );
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = E.chain(withMasqBackend)(parsePtpConf(conf));
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const pc = parsed.right;
  if (conf.raw['prevResult'] === undefined) return TE.left(invalidConfig('prevResult: required for CHECK'));
  const prev = readResult(conf.raw['prevResult']);
  if (E.isLeft(prev)) return TE.left(invalidConfig(`prevResult: ${prev.left}`));
  if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
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
      return wrong.length === 0
        ? E.right(undefined)
        : E.left(cniError(ErrCode.Drift, `ptp attachment of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
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
  gc: cmdGc,
  status: toIpam('STATUS'),
};
