// The dhcp IPAM plugin's config, as the reference's (plugins/ipam/dhcp/main.go, options.go): `ipam.daemonSocketPath`,
// `ipam.provide` ([{option, value, fromArg}]: options the client sends) and `ipam.request` ([{option,
// skipDefault}]: options it asks for; routers and subnet-mask unless a `skipDefault`). Option names as the
// reference's table, or a number 1..254. Errors are code 7 naming the field.

import * as E from 'fp-ts/lib/Either.js';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { NetConf } from '../cni/env.ts';
import { Opt } from './packet.ts';

export const DEFAULT_SOCKET_PATH = '/run/cni/dhcp.sock';

/** The reference's option names (options.go); any other option is given by number. */
const OPTION_NAMES: Readonly<Record<string, number>> = {
  'dhcp-client-identifier': Opt.ClientIdentifier,
  'subnet-mask': Opt.SubnetMask,
  routers: Opt.Router,
  'host-name': Opt.HostName,
  'user-class': Opt.UserClass,
  'vendor-class-identifier': Opt.VendorClassIdentifier,
};

/** Options the client manages itself: a `provide` of these is refused (the reference would send two). */
const CLIENT_OWNED = new Set<number>([Opt.MessageType, Opt.ParameterRequestList, Opt.RequestedIP, Opt.ServerIdentifier, Opt.Pad, Opt.End]);

export interface ClientOptions {
  /** Options sent with DISCOVER and REQUEST (code → value bytes as text, at most 255 bytes). */
  readonly provide: readonly { readonly code: number; readonly value: string }[];
  /** Codes for the parameter request list (option 55), in a stable order. */
  readonly request: readonly number[];
}

export interface DhcpConf {
  readonly network: string;
  readonly socketPath: string;
  readonly options: ClientOptions;
}

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);
const show = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 80);

function parseOptionName(name: unknown): number | undefined {
  if (typeof name !== 'string') return undefined;
  const known = OPTION_NAMES[name];
  if (known !== undefined) return known;
  if (!/^\d{1,3}$/.test(name)) return undefined;
  const n = Number(name);
  return n >= 1 && n <= 254 ? n : undefined;
}

const byteLength = (s: string): number => new TextEncoder().encode(s).length;

/**
 * The client id of an attachment, as the reference's generateClientID: `<containerID>/<network>/<ifname>`,
 * cut to 254 bytes (option 61 carries a type byte, 0, before it).
 */
export const clientId = (containerId: string, network: string, ifname: string): string =>
  `${containerId}/${network}/${ifname}`.slice(0, 254);

/** Validate `ipam` of the network config; `cniArgs` supplies `fromArg` values. All errors at once. */
export function parseDhcpConf(conf: NetConf, cniArgs: Readonly<Record<string, string>>): E.Either<CniError, DhcpConf> {
  const errs: string[] = [];
  const ipam = obj(conf.raw['ipam']);
  if (!ipam) return E.left(invalidConfig('ipam: missing or not an object'));
  let socketPath = DEFAULT_SOCKET_PATH;
  const sp = ipam['daemonSocketPath'];
  if (sp !== undefined && sp !== '') {
    if (typeof sp !== 'string' || !sp.startsWith('/') || /[\0-\x1f\x7f]/.test(sp)) {
      errs.push(`ipam.daemonSocketPath: ${show(sp)} is not an absolute path`);
    } else socketPath = sp;
  }
  const provide: { code: number; value: string }[] = [];
  const rawProvide = ipam['provide'] ?? [];
  if (!Array.isArray(rawProvide)) errs.push('ipam.provide: must be a list');
  else
    rawProvide.forEach((p, i) => {
      const f = `ipam.provide[${i}]`;
      const o = obj(p);
      if (!o) return void errs.push(`${f}: must be an object`);
      const code = parseOptionName(o['option']);
      if (code === undefined) return void errs.push(`${f}.option: ${show(o['option'])} is not a DHCP option name or number (1-254)`);
      if (CLIENT_OWNED.has(code)) return void errs.push(`${f}.option: option ${code} is set by the client itself`);
      for (const k of ['value', 'fromArg'] as const) {
        if (o[k] !== undefined && typeof o[k] !== 'string') errs.push(`${f}.${k}: must be a string`);
      }
      // As the reference: `value`, then a CNI_ARGS value named by `fromArg` wins when present.
      let value = typeof o['value'] === 'string' ? o['value'] : '';
      let from = 'value';
      const arg = typeof o['fromArg'] === 'string' ? o['fromArg'] : '';
      if (arg !== '' && cniArgs[arg] !== undefined) {
        value = cniArgs[arg]!;
        from = `CNI_ARGS ${arg}`;
      }
      if (byteLength(value) > 255) return void errs.push(`${f}: the ${from} for option ${code} is longer than 255 bytes`);
      if (value !== '') {
        const at = provide.findIndex((x) => x.code === code);
        if (at >= 0) provide[at] = { code, value };
        else provide.push({ code, value });
      }
    });
  const request: number[] = [];
  let skipDefault = false;
  const rawRequest = ipam['request'] ?? [];
  if (!Array.isArray(rawRequest)) errs.push('ipam.request: must be a list');
  else
    rawRequest.forEach((r, i) => {
      const f = `ipam.request[${i}]`;
      const o = obj(r);
      if (!o) return void errs.push(`${f}: must be an object`);
      if (o['skipDefault'] !== undefined && typeof o['skipDefault'] !== 'boolean') errs.push(`${f}.skipDefault: must be true or false`);
      if (o['skipDefault'] === true) skipDefault = true;
      // The reference requires `option` in every entry, even one that only says skipDefault.
      const code = parseOptionName(o['option']);
      if (code === undefined) return void errs.push(`${f}.option: ${show(o['option'])} is not a DHCP option name or number (1-254)`);
      if (!request.includes(code)) request.push(code);
    });
  if (!skipDefault) for (const c of [Opt.Router, Opt.SubnetMask]) if (!request.includes(c)) request.push(c);
  // As the reference, option 121 is only asked for when `request` names it (`{"option": "121"}`); a server
  // such as dnsmasq only sends it when asked.
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({ network: conf.name, socketPath, options: { provide, request } });
}
