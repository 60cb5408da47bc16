// The bridge plugin's attachment records (core/bridge/attachments.ts) in felt's event log: the same
// `<dataDir>/felt.db` host-local uses, `dataDir` taken from the config's `ipam.dataDir` (default
// /var/lib/felt, also for an L2-only bridge, whose `ipam` may carry only `dataDir`). DEL and GC never create
// the log: with no felt.db there is nothing recorded.

import { existsSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import {
  attachmentsProjection,
  attachmentStream,
  decideAttachmentsIn,
  initialAttachments,
  type AttachmentCommand,
  type AttachmentsState,
} from '../../../core/bridge/attachments.ts';
import type { NetConf } from '../../../core/cni/env.ts';
import { invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { dataDirProblem, DEFAULT_DATA_DIR } from '../../../core/ipam/config.ts';
import type { EventStore } from '../../../adapters/store/types.ts';
import type { Ctx } from '../plugin.ts';
import { batched } from '../store.ts';

export interface AttachmentLog {
  /** Open the event store under `dataDir` (the call's: `ctx.stores`). */
  readonly openStore: (dataDir: string, ctx: Ctx) => Promise<E.Either<CniError, EventStore>>;
  readonly storeExists: (dataDir: string) => boolean;
}

export const sqliteLog: AttachmentLog = {
  openStore: (dataDir, ctx) => ctx.stores.open(dataDir),
  storeExists: (dataDir) => existsSync(join(dataDir, 'felt.db')),
};

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

const withStore =
  <A>(log: AttachmentLog, ctx: Ctx, dataDir: string, f: (s: EventStore) => E.Either<CniError, A>, batch = false): TE.TaskEither<CniError, A> =>
  async () => {
    const opened = await log.openStore(dataDir, ctx);
    if (E.isLeft(opened)) return opened;
    try {
      // A decision waits for those of the calls running at once to be committed with them (feltd).
      return batch ? await batched(opened.right, f) : f(opened.right);
    } finally {
      opened.right.close();
    }
  };

/** Run one command against the network's attachment stream (creating the log for RecordAttachment only). */
export const decideIn = (log: AttachmentLog, ctx: Ctx, dataDir: string, network: string, command: AttachmentCommand): TE.TaskEither<CniError, void> =>
  command.type !== 'RecordAttachment' && !log.storeExists(dataDir)
    ? TE.right(undefined)
    : withStore(log, ctx, dataDir, (s) =>
        E.map(() => undefined)(
          s.transactRows(attachmentStream(network), attachmentsProjection, (v) => decideAttachmentsIn(command, v), { time: ctx.now().toISOString() }),
        ),
        true,
      );

/** The network's recorded attachments (none when there is no log). */
export const attachmentsIn = (log: AttachmentLog, ctx: Ctx, dataDir: string, network: string): TE.TaskEither<CniError, AttachmentsState> =>
  !log.storeExists(dataDir)
    ? TE.right(initialAttachments())
    : withStore(log, ctx, dataDir, (s) => E.map((l: { state: AttachmentsState }) => l.state)(s.load(attachmentStream(network), attachmentsProjection)));
