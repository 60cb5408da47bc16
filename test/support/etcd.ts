// A real etcd for tests: one member, a temp data dir, free ports, ready when `etcdctl endpoint health` says
// so. By default it listens on 127.0.0.1 of the namespace the test runs in (random high ports; nothing about
// the namespace's interfaces, routes or firewall changes). With `netns` it runs inside that (existing)
// namespace on `listenIP`, as the multi-node cluster test does on its underlay; then only processes in that
// namespace can reach it (use `etcdctl()` or run the client under `ip netns exec`).
//
// `stop()` kills it and removes the data dir (call it from afterAll); `kill()` / `restart()` take it down and
// bring it back on the same ports with the same data, for outage tests. A process exit kills it too.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, type Run } from './ns.ts';

export interface EtcdOptions {
  /** Run inside this network namespace (it must exist and have its interfaces up). */
  readonly netns?: string;
  /** The address to listen on (default 127.0.0.1). */
  readonly listenIP?: string;
  /** How long to wait for health (default 20 s). */
  readonly startTimeoutMs?: number;
}

export interface Etcd {
  /** The client URL, http://<ip>:<port>. */
  readonly endpoint: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly netns?: string;
  /** The etcd process id (undefined while killed). */
  readonly pid: number | undefined;
  /** Run etcdctl against this etcd (in its namespace); never rejects. */
  etcdctl(args: readonly string[], input?: string): Promise<Run>;
  /** Take etcd down, keeping its data. */
  kill(): Promise<void>;
  /** Start it again on the same ports with the same data, and wait until it is healthy. */
  restart(): Promise<void>;
  /** Kill it and remove its data dir. */
  stop(): Promise<void>;
}

/** A port nobody listens on right now (in the test's namespace). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

const live = new Set<ChildProcess>();
let exitHook = false;
const ensureExitHook = (): void => {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const p of live) {
      try {
        p.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function terminate(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(t);
  live.delete(p);
}

export async function startEtcd(opts: EtcdOptions = {}): Promise<Etcd> {
  ensureExitHook();
  const ip = opts.listenIP ?? '127.0.0.1';
  const host = ip.includes(':') ? `[${ip}]` : ip;
  const base = mkdtempSync(join(tmpdir(), 'felt-etcd-'));
  const dataDir = join(base, 'data');
  const logFile = join(base, 'etcd.log');
  const name = `felt-${randomBytes(3).toString('hex')}`;
  const inNs = (argv: readonly string[]): string[] => (opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...argv] : [...argv]);

  let clientPort = 0;
  let peerPort = 0;
  let proc: ChildProcess | undefined;
  const urls = () => ({ client: `http://${host}:${clientPort}`, peer: `http://${host}:${peerPort}` });

  const etcdctl = (args: readonly string[], input?: string): Promise<Run> =>
    exec(inNs(['etcdctl', `--endpoints=${urls().client}`, '--command-timeout=3s', ...args]), input);

  const launch = async (): Promise<void> => {
    const { client, peer } = urls();
    const argv = inNs([
      'etcd',
      '--name',
      name,
      '--data-dir',
      dataDir,
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `${name}=${peer}`,
      '--initial-cluster-state',
      'new',
      '--initial-cluster-token',
      name,
    ]);
    const fd = openSync(logFile, 'a');
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    live.add(p);
    p.once('exit', () => live.delete(p));
    proc = p;
    const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
    for (;;) {
      if (p.exitCode !== null || p.signalCode !== null) {
        throw new Error(`etcd exited (${p.exitCode ?? p.signalCode}) while starting: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
      }
      const h = await etcdctl(['endpoint', 'health']);
      if (h.code === 0) return;
      if (Date.now() > deadline) {
        await terminate(p);
        throw new Error(
          `etcd not healthy at ${client} after ${opts.startTimeoutMs ?? 20_000} ms: ${h.stderr.trim()}\n${readFileSync(logFile, 'utf8').slice(-2000)}`,
        );
      }
      await sleep(100);
    }
  };

  // Ports: free ones in our namespace; a fresh namespace has every port free. A port taken between the check
  // and etcd's bind makes etcd exit: try other ports.
  for (let attempt = 0; ; attempt++) {
    if (opts.netns) {
      clientPort = 20000 + Math.floor(Math.random() * 20000);
      peerPort = clientPort + 1;
    } else {
      clientPort = await freePort(ip);
      peerPort = await freePort(ip);
      if (peerPort === clientPort) continue;
    }
    try {
      await launch();
      break;
    } catch (e) {
      rmSync(dataDir, { recursive: true, force: true });
      if (attempt >= 2) {
        rmSync(base, { recursive: true, force: true });
        throw e;
      }
    }
  }

  const handle: Etcd = {
    get endpoint() {
      return urls().client;
    },
    get peerUrl() {
      return urls().peer;
    },
    dataDir,
    ...(opts.netns ? { netns: opts.netns } : {}),
    get pid() {
      return proc && proc.exitCode === null && proc.signalCode === null ? proc.pid : undefined;
    },
    etcdctl,
    async kill() {
      if (proc) await terminate(proc);
    },
    async restart() {
      if (proc) await terminate(proc);
      await launch();
    },
    async stop() {
      if (proc) await terminate(proc);
      rmSync(base, { recursive: true, force: true });
    },
  };
  return handle;
}
