// feltd entry point: parse flags, find the underlay, check net-conf.json, and only then create the state dir and
// open the stores; start the daemon, stop on SIGTERM (keeping the dataplane: a restart converges without
// disturbing routes).

import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { getPriority, setPriority } from 'node:os';
import { spawnFromHelpers } from '../../adapters/kernel/exec.ts';
import { linuxKernel } from '../../adapters/kernel/linux.ts';
import { chooseUnderlay, readInterfaces, type Underlay } from '../../adapters/kernel/underlay.ts';
import { sqliteLeaseStore } from '../../adapters/lease/sqlite.ts';
import type { LeaseStore } from '../../adapters/lease/types.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import type { NetConfig } from '../../core/flannel/types.ts';
import { VERSION } from '../version.ts';
import { loadNetConfig, readNetConfigFile, startDaemon } from './daemon.ts';
import { parseFlags, USAGE, type Flags } from './flags.ts';
import { followCniAdds, healthServer, jsonLogger, Metrics, type Logger } from './observability.ts';
import { startCniServer, type CniServer } from './cni-server.ts';
import { cniService, recordCni, type CniService } from './cni-service.ts';
import { statusOf, statusRoutes } from './status-page.ts';

/** Processes that start feltd's child processes (each is blocked while one of its children gets to exec). */
const SPAWN_HELPERS = 2;

/**
 * feltd's thread at nice -10 for good (root only; otherwise as it is): every CNI call it serves waits on this
 * one thread between its processes, and on two cores with a call's processes runnable a thread at everyone's
 * priority is preempted between the steps it orders. Raised once, the store's write transactions no longer
 * raise and lower it around each commit (sqlite-schema.ts boost: three syscalls, and the lowering lets a waiting
 * process in). Its helpers are started before (their children run at the usual priority); the ip and tc
 * sessions it starts later share its priority.
 */
function raiseOwnThread(): void {
  try {
    if (getPriority() > RAISED) setPriority(RAISED);
  } catch {
    // not root: the usual priority, and each transaction raised as in a plugin run once
  }
}
const RAISED = -10;

async function main(): Promise<number> {
  const parsed = parseFlags(process.argv.slice(2));
  if ('error' in parsed) {
    process.stderr.write(`feltd: ${parsed.error}\n\n${USAGE}`);
    return 2;
  }
  const flags = parsed.flags;
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (flags.version) {
    process.stdout.write(`feltd v${VERSION}\n`);
    return 0;
  }
  const log = jsonLogger(flags.verbosity);
  const metrics = new Metrics();
  // SIGTERM and SIGINT are caught from here on: one that comes while feltd starts (its socket may already serve)
  // stops it as cleanly as one that comes later, never by the signal's default action.
  const stopSignal = firstStopSignal();
  // feltd runs many kernel tools at once (a wave of CNI calls, the reconciler): start them from small helper
  // processes, so the event loop does not stop while each child gets to exec, and each fork copies a small
  // process rather than feltd (adapters/kernel/exec.ts).
  await spawnFromHelpers(SPAWN_HELPERS);
  raiseOwnThread();
  if (flags.cniOnly) {
    const cni = await serveCni(flags, log, metrics);
    // The CNI server is closed (calls in flight answered) as main ends.
    return typeof cni === 'string' ? 1 : cniOnly(flags, log, metrics, stopSignal);
  }

  // Everything the arguments name is checked before anything is created (the state dir, the stores). The
  // underlay is chosen for the families the network config enables, as flanneld does: with the embedded store
  // the config file is read first; with etcd the config is read from etcd first (nothing is created for that).
  const interfaces = await readInterfaces()();
  if (E.isLeft(interfaces)) {
    log.error('cannot choose the underlay interface', { error: interfaces.left.msg });
    return 1;
  }
  const underlayFor = (c: NetConfig): E.Either<string, Underlay> =>
    chooseUnderlay(interfaces.right, {
      iface: flags.iface,
      ifaceRegex: flags.ifaceRegex,
      ...(flags.publicIP ? { publicIP: flags.publicIP } : {}),
      ...(flags.publicIPv6 ? { publicIPv6: flags.publicIPv6 } : {}),
      ipv4: c.enableIPv4,
      ipv6: c.enableIPv6,
    });
  for (const [flag, path] of [
    ['--etcd-cafile', flags.etcdCafile],
    ['--etcd-certfile', flags.etcdCertfile],
    ['--etcd-keyfile', flags.etcdKeyfile],
  ] as const) {
    if (path !== undefined && !existsSync(path)) {
      log.error(`${flag}: no file at ${path}`);
      return 1;
    }
  }
  if (!flags.etcdEndpoints.length) {
    const file = readNetConfigFile(flags.netConfigPath);
    if (E.isLeft(file)) {
      log.error('invalid network config', { error: file.left });
      return 1;
    }
    const early = underlayFor(file.right.config);
    if (E.isLeft(early)) {
      log.error('cannot choose the underlay interface', { error: early.left });
      return 1;
    }
    mkdirSync(flags.stateDir, { recursive: true });
  }
  // CNI calls from felt's forwarders, served once the arguments are checked (a second feltd on the socket stops here).
  const cni = flags.cniSocket ? await serveCni(flags, log, metrics) : undefined;
  if (typeof cni === 'string') return 1;
  mkdirSync(flags.stateDir, { recursive: true });

  const leases = await openLeaseStore(flags);
  log.info('lease store', {
    kind: flags.etcdEndpoints.length ? 'etcd' : 'embedded',
    where: flags.etcdEndpoints.join(',') || flags.store || join(flags.stateDir, 'leases.db'),
  });

  const config = await networkConfig(flags, leases, log, stopSignal);
  if (config === 'stopped') {
    log.info('stopping before the network config was read');
    await leases.close();
    return 0;
  }
  if (E.isLeft(config)) {
    log.error('invalid network config', { error: config.left });
    await leases.close();
    return 1;
  }
  const underlay = underlayFor(config.right);
  if (E.isLeft(underlay)) {
    log.error('cannot choose the underlay interface', { error: underlay.left });
    await leases.close();
    return 1;
  }
  log.info('underlay', { ...underlay.right });
  mkdirSync(flags.stateDir, { recursive: true });

  const opened = openSqliteStore(flags.stateDir);
  if (E.isLeft(opened)) {
    log.error('cannot open the event log', { error: opened.left.msg });
    await leases.close();
    return 1;
  }
  const events = opened.right;
  const deps = { flags, underlay: underlay.right, leases, events, kernel: linuxKernel({ pid: process.pid }), log, metrics };
  const daemon = await startDaemon(deps, config.right);
  // The CNI plugins' ADD durations: from feltd's own event log when they share the directory (the default).
  const sameLog = resolve(flags.cniDataDir) === resolve(flags.stateDir);
  const cniAdds = followCniAdds({
    open: () =>
      sameLog
        ? E.right(events)
        : existsSync(join(flags.cniDataDir, 'felt.db'))
          ? openSqliteStore(flags.cniDataDir, { readonly: true })
          : undefined,
    metrics,
    log,
    where: join(flags.cniDataDir, 'felt.db'),
    owned: !sameLog,
  });
  cniAdds.poll();
  const cniTimer = setInterval(() => cniAdds.poll(), 1000);
  const status = flags.statusPage
    ? statusRoutes(
        () =>
          statusOf(
            daemon.view(),
            metrics,
            new Date(),
            cni && { socket: cni.server.path, perMinute: cni.service.perMinute(), attachments: cni.service.attachments() },
          ),
        {
          version: () => {
            const v = daemon.view();
            return [v.state, v.recent, v.ready, metrics.generation];
          },
        },
      )
    : undefined;
  const server = flags.healthzPort
    ? await healthServer(flags.healthzIP, flags.healthzPort, daemon.ready, metrics, status?.routes)
    : undefined;

  const stop = (signal: string): void => {
    log.info('stopping; the dataplane stays as it is', { signal });
    void daemon.stop();
  };
  void stopSignal.then(stop);
  await daemon.done;
  clearInterval(cniTimer);
  cniAdds.close();
  status?.close();
  server?.close();
  await leases.close();
  events.close();
  return 0;
}

/** The first SIGTERM or SIGINT from now on: its name. */
const firstStopSignal = (): Promise<string> =>
  new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });

/** The lease store the flags name. The etcd client (grpc) is loaded only when etcd is used: the embedded store needs none of it. */
async function openLeaseStore(flags: Flags): Promise<LeaseStore> {
  if (!flags.etcdEndpoints.length)
    return sqliteLeaseStore({ path: flags.store ? flags.store.slice('sqlite:'.length) : join(flags.stateDir, 'leases.db'), pollMs: 20 });
  const { etcdLeaseStore } = await import('../../adapters/lease/etcd.ts');
  const tls =
    flags.etcdCafile || flags.etcdCertfile || flags.etcdKeyfile
      ? {
          tls: {
            ...(flags.etcdCafile ? { ca: flags.etcdCafile } : {}),
            ...(flags.etcdCertfile ? { cert: flags.etcdCertfile } : {}),
            ...(flags.etcdKeyfile ? { key: flags.etcdKeyfile } : {}),
          },
        }
      : {};
  return etcdLeaseStore({ endpoints: flags.etcdEndpoints, prefix: flags.etcdPrefix, ...tls });
}

/**
 * The network config; from etcd it is waited for until it is there, as flanneld does. 'stopped' when a stop
 * signal comes first: until the config is read, a signal stops feltd at once (an etcd that does not answer included).
 */
async function networkConfig(
  flags: Flags,
  leases: LeaseStore,
  log: Logger,
  stopSignal: Promise<string>,
): Promise<E.Either<string, NetConfig> | 'stopped'> {
  const unlessStopped = <T>(p: Promise<T>): Promise<T | 'stopped'> => Promise.race([p, stopSignal.then(() => 'stopped' as const)]);
  let config = await unlessStopped(loadNetConfig({ flags, leases, log }));
  while (config !== 'stopped' && E.isLeft(config) && flags.etcdEndpoints.length) {
    log.error('waiting for the network config', { error: config.left });
    if ((await unlessStopped(new Promise((r) => setTimeout(r, 2000)))) === 'stopped') return 'stopped';
    config = await unlessStopped(loadNetConfig({ flags, leases, log }));
  }
  return config;
}

type Cni = { readonly server: CniServer; readonly service: CniService; readonly close: () => Promise<void> };
/** The CNI server while it runs: closed (its socket file removed, calls in flight answered) however main ends. */
let serving: Cni | undefined;

async function serveCni(flags: Flags, log: Logger, metrics: Metrics): Promise<Cni | string> {
  const socket = flags.cniSocket;
  const service = cniService({ log, metrics });
  const server = await startCniServer(socket, service.handle, log, flags.cniClientTimeout * 1000);
  if (typeof server === 'string') {
    log.error('cannot serve CNI', { error: server });
    service.close();
    return server;
  }
  log.info('serving CNI', { socket });
  const stopRecord = recordCni(flags.stateDir, socket, service, log);
  serving = { server, service, close: async () => (await server.close(), stopRecord(), service.close()) };
  return serving;
}

/** `--cni-only`: the CNI server and the health server; no lease store, no underlay, no overlay. */
async function cniOnly(flags: Flags, log: Logger, metrics: Metrics, stopSignal: Promise<string>): Promise<number> {
  const server = flags.healthzPort ? await healthServer(flags.healthzIP, flags.healthzPort, () => true, metrics) : undefined;
  const signal = await stopSignal;
  log.info('stopping: answering the calls in flight', { signal });
  server?.close();
  return 0;
}

main().then(
  async (code) => {
    await serving?.close();
    process.exit(code);
  },
  (e) => {
    process.stderr.write(
      JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: 'feltd crashed', error: String((e as Error)?.stack ?? e) }) +
        '\n',
    );
    process.exit(1);
  },
);
