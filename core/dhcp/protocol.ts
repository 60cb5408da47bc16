// The two small JSON protocols of felt's DHCP path, one JSON object per line:
//
//   plugin ──unix socket──▶ felt dhcp-daemon     DaemonRequest, answered by one DaemonResponse
//   daemon ──stdin/stdout─▶ felt dhcp-client     ClientConfig then ClientCommand lines; ClientEvent lines back
//
// (the client runs inside the pod's namespace under `nsenter --net=PATH`). Every line is parsed here into
// typed values; anything else is refused with the field named. Pure.

import * as E from 'fp-ts/lib/Either.js';
import { CNI_NAME, linkNameProblem, netnsPathProblem } from '../kernel/names.ts';
import type { ClientOptions } from './config.ts';
import type { Lease } from './lease.ts';
import { ipv4Bytes, type StaticRoute } from './packet.ts';

export const PROTOCOL_VERSION = 1;

export type DaemonCommand = 'ADD' | 'DEL' | 'CHECK';

export interface DaemonRequest {
  readonly v: typeof PROTOCOL_VERSION;
  readonly command: DaemonCommand;
  readonly containerId: string;
  readonly netns: string;
  readonly ifname: string;
  /** CNI_ARGS as pairs (for `provide[].fromArg`). */
  readonly args: Readonly<Record<string, string>>;
  /** The network configuration the plugin was given (the daemon reads `name`, `cniVersion`, `ipam`, `prevResult`). */
  readonly config: Readonly<Record<string, unknown>>;
}

export type DaemonResponse =
  { readonly ok: true; readonly lease?: Lease } | { readonly ok: false; readonly code: number; readonly msg: string };

export interface ClientConfig {
  readonly ifname: string;
  readonly clientId: string;
  readonly options: ClientOptions;
  /** How long one exchange (DISCOVER..ACK, one renewal) may take, ms. */
  readonly timeoutMs: number;
  /** The shortest wait between renewal attempts, ms. */
  readonly retryMinMs: number;
}

export type ClientCommand = { readonly type: 'stop' };

export type ClientEvent =
  | { readonly type: 'bound' | 'renewed'; readonly lease: Lease }
  | { readonly type: 'failed'; readonly code: number; readonly error: string }
  | { readonly type: 'expired' | 'released'; readonly error?: string };

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);
const show = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 80);

function json(line: string): E.Either<string, Raw> {
  try {
    const o = obj(JSON.parse(line));
    return o ? E.right(o) : E.left('not a JSON object');
  } catch (e) {
    return E.left(`not JSON: ${(e as Error).message}`);
  }
}

const str = (o: Raw, k: string, errs: string[]): string => {
  const v = o[k];
  if (typeof v !== 'string') return (errs.push(`${k}: must be a string`), '');
  return v;
};

export function parseDaemonRequest(line: string): E.Either<string, DaemonRequest> {
  const o = json(line);
  if (E.isLeft(o)) return o;
  const r = o.right;
  const errs: string[] = [];
  if (r['v'] !== PROTOCOL_VERSION) return E.left(`v: protocol version ${show(r['v'])}, this daemon speaks ${PROTOCOL_VERSION}`);
  const command = r['command'];
  if (command !== 'ADD' && command !== 'DEL' && command !== 'CHECK') errs.push(`command: ${show(command)} is not ADD, DEL or CHECK`);
  const containerId = str(r, 'containerId', errs);
  if (containerId !== '' && !CNI_NAME.test(containerId)) errs.push(`containerId: ${show(containerId)} has invalid characters`);
  const netns = str(r, 'netns', errs);
  const ifname = str(r, 'ifname', errs);
  const ifProblem = linkNameProblem(ifname);
  if (ifProblem) errs.push(`ifname: ${show(ifname)} ${ifProblem}`);
  // DEL may come without a namespace; ADD and CHECK need one to run the client in.
  if (netns !== '' || command !== 'DEL') {
    const p = netnsPathProblem(netns);
    if (p) errs.push(`netns: ${show(netns)} ${p}`);
  }
  const args: Record<string, string> = {};
  const a = obj(r['args'] ?? {});
  if (!a) errs.push('args: must be an object');
  else for (const [k, v] of Object.entries(a)) typeof v === 'string' ? (args[k] = v) : errs.push(`args.${k}: must be a string`);
  const config = obj(r['config']);
  if (!config) errs.push('config: must be an object');
  if (errs.length) return E.left(errs.join('; '));
  return E.right({ v: PROTOCOL_VERSION, command: command as DaemonCommand, containerId, netns, ifname, args, config: config! });
}

function ipv4(v: unknown, field: string, errs: string[]): string {
  if (typeof v !== 'string' || !ipv4Bytes(v)) return (errs.push(`${field}: ${show(v)} is not an IPv4 address`), '0.0.0.0');
  return v;
}

function num(v: unknown, field: string, errs: string[], max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)
    return (errs.push(`${field}: ${show(v)} is not a whole number in 0..${max}`), 0);
  return v;
}

function routes(v: unknown, field: string, errs: string[]): StaticRoute[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) return (errs.push(`${field}: must be a list`), undefined);
  return v.map((x, i) => {
    const o = obj(x) ?? {};
    const [addr, w, ...rest] = typeof o['dst'] === 'string' ? o['dst'].split('/') : [];
    const width = Number(w);
    if (!addr || !ipv4Bytes(addr) || rest.length || !/^\d{1,2}$/.test(w ?? '') || width > 32)
      errs.push(`${field}[${i}].dst: ${show(o['dst'])} is not an IPv4 prefix`);
    return { dst: `${addr}/${width}`, gw: ipv4(o['gw'], `${field}[${i}].gw`, errs) };
  });
}

/** A lease as the client reports it (and the daemon returns it): re-checked field by field. */
function readLease(v: unknown, field = 'lease'): E.Either<string, Lease> {
  const o = obj(v);
  if (!o) return E.left(`${field}: must be an object`);
  const errs: string[] = [];
  const f = (k: string) => `${field}.${k}`;
  const classless = routes(o['classless'], f('classless'), errs);
  const staticRoutes = routes(o['staticRoutes'], f('staticRoutes'), errs);
  let dns: string[] | undefined;
  if (o['dns'] !== undefined) {
    if (!Array.isArray(o['dns'])) errs.push(`${f('dns')}: must be a list`);
    else dns = o['dns'].map((d, i) => ipv4(d, `${f('dns')}[${i}]`, errs));
  }
  const lease: Lease = {
    address: ipv4(o['address'], f('address'), errs),
    prefix: num(o['prefix'], f('prefix'), errs, 32),
    server: ipv4(o['server'], f('server'), errs),
    ...(o['router'] !== undefined ? { router: ipv4(o['router'], f('router'), errs) } : {}),
    ...(classless ? { classless } : {}),
    ...(staticRoutes ? { staticRoutes } : {}),
    ...(dns ? { dns } : {}),
    leaseSeconds: num(o['leaseSeconds'], f('leaseSeconds'), errs, 0xffffffff),
    renewSeconds: num(o['renewSeconds'], f('renewSeconds'), errs, 0xffffffff),
    rebindSeconds: num(o['rebindSeconds'], f('rebindSeconds'), errs, 0xffffffff),
    boundAt: num(o['boundAt'], f('boundAt'), errs),
    renewAt: num(o['renewAt'], f('renewAt'), errs),
    rebindAt: num(o['rebindAt'], f('rebindAt'), errs),
    expiresAt: num(o['expiresAt'], f('expiresAt'), errs),
  };
  return errs.length ? E.left(errs.join('; ')) : E.right(lease);
}

export function parseDaemonResponse(line: string): E.Either<string, DaemonResponse> {
  const o = json(line);
  if (E.isLeft(o)) return o;
  const r = o.right;
  if (r['ok'] === true) {
    if (r['lease'] === undefined) return E.right({ ok: true });
    return E.map((lease: Lease) => ({ ok: true as const, lease }))(readLease(r['lease']));
  }
  if (r['ok'] === false && typeof r['code'] === 'number' && Number.isInteger(r['code']) && typeof r['msg'] === 'string') {
    return E.right({ ok: false, code: r['code'], msg: r['msg'] });
  }
  return E.left('neither {"ok":true} nor {"ok":false,"code":N,"msg":"..."}');
}

export function parseClientConfig(line: string): E.Either<string, ClientConfig> {
  const o = json(line);
  if (E.isLeft(o)) return o;
  const r = o.right;
  const errs: string[] = [];
  const ifname = str(r, 'ifname', errs);
  const p = linkNameProblem(ifname);
  if (p) errs.push(`ifname: ${show(ifname)} ${p}`);
  const clientId = str(r, 'clientId', errs);
  const opts = obj(r['options']);
  const provide: { code: number; value: string }[] = [];
  const request: number[] = [];
  if (!opts) errs.push('options: must be an object');
  else {
    const pr = Array.isArray(opts['provide']) ? opts['provide'] : (errs.push('options.provide: must be a list'), []);
    pr.forEach((x, i) => {
      const e = obj(x) ?? {};
      provide.push({
        code: num(e['code'], `options.provide[${i}].code`, errs, 254),
        value: typeof e['value'] === 'string' ? e['value'] : (errs.push(`options.provide[${i}].value: must be a string`), ''),
      });
    });
    const rq = Array.isArray(opts['request']) ? opts['request'] : (errs.push('options.request: must be a list'), []);
    rq.forEach((x, i) => request.push(num(x, `options.request[${i}]`, errs, 254)));
  }
  const timeoutMs = num(r['timeoutMs'], 'timeoutMs', errs);
  const retryMinMs = num(r['retryMinMs'], 'retryMinMs', errs);
  return errs.length ? E.left(errs.join('; ')) : E.right({ ifname, clientId, options: { provide, request }, timeoutMs, retryMinMs });
}

export function parseClientEvent(line: string): E.Either<string, ClientEvent> {
  const o = json(line);
  if (E.isLeft(o)) return o;
  const r = o.right;
  switch (r['type']) {
    case 'bound':
    case 'renewed': {
      const t = r['type'];
      return E.map((lease: Lease) => ({ type: t, lease }))(readLease(r['lease']));
    }
    case 'failed':
      return typeof r['error'] === 'string' && typeof r['code'] === 'number'
        ? E.right({ type: 'failed', code: r['code'], error: r['error'] })
        : E.left('failed: needs code and error');
    case 'expired':
    case 'released':
      return E.right(typeof r['error'] === 'string' ? { type: r['type'], error: r['error'] } : { type: r['type'] });
    default:
      return E.left(`type: ${show(r['type'])} is not a client event`);
  }
}

export const parseClientCommand = (line: string): E.Either<string, ClientCommand> =>
  E.chain((r: Raw) =>
    r['type'] === 'stop' ? E.right({ type: 'stop' as const }) : E.left(`type: ${show(r['type'])} is not a client command`),
  )(json(line));
