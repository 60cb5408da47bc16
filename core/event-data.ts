// Typed parsers for the data of felt's events, as the deciders make them: what `felt import` checks every
// imported event against before anything is written (an exported log is untrusted text). One parser per event
// type; core/projections.ts keeps them in a table per stream kind whose type makes the compiler check that it
// covers exactly the event types of the kind's projection. Pure: no I/O.
//
// A parser returns the data unchanged when it is what a decider would have emitted, and otherwise says what
// is wrong, naming the field (`data.ip: 5 is not a string`). Addresses, CIDRs and MACs must be in the
// canonical text felt writes (state is keyed by it); names and paths pass the checks the CNI edge applies
// (an ifname that could not be a link, a `..` path, a newline anywhere a batch line is made, are refused).
// Unknown fields are refused too: felt never writes them, and they would be carried into the state.

import * as E from 'fp-ts/lib/Either.js';
import type { Event } from './events.ts';
import { formatCIDR, formatIP, hasHostBits, parseCIDR, parseIP } from './ip/ip.ts';
import { parseMac } from './ip/mac.ts';
import { CNI_NAME, isBatchToken, linkNameProblem, netnsPathProblem } from './kernel/names.ts';

/** Why a value is refused. Thrown inside a parser, caught by `checkData`; never escapes this module. */
class Refused {
  constructor(readonly msg: string) {}
}
export const refuse = (at: string, msg: string): never => {
  throw new Refused(`${at}: ${msg}`);
};
const show = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

/** A parser of one value at path `at` (`data.ip`): the value, typed, or a throw of Refused. */
export type Parser<T> = (v: unknown, at: string) => T;

export const str: Parser<string> = (v, at) => (typeof v === 'string' ? v : refuse(at, `${show(v)} is not a string`));

/** Any string without control characters (free text shown by `felt events`: errors, reasons). */
export const text: Parser<string> = (v, at) => {
  const s = str(v, at);
  return /[\x00-\x08\x0b-\x1f\x7f]/.test(s) ? refuse(at, `${show(s)} contains control characters`) : s;
};

/** A string that can be one token of a batch line (no whitespace, control characters, '#', quotes, '\'). */
export const token: Parser<string> = (v, at) => {
  const s = str(v, at);
  return isBatchToken(s) ? s : refuse(at, `${show(s)} is empty or contains whitespace, control characters, '#', a quote or a backslash`);
};

export const bool: Parser<boolean> = (v, at) => (typeof v === 'boolean' ? v : refuse(at, `${show(v)} is not true or false`));

export const int =
  (min: number, max: number): Parser<number> =>
  (v, at) =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max
      ? v
      : refuse(at, `${show(v)} is not an integer from ${min} to ${max}`);

export const oneOf =
  <T extends string>(...values: readonly T[]): Parser<T> =>
  (v, at) =>
    values.includes(v as T) ? (v as T) : refuse(at, `${show(v)} is not one of ${values.map((x) => JSON.stringify(x)).join(', ')}`);

/** An address in the canonical text felt writes (`10.1.0.5`, `fd00::5`). */
export const ipText: Parser<string> = (v, at) => {
  const s = str(v, at);
  const a = parseIP(s);
  if (!a) return refuse(at, `${show(s)} is not an IP address`);
  return formatIP(a) === s ? s : refuse(at, `${show(s)} is not in canonical form (${formatIP(a)})`);
};

/** An address with its prefix (`10.1.0.5/24`), canonical. */
export const cidrText: Parser<string> = (v, at) => {
  const s = str(v, at);
  const c = parseCIDR(s);
  if (!c) return refuse(at, `${show(s)} is not an address with a prefix length`);
  return formatCIDR(c) === s ? s : refuse(at, `${show(s)} is not in canonical form (${formatCIDR(c)})`);
};

/** A subnet (`10.244.3.0/24`): canonical, no host bits. */
export const subnetText: Parser<string> = (v, at) => {
  const s = cidrText(v, at);
  return hasHostBits(parseCIDR(s)!) ? refuse(at, `${show(s)} has host bits set (not the first address of the subnet)`) : s;
};

export const macText: Parser<string> = (v, at) => {
  const s = str(v, at);
  const m = parseMac(s);
  if (!m) return refuse(at, `${show(s)} is not a MAC address`);
  return m === s ? s : refuse(at, `${show(s)} is not in canonical form (${m})`);
};

export const ifname: Parser<string> = (v, at) => {
  const s = str(v, at);
  const p = linkNameProblem(s);
  return p ? refuse(at, `interface name ${show(s)} ${p}`) : s;
};

/** A container id or network name as CNI allows them. */
export const cniName: Parser<string> = (v, at) => {
  const s = str(v, at);
  return CNI_NAME.test(s)
    ? s
    : refuse(at, `${show(s)} has characters CNI does not allow (alphanumerics, '_', '.', '-'; alphanumeric first)`);
};

/** An absolute path without '.' or '..' components or characters a batch line would reinterpret. */
export const path: Parser<string> = (v, at) => {
  const s = str(v, at);
  const p = netnsPathProblem(s);
  return p ? refuse(at, `${show(s)} ${p}`) : s;
};

/** ISO 8601 with a time and an offset (as `toISOString` writes). */
export const time: Parser<string> = (v, at) => {
  const s = str(v, at);
  return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i.test(s) && Number.isFinite(Date.parse(s))
    ? s
    : refuse(at, `${show(s)} is not an ISO 8601 time`);
};

/** Any JSON value (a recorded network config, a lease's BackendData): kept as it is. */
export const json: Parser<unknown> = (v) => v;

export const array =
  <T>(item: Parser<T>): Parser<readonly T[]> =>
  (v, at) =>
    Array.isArray(v) ? v.map((x, i) => item(x, `${at}[${i}]`)) : refuse(at, `${show(v)} is not an array`);

export const record =
  <T>(item: Parser<T>): Parser<Readonly<Record<string, T>>> =>
  (v, at) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return refuse(at, `${show(v)} is not an object`);
    const out: Record<string, T> = {};
    for (const [k, x] of Object.entries(v)) out[k] = item(x, `${at}.${k}`);
    return out;
  };

type Shape = Readonly<Record<string, Parser<unknown>>>;
type Out<S extends Shape> = { readonly [K in keyof S]: S[K] extends Parser<infer T> ? T : never };

/** An object with the `required` fields, any of the `optional` ones, and nothing else. */
export const object =
  <R extends Shape, O extends Shape = {}>(required: R, optional?: O): Parser<Out<R> & Partial<Out<O>>> =>
  (v, at) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return refuse(at, `${show(v)} is not an object`);
    const o = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [k, p] of Object.entries(required)) {
      if (!(k in o) || o[k] === undefined) return refuse(`${at}.${k}`, 'missing');
      out[k] = p(o[k], `${at}.${k}`);
    }
    for (const [k, p] of Object.entries(optional ?? {})) if (k in o && o[k] !== undefined) out[k] = p(o[k], `${at}.${k}`);
    const unknown = Object.keys(o).filter((k) => !(k in required) && !(optional && k in optional));
    if (unknown.length)
      return refuse(at, `unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')}`);
    return out as Out<R> & Partial<Out<O>>;
  };

/** Also check the whole value once its fields are parsed (a consistency between fields). */
export const refine =
  <T>(p: Parser<T>, problem: (t: T) => string | undefined): Parser<T> =>
  (v, at) => {
    const t = p(v, at);
    const why = problem(t);
    return why === undefined ? t : refuse(at, why);
  };

/** `null` or a value. */
export const nullable =
  <T>(p: Parser<T>): Parser<T | null> =>
  (v, at) =>
    v === null ? null : p(v, at);

/** The name a stream carries after its kind's prefix (`ipam/<network>`), passed to every event check. */
interface StreamContext {
  readonly stream: string;
  /** The stream's name without its prefix: the network of ipam/, bridge/, cni/ ...; the public IP of node/. */
  readonly name: string;
}

/** Checks the data of one event type within its stream. */
export type DataCheck<D> = (data: unknown, ctx: StreamContext) => E.Either<string, D>;

/** The checks of every event type of a projection's event union: the compiler wants exactly these keys. */
export type DataChecks<Ev extends Event> = { readonly [K in Ev['type']]: DataCheck<Extract<Ev, { type: K }>['data']> };

/** A check from a parser of the data, plus (when the data names a network) that it is the stream's. */
export const checkData =
  <D>(p: Parser<D>, opts: { readonly networkIsStream?: boolean } = {}): DataCheck<D> =>
  (data, ctx) => {
    try {
      const d = p(data, 'data');
      if (opts.networkIsStream) {
        const n = (d as { network?: unknown }).network;
        if (n !== ctx.name)
          return E.left(`data.network: ${show(n)} is not the stream's network (${JSON.stringify(ctx.name)} of ${ctx.stream})`);
      }
      return E.right(d);
    } catch (e) {
      if (e instanceof Refused) return E.left(e.msg);
      throw e;
    }
  };
