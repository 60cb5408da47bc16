// dhcp IPAM: the lease comes from `felt dhcp-daemon`, which runs a DHCP client in the pod's namespace and
// keeps the lease renewed. The plugin validates the config (code 7 naming the field), sends one JSON line
// over the daemon's unix socket (`ipam.daemonSocketPath`, default /run/cni/dhcp.sock; core/dhcp/protocol.ts)
// and turns the answer into a CNI result: the address with its prefix, the router as gateway, the routes.

import net from 'node:net';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, type CniError } from '../../../core/cni/errors.ts';
import { IPAM_VERSIONS, type Result } from '../../../core/cni/result.ts';
import { parseDhcpConf, type DhcpConf } from '../../../core/dhcp/config.ts';
import { leaseResult } from '../../../core/dhcp/lease.ts';
import {
  parseDaemonResponse,
  PROTOCOL_VERSION,
  type DaemonCommand,
  type DaemonRequest,
  type DaemonResponse,
} from '../../../core/dhcp/protocol.ts';
import type { Plugin } from '../plugin.ts';

/** The plugin gives up on a daemon that does not answer (its own exchanges are bounded by its --timeout). */
const ANSWER_TIMEOUT_MS = 120_000;

type Unreachable = { readonly unreachable: true; readonly why: string };

/** One request, one answer line. Left(Unreachable) when nothing listens on the socket. */
function call(socketPath: string, req: DaemonRequest): Promise<E.Either<CniError | Unreachable, DaemonResponse>> {
  return new Promise((resolve) => {
    let buf = '';
    let settled = false;
    const done = (v: E.Either<CniError | Unreachable, DaemonResponse>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn.destroy();
      resolve(v);
    };
    const conn = net.connect(socketPath);
    const timer = setTimeout(
      () =>
        done(
          E.left(cniError(ErrCode.TryAgainLater, `dhcp: no answer from the daemon on ${socketPath} within ${ANSWER_TIMEOUT_MS / 1000} s`)),
        ),
      ANSWER_TIMEOUT_MS,
    );
    conn.on('connect', () => conn.write(JSON.stringify(req) + '\n'));
    conn.on('error', (e: NodeJS.ErrnoException) => {
      if (buf === '' && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED' || e.code === 'ENOTSOCK'))
        done(E.left({ unreachable: true, why: e.code }));
      else done(E.left(cniError(ErrCode.IO, `dhcp: talking to the daemon on ${socketPath}: ${e.message}`)));
    });
    conn.on('data', (b: Buffer) => {
      buf += b.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const r = parseDaemonResponse(buf.slice(0, nl));
      done(E.isLeft(r) ? E.left(cniError(ErrCode.DecodeFailure, `dhcp: the daemon's answer does not parse: ${r.left}`)) : E.right(r.right));
    });
    conn.on('end', () => done(E.left(cniError(ErrCode.IO, `dhcp: the daemon on ${socketPath} closed the connection without an answer`))));
  });
}

const isUnreachable = (e: CniError | Unreachable): e is Unreachable => 'unreachable' in e;

const request = (command: DaemonCommand, args: CmdArgs, conf: NetConf): DaemonRequest => ({
  v: PROTOCOL_VERSION,
  command,
  containerId: args.containerId,
  netns: args.netns,
  ifname: args.ifname,
  args: args.args,
  config: conf.raw,
});

const noDaemon = (dc: DhcpConf, why: string): CniError =>
  cniError(
    ErrCode.TryAgainLater,
    `dhcp: no daemon listening on ${dc.socketPath} (ipam.daemonSocketPath; ${why}): start \`felt dhcp-daemon --socket-path ${dc.socketPath}\``,
  );

function ask(command: DaemonCommand, args: CmdArgs, conf: NetConf): TE.TaskEither<CniError, { dc: DhcpConf; r?: DaemonResponse }> {
  return pipe(
    TE.fromEither(parseDhcpConf(conf, args.args)),
    TE.chain((dc) => async () => {
      const out = await call(dc.socketPath, request(command, args, conf));
      if (E.isRight(out)) return out.right.ok ? E.right({ dc, r: out.right }) : E.left(cniError(out.right.code, out.right.msg));
      if (!isUnreachable(out.left)) return E.left(out.left);
      // No daemon holds no lease: DEL has nothing to release (the server lets the lease run out).
      return command === 'DEL' ? E.right({ dc }) : E.left(noDaemon(dc, out.left.why));
    }),
  );
}

/** Whether something accepts connections on the socket. */
const listening = (path: string): Promise<E.Either<string, void>> =>
  new Promise((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(E.right(undefined));
    });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(E.left(e.code ?? e.message)));
  });

export const dhcpIpam: Plugin = {
  type: 'dhcp',
  versions: IPAM_VERSIONS,
  about: 'felt dhcp: addresses from a DHCP server, leased and renewed by felt dhcp-daemon',
  add: (args, conf) =>
    pipe(
      ask('ADD', args, conf),
      TE.chain(({ r }): TE.TaskEither<CniError, Result> => {
        if (!r?.ok || !r.lease) return TE.left(cniError(ErrCode.DecodeFailure, 'dhcp: the daemon answered ADD without a lease'));
        return TE.right(leaseResult(r.lease, conf.cniVersion));
      }),
    ),
  del: (args, conf) => TE.map(() => undefined)(ask('DEL', args, conf)),
  check: (args, conf) => TE.map(() => undefined)(ask('CHECK', args, conf)),
  // STATUS (1.1.0): available when the daemon accepts connections (code 50 otherwise, as the spec says).
  status: (args, conf) =>
    pipe(
      TE.fromEither(parseDhcpConf(conf, args.args)),
      TE.chain((dc) => async () => {
        const l = await listening(dc.socketPath);
        return E.isRight(l) ? l : E.left(cniError(50, noDaemon(dc, l.left).msg));
      }),
    ),
};
