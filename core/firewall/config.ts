// The firewall plugin's configuration (containernetworking/plugins plugins/meta/firewall): `backend`,
// `iptablesAdminChainName`, `firewalldZone`, `ingressPolicy` and the chained `prevResult`. Validated up front,
// all of it, so that bad input changes nothing on the host. Messages name the field.

import * as E from 'fp-ts/lib/Either.js';
import type { Command, NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import { readResult, type Result } from '../cni/result.ts';
import { BUILTIN_CHAINS } from '../kernel/keys.ts';
import type { NetfilterBackend } from '../netfilter/backend.ts';
import { isBatchToken } from '../kernel/names.ts';

/** `same-bridge` (v1.1.0) and `isolated` (v1.2.0) isolate bridges from each other with two shared chains. */
const INGRESS_POLICIES = ['open', 'same-bridge', 'isolated'] as const;
export type IngressPolicy = (typeof INGRESS_POLICIES)[number];

export interface FirewallConf {
  readonly name: string;
  readonly cniVersion: string;
  /**
   * iptables (the reference's chains) or nftables (felt's table inet cni_firewall, core/netfilter/firewall.ts);
   * undefined: the host decides (apps/cni/netfilter.ts). felt has no firewalld backend (see docs/cni.md).
   */
  readonly backend?: NetfilterBackend;
  /** The chain CNI-FORWARD jumps to first, for the administrator's own rules; never flushed. */
  readonly adminChain: string;
  readonly ingressPolicy: IngressPolicy;
  /** The previous plugin's result; required for ADD and CHECK, optional for DEL. */
  readonly prevResult?: Result;
}

/** The reference's default admin chain. */
const DEFAULT_ADMIN_CHAIN = 'CNI-ADMIN';
/** iptables' longest chain name (XT_EXTENSION_MAXNAMELEN - 1). */
const MAX_CHAIN_NAME = 28;
/** Chain names the plugin uses itself, and the verdicts: an admin chain of that name would loop or mean something else. */
const RESERVED = new Set(['CNI-FORWARD', 'CNI-ISOLATION-STAGE-1', 'CNI-ISOLATION-STAGE-2', 'ACCEPT', 'DROP', 'RETURN', 'QUEUE', 'REJECT']);

const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

function adminChainProblem(s: string): string | undefined {
  if (s.length > MAX_CHAIN_NAME) return `is longer than ${MAX_CHAIN_NAME} characters`;
  if (!isBatchToken(s) || /^[-!]/.test(s)) return "must be one word without '#', quotes, '\\' or a leading '-' or '!'";
  if (BUILTIN_CHAINS.has(s) || RESERVED.has(s)) return "names a builtin chain, a verdict or one of the plugin's own chains";
  return undefined;
}

export function parseFirewallConf(conf: NetConf, command: Command): E.Either<CniError, FirewallConf> {
  const raw = conf.raw;
  const errs: string[] = [];

  const backend = raw['backend'];
  if (backend === 'firewalld') {
    errs.push('backend: "firewalld" is not supported by felt (only "iptables" and "nftables"); leave backend out or set it to one of them');
  } else if (backend !== undefined && backend !== '' && backend !== 'iptables' && backend !== 'nftables') {
    errs.push(`backend: unknown backend ${show(backend)} (felt supports "iptables" and "nftables")`);
  }

  let adminChain = DEFAULT_ADMIN_CHAIN;
  const admin = raw['iptablesAdminChainName'];
  if (admin !== undefined && admin !== '') {
    if (typeof admin !== 'string') errs.push(`iptablesAdminChainName: must be a string, got ${show(admin)}`);
    else {
      const why = adminChainProblem(admin);
      if (why) errs.push(`iptablesAdminChainName: ${show(admin)} ${why}`);
      else adminChain = admin;
    }
  }

  const zone = raw['firewalldZone'];
  if (zone !== undefined && typeof zone !== 'string') errs.push(`firewalldZone: must be a string, got ${show(zone)}`);

  let ingressPolicy: IngressPolicy = 'open';
  const policy = raw['ingressPolicy'];
  if (policy !== undefined && policy !== '') {
    if (typeof policy === 'string' && (INGRESS_POLICIES as readonly string[]).includes(policy)) ingressPolicy = policy as IngressPolicy;
    else errs.push(`ingressPolicy: unknown ingress policy ${show(policy)} (${INGRESS_POLICIES.map((p) => `"${p}"`).join(', ')})`);
  }

  let prevResult: Result | undefined;
  const prev = raw['prevResult'];
  if (prev === undefined || prev === null) {
    if (command === 'ADD' || command === 'CHECK')
      errs.push('prevResult: missing prevResult from earlier plugin (chain "firewall" after another plugin)');
  } else {
    const r = readResult(prev);
    if (E.isLeft(r)) errs.push(`prevResult: ${r.left}`);
    else prevResult = r.right;
  }

  if (prevResult && ingressPolicy !== 'open' && (command === 'ADD' || command === 'CHECK')) {
    const br = prevResult.interfaces?.[0]?.name;
    if (br === undefined || br === '') {
      errs.push(
        `prevResult.interfaces[0]: ingressPolicy "${ingressPolicy}" needs the bridge as the first interface (chain "firewall" after "bridge")`,
      );
    } else if (br.endsWith('+')) {
      // iptables reads a trailing '+' as a wildcard: the isolation rules would cover other interfaces too.
      errs.push(`prevResult.interfaces[0].name: ${show(br)} ends with '+', which iptables reads as a wildcard`);
    }
  }

  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({
    name: conf.name,
    cniVersion: conf.cniVersion,
    ...(backend === 'iptables' || backend === 'nftables' ? { backend } : {}),
    adminChain,
    ingressPolicy,
    ...(prevResult ? { prevResult } : {}),
  });
}
