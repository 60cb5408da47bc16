// felt dhcp-daemon: what the reference's `dhcp daemon` is for felt's dhcp IPAM plugin. It listens on a unix
// socket (default /run/cni/dhcp.sock), answers the plugin's ADD/DEL/CHECK (one JSON line each way,
// core/dhcp/protocol.ts) and keeps one DHCP client per attachment running inside the pod's namespace:
// `nsenter --net=<CNI_NETNS> -- node <felt> dhcp-client`, an argument vector, with the client's config and
// commands on its stdin and its lease events on its stdout. The daemon itself never enters a namespace.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, isAbsolute } from 'node:path';
import { createInterface } from 'node:readline';
import * as E from 'fp-ts/lib/Either.js';
import { ErrCode } from '../../../core/cni/errors.ts';
import { readResult } from '../../../core/cni/result.ts';
import { clientId, DEFAULT_SOCKET_PATH, parseDhcpConf } from '../../../core/dhcp/config.ts';
import type { Lease } from '../../../core/dhcp/lease.ts';
import {
  parseClientEvent,
  parseDaemonRequest,
  type ClientConfig,
  type ClientEvent,
  type DaemonRequest,
  type DaemonResponse,
} from '../../../core/dhcp/protocol.ts';
import { str } from '../args.ts';
import type { IO, Subcommand } from '../common.ts';

interface DaemonOptions {
  readonly socketPath: string;
  /** One exchange's bound (DISCOVER..ACK, a renewal), ms; the reference's -timeout (10 s). */
  readonly timeoutMs: number;
  readonly retryMinMs: number;
  readonly log: (s: string) => void;
  /** The argv that runs `felt` (node and the script), to which `dhcp-client` is appended. */
  readonly felt: readonly string[];
}

interface Attachment {
  readonly id: string;
  readonly netns: string;
  readonly child: ChildProcess;
  state: 'acquiring' | 'bound' | 'ended';
  lease?: Lease;
  /** Settles with the client's first answer (bound or failed). */
  readonly first: Promise<DaemonResponse>;
  /** Settles when the client process exits. */
  readonly exited: Promise<void>;
}

const fail = (code: number, msg: string): DaemonResponse => ({ ok: false, code, msg });

class DhcpDaemon {
  private readonly attachments = new Map<string, Attachment>();
  constructor(private readonly o: DaemonOptions) {}

  private start(id: string, req: DaemonRequest, cfg: ClientConfig): Attachment {
    const child = spawn('nsenter', [`--net=${req.netns}`, '--', ...this.o.felt, 'dhcp-client'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let resolveFirst: (r: DaemonResponse) => void = () => undefined;
    const first = new Promise<DaemonResponse>((r) => (resolveFirst = r));
    // The client bounds its exchanges by the timeout; this bounds everything else (nsenter, node starting).
    const guard = setTimeout(() => {
      settle(fail(ErrCode.TryAgainLater, `dhcp: the client for ${id} gave no answer within ${Math.round(cfg.timeoutMs / 1000) + 10} s`));
      child.kill();
    }, cfg.timeoutMs + 10_000);
    const settle = (r: DaemonResponse) => {
      clearTimeout(guard);
      resolveFirst(r);
    };
    const stderr: string[] = [];
    const a: Attachment = {
      id,
      netns: req.netns,
      child,
      state: 'acquiring',
      first,
      exited: new Promise((r) => child.on('close', () => r())),
    };
    const onEvent = (e: ClientEvent) => {
      switch (e.type) {
        case 'bound':
          a.state = 'bound';
          a.lease = e.lease;
          this.o.log(`${id}: lease ${e.lease.address}/${e.lease.prefix} from ${e.lease.server}, renewal in ${e.lease.renewSeconds} s`);
          settle({ ok: true, lease: e.lease });
          break;
        case 'renewed':
          a.lease = e.lease;
          this.o.log(`${id}: lease ${e.lease.address} renewed, ends in ${e.lease.leaseSeconds} s`);
          break;
        case 'failed':
          a.state = 'ended';
          settle(fail(e.code, `dhcp: ${id}: ${e.error}`));
          break;
        case 'expired':
          a.state = 'ended';
          this.o.log(`${id}: lease ended${e.error ? `: ${e.error}` : ''}; interface brought down`);
          break;
        case 'released':
          a.state = 'ended';
          this.o.log(`${id}: lease released`);
          break;
      }
    };
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const e = parseClientEvent(line);
      if (E.isLeft(e)) this.o.log(`${id}: ignoring a client line: ${e.left}`);
      else onEvent(e.right);
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      stderr.push(line);
      this.o.log(`${id}: ${line}`);
    });
    child.on('error', (e) => settle(fail(ErrCode.IO, `dhcp: cannot start the client for ${id}: ${e.message}`)));
    child.on('close', (code) => {
      a.state = 'ended';
      if (this.attachments.get(id) === a) this.attachments.delete(id);
      settle(fail(ErrCode.IO, `dhcp: the client for ${id} exited (${code}) without a lease: ${stderr.slice(-3).join(' | ')}`));
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.write(JSON.stringify(cfg) + '\n');
    return a;
  }

  async handle(req: DaemonRequest): Promise<DaemonResponse> {
    const config = req.config;
    const name = typeof config['name'] === 'string' ? config['name'] : '';
    const parsed = parseDhcpConf(
      { cniVersion: String(config['cniVersion'] ?? ''), name, type: String(config['type'] ?? ''), raw: config },
      req.args,
    );
    if (E.isLeft(parsed)) return fail(parsed.left.code, parsed.left.msg);
    const id = clientId(req.containerId, name, req.ifname);
    const held = this.attachments.get(id);
    switch (req.command) {
      case 'ADD': {
        if (held && held.state !== 'ended') {
          // ADD again for a live attachment: the lease it holds (renewed, perhaps) rather than a second client.
          if (held.netns === req.netns) return held.state === 'bound' && held.lease ? { ok: true, lease: held.lease } : held.first;
          await this.stop(held);
        }
        if (!existsSync(req.netns)) return fail(ErrCode.InvalidEnvironment, `CNI_NETNS: "${req.netns}" does not exist`);
        const a = this.start(id, req, {
          ifname: req.ifname,
          clientId: id,
          options: parsed.right.options,
          timeoutMs: this.o.timeoutMs,
          retryMinMs: this.o.retryMinMs,
        });
        this.attachments.set(id, a);
        const r = await a.first;
        if (!r.ok) {
          a.child.kill();
          this.attachments.delete(id);
        }
        return r;
      }
      case 'DEL':
        if (held) await this.stop(held);
        return { ok: true };
      case 'CHECK': {
        if (!held || held.state !== 'bound' || !held.lease) return fail(ErrCode.Drift, `dhcp: no lease is held for ${id}`);
        const prev = config['prevResult'] === undefined ? undefined : readResult(config['prevResult']);
        if (prev && E.isLeft(prev)) return fail(ErrCode.InvalidNetworkConfig, `prevResult: ${prev.left}`);
        const want = `${held.lease.address}/${held.lease.prefix}`;
        const have = prev?.right.ips?.map((i) => i.address) ?? [];
        if (prev && !have.includes(want))
          return fail(ErrCode.Drift, `dhcp: ${id} holds ${want}, prevResult has ${have.join(', ') || 'no address'}`);
        return { ok: true, lease: held.lease };
      }
    }
  }

  /** Ask the client to release its lease and wait for it to exit (bounded: then it is killed). */
  private async stop(a: Attachment): Promise<void> {
    this.attachments.delete(a.id);
    if (a.child.exitCode === null && a.child.signalCode === null) {
      a.child.stdin!.write(JSON.stringify({ type: 'stop' }) + '\n');
      const timer = setTimeout(() => a.child.kill(), this.o.timeoutMs + 2000);
      await a.exited;
      clearTimeout(timer);
    }
  }

  /** Clients see their stdin close and exit without releasing, as the reference's leases end with its daemon. */
  shutdown(): void {
    for (const a of this.attachments.values()) a.child.stdin!.end();
  }
}

/** Serve the socket: one request line, one response line, per connection. */
function serve(d: DhcpDaemon, socketPath: string, log: (s: string) => void): Promise<net.Server> {
  const server = net.createServer((conn) => {
    let buf = '';
    let answered = false;
    conn.on('error', () => undefined);
    conn.on('data', (chunk: Buffer) => {
      if (answered) return;
      buf += chunk.toString();
      if (buf.length > 1 << 20) {
        answered = true;
        conn.end(JSON.stringify(fail(ErrCode.DecodeFailure, 'dhcp-daemon: request longer than 1 MiB')) + '\n');
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      answered = true;
      const req = parseDaemonRequest(buf.slice(0, nl));
      const reply = E.isLeft(req)
        ? Promise.resolve(fail(ErrCode.DecodeFailure, `dhcp-daemon: bad request: ${req.left}`))
        : d.handle(req.right).catch((e: unknown) => fail(ErrCode.Internal, `dhcp-daemon: ${(e as Error).message}`));
      void reply.then((r) => {
        if (E.isRight(req))
          log(`${req.right.command} ${req.right.containerId}/${req.right.ifname}: ${r.ok ? 'ok' : `error ${r.code}: ${r.msg}`}`);
        conn.end(JSON.stringify(r) + '\n');
      });
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve(server));
  });
}

/** A socket file nobody listens on is left over from a daemon that died: remove it. Refuse a live one. */
function clearStale(path: string): Promise<E.Either<string, void>> {
  if (!existsSync(path)) return Promise.resolve(E.right(undefined));
  return new Promise((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(E.left(`another daemon is listening on ${path}`));
    });
    c.once('error', () => {
      try {
        unlinkSync(path);
        resolve(E.right(undefined));
      } catch (e) {
        resolve(E.left(`cannot remove the stale socket ${path}: ${(e as Error).message}`));
      }
    });
  });
}

/** Seconds as the reference's flags take them ("10s", "1m", or a plain number of seconds). */
export function parseDuration(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s);
  if (!m) return undefined;
  const n = Number(m[1]);
  return Math.round(m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000);
}

export const dhcpDaemonCommand: Subcommand = {
  name: 'dhcp-daemon',
  summary: "serve the dhcp IPAM plugin: one DHCP client per attachment, in the pod's namespace",
  options: [
    { name: 'socket-path', value: 'PATH', help: `the plugin's socket (default ${DEFAULT_SOCKET_PATH}; also -socketpath PATH)` },
    { name: 'timeout', value: 'DURATION', help: 'how long one DHCP exchange may take (default 10s)' },
    { name: 'retry-min', value: 'DURATION', help: 'the shortest wait between renewal attempts (default 60s, RFC 2131)' },
    { name: 'pidfile', value: 'PATH', help: 'write the daemon PID here' },
  ],
  positional: '[-socketpath PATH]',
  maxPositionals: 2,
  run: async (p, io: IO) => {
    const err = (s: string) => (io.err(`felt dhcp-daemon: ${s}\n`), 2);
    let socketPath = str(p, 'socket-path') ?? DEFAULT_SOCKET_PATH;
    // The reference's Go flag spelling, so existing unit files keep working.
    const [flagName, flagValue] = p.positionals;
    if (flagName !== undefined) {
      const eq = /^--?socketpath=(.*)$/.exec(flagName);
      if (eq) {
        if (flagValue !== undefined) return err(`unexpected argument "${flagValue}"`);
        socketPath = eq[1]!;
      } else {
        if (flagName !== '-socketpath' && flagName !== '--socketpath') return err(`unexpected argument "${flagName}"`);
        if (flagValue === undefined) return err('-socketpath needs a value');
        socketPath = flagValue;
      }
    }
    if (!isAbsolute(socketPath)) return err(`--socket-path: "${socketPath}" is not an absolute path`);
    const timeoutMs = parseDuration(str(p, 'timeout') ?? '10s');
    if (timeoutMs === undefined || timeoutMs <= 0) return err(`--timeout: "${str(p, 'timeout')}" is not a duration (e.g. 10s)`);
    const retryMinMs = parseDuration(str(p, 'retry-min') ?? '60s');
    if (retryMinMs === undefined) return err(`--retry-min: "${str(p, 'retry-min')}" is not a duration (e.g. 60s)`);
    const pidfile = str(p, 'pidfile');
    if (pidfile !== undefined && !isAbsolute(pidfile)) return err(`--pidfile: "${pidfile}" is not an absolute path`);
    const log = (s: string) => io.err(`${new Date().toISOString()} ${s}\n`);
    const script = process.argv[1];
    if (!script) return err('cannot tell which script runs felt');
    const daemon = new DhcpDaemon({ socketPath, timeoutMs, retryMinMs, log, felt: [process.execPath, ...process.execArgv, script] });
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
    const stale = await clearStale(socketPath);
    if (E.isLeft(stale)) return err(stale.left);
    let server: net.Server;
    try {
      server = await serve(daemon, socketPath, log);
    } catch (e) {
      return err(`cannot listen on ${socketPath}: ${(e as Error).message}`);
    }
    if (pidfile) writeFileSync(pidfile, `${process.pid}`);
    log(`listening on ${socketPath}`);
    return new Promise<number>((resolve) => {
      const stop = () => {
        daemon.shutdown();
        server.close();
        try {
          unlinkSync(socketPath);
        } catch {
          // already gone
        }
        resolve(0);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
  },
};
