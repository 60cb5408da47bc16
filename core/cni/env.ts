// The CNI invocation contract: environment variables and stdin, validated as the spec's reference dispatcher
// (libcni skel) does. Pure: the app passes in `process.env` and the stdin text.

import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, type CniError } from './errors.ts';
import { compareVersions } from './result.ts';
import { CNI_NAME, linkNameProblem, netnsPathProblem } from '../kernel/names.ts';

const COMMANDS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'] as const;
export type Command = (typeof COMMANDS)[number];

export interface CmdArgs {
  readonly command: Command;
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  /** CNI_ARGS as key/value pairs ("IgnoreUnknown=1;IP=10.0.0.5"). */
  readonly args: Readonly<Record<string, string>>;
  readonly path: readonly string[];
  /** The raw network configuration from stdin. */
  readonly stdin: string;
}

type Required = Partial<Record<Command, boolean>>;
const VARS: readonly { name: string; required: Required }[] = [
  { name: 'CNI_CONTAINERID', required: { ADD: true, CHECK: true, DEL: true } },
  { name: 'CNI_NETNS', required: { ADD: true, CHECK: true } },
  { name: 'CNI_IFNAME', required: { ADD: true, CHECK: true, DEL: true } },
  { name: 'CNI_PATH', required: { ADD: true, CHECK: true, DEL: true, GC: true } },
];

export function validateContainerId(id: string): CniError | undefined {
  if (id === '') return cniError(ErrCode.UnknownContainer, 'missing containerID');
  if (!CNI_NAME.test(id)) return cniError(ErrCode.InvalidEnvironment, 'invalid characters in containerID', id);
  return undefined;
}

export function validateIfname(name: string): CniError | undefined {
  const problem = linkNameProblem(name);
  return problem ? cniError(ErrCode.InvalidEnvironment, `CNI_IFNAME: interface name ${JSON.stringify(name)} ${problem}`) : undefined;
}

function validateNetns(path: string): CniError | undefined {
  const problem = netnsPathProblem(path);
  return problem ? cniError(ErrCode.InvalidEnvironment, `CNI_NETNS: ${JSON.stringify(path)} ${problem}`) : undefined;
}

/** Parse CNI_ARGS: "K1=V1;K2=V2". Malformed pairs are an invalid environment (code 4). */
export function parseCniArgs(s: string): E.Either<CniError, Record<string, string>> {
  const out: Record<string, string> = {};
  if (s === '') return E.right(out);
  for (const pair of s.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) return E.left(cniError(ErrCode.InvalidEnvironment, `CNI_ARGS: invalid pair "${pair}" (want KEY=VALUE)`));
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return E.right(out);
}

/** Validate the environment for the command named in CNI_COMMAND. */
export function parseEnv(env: Readonly<Record<string, string | undefined>>, stdin: string): E.Either<CniError, CmdArgs> {
  const cmd = env['CNI_COMMAND'] ?? '';
  if (!(COMMANDS as readonly string[]).includes(cmd)) {
    return E.left(cniError(ErrCode.InvalidEnvironment, `unknown CNI_COMMAND: ${cmd}`));
  }
  const command = cmd as Command;
  const missing = VARS.filter((v) => v.required[command] && !env[v.name]).map((v) => v.name);
  if (missing.length) {
    return E.left(cniError(ErrCode.InvalidEnvironment, `required env variables [${missing.join(',')}] missing`));
  }
  const containerId = env['CNI_CONTAINERID'] ?? '';
  const ifname = env['CNI_IFNAME'] ?? '';
  if (command === 'ADD' || command === 'DEL' || command === 'CHECK') {
    const err = validateContainerId(containerId) ?? validateIfname(ifname);
    if (err) return E.left(err);
  }
  const netns = env['CNI_NETNS'] ?? '';
  if (netns !== '' && command !== 'VERSION') {
    const err = validateNetns(netns);
    if (err) return E.left(err);
  }
  return E.map((args: Record<string, string>) => ({
    command,
    containerId,
    netns,
    ifname,
    args,
    path: (env['CNI_PATH'] ?? '').split(':').filter((p) => p !== ''),
    stdin,
  }))(parseCniArgs(env['CNI_ARGS'] ?? ''));
}

/** The common part of every network configuration. Plugin-specific keys stay in `raw`. */
export interface NetConf {
  readonly cniVersion: string;
  readonly name: string;
  readonly type: string;
  readonly raw: Readonly<Record<string, unknown>>;
}

export function parseNetConf(stdin: string, versions: readonly string[], command: Command): E.Either<CniError, NetConf> {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    return E.left(cniError(ErrCode.DecodeFailure, `failed to parse network configuration: ${(e as Error).message}`));
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return E.left(cniError(ErrCode.DecodeFailure, 'network configuration must be a JSON object'));
  }
  const o = raw as Record<string, unknown>;
  // libcni treats a config without cniVersion as 0.1.0.
  const cniVersion = o['cniVersion'] === undefined ? '0.1.0' : o['cniVersion'];
  if (typeof cniVersion !== 'string') return E.left(cniError(ErrCode.DecodeFailure, 'cniVersion must be a string'));
  if (!versions.includes(cniVersion)) {
    return E.left(
      cniError(
        ErrCode.IncompatibleVersion,
        `incompatible CNI versions: config is "${cniVersion}", plugin supports [${versions.map((v) => `"${v}"`).join(' ')}]`,
      ),
    );
  }
  if (command === 'CHECK' && compareVersions(cniVersion, '0.4.0') < 0) {
    return E.left(cniError(ErrCode.IncompatibleVersion, `config version "${cniVersion}" does not allow CHECK (needs 0.4.0 or later)`));
  }
  if ((command === 'GC' || command === 'STATUS') && compareVersions(cniVersion, '1.1.0') < 0) {
    return E.left(cniError(ErrCode.IncompatibleVersion, `config version "${cniVersion}" does not allow ${command} (needs 1.1.0 or later)`));
  }
  const name = o['name'];
  const type = o['type'];
  if (command !== 'VERSION' && (typeof name !== 'string' || name === '')) {
    return E.left(cniError(ErrCode.InvalidNetworkConfig, 'name: missing network name'));
  }
  if (typeof type !== 'string' || type === '') {
    return E.left(cniError(ErrCode.InvalidNetworkConfig, 'type: missing plugin type'));
  }
  if (command !== 'VERSION' && !CNI_NAME.test(name as string)) {
    return E.left(cniError(ErrCode.InvalidNetworkConfig, `name: invalid characters found in network name ${JSON.stringify(name)}`));
  }
  return E.right({ cniVersion, name: typeof name === 'string' ? name : '', type, raw: o });
}
