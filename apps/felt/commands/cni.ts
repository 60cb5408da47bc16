// felt cni add|check|del|gc|status <network> [<netns>]: run a network configuration list the way libcni does
// (cnitool's interface), with felt's plugins or anyone's on CNI_PATH. The result cache is libcni's
// (`<cache-dir>/results/<network>-<containerID>-<ifname>`, kind cniCacheV1, mode 0600), so felt, podman,
// containerd and cnitool see each other's attachments; every attachment and teardown is also an event in
// felt's log (stream `cni/<network>`).
//
// Differences from libcni, on purpose: a failed ADD tears down what it added (DEL of the plugins that ran,
// in reverse order), unless the attachment was already made (cached or recorded as added): then its plugins'
// DELs would remove that attachment, and each plugin has undone its own part of the failed ADD; and DEL goes
// on past a failing plugin and reports every failure.

import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { pipe } from 'fp-ts/lib/function.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { openSqliteStore } from '../../../adapters/store/sqlite.ts';
import { attachmentKey, runtimeProjection, runtimeStream, type RuntimeEvent } from '../../../core/cni/attachments.ts';
import {
  cacheFileName,
  cniArgPairs,
  cnitoolContainerId,
  parseConfList,
  parseJson,
  pluginConfig,
  readCacheEntry,
  type CacheEntry,
  type ConfList,
} from '../../../core/cni/conflist.ts';
import { validateContainerId, validateIfname } from '../../../core/cni/env.ts';
import { isCniError } from '../../../core/cni/errors.ts';
import { compareVersions, readResult } from '../../../core/cni/result.ts';
import { CNI_NAME } from '../../../core/kernel/names.ts';
import { dispatch, execPlugin, findInPath, makeCtx, ownPlugin } from '../../cni/dispatch.ts';
import { lockEnv, withCallLock, type CallKey } from '../../cni/call-lock.ts';
import { FELT_PLUGINS } from '../../cni/plugins/all.ts';
import { str, type Parsed } from '../args.ts';
import { DATA_DIR_OPTION, dataDirOf, type IO, type Subcommand } from '../common.ts';

const DEFAULT_CONF_DIR = '/etc/cni/net.d';
const DEFAULT_CACHE_DIR = '/var/lib/cni';
const VERBS = ['add', 'check', 'del', 'gc', 'status'] as const;
type Verb = (typeof VERBS)[number];

type Raw = Record<string, unknown>;

/** Why a call failed: messages, each printed once at the edge as `felt cni <verb>: <message>`. */
type Failed = readonly string[];
/** What a call that succeeded prints on stdout (ADD's result), if anything. */
interface Done {
  readonly result?: unknown;
}
const failed = (...messages: string[]): E.Either<Failed, never> => E.left(messages);
const done: E.Either<Failed, Done> = E.right({});

// ------------------------------------------------------------------------------------------ loading

const files = (dir: string, exts: readonly string[]): E.Either<Failed, string[]> => {
  try {
    return E.right(
      readdirSync(dir, { withFileTypes: true })
        .filter((f) => f.isFile() && exts.some((x) => f.name.endsWith(x)))
        .map((f) => join(dir, f.name))
        .sort(),
    );
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return E.right([]);
    return failed(`cannot read ${dir}: ${(e as Error).message}`);
  }
};

/** libcni's LoadNetworkConf: `.conflist` files first, then `.conf`/`.json`, lexical order, first name match. */
function loadConfList(dir: string, network: string): E.Either<Failed, { list: ConfList; text: string }> {
  const read = (f: string): E.Either<Failed, string> => {
    try {
      return E.right(readFileSync(f, 'utf8'));
    } catch (e) {
      return failed(`cannot read ${f}: ${(e as Error).message}`);
    }
  };
  const lists = files(dir, ['.conflist']);
  if (E.isLeft(lists)) return lists;
  for (const f of lists.right) {
    const text = read(f);
    if (E.isLeft(text)) return text;
    const head = parseJson(text.right);
    const name = E.isRight(head) ? (head.right as { name?: unknown } | null)?.name : undefined;
    const extra =
      name === network ? E.flatMap((fs: string[]) => E.traverseArray(read)(fs))(files(join(dir, network), ['.conf'])) : E.right([]);
    if (E.isLeft(extra)) return extra;
    const l = parseConfList(text.right, true, extra.right);
    if (E.isLeft(l)) return failed(`${f}: ${l.left}`);
    if (l.right.name === network) return E.right({ list: l.right, text: text.right });
  }
  const singles = files(dir, ['.conf', '.json']);
  if (E.isLeft(singles)) return singles;
  for (const f of singles.right) {
    const text = read(f);
    if (E.isLeft(text)) return text;
    const l = parseConfList(text.right, false);
    if (E.isLeft(l)) return failed(`${f}: ${l.left}`);
    if (l.right.name === network) return E.right({ list: l.right, text: JSON.stringify(l.right.raw) });
  }
  return failed(
    lists.right.length + singles.right.length === 0
      ? `no network configurations found in ${dir}`
      : `no network configuration named "${network}" in ${dir}`,
  );
}

// -------------------------------------------------------------------------------------------- running

interface Runtime {
  readonly list: ConfList;
  readonly listText: string;
  readonly path: readonly string[];
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  readonly cniArgs: readonly [string, string][];
  readonly capArgs: Raw;
  readonly cacheDir: string;
  readonly io: IO;
  /** felt's own plugin directory (dist/cni next to this dist/bin/felt), when this is the built executable. */
  readonly selfCniDir?: string;
}

/** dist/cni next to the running dist/bin/felt, if there is one. */
function ownCniDir(): string | undefined {
  const self = process.argv[1];
  if (!self) return undefined;
  try {
    const d = join(dirname(realpathSync(self)), '..', 'cni');
    return existsSync(d) ? d : undefined;
  } catch {
    return undefined;
  }
}

const typeOf = (p: Raw): string => String(p['type']);

/** Run one plugin; the parsed stdout (a result on ADD) or a message saying which plugin failed and why. */
async function call(
  rt: Runtime,
  plugin: Raw,
  command: 'ADD' | 'CHECK' | 'DEL' | 'GC' | 'STATUS',
  stdin: Raw,
  id: { containerId: string; netns: string; ifname: string; args: readonly [string, string][] },
): Promise<E.Either<string, unknown>> {
  const type = typeOf(plugin);
  const verb = command.toLowerCase();
  const exe = findInPath(type, rt.path);
  if (!exe) return E.left(`plugin ${type} failed (${verb}): not found in CNI_PATH [${rt.path.join(' ')}]`);
  const env: Record<string, string | undefined> = {
    ...rt.io.env,
    CNI_COMMAND: command,
    CNI_CONTAINERID: id.containerId,
    CNI_NETNS: id.netns,
    CNI_IFNAME: id.ifname,
    CNI_ARGS: id.args.map(([k, v]) => `${k}=${v}`).join(';'),
    CNI_PATH: rt.path.join(':'),
  };
  let r;
  try {
    // felt's own plugin (CNI_PATH resolved the type to felt's executable): run it in this process, as bridge
    // runs host-local, instead of starting node again for it.
    const own = rt.selfCniDir !== undefined ? ownPlugin(exe, type, rt.selfCniDir, FELT_PLUGINS) : undefined;
    if (own) {
      const o = await dispatch(own, env, JSON.stringify(stdin), makeCtx(env, rt.selfCniDir!, FELT_PLUGINS));
      r = { code: o.exitCode, stdout: o.stdout, stderr: '' };
    } else r = await execPlugin(exe, { ...env, ...lockEnv() }, JSON.stringify(stdin));
  } catch (e) {
    return E.left(`plugin ${type} failed (${verb}): cannot run ${exe}: ${(e as Error).message}`);
  }
  const out = r.stdout.trim() === '' ? E.right(undefined) : parseJson(r.stdout);
  if (r.code !== 0) {
    const err = E.isRight(out) ? out.right : undefined;
    const why = isCniError(err)
      ? `${err.msg}${err.details ? `: ${err.details}` : ''} (code ${err.code})`
      : r.stderr.trim() || r.stdout.trim() || `exit ${r.code}`;
    return E.left(`plugin ${type} failed (${verb}): ${why}`);
  }
  if (command !== 'ADD') return E.right(undefined);
  if (E.isLeft(out) || out.right === undefined)
    return E.left(`plugin ${type} failed (add): printed no result${E.isLeft(out) ? ` (${out.left})` : ''}`);
  const parsed = readResult(out.right);
  if (E.isLeft(parsed)) return E.left(`plugin ${type} failed (add): invalid result: ${parsed.left}`);
  return E.right(out.right);
}

const cachePath = (rt: Runtime, containerId = rt.containerId, ifname = rt.ifname): string =>
  join(rt.cacheDir, 'results', cacheFileName(rt.list.name, containerId, ifname));

function readCache(file: string): CacheEntry | undefined {
  if (!existsSync(file)) return undefined;
  const e = readCacheEntry(readFileSync(file, 'utf8'));
  return E.isRight(e) ? e.right : undefined;
}

function writeCache(rt: Runtime, result: unknown): void {
  const dir = join(rt.cacheDir, 'results');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const entry: CacheEntry = {
    kind: 'cniCacheV1',
    containerId: rt.containerId,
    config: Buffer.from(rt.listText).toString('base64'),
    ifName: rt.ifname,
    networkName: rt.list.name,
    ...(rt.netns ? { netns: rt.netns } : {}),
    ...(rt.cniArgs.length ? { cniArgs: rt.cniArgs } : {}),
    ...(Object.keys(rt.capArgs).length ? { capabilityArgs: rt.capArgs } : {}),
    ...(result && typeof result === 'object' ? { result: result as Raw } : {}),
  };
  const file = cachePath(rt);
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(entry), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** Append to felt's log; a log that cannot be written is reported, and the network change stands. */
function record(rt: Runtime, dataDir: string, events: readonly RuntimeEvent[]): void {
  const store = openSqliteStore(dataDir);
  if (E.isLeft(store)) return rt.io.err(`felt cni: not recorded in the event log: ${store.left.msg}\n`);
  try {
    const r = store.right.transact(runtimeStream(rt.list.name), runtimeProjection, () => E.right(events), {
      time: new Date().toISOString(),
    });
    if (E.isLeft(r)) rt.io.err(`felt cni: not recorded in the event log: ${r.left.msg}\n`);
  } finally {
    store.right.close();
  }
}

/**
 * Why (container, ifname) counts as attached on this network, or undefined: libcni's cached result, or felt's
 * log recording it as added and not deleted since (a log that does not exist or cannot be read says nothing).
 */
function liveAttachment(rt: Runtime, dataDir: string): string | undefined {
  const file = cachePath(rt);
  if (existsSync(file)) return `a cached result in ${file}`;
  if (!existsSync(join(dataDir, 'felt.db'))) return undefined;
  const store = openSqliteStore(dataDir);
  if (E.isLeft(store)) return undefined;
  try {
    const st = store.right.load(runtimeStream(rt.list.name), runtimeProjection);
    const key = attachmentKey({ containerId: rt.containerId, ifname: rt.ifname });
    return E.isRight(st) && st.right.state.attachments[key] ? `recorded as added in ${join(dataDir, 'felt.db')}` : undefined;
  } finally {
    store.right.close();
  }
}

const ipsOf = (result: unknown): string[] => {
  const r = readResult(result);
  return E.isRight(r) ? (r.right.ips ?? []).map((i) => i.address) : [];
};

async function del(
  rt: Runtime,
  id: { containerId: string; netns: string; ifname: string; args: readonly [string, string][] },
  capArgs: Raw,
  cached: CacheEntry | undefined,
  plugins: readonly Raw[] = rt.list.plugins,
): Promise<string[]> {
  const prev = compareVersions(rt.list.cniVersion, '0.4.0') >= 0 ? cached?.result : undefined;
  const errors: string[] = [];
  for (const p of [...plugins].reverse()) {
    const r = await call(rt, p, 'DEL', pluginConfig(rt.list, p, prev, capArgs), id);
    if (E.isLeft(r)) errors.push(r.left);
  }
  return errors;
}

/**
 * ADD, CHECK and DEL of one attachment hold its call lock for the whole chain (apps/cni/call-lock.ts): felt's
 * plugins run in this process inside it, others are handed it (FELT_CALL_LOCKS) and do not wait for it.
 */
const run = (verb: Verb, rt: Runtime, dataDir: string, validJson: string | undefined): TE.TaskEither<Failed, Done> =>
  verb !== 'add' && verb !== 'check' && verb !== 'del'
    ? runUnlocked(verb, rt, dataDir, validJson)
    : locked(
        { network: rt.list.name, containerId: rt.containerId, ifname: rt.ifname },
        rt.io.env,
        runUnlocked(verb, rt, dataDir, validJson),
      );

/** `f` holding the call lock of one attachment; a lock that cannot be taken (a CNI error) is a failure. */
const locked =
  <A>(k: CallKey, env: IO['env'], f: TE.TaskEither<Failed, A>): TE.TaskEither<Failed, A> =>
  async () => {
    try {
      return await withCallLock(k, env, f);
    } catch (e) {
      if (!isCniError(e)) throw e;
      return failed(`${e.msg} (code ${e.code})`);
    }
  };

const runUnlocked =
  (verb: Verb, rt: Runtime, dataDir: string, validJson: string | undefined): TE.TaskEither<Failed, Done> =>
  async () => {
    const { io, list } = rt;
    const id = { containerId: rt.containerId, netns: rt.netns, ifname: rt.ifname, args: rt.cniArgs };
    switch (verb) {
      case 'add': {
        // An ADD of an attachment that is already made (cached, or recorded as added): plugins key their state
        // by container and interface, so a DEL in the teardown of a failed ADD would remove that attachment.
        const live = liveAttachment(rt, dataDir);
        let prev: unknown;
        /** The failed ADD in the log: which plugin failed, and what was torn down (`kept`: nothing; it was attached before). */
        const addFailed = (plugin: string, error: string, tornDown: string[], kept?: true): void =>
          record(rt, dataDir, [
            {
              type: 'AttachmentAddFailed',
              data: {
                network: list.name,
                containerId: rt.containerId,
                ifname: rt.ifname,
                netns: rt.netns,
                plugin,
                error,
                tornDown,
                ...(kept ? { kept } : {}),
              },
            },
          ]);
        for (const [i, p] of list.plugins.entries()) {
          const r = await call(rt, p, 'ADD', pluginConfig(list, p, prev, rt.capArgs), id);
          if (E.isLeft(r)) {
            if (live !== undefined) {
              // Each plugin undid its own part of this ADD; the attachment stays as it was (as libcni leaves it).
              addFailed(typeOf(p), r.left, [], true);
              return failed(
                `${r.left}\nnot torn down: ${list.name} ${rt.containerId} ${rt.ifname} is attached (${live}); a DEL would remove that attachment`,
              );
            }
            // Tear down what this ADD did: DEL of every plugin that ran (the failed one too), last first.
            const ran = list.plugins.slice(0, i + 1);
            const errors = await del(rt, id, rt.capArgs, prev === undefined ? undefined : ({ result: prev } as CacheEntry), ran);
            addFailed(typeOf(p), r.left, ran.map(typeOf).reverse());
            return failed(`${r.left}${errors.length ? `\nteardown: ${errors.join('\nteardown: ')}` : ''}`);
          }
          prev = r.right;
        }
        writeCache(rt, prev);
        record(rt, dataDir, [
          {
            type: 'AttachmentAdded',
            data: {
              network: list.name,
              containerId: rt.containerId,
              ifname: rt.ifname,
              netns: rt.netns,
              plugins: list.plugins.map(typeOf),
              ips: ipsOf(prev),
            },
          },
        ]);
        return E.right({ result: prev });
      }
      case 'check': {
        if (compareVersions(list.cniVersion, '0.4.0') < 0)
          return failed(`configuration version "${list.cniVersion}" does not support CHECK`);
        if (list.disableCheck) return done;
        const cached = readCache(cachePath(rt));
        if (!cached?.result)
          return failed(`no cached result for ${list.name}/${rt.containerId}/${rt.ifname} in ${join(rt.cacheDir, 'results')}`);
        for (const p of list.plugins) {
          const r = await call(rt, p, 'CHECK', pluginConfig(list, p, cached.result, rt.capArgs), id);
          if (E.isLeft(r)) return failed(r.left);
        }
        return done;
      }
      case 'del': {
        const file = cachePath(rt);
        const cached = readCache(file);
        const errors = await del(
          rt,
          { ...id, netns: rt.netns || cached?.netns || '' },
          Object.keys(rt.capArgs).length ? rt.capArgs : ((cached?.capabilityArgs as Raw | undefined) ?? {}),
          cached,
        );
        rmSync(file, { force: true });
        record(rt, dataDir, [
          {
            type: 'AttachmentDeleted',
            data: { network: list.name, containerId: rt.containerId, ifname: rt.ifname, reason: 'del', errors },
          },
        ]);
        return errors.length ? failed(...errors) : done;
      }
      case 'gc': {
        if (list.disableGC) return done;
        const parsedValid = validJson === undefined ? E.right([] as unknown) : parseJson(validJson);
        const valid = E.isRight(parsedValid) ? parsedValid.right : undefined;
        if (
          !Array.isArray(valid) ||
          valid.some(
            (v) =>
              typeof v !== 'object' ||
              v === null ||
              typeof (v as Raw)['containerID'] !== 'string' ||
              typeof (v as Raw)['ifname'] !== 'string',
          )
        ) {
          return failed('--valid-attachments: must be a JSON list of {"containerID": ..., "ifname": ...}');
        }
        const keep = new Set((valid as Raw[]).map((v) => `${String(v['containerID'])}/${String(v['ifname'])}`));
        const errors: string[] = [];
        const dir = join(rt.cacheDir, 'results');
        const cachedFiles = files(dir, ['']);
        if (E.isLeft(cachedFiles)) return cachedFiles;
        for (const f of cachedFiles.right) {
          const c = readCache(f);
          if (!c || c.networkName !== list.name || keep.has(`${c.containerId}/${c.ifName}`)) continue;
          const deleted = await locked({ network: list.name, containerId: c.containerId, ifname: c.ifName }, io.env, () =>
            del(
              rt,
              { containerId: c.containerId, netns: c.netns ?? '', ifname: c.ifName, args: (c.cniArgs ?? []) as [string, string][] },
              (c.capabilityArgs as Raw | undefined) ?? {},
              c,
            ).then(E.right),
          )();
          if (E.isLeft(deleted)) return deleted;
          const errs = deleted.right;
          errors.push(...errs.map((e) => `stale attachment ${c.containerId} ${c.ifName}: ${e}`));
          rmSync(f, { force: true });
          record(rt, dataDir, [
            {
              type: 'AttachmentDeleted',
              data: { network: list.name, containerId: c.containerId, ifname: c.ifName, reason: 'gc', errors: errs },
            },
          ]);
        }
        if (compareVersions(list.cniVersion, '1.1.0') >= 0) {
          for (const p of list.plugins) {
            const conf = {
              ...p,
              name: list.name,
              cniVersion: list.cniVersion,
              'cni.dev/valid-attachments': valid,
              'cni.dev/attachments': valid,
            };
            const r = await call(rt, p, 'GC', conf, { containerId: '', netns: '', ifname: '', args: [] });
            if (E.isLeft(r)) errors.push(r.left);
          }
        }
        return errors.length ? failed(...errors) : done;
      }
      case 'status': {
        if (compareVersions(list.cniVersion, '1.1.0') < 0) return done;
        for (const p of list.plugins) {
          const r = await call(
            rt,
            p,
            'STATUS',
            { ...p, name: list.name, cniVersion: list.cniVersion },
            { containerId: '', netns: '', ifname: '', args: [] },
          );
          if (E.isLeft(r)) return failed(r.left);
        }
        return done;
      }
    }
  };

/** The call's runtime from the command line and the environment, every value checked. */
function runtimeOf(p: Parsed, io: IO, verb: Verb, network: string, netnsArg: string | undefined): E.Either<Failed, Runtime> {
  if (!CNI_NAME.test(network)) return failed(`invalid characters found in network name ${JSON.stringify(network)}`);
  const confDir = str(p, 'conf-dir') ?? (io.env['NETCONFPATH'] || DEFAULT_CONF_DIR);
  const loaded = loadConfList(confDir, network);
  if (E.isLeft(loaded)) return loaded;
  const netns = netnsArg === undefined ? '' : resolve(netnsArg);
  const containerId = str(p, 'container-id') ?? (netns ? cnitoolContainerId(netns) : '');
  const ifname = str(p, 'ifname') ?? (io.env['CNI_IFNAME'] || 'eth0');
  if (verb === 'add' || verb === 'check' || verb === 'del') {
    const bad = validateContainerId(containerId) ?? validateIfname(ifname);
    if (bad) return failed(bad.msg);
  }
  const capText = str(p, 'cap-args') ?? io.env['CAP_ARGS'];
  let capArgs: Raw = {};
  if (capText !== undefined && capText !== '') {
    const c = parseJson(capText);
    const o = E.isRight(c) ? c.right : undefined;
    if (typeof o !== 'object' || o === null || Array.isArray(o))
      return failed(`CAP_ARGS: must be a JSON object${E.isLeft(c) ? ` (${c.left})` : ''}`);
    capArgs = o as Raw;
  }
  const args = cniArgPairs(str(p, 'args') ?? io.env['CNI_ARGS'] ?? '');
  if (E.isLeft(args)) return failed(args.left);
  const path = (io.env['CNI_PATH'] ?? '').split(':').filter(Boolean);
  if (path.length === 0) return failed('CNI_PATH: set it to the directories that hold the plugins');
  const self = ownCniDir();
  return E.right({
    list: loaded.right.list,
    listText: loaded.right.text,
    path,
    containerId,
    netns,
    ifname,
    cniArgs: args.right,
    capArgs,
    cacheDir: str(p, 'cache-dir') ?? DEFAULT_CACHE_DIR,
    io,
    ...(self !== undefined ? { selfCniDir: self } : {}),
  });
}

export const cniCommand: Subcommand = {
  name: 'cni',
  summary: 'run a network configuration list as a container runtime does: add|check|del|gc|status <network> [<netns>]',
  positional: '<add|check|del|gc|status> <network> [<netns>]',
  maxPositionals: 3,
  options: [
    { name: 'conf-dir', value: 'DIR', help: 'network configurations (default $NETCONFPATH, else /etc/cni/net.d)' },
    { name: 'cache-dir', value: 'DIR', help: "libcni's result cache (default /var/lib/cni)" },
    DATA_DIR_OPTION,
    { name: 'cap-args', value: 'JSON', help: 'capability arguments, e.g. {"portMappings":[...]} (default $CAP_ARGS)' },
    { name: 'args', value: 'K=V;...', help: 'CNI_ARGS for every plugin (default $CNI_ARGS)' },
    { name: 'ifname', value: 'NAME', help: 'interface name in the namespace (default $CNI_IFNAME, else eth0)' },
    { name: 'container-id', value: 'ID', help: "container ID (default cnitool's: cnitool- and a hash of the netns path)" },
    { name: 'valid-attachments', value: 'JSON', help: 'gc: attachments to keep, [{"containerID":...,"ifname":...}] (default none)' },
  ],
  run: async (p, io) => {
    const [verbText, network, netnsArg] = p.positionals;
    if (!VERBS.includes(verbText as Verb) || network === undefined) {
      io.err('felt cni: usage: felt cni <add|check|del|gc|status> <network> [<netns>]\n');
      return 2;
    }
    const verb = verbText as Verb;
    if ((verb === 'add' || verb === 'check' || verb === 'del') && netnsArg === undefined) {
      io.err(`felt cni ${verb}: a network namespace path is required\n`);
      return 2;
    }
    const outcome = await pipe(
      TE.fromEither(runtimeOf(p, io, verb, network, netnsArg)),
      TE.flatMap((rt) => run(verb, rt, dataDirOf(p, io), str(p, 'valid-attachments'))),
    )();
    // The one place a call's outcome becomes output.
    if (E.isLeft(outcome)) return (io.err(outcome.left.map((m) => `felt cni ${verb}: ${m}\n`).join('')), 1);
    if (outcome.right.result !== undefined) io.out(`${JSON.stringify(outcome.right.result, null, 2)}\n`);
    return 0;
  },
};
