// tuning: a chained plugin that sets sysctls in the container's namespace and attributes of the container
// interface (mac, mtu, promisc, allmulti, txQLen), as the reference plugin does, and puts every original value
// back on DEL, sysctls included. The originals are an event in felt's log (`<dataDir>/felt.db`, stream
// `tuning/<network>`), recorded before anything changes.
//
// cmdAdd reads top to bottom: parse (config, allowlist, prevResult), observe the container namespace, record
// the values about to change, plan the configured state against what is there, apply, print prevResult with
// the new MAC. An apply that fails converges back to the recorded originals.

import { existsSync, readFileSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import type { KernelState, Op } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { emptyScope } from '../../../core/kernel/scope.ts';
import { parseAllowlist, parseDataDir, parseTuningConf, type Allowlist, type TuningConf } from '../../../core/tuning/config.ts';
import { attachmentKey, decide, tuningProjection, tuningStream, type TuningCommand } from '../../../core/tuning/decider.ts';
import { checkedState, originalsOf, restoredState, tunedResult, tunedState, type Originals } from '../../../core/tuning/desired.ts';
import { callDeps } from '../kernel.ts';
import { applyIn, netnsExists, noNetns, observeIn, withStore, type PluginDeps } from '../kit.ts';
import type { Ctx, Plugin } from '../plugin.ts';

const DEFAULT_ALLOWLIST = '/etc/cni/tuning/allowlist.conf';

/** The effects tuning uses; tests swap in the memory kernel and store, or an allowlist of their own. */
export interface TuningDeps extends PluginDeps {
  /** The sysctl allowlist file; honoured when it exists, as the reference does. */
  readonly allowlistPath: string;
  /** The file's text, undefined when there is no such file. */
  readonly readText: (path: string) => E.Either<CniError, string | undefined>;
}

export const linuxDeps: TuningDeps = {
  ...callDeps,
  allowlistPath: DEFAULT_ALLOWLIST,
  readText: (path) => {
    try {
      return E.right(existsSync(path) ? readFileSync(path, 'utf8') : undefined);
    } catch (e) {
      return E.left(cniError(ErrCode.IO, `sysctl allowlist: cannot read ${path}: ${(e as Error).message}`));
    }
  },
};

function allowlist(deps: TuningDeps): E.Either<CniError, Allowlist | undefined> {
  const text = deps.readText(deps.allowlistPath);
  if (E.isLeft(text) || text.right === undefined) return E.map(() => undefined)(text);
  const patterns = parseAllowlist(text.right);
  return E.isLeft(patterns)
    ? E.left(invalidConfig(`sysctl: the allowlist ${deps.allowlistPath} does not parse: ${patterns.left}`))
    : E.right({ path: deps.allowlistPath, patterns: patterns.right });
}

const parse = (deps: TuningDeps, args: CmdArgs, conf: NetConf, withAllowlist: boolean): E.Either<CniError, TuningConf> =>
  pipe(
    withAllowlist ? allowlist(deps) : E.right(undefined),
    E.chain((al) =>
      parseTuningConf({ conf, stdin: args.stdin, cniArgs: args.args, ifname: args.ifname, ...(al ? { allowlist: al } : {}) }),
    ),
  );

function prevResult(conf: NetConf): E.Either<CniError, Result> {
  if (conf.raw['prevResult'] === undefined || conf.raw['prevResult'] === null) {
    return E.left(invalidConfig('prevResult: required (tuning is a chained plugin: it runs after the plugin that made the interface)'));
  }
  const r = readResult(conf.raw['prevResult']);
  return E.isLeft(r) ? E.left(invalidConfig(`prevResult: ${r.left}`)) : r;
}

const record = (deps: TuningDeps, ctx: Ctx, dataDir: string, network: string, c: TuningCommand) =>
  withStore(deps, ctx, dataDir, (store) =>
    store.transact(tuningStream(network), tuningProjection, (s) => decide(c, s), { time: ctx.now().toISOString() }),
  );

function observe(deps: TuningDeps, ctx: Ctx, netns: string, keys: readonly string[]): TE.TaskEither<CniError, KernelState> {
  return observeIn(deps.kernel(ctx), { namespaces: [netns], sysctls: keys.map((key) => ({ ns: netns, key })) });
}

const apply = (deps: TuningDeps, ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> => applyIn(deps.kernel(ctx), ops);

/** Put the originals back on what is still there (the same plan machinery, with the originals desired). */
function restore(deps: TuningDeps, ctx: Ctx, netns: string, ifname: string, orig: Originals): TE.TaskEither<CniError, void> {
  return pipe(
    observe(
      deps,
      ctx,
      netns,
      orig.sysctls.map((s) => s.key),
    ),
    TE.chain((seen) => apply(deps, ctx, plan(restoredState(orig, seen, netns, ifname), seen, emptyScope()))),
  );
}

const cmdAdd =
  (deps: TuningDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> => {
    const parsed = parse(deps, args, conf, true);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const tc = parsed.right;
    const prev = prevResult(conf);
    if (E.isLeft(prev)) return TE.left(prev.left);
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const ref = { network: tc.name, containerId: args.containerId, ifname: args.ifname };
    const want = tunedState(tc, args.netns, args.ifname);
    return pipe(
      observe(
        deps,
        ctx,
        args.netns,
        tc.sysctls.map((s) => s.key),
      ),
      TE.chain((seen) =>
        pipe(
          TE.fromEither(originalsOf(tc, seen, args.netns, args.ifname)),
          // Recorded before anything changes, so that whatever happens next DEL can put it back.
          TE.chain((now) =>
            record(deps, ctx, tc.dataDir, tc.name, { type: 'RecordOriginals', data: { ...ref, netns: args.netns, original: now } }),
          ),
          TE.chain((t) => {
            const original = t.state.attachments[attachmentKey(args.containerId, args.ifname)]!.original;
            return pipe(
              apply(deps, ctx, plan(want, seen, emptyScope())),
              // Whatever failed, converge back to the originals and forget them (the runtime will DEL anyway).
              TE.orElse((err) => async () => {
                await pipe(
                  restore(deps, ctx, args.netns, args.ifname, original),
                  TE.chain(() =>
                    record(deps, ctx, tc.dataDir, tc.name, { type: 'ForgetOriginals', data: { ...ref, reason: 'add-failed' } }),
                  ),
                )();
                return E.left<CniError, void>(err);
              }),
            );
          }),
        ),
      ),
      TE.map(() => ({ ...tunedResult(prev.right, tc, args.ifname), cniVersion: conf.cniVersion })),
    );
  };

const cmdDel =
  (deps: TuningDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> => {
    const dataDir = parseDataDir(conf);
    if (E.isLeft(dataDir)) return TE.left(dataDir.left);
    // DEL may be called many times, before any ADD and after the namespace is gone: none is an error.
    if (!deps.storeExists(dataDir.right)) return TE.right(undefined);
    const ref = { network: conf.name, containerId: args.containerId, ifname: args.ifname };
    const forget = (reason: 'del' | 'netns-gone') =>
      TE.map(() => undefined)(record(deps, ctx, dataDir.right, conf.name, { type: 'ForgetOriginals', data: { ...ref, reason } }));
    return pipe(
      withStore(deps, ctx, dataDir.right, (store) => store.load(tuningStream(conf.name), tuningProjection)),
      TE.chain((loaded) => {
        const known = loaded.state.attachments[attachmentKey(args.containerId, args.ifname)];
        if (!known) return TE.right(undefined);
        // A namespace that is gone took the interface and its sysctls with it: nothing left to put back.
        const netns = args.netns !== '' ? args.netns : known.netns;
        if (!netnsExists(netns)) return forget('netns-gone');
        return pipe(
          restore(deps, ctx, netns, args.ifname, known.original),
          TE.chain(() => forget('del')),
        );
      }),
    );
  };

const cmdCheck =
  (deps: TuningDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> => {
    const parsed = parse(deps, args, conf, false);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const tc = parsed.right;
    const prev = prevResult(conf);
    if (E.isLeft(prev)) return TE.left(prev.left);
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const want = checkedState(tc, args.netns, args.ifname);
    return pipe(
      observe(
        deps,
        ctx,
        args.netns,
        tc.sysctls.map((s) => s.key),
      ),
      TE.chainEitherK((seen) => {
        const wrong = drift(want, seen, emptyScope());
        return wrong.length === 0
          ? E.right(undefined)
          : E.left(cniError(ErrCode.Drift, `tuning of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`));
      }),
    );
  };

export const makeTuning = (deps: TuningDeps = linuxDeps): Plugin => ({
  type: 'tuning',
  versions: PLUGIN_VERSIONS,
  about: 'felt tuning: sysctls and interface attributes for a container, restored on DEL',
  add: cmdAdd(deps),
  del: cmdDel(deps),
  check: cmdCheck(deps),
});

export const tuning: Plugin = makeTuning();
