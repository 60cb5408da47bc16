// The tuning plugin's configuration, as the reference plugin (plugins/meta/tuning) reads it, validated up
// front so that bad input changes nothing. Messages name the field.
//
// Sources, in rising precedence (the reference's order):
//   mac:      mac < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac
//   sysctl:   sysctl, then args.cni.sysctl key by key
//   promisc, mtu, allmulti, txQLen: the top-level field < args.cni.<field>
//
// Sysctl keys: dotted (`net.ipv4.conf.IFNAME.arp_notify`) or slashed (`net/ipv4/conf/eth0/arp_notify`), the
// first `IFNAME` replaced by CNI_IFNAME after the dots became slashes (so `eth0.5` stays one directory), only
// under net.*, never with `..`, empty components or characters a batch tool would reinterpret. Keys that
// name the same /proc/sys file twice in one map are refused, as JSON duplicates are.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import { parseMac } from '../ip/mac.ts';
import { dataDirProblem, DEFAULT_DATA_DIR } from '../ipam/config.ts';
import { isBatchToken } from '../kernel/names.ts';
import { duplicateKeys } from './json-keys.ts';

export interface TuningSysctl {
  /** Which map it came from, for messages. */
  readonly from: 'sysctl' | 'args.cni.sysctl';
  /** The key as the config wrote it, for messages and the allowlist. */
  readonly field: string;
  /** The model's dotted key (core/kernel/keys.ts: a dot inside a component is written '/'). */
  readonly key: string;
  readonly value: string;
}

export interface TuningConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly sysctls: readonly TuningSysctl[];
  /** Canonical lower-case colon form. */
  readonly mac?: string;
  /** As the reference: only `true` changes anything on ADD; CHECK expects promiscuous mode off otherwise. */
  readonly promisc: boolean;
  readonly mtu?: number;
  readonly allmulti?: boolean;
  readonly txqlen?: number;
  /** Where felt.db (the event log holding the original values) lives. */
  readonly dataDir: string;
}

const MTU_MIN = 68;
const MTU_MAX = 65535;
const U32_MAX = 2 ** 32 - 1;

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);
const show = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 80);

/** Go's UnmarshallableBool, used for IgnoreUnknown. */
const truthy = (s: string): boolean | undefined => {
  const l = s.toLowerCase();
  return l === '1' || l === 'true' ? true : l === '0' || l === 'false' ? false : undefined;
};

/**
 * A sysctl key as the reference turns it into a /proc/sys path (dots to slashes, the first IFNAME replaced),
 * checked and written as the model's dotted key; or why it is refused.
 */
export function sysctlKeyFor(field: string, ifname: string): E.Either<string, string> {
  if (field === '') return E.left('is empty');
  if (field.includes('..')) return E.left("contains '..'");
  if (!isBatchToken(field)) return E.left("contains whitespace, control characters, '#', a quote or a backslash");
  const path = field.replace(/\./g, '/').replace('IFNAME', ifname);
  const segs = path.split('/');
  if (segs.some((s) => s === '')) return E.left('has an empty path component (a leading, trailing or doubled separator)');
  if (segs.some((s) => s === '.' || s === '..')) return E.left("has a '.' or '..' component");
  if (segs[0] !== 'net' || segs.length < 2) return E.left('is not under net.* (only network sysctls may be set)');
  return E.right(segs.map((s) => s.replace(/\./g, '/')).join('.'));
}

/** The allowlist file's patterns (one regular expression per non-empty line), or the line that does not compile. */
export function parseAllowlist(text: string): E.Either<string, readonly RegExp[]> {
  const out: RegExp[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.trim();
    if (line === '') continue;
    try {
      out.push(new RegExp(line));
    } catch (e) {
      return E.left(`line ${n + 1}: ${show(line)} is not a regular expression (${(e as Error).message})`);
    }
  }
  return E.right(out);
}

/** The allowlist as the plugin read it: its path (for messages) and patterns; undefined when there is no file. */
export interface Allowlist {
  readonly path: string;
  readonly patterns: readonly RegExp[];
}

function sysctlMap(v: unknown, label: TuningSysctl['from'], ifname: string, errs: string[]): TuningSysctl[] {
  if (v === undefined || v === null) return [];
  const m = obj(v);
  if (!m) return (errs.push(`${label}: must be an object of key: value strings`), []);
  const out: TuningSysctl[] = [];
  const byKey = new Map<string, string>();
  for (const [field, value] of Object.entries(m)) {
    const f = `${label}[${JSON.stringify(field)}]`;
    const key = sysctlKeyFor(field, ifname);
    if (E.isLeft(key)) {
      errs.push(`${f}: invalid sysctl key: it ${key.left}`);
      continue;
    }
    if (typeof value !== 'string') {
      errs.push(`${f}: the value must be a string, got ${show(value)}`);
      continue;
    }
    // The reference writes the value as is; the kernel ignores a trailing newline and takes tabs or spaces
    // between the values of a multi-valued sysctl, so felt writes blanks as single spaces.
    const text = value.replace(/\n$/, '').replace(/[ \t]+/g, ' ');
    if (/[\x00-\x1f\x7f]/.test(text)) {
      errs.push(`${f}: the value holds control characters`);
      continue;
    }
    const other = byKey.get(key.right);
    if (other !== undefined) {
      errs.push(`${f}: names the same sysctl as ${JSON.stringify(other)}`);
      continue;
    }
    byKey.set(key.right, field);
    out.push({ from: label, field, key: key.right, value: text });
  }
  return out;
}

/** How messages name a configured sysctl, e.g. `sysctl["net.core.somaxconn"]`. */
export const sysctlField = (s: Pick<TuningSysctl, 'from' | 'field'>): string => `${s.from}[${JSON.stringify(s.field)}]`;

function optBool(v: unknown, field: string, errs: string[]): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') return (errs.push(`${field}: must be true or false, got ${show(v)}`), undefined);
  return v;
}

function optInt(v: unknown, field: string, errs: string[], min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    return (errs.push(`${field}: must be an integer between ${min} and ${max}, got ${show(v)}`), undefined);
  }
  return v;
}

/** mtu: 0 (or absent) means "leave it", as in the reference; anything else must be a valid MTU. */
function optMtu(v: unknown, field: string, errs: string[]): number | undefined {
  if (v === 0) return undefined;
  return optInt(v, field, errs, MTU_MIN, MTU_MAX);
}

/**
 * CNI_ARGS: the reference knows `MAC` and `IgnoreUnknown`; anything else is refused unless IgnoreUnknown is
 * set (code 4, as libcni's LoadArgs).
 */
function envMac(args: Readonly<Record<string, string>>): E.Either<CniError, string | undefined> {
  const bad = (msg: string) => E.left(cniError(ErrCode.InvalidEnvironment, `CNI_ARGS: ${msg}`));
  const ignore = args['IgnoreUnknown'] === undefined ? false : truthy(args['IgnoreUnknown']);
  if (ignore === undefined) return bad(`IgnoreUnknown: invalid boolean "${args['IgnoreUnknown']}"`);
  const unknown = Object.keys(args).filter((k) => k !== 'MAC' && k !== 'IgnoreUnknown');
  if (unknown.length && !ignore) {
    return bad(`unknown args [${unknown.map((k) => JSON.stringify(`${k}=${args[k]}`)).join(' ')}] (set IgnoreUnknown=1 to ignore them)`);
  }
  return E.right(args['MAC'] === '' ? undefined : args['MAC']);
}

export interface TuningInput {
  readonly conf: NetConf;
  /** The config text as it came in (duplicate sysctl keys are only visible there). */
  readonly stdin: string;
  readonly cniArgs: Readonly<Record<string, string>>;
  readonly ifname: string;
  /** The sysctl allowlist, when the node has one. */
  readonly allowlist?: Allowlist;
}

export function parseTuningConf(inp: TuningInput): E.Either<CniError, TuningConf> {
  const o = inp.conf.raw;
  const errs: string[] = [];
  const env = envMac(inp.cniArgs);
  if (E.isLeft(env)) return env;

  for (const d of duplicateKeys(inp.stdin, [['sysctl'], ['args', 'cni', 'sysctl']])) {
    errs.push(`${d.path.join('.')}[${JSON.stringify(d.key)}]: duplicated sysctl keys are not allowed`);
  }

  const argsCni = obj(obj(o['args'])?.['cni']);
  if (o['args'] !== undefined && o['args'] !== null && !obj(o['args'])) errs.push('args: must be an object');

  // sysctl: the config's map, then args.cni.sysctl over it (a key there replaces the same file's value).
  const base = sysctlMap(o['sysctl'], 'sysctl', inp.ifname, errs);
  const over = sysctlMap(argsCni?.['sysctl'], 'args.cni.sysctl', inp.ifname, errs);
  const overKeys = new Set(over.map((s) => s.key));
  const sysctls = [...base.filter((s) => !overKeys.has(s.key)), ...over];
  if (inp.allowlist) {
    const { path, patterns } = inp.allowlist;
    for (const s of sysctls) {
      if (!patterns.some((p) => p.test(s.field))) {
        errs.push(`${sysctlField(s)}: not allowed by ${path} (allowed: ${patterns.map((p) => p.source).join(', ') || 'none'})`);
      }
    }
  }

  // mac: mac < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac.
  let mac: string | undefined;
  const rc = o['runtimeConfig'];
  if (rc !== undefined && rc !== null && !obj(rc)) errs.push('runtimeConfig: must be an object');
  for (const [field, v] of [
    ['mac', o['mac']],
    ['CNI_ARGS MAC', env.right],
    ['runtimeConfig.mac', obj(rc)?.['mac']],
    ['args.cni.mac', argsCni?.['mac']],
  ] as const) {
    if (v === undefined || v === null || v === '') continue;
    const m = typeof v === 'string' ? parseMac(v) : undefined;
    if (!m) errs.push(`${field}: ${show(v)} is not a MAC address (want six bytes, e.g. c2:11:22:33:44:55)`);
    else mac = m;
  }

  const pick = <T>(top: T | undefined, arg: T | undefined): T | undefined => (arg !== undefined ? arg : top);
  const promisc = pick(optBool(o['promisc'], 'promisc', errs), optBool(argsCni?.['promisc'], 'args.cni.promisc', errs)) ?? false;
  const mtu = pick(optMtu(o['mtu'], 'mtu', errs), optMtu(argsCni?.['mtu'], 'args.cni.mtu', errs));
  const allmulti = pick(optBool(o['allmulti'], 'allmulti', errs), optBool(argsCni?.['allmulti'], 'args.cni.allmulti', errs));
  const txqlen = pick(optInt(o['txQLen'], 'txQLen', errs, 0, U32_MAX), optInt(argsCni?.['txQLen'], 'args.cni.txQLen', errs, 0, U32_MAX));

  const dataDir = o['dataDir'] === undefined || o['dataDir'] === null || o['dataDir'] === '' ? DEFAULT_DATA_DIR : o['dataDir'];
  if (typeof dataDir !== 'string') errs.push(`dataDir: must be a path, got ${show(dataDir)}`);
  else {
    const problem = dataDirProblem(dataDir);
    if (problem) errs.push(`dataDir: ${JSON.stringify(dataDir)} ${problem}`);
  }

  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({
    name: inp.conf.name,
    cniVersion: inp.conf.cniVersion,
    sysctls,
    ...(mac !== undefined ? { mac } : {}),
    promisc,
    ...(mtu !== undefined ? { mtu } : {}),
    ...(allmulti !== undefined ? { allmulti } : {}),
    ...(txqlen !== undefined ? { txqlen } : {}),
    dataDir: dataDir as string,
  });
}

/** DEL needs only where the log is: a config that changed since ADD (or an allowlist that did) must not block it. */
export function parseDataDir(conf: NetConf): E.Either<CniError, string> {
  const v = conf.raw['dataDir'];
  const dataDir = v === undefined || v === null || v === '' ? DEFAULT_DATA_DIR : v;
  if (typeof dataDir !== 'string') return E.left(invalidConfig(`dataDir: must be a path, got ${show(dataDir)}`));
  const problem = dataDirProblem(dataDir);
  return problem ? E.left(invalidConfig(`dataDir: ${JSON.stringify(dataDir)} ${problem}`)) : E.right(dataDir);
}
