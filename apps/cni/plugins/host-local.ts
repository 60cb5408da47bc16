// host-local: addresses from range sets, every allocation an event in felt's SQLite log. This module is the
// edge: it parses the config (core), reads resolv.conf, takes the time, and runs the IPAM Decider in one
// store transaction. The store is loaded lazily so plugins that bundle host-local (bridge) pay for SQLite
// only when they call it, and opened once per CNI call (apps/cni/store.ts).

import { readFileSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { IPAM_VERSIONS, parseResult, type DNS, type Result } from '../../../core/cni/result.ts';
import { parseIpamConf, type IpamConf } from '../../../core/ipam/config.ts';
import { checkAllocationIn, decideIpam, ipamProjection, ipamResult, ipamStream, type IpamCommand } from '../../../core/ipam/decider.ts';
import { parseResolvConf } from '../../../core/ipam/resolv.ts';
import { callStore, withStore, type StoreAccess } from '../kit.ts';
import type { Ctx, Plugin } from '../plugin.ts';

/** The effects host-local uses; tests swap the store for the in-memory twin. */
export interface HostLocalDeps extends StoreAccess {
  readonly readFile: (path: string) => E.Either<CniError, string>;
}

const sqliteDeps: HostLocalDeps = {
  ...callStore,
  readFile: (path) => {
    try {
      return E.right(readFileSync(path, 'utf8'));
    } catch (e) {
      return E.left(cniError(ErrCode.IO, `ipam.resolvConf: cannot read ${path}: ${(e as Error).message}`));
    }
  },
};

const parse = (args: CmdArgs, conf: NetConf): TE.TaskEither<CniError, IpamConf> => TE.fromEither(parseIpamConf(conf, args.args));

/** Run one IPAM command against the network's stream; returns the events it appended. */
function run(deps: HostLocalDeps, ctx: Ctx, ic: IpamConf, command: IpamCommand) {
  return withStore(
    deps,
    ctx,
    ic.dataDir,
    (store) =>
      // Over the table's view: the transaction reads the rows it looks up and writes the ones it changes.
      store.transactRows(ipamStream(ic.network), ipamProjection, (view) => decideIpam(command, view), { time: ctx.now().toISOString() }),
    // Group-committed with the decisions of the calls running at once (feltd's waves).
    true,
  );
}

/** ADD: one address from each range set (requested ones where asked), plus routes and dns. */
const ipamAdd =
  (deps: HostLocalDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> =>
    pipe(
      parse(args, conf),
      TE.chain((ic) => {
        let dns: DNS | undefined;
        if (ic.resolvConf !== undefined) {
          const text = deps.readFile(ic.resolvConf);
          if (E.isLeft(text)) return TE.left(text.left);
          dns = parseResolvConf(text.right);
        }
        const command: IpamCommand = { type: 'AllocateAddresses', data: { conf: ic, containerId: args.containerId, ifname: args.ifname } };
        return pipe(
          run(deps, ctx, ic, command),
          TE.map((t) => ({
            ...ipamResult(
              ic,
              t.events.map((e) => e.data),
              dns,
            ),
            cniVersion: conf.cniVersion,
          })),
        );
      }),
    );

/** DEL: release whatever (container, ifname) holds in this network; nothing held is fine. */
const ipamDel =
  (deps: HostLocalDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> =>
    pipe(
      parse(args, conf),
      TE.chain((ic) =>
        deps.storeExists(ic.dataDir)
          ? TE.map(() => undefined)(
              run(deps, ctx, ic, {
                type: 'ReleaseAddresses',
                data: { network: ic.network, containerId: args.containerId, ifname: args.ifname },
              }),
            )
          : TE.right(undefined),
      ),
    );

/** CHECK: the attachment holds an address, and prevResult's addresses in our ranges are its. */
const ipamCheck =
  (deps: HostLocalDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> =>
    pipe(
      parse(args, conf),
      TE.chain((ic) => {
        const prev = conf.raw['prevResult'] === undefined ? undefined : parseResult(conf.raw['prevResult']);
        const addrs = prev?.ips?.map((i) => i.address) ?? [];
        if (!deps.storeExists(ic.dataDir)) {
          return TE.left(
            cniError(ErrCode.Drift, `host-local: no address is allocated to ${args.containerId}/${args.ifname} in network "${ic.network}"`),
          );
        }
        return withStore(deps, ctx, ic.dataDir, (store) =>
          store.view(ipamStream(ic.network), ipamProjection, (view) => checkAllocationIn(view, ic, args.containerId, args.ifname, addrs)),
        );
      }),
    );

/** GC (1.1.0): release every allocation whose attachment is not in cni.dev/valid-attachments. */
const ipamGc =
  (deps: HostLocalDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> =>
    pipe(
      parse(args, conf),
      TE.chain((ic) => {
        if (!ic.validAttachments) return TE.left(invalidConfig('cni.dev/valid-attachments: required for GC'));
        if (!deps.storeExists(ic.dataDir)) return TE.right(undefined);
        return TE.map(() => undefined)(
          run(deps, ctx, ic, { type: 'CollectGarbage', data: { network: ic.network, validAttachments: ic.validAttachments } }),
        );
      }),
    );

/** STATUS (1.1.0): ready when the store opens. */
const ipamStatus =
  (deps: HostLocalDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> =>
    pipe(
      parse(args, conf),
      TE.chain((ic) => withStore(deps, ctx, ic.dataDir, () => E.right(undefined))),
      TE.mapLeft((e) => (e.code === ErrCode.InvalidNetworkConfig ? e : cniError(50, `host-local: not available: ${e.msg}`))),
    );

export const makeHostLocal = (deps: HostLocalDeps = sqliteDeps): Plugin => ({
  type: 'host-local',
  versions: IPAM_VERSIONS,
  about: 'felt host-local: IP addresses from range sets, recorded in an event log',
  add: ipamAdd(deps),
  del: ipamDel(deps),
  check: ipamCheck(deps),
  gc: ipamGc(deps),
  status: ipamStatus(deps),
});

export const hostLocal: Plugin = makeHostLocal();
