// flannel: the CNI plugin that turns the node's subnet lease (subnet.env, written by feltd or flanneld) into
// a bridge + host-local configuration and delegates to it, as flannel-io/cni-plugin does. The rendered
// delegate config is kept under dataDir so that DEL uses exactly what ADD used.

import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, type Result } from '../../../core/cni/result.ts';
import { delegateConfig, parseFlannelConf, parseSubnetEnvFile, type FlannelConf } from '../../../core/cni/flannel.ts';
import type { Ctx, Plugin } from '../plugin.ts';

const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

function readSubnetEnv(fc: FlannelConf): E.Either<CniError, string> {
  try {
    return E.right(readFileSync(fc.subnetFile ?? DEFAULT_SUBNET_FILE, 'utf8'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') {
      return E.left(
        cniError(
          ErrCode.TryAgainLater,
          `subnetFile: ${fc.subnetFile ?? DEFAULT_SUBNET_FILE} does not exist yet: feltd (or flanneld) has not written the node's subnet lease; try again later`,
        ),
      );
    }
    return E.left(cniError(ErrCode.IO, `subnetFile: cannot read ${fc.subnetFile ?? DEFAULT_SUBNET_FILE}: ${err.message}`));
  }
}

const scratchPath = (fc: FlannelConf, containerId: string): string => join(fc.dataDir, containerId);

function saveScratch(path: string, json: string): E.Either<CniError, void> {
  try {
    mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp${process.pid}`;
    writeFileSync(tmp, json, { mode: 0o600 });
    renameSync(tmp, path);
    return E.right(undefined);
  } catch (e) {
    return E.left(cniError(ErrCode.IO, `dataDir: cannot save the delegate config to ${path}: ${(e as Error).message}`));
  }
}

function loadScratch(path: string): E.Either<CniError, string | undefined> {
  try {
    return E.right(readFileSync(path, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return E.right(undefined);
    return E.left(cniError(ErrCode.IO, `dataDir: cannot read ${path}: ${(e as Error).message}`));
  }
}

const delegateType = (json: string): string => (JSON.parse(json) as { type: string }).type;

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const prepared = pipe(
    parseFlannelConf(conf),
    E.chain((fc) =>
      pipe(
        readSubnetEnv(fc),
        E.chain((text) => E.mapLeft((msg: string) => invalidConfig(msg))(parseSubnetEnvFile(text, fc.subnetFile ?? DEFAULT_SUBNET_FILE))),
        E.map((env) => ({ fc, json: JSON.stringify(delegateConfig(fc, env)) })),
      ),
    ),
    E.chainFirst(({ fc, json }) => saveScratch(scratchPath(fc, args.containerId), json)),
  );
  if (E.isLeft(prepared)) return TE.left(prepared.left);
  const { json } = prepared.right;
  return pipe(
    ctx.delegate(delegateType(json), 'ADD', json, args),
    TE.chain((r) => (r ? TE.right(r) : TE.left(cniError(ErrCode.Delegate, 'delegate printed no result')))),
  );
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const fc = parseFlannelConf(conf);
  if (E.isLeft(fc)) return TE.left(fc.left);
  const path = scratchPath(fc.right, args.containerId);
  const saved = loadScratch(path);
  if (E.isLeft(saved)) return TE.left(saved.left);
  // Never added, or already deleted: nothing to do, as the spec asks.
  if (saved.right === undefined) return TE.right(undefined);
  const json = saved.right;
  return pipe(
    ctx.delegate(delegateType(json), 'DEL', json, args),
    TE.map(() => rmSync(path, { force: true })),
  );
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const fc = parseFlannelConf(conf);
  if (E.isLeft(fc)) return TE.left(fc.left);
  const saved = loadScratch(scratchPath(fc.right, args.containerId));
  if (E.isLeft(saved)) return TE.left(saved.left);
  if (saved.right === undefined) {
    return TE.left(cniError(ErrCode.UnknownContainer, `no delegate config saved for container ${args.containerId} in ${fc.right.dataDir}`));
  }
  const delegate = JSON.parse(saved.right) as Record<string, unknown>;
  if (conf.raw['prevResult'] !== undefined) delegate['prevResult'] = conf.raw['prevResult'];
  const json = JSON.stringify(delegate);
  return TE.map(() => undefined)(ctx.delegate(delegateType(json), 'CHECK', json, args));
}

export const flannel: Plugin = {
  type: 'flannel',
  versions: PLUGIN_VERSIONS,
  about: 'felt flannel: delegates to bridge + host-local with the node subnet from subnet.env',
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
};
