// Network configuration lists as libcni reads them, and what a runtime hands each plugin. Pure: the app reads
// the files and runs the plugins.
//
//  - A `.conflist` is `{name, cniVersion | cniVersions, disableCheck, disableGC, loadOnlyInlinedPlugins,
//    plugins: [...]}`; a `.conf`/`.json` holds one plugin and is wrapped into a list of one.
//  - `cniVersions` picks the highest version this runtime supports (with `cniVersion` among the candidates).
//  - Each plugin gets `name` and `cniVersion` of the list, `prevResult` (the previous plugin's result on ADD,
//    the cached result on CHECK and DEL) and `runtimeConfig` holding only the capabilities it declares.

import { createHash } from 'node:crypto'; // a pure function of its input; no I/O
import * as E from 'fp-ts/lib/Either.js';
import { compareVersions, PLUGIN_VERSIONS } from './result.ts';

type Raw = Record<string, unknown>;

export interface ConfList {
  readonly name: string;
  readonly cniVersion: string;
  readonly disableCheck: boolean;
  readonly disableGC: boolean;
  readonly loadOnlyInlinedPlugins: boolean;
  readonly plugins: readonly Raw[];
  /** The list as read (what the result cache stores). */
  readonly raw: Raw;
}

const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);

/** JSON.parse with a message that names the line and column of the error. */
export function parseJson(text: string): E.Either<string, unknown> {
  try {
    return E.right(JSON.parse(text));
  } catch (e) {
    const msg = (e as Error).message;
    const pos = jsonErrorOffset(text);
    if (pos === undefined) return E.left(msg);
    const before = text.slice(0, pos);
    const line = before.split('\n').length;
    const col = pos - before.lastIndexOf('\n');
    return E.left(`${msg.replace(/ in JSON at position \d+.*$/, '').replace(/\s+/g, ' ')} (line ${line}, column ${col})`);
  }
}

/** Where JSON text first goes wrong (a validating scan; JSON.parse's own message does not always say). */
export function jsonErrorOffset(t: string): number | undefined {
  let i = 0;
  const ws = (): void => {
    while (i < t.length && ' \t\n\r'.includes(t[i]!)) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const lit = (w: string): void => {
    if (t.startsWith(w, i)) i += w.length;
    else fail();
  };
  const str = (): void => {
    i++;
    while (i < t.length && t[i] !== '"') {
      if (t[i] === '\\') i++;
      else if (t.charCodeAt(i) < 0x20) fail();
      i++;
    }
    if (i >= t.length) fail();
    i++;
  };
  const value = (): void => {
    ws();
    const c = t[i];
    if (c === '{') {
      i++;
      ws();
      if (t[i] === '}') return void i++;
      for (;;) {
        ws();
        if (t[i] !== '"') fail();
        str();
        ws();
        if (t[i] !== ':') fail();
        i++;
        value();
        ws();
        if (t[i] === ',') i++;
        else if (t[i] === '}') return void i++;
        else fail();
      }
    } else if (c === '[') {
      i++;
      ws();
      if (t[i] === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (t[i] === ',') i++;
        else if (t[i] === ']') return void i++;
        else fail();
      }
    } else if (c === '"') str();
    else if (c === 't') lit('true');
    else if (c === 'f') lit('false');
    else if (c === 'n') lit('null');
    else {
      const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(t.slice(i));
      if (!m) fail();
      i += m![0].length;
    }
  };
  try {
    value();
    ws();
    return i < t.length ? i : undefined;
  } catch (at) {
    return typeof at === 'number' ? at : undefined;
  }
}

function bool(o: Raw, k: string): E.Either<string, boolean> {
  const v = o[k];
  if (v === undefined) return E.right(false);
  if (typeof v === 'boolean') return E.right(v);
  if (typeof v === 'string' && /^(true|false)$/i.test(v)) return E.right(v.toLowerCase() === 'true');
  return E.left(`${k}: must be true or false, got ${JSON.stringify(v)}`);
}

/** Pick the list's version: the highest of cniVersions (and cniVersion) that `supported` has. */
function pickVersion(o: Raw, supported: readonly string[]): E.Either<string, string> {
  const v = o['cniVersion'];
  if (v !== undefined && typeof v !== 'string') return E.left(`cniVersion: must be a string, got ${JSON.stringify(v)}`);
  if (o['cniVersions'] === undefined) return E.right(typeof v === 'string' ? v : '0.1.0');
  const vs = o['cniVersions'];
  if (!Array.isArray(vs) || vs.some((x) => typeof x !== 'string' || !/^\d+\.\d+\.\d+$/.test(x))) {
    return E.left(`cniVersions: must be a list of versions, got ${JSON.stringify(vs)}`);
  }
  const candidates = [...(vs as string[]), ...(typeof v === 'string' ? [v] : [])].filter((x) => supported.includes(x));
  if (candidates.length === 0)
    return E.left(`cniVersions: none of ${JSON.stringify(vs)} is supported (this runtime speaks ${supported.join(', ')})`);
  return E.right(candidates.sort(compareVersions)[candidates.length - 1]!);
}

/**
 * Why `type` cannot name a plugin binary, or undefined. The spec: it "must not contain characters disallowed in
 * file paths" such as '/'; libcni's FindInPath refuses a path separator. felt also refuses '.', '..', a
 * backslash and control characters: the type is joined to each CNI_PATH directory and executed.
 */
export function pluginTypeProblem(type: string): string | undefined {
  if (type === '') return 'is empty';
  if (type === '.' || type === '..') return 'is . or ..';
  if (/[/\\]/.test(type)) return "contains '/' or '\\' (a plugin type is a file name in CNI_PATH, not a path)";
  if (/[\x00-\x1f\x7f]/.test(type)) return 'contains control characters';
  return undefined;
}

const typeError = (at: string, t: unknown): string | undefined => {
  if (typeof t !== 'string' || t === '') return `${at}: missing 'type'`;
  const p = pluginTypeProblem(t);
  return p ? `${at}: ${JSON.stringify(t)} ${p}` : undefined;
};

/** A `.conflist` (`isList`) or a single plugin's `.conf`/`.json`, plus the plugins of `<dir>/<name>/*.conf`. */
export function parseConfList(
  text: string,
  isList: boolean,
  extraPlugins: readonly string[] = [],
  supported: readonly string[] = PLUGIN_VERSIONS,
): E.Either<string, ConfList> {
  const parsed = parseJson(text);
  if (E.isLeft(parsed)) return parsed;
  const o = obj(parsed.right);
  if (!o) return E.left('must be a JSON object');
  if (typeof o['name'] !== 'string' || o['name'] === '') return E.left('name: missing network name');
  const name = o['name'];
  if (!isList) {
    const bad = typeError('type', o['type']);
    if (bad) return E.left(bad);
    const cniVersion = typeof o['cniVersion'] === 'string' ? o['cniVersion'] : '0.1.0';
    return E.right({
      name,
      cniVersion,
      disableCheck: false,
      disableGC: false,
      loadOnlyInlinedPlugins: false,
      plugins: [o],
      raw: { name, cniVersion, plugins: [o] },
    });
  }
  const version = pickVersion(o, supported);
  if (E.isLeft(version)) return version;
  const flags = ['disableCheck', 'disableGC', 'loadOnlyInlinedPlugins'].map((k) => bool(o, k));
  const bad = flags.find(E.isLeft);
  if (bad && E.isLeft(bad)) return bad;
  const [disableCheck, disableGC, loadOnlyInlinedPlugins] = flags.map((f) => (E.isRight(f) ? f.right : false)) as [
    boolean,
    boolean,
    boolean,
  ];
  if (o['plugins'] === undefined && loadOnlyInlinedPlugins)
    return E.left("plugins: `loadOnlyInlinedPlugins` is true, and there is no 'plugins' key");
  const inline = o['plugins'] === undefined ? [] : o['plugins'];
  if (!Array.isArray(inline)) return E.left(`plugins: must be a list, got ${JSON.stringify(inline)}`);
  const plugins: Raw[] = [];
  for (const [i, p] of inline.entries()) {
    const po = obj(p);
    if (!po) return E.left(`plugins[${i}]: must be an object`);
    const bad = typeError(`plugins[${i}].type`, po['type']);
    if (bad) return E.left(bad);
    plugins.push(po);
  }
  if (!loadOnlyInlinedPlugins) {
    for (const [i, text] of extraPlugins.entries()) {
      const p = parseJson(text);
      const po = E.isRight(p) ? obj(p.right) : undefined;
      const bad = po ? typeError('type', po['type']) : undefined;
      if (!po || bad) return E.left(`plugin file ${i + 1} of ${name}/: ${E.isLeft(p) ? p.left : (bad ?? 'must be a JSON object')}`);
      plugins.push(po);
    }
  }
  if (plugins.length === 0) return E.left('plugins: no plugin configs found');
  return E.right({ name, cniVersion: version.right, disableCheck, disableGC, loadOnlyInlinedPlugins, plugins, raw: o });
}

/**
 * The stdin of one plugin call: the plugin's own config with the list's name and version, `prevResult` when
 * given, and `runtimeConfig` holding the capability arguments the plugin declares (`capabilities: {x: true}`).
 */
export function pluginConfig(list: ConfList, plugin: Raw, prevResult: unknown, capArgs: Readonly<Raw>): Raw {
  const out: Raw = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) out['prevResult'] = prevResult;
  const caps = obj(plugin['capabilities']) ?? {};
  const rc: Raw = {};
  for (const [cap, on] of Object.entries(caps)) if (on === true && capArgs[cap] !== undefined) rc[cap] = capArgs[cap];
  if (Object.keys(rc).length) out['runtimeConfig'] = rc;
  return out;
}

/** The container ID cnitool uses for a namespace: `cnitool-` and 20 hex digits of sha512(netns path). */
export const cnitoolContainerId = (netns: string): string => `cnitool-${createHash('sha512').update(netns).digest('hex').slice(0, 20)}`;

/** libcni's result cache: `<cacheDir>/results/<network>-<containerID>-<ifname>`. */
export const cacheFileName = (network: string, containerId: string, ifname: string): string => `${network}-${containerId}-${ifname}`;

/** A cache entry as libcni writes it (`kind: cniCacheV1`; `config` is the list's bytes, base64 as Go's []byte). */
export interface CacheEntry {
  readonly kind: 'cniCacheV1';
  readonly containerId: string;
  readonly config: string;
  readonly ifName: string;
  readonly networkName: string;
  readonly netns?: string;
  readonly cniArgs?: readonly (readonly [string, string])[];
  readonly capabilityArgs?: Readonly<Raw>;
  readonly result?: Readonly<Raw>;
}

export function readCacheEntry(text: string): E.Either<string, CacheEntry> {
  const p = parseJson(text);
  if (E.isLeft(p)) return p;
  const o = obj(p.right);
  if (!o || o['kind'] !== 'cniCacheV1') return E.left(`not a cniCacheV1 entry (kind ${JSON.stringify(o?.['kind'])})`);
  if (typeof o['containerId'] !== 'string' || typeof o['ifName'] !== 'string' || typeof o['networkName'] !== 'string') {
    return E.left('containerId, ifName and networkName must be strings');
  }
  return E.right(o as unknown as CacheEntry);
}

/** CNI_ARGS text ("K=V;K2=V2") as libcni's pairs; each pair must have a key and a value (as cnitool). */
export function cniArgPairs(s: string): E.Either<string, [string, string][]> {
  if (s === '') return E.right([]);
  const out: [string, string][] = [];
  for (const pair of s.split(';')) {
    const kv = pair.split('=');
    if (kv.length !== 2 || kv[0] === '' || kv[1] === '') return E.left(`invalid CNI_ARGS pair ${JSON.stringify(pair)} (want KEY=VALUE)`);
    out.push([kv[0]!, kv[1]!]);
  }
  return E.right(out);
}
