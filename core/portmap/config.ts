// The portmap plugin's configuration: the reference plugin's options (snat, masqAll, markMasqBit,
// externalSetMarkChain, conditionsV4/V6, runtimeConfig.portMappings) and the container addresses it forwards
// to, read from prevResult as the reference does. Validated up front so that bad input changes nothing;
// messages name the field.

import * as E from 'fp-ts/lib/Either.js';
import { parseBackend, type NetfilterBackend } from '../netfilter/backend.ts';
import type { NetConf } from '../cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import { readResult, type Result } from '../cni/result.ts';
import { parseCIDR, parseIP, type CIDR, type IP } from '../ip/ip.ts';
import { isBatchToken } from '../kernel/names.ts';

export type Protocol = 'tcp' | 'udp' | 'sctp';
const PROTOCOLS: readonly Protocol[] = ['tcp', 'udp', 'sctp'];

export interface PortMapping {
  readonly hostPort: number;
  readonly containerPort: number;
  readonly protocol: Protocol;
  /** Absent when the mapping has none (or an empty string). */
  readonly hostIP?: IP;
}

export interface PortMapConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly snat: boolean;
  readonly masqAll: boolean;
  /** The mark bit CNI-HOSTPORT-SETMARK sets and CNI-HOSTPORT-MASQ matches (default 13). */
  readonly markMasqBit: number;
  /** A chain of someone else's that marks for masquerade instead of CNI-HOSTPORT-SETMARK. */
  readonly externalSetMarkChain?: string;
  /** Extra match tokens for the entry rules, as iptables-save prints them (see docs/cni.md). */
  readonly conditionsV4: readonly string[];
  readonly conditionsV6: readonly string[];
  readonly portMappings: readonly PortMapping[];
  /** iptables (the reference's chains) or nftables (its table cni_hostport); undefined: the host decides. */
  readonly backend?: NetfilterBackend;
  /** Parsed prevResult (absent when the config has none). */
  readonly prevResult?: Result;
}

/** The reference's default: Kubernetes uses bits 14 and 15, Calico 20-31. */
const DEFAULT_MARK_BIT = 13;

type Raw = Readonly<Record<string, unknown>>;

const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);
const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

const bool = (o: Raw, k: string, dflt: boolean, errs: string[]): boolean => {
  const v = o[k];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') {
    errs.push(`${k}: must be true or false, got ${show(v)}`);
    return dflt;
  }
  return v;
};

const port = (v: unknown, field: string, errs: string[]): number => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    errs.push(`${field}: must be a port number between 1 and 65535, got ${show(v)}`);
    return 0;
  }
  return v;
};

/** iptables' limit: 28 characters (XT_EXTENSION_MAXNAMELEN - 1). */
const chainNameProblem = (s: string): string | undefined =>
  s.length === 0 || s.length > 28
    ? 'must be 1 to 28 characters'
    : !isBatchToken(s) || /^[-!]/.test(s)
      ? "must be one word without quotes, '#', '\\', control characters or a leading '-' or '!'"
      : undefined;

function conditions(o: Raw, k: string, errs: string[]): string[] {
  const v = o[k];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    errs.push(`${k}: must be a list of strings`);
    return [];
  }
  return v.flatMap((x, i) => {
    // Each entry is one iptables argument (the reference passes them as an argument vector): one word of an
    // iptables-restore line, so that nothing can add a word, a quote or a line.
    if (typeof x !== 'string' || !isBatchToken(x)) {
      errs.push(`${k}[${i}]: must be one word without whitespace, quotes, '#', '\\' or control characters, got ${show(x)}`);
      return [];
    }
    return [x];
  });
}

function mappings(o: Raw, errs: string[]): PortMapping[] {
  const rc = o['runtimeConfig'];
  if (rc === undefined || rc === null) return [];
  const r = obj(rc);
  if (!r) {
    errs.push('runtimeConfig: must be an object');
    return [];
  }
  const pm = r['portMappings'];
  if (pm === undefined || pm === null) return [];
  if (!Array.isArray(pm)) {
    errs.push('runtimeConfig.portMappings: must be a list');
    return [];
  }
  return pm.flatMap((x, i): PortMapping[] => {
    const f = `runtimeConfig.portMappings[${i}]`;
    const m = obj(x);
    if (!m) return (errs.push(`${f}: must be an object`), []);
    const hostPort = port(m['hostPort'], `${f}.hostPort`, errs);
    const containerPort = port(m['containerPort'], `${f}.containerPort`, errs);
    const p = m['protocol'];
    const protocol = typeof p === 'string' ? (p.toLowerCase() as Protocol) : undefined;
    if (!protocol || !PROTOCOLS.includes(protocol)) errs.push(`${f}.protocol: must be tcp, udp or sctp, got ${show(p)}`);
    const h = m['hostIP'];
    let hostIP: IP | undefined;
    if (h !== undefined && h !== null && h !== '') {
      hostIP = typeof h === 'string' ? parseIP(h) : undefined;
      if (!hostIP) errs.push(`${f}.hostIP: ${show(h)} is not an IP address`);
    }
    if (!hostPort || !containerPort || !protocol || !PROTOCOLS.includes(protocol) || (h !== undefined && h !== null && h !== '' && !hostIP))
      return [];
    return [{ hostPort, containerPort, protocol, ...(hostIP ? { hostIP } : {}) }];
  });
}

/** The plugin's options; prevResult is parsed when present (its absence is the command's business). */
export function parsePortMapConf(conf: NetConf): E.Either<CniError, PortMapConf> {
  const o = conf.raw;
  const errs: string[] = [];
  // iptables or nftables, as the reference since v1.6 (an empty string counts as unset).
  const backend = parseBackend(o['backend'] === '' ? {} : o, 'backend', errs);
  const snat = bool(o, 'snat', true, errs);
  const masqAll = bool(o, 'masqAll', false, errs);
  let markMasqBit = DEFAULT_MARK_BIT;
  const mb = o['markMasqBit'];
  if (mb !== undefined && mb !== null) {
    if (typeof mb !== 'number' || !Number.isInteger(mb) || mb < 0 || mb > 31)
      errs.push(`markMasqBit: must be an integer between 0 and 31, got ${show(mb)}`);
    else markMasqBit = mb;
  }
  let externalSetMarkChain: string | undefined;
  const ext = o['externalSetMarkChain'];
  if (ext !== undefined && ext !== null) {
    const problem = typeof ext === 'string' ? chainNameProblem(ext) : 'must be a string';
    if (problem) errs.push(`externalSetMarkChain: ${problem}, got ${show(ext)}`);
    else externalSetMarkChain = ext as string;
    if (mb !== undefined && mb !== null) errs.push('markMasqBit: cannot be given together with externalSetMarkChain');
  }
  const conditionsV4 = conditions(o, 'conditionsV4', errs);
  const conditionsV6 = conditions(o, 'conditionsV6', errs);
  const portMappings = mappings(o, errs);
  // The reference refuses options of the other backend. felt's nftables rules are JSON, never text: conditions
  // (nft syntax in the reference's nftables mode) are not taken with nftables.
  if (backend === 'nftables') {
    if (externalSetMarkChain !== undefined) errs.push('externalSetMarkChain: an iptables option, not taken with backend "nftables"');
    for (const k of ['conditionsV4', 'conditionsV6'] as const) {
      if ((k === 'conditionsV4' ? conditionsV4 : conditionsV6).length)
        errs.push(`${k}: not supported by felt with backend "nftables" (felt writes nftables rules as JSON, not nft text)`);
    }
  }
  let prevResult: Result | undefined;
  if (o['prevResult'] !== undefined && o['prevResult'] !== null) {
    const r = readResult(o['prevResult']);
    if (E.isLeft(r)) return E.left(cniError(ErrCode.DecodeFailure, `prevResult: ${r.left}`));
    prevResult = r.right;
  }
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({
    name: conf.name,
    cniVersion: conf.cniVersion,
    snat,
    masqAll,
    markMasqBit,
    ...(externalSetMarkChain !== undefined ? { externalSetMarkChain } : {}),
    conditionsV4,
    conditionsV6,
    portMappings,
    ...(backend ? { backend } : {}),
    ...(prevResult ? { prevResult } : {}),
  });
}

export interface ContainerAddresses {
  readonly v4?: CIDR;
  readonly v6?: CIDR;
}

/**
 * The container's addresses, as the reference picks them: per family the first address of prevResult that
 * is not on a known interface other than `ifname` in the sandbox (an address without an interface index, or
 * with one out of range, counts).
 */
export function containerAddresses(prev: Result, ifname: string): ContainerAddresses {
  const ifs = prev.interfaces ?? [];
  let v4: CIDR | undefined;
  let v6: CIDR | undefined;
  for (const a of prev.ips ?? []) {
    const c = parseCIDR(a.address);
    if (!c) continue;
    if ((c.ip.family === 4 && v4) || (c.ip.family === 6 && v6)) continue;
    const i = a.interface;
    if (i !== undefined && i >= 0 && i < ifs.length) {
      const itf = ifs[i]!;
      if (itf.name !== ifname || !itf.sandbox) continue;
    }
    if (c.ip.family === 4) v4 = c;
    else v6 = c;
  }
  return { ...(v4 ? { v4 } : {}), ...(v6 ? { v6 } : {}) };
}

/** ADD and CHECK need a prevResult: portmap only makes sense chained after an interface plugin. */
export const requirePrevResult = (pc: PortMapConf): E.Either<CniError, Result> =>
  pc.prevResult ? E.right(pc.prevResult) : E.left(invalidConfig('prevResult: missing; portmap must be called as a chained plugin'));
