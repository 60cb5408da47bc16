// The bridge plugin's attachment records (core/bridge/attachments.ts) in felt's event log: the same
// `<dataDir>/felt.db` host-local uses, `dataDir` taken from the config's `ipam.dataDir` (default
// /var/lib/felt, also for an L2-only bridge, whose `ipam` may carry only `dataDir`). DEL and GC never create
// the log: with no felt.db there is nothing recorded.

import { readlinkSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import {
  attachmentsProjection,
  attachmentStream,
  decideAttachmentsIn,
  initialAttachments,
  type AttachmentCommand,
  type AttachmentsState,
  type RecordKind,
} from '../../../core/bridge/attachments.ts';
import type { NetConf } from '../../../core/cni/env.ts';
import { invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { dataDirProblem, DEFAULT_DATA_DIR } from '../../../core/ipam/config.ts';
import { callStore, withStore, type StoreAccess } from '../kit.ts';
import type { Ctx } from '../plugin.ts';

export type AttachmentLog = StoreAccess;

export const sqliteLog: AttachmentLog = callStore;

/**
 * The call's host network namespace as the kernel names it (`net:[4026531840]`): this process's, or the
 * caller's when feltd serves the call (`ctx.hostNetns`); undefined when unreadable.
 */
export function hostNetnsName(ctx: Ctx): string | undefined {
  try {
    return readlinkSync(ctx.hostNetns ?? '/proc/self/ns/net');
  } catch {
    return undefined;
  }
}

/** The network config as the attachment record keeps it: without prevResult (a result, not config). */
export function recordedConf(conf: NetConf): Readonly<Record<string, unknown>> {
  const { prevResult: _result, ...rest } = conf.raw;
  return rest;
}

/**
 * `ipam.dataDir`, as host-local reads and checks it (absolute, no '.' or '..' component, no control
 * character): checked here too, because the attachment is recorded under it before IPAM runs.
 */
export function logDir(conf: NetConf): E.Either<CniError, string> {
  const ipam = conf.raw['ipam'];
  const d = typeof ipam === 'object' && ipam !== null ? (ipam as Record<string, unknown>)['dataDir'] : undefined;
  if (d === undefined || d === null || d === '') return E.right(DEFAULT_DATA_DIR);
  if (typeof d !== 'string') return E.left(invalidConfig('ipam.dataDir: must be a path'));
  const problem = dataDirProblem(d);
  return problem ? E.left(invalidConfig(`ipam.dataDir: ${JSON.stringify(d)} ${problem}`)) : E.right(d);
}

/**
 * Run one command against the network's attachment stream (creating the log for RecordAttachment only).
 * Whether the log exists is asked when the task runs, not when it is made: an ADD makes its rollback task
 * before its record creates the log.
 */
export const decideIn =
  (
    log: AttachmentLog,
    ctx: Ctx,
    dataDir: string,
    network: string,
    command: AttachmentCommand,
    kind: RecordKind = 'bridge',
  ): TE.TaskEither<CniError, void> =>
  () =>
    command.type !== 'RecordAttachment' && !log.storeExists(dataDir)
      ? Promise.resolve(E.right(undefined))
      : withStore(
          log,
          ctx,
          dataDir,
          (s) =>
            E.map(() => undefined)(
              s.transactRows(attachmentStream(network, kind), attachmentsProjection, (v) => decideAttachmentsIn(command, v), {
                time: ctx.now().toISOString(),
              }),
            ),
          // A decision waits for those of the calls running at once to be committed with them (feltd).
          true,
        )();

/** The network's recorded attachments (none when there is no log, when the task runs). */
export const attachmentsIn =
  (
    log: AttachmentLog,
    ctx: Ctx,
    dataDir: string,
    network: string,
    kind: RecordKind = 'bridge',
  ): TE.TaskEither<CniError, AttachmentsState> =>
  () =>
    !log.storeExists(dataDir)
      ? Promise.resolve(E.right(initialAttachments()))
      : withStore(log, ctx, dataDir, (s) =>
          E.map((l: { state: AttachmentsState }) => l.state)(s.load(attachmentStream(network, kind), attachmentsProjection)),
        )();
