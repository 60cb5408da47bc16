// The bridge plugin's configuration: every option of the reference plugin, validated up front so that bad
// input changes nothing. Messages name the field.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { pluginTypeProblem } from '../cni/conflist.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { DNS } from '../cni/result.ts';
import { parseMac } from '../ip/mac.ts';
import { linkNameProblem } from '../kernel/names.ts';
import { parseBackend, type NetfilterBackend } from '../netfilter/backend.ts';

export interface BridgeConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly bridge: string;
  readonly isGateway: boolean;
  readonly isDefaultGateway: boolean;
  readonly forceAddress: boolean;
  readonly ipMasq: boolean;
  /** The masquerade's backend; undefined: the host decides (apps/cni/netfilter.ts). */
  readonly ipMasqBackend?: NetfilterBackend;
  /** 0: kernel default. */
  readonly mtu: number;
  readonly hairpinMode: boolean;
  readonly promiscMode: boolean;
  readonly vlan: number;
  readonly vlanTrunk: readonly { minID?: number; maxID?: number; id?: number }[];
  readonly enableDad: boolean;
  readonly disableContainerInterface: boolean;
  /** Requested container MAC (runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC). */
  readonly mac?: string;
  readonly dns?: DNS;
  /** IPAM plugin type; '' means layer 2 only. */
  readonly ipamType: string;
}

type Raw = Readonly<Record<string, unknown>>;

const bool = (o: Raw, k: string, errs: string[]): boolean => {
  const v = o[k];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') {
    errs.push(`${k}: must be true or false, got ${JSON.stringify(v)}`);
    return false;
  }
  return v;
};

const int = (o: Raw, k: string, errs: string[], min: number, max: number): number => {
  const v = o[k];
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    errs.push(`${k}: must be an integer between ${min} and ${max}, got ${JSON.stringify(v)}`);
    return 0;
  }
  return v;
};

const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);

export function parseBridgeConf(conf: NetConf, cniArgs: Readonly<Record<string, string>>): E.Either<CniError, BridgeConf> {
  const o = conf.raw;
  const errs: string[] = [];
  const bridge = o['bridge'] === undefined || o['bridge'] === '' ? 'cni0' : o['bridge'];
  if (typeof bridge !== 'string') errs.push(`bridge: must be a string, got ${JSON.stringify(bridge)}`);
  else {
    const problem = linkNameProblem(bridge);
    if (problem) errs.push(`bridge: ${JSON.stringify(bridge)} is not a valid interface name: it ${problem}`);
  }
  const isDefaultGateway = bool(o, 'isDefaultGateway', errs);
  const isGateway = bool(o, 'isGateway', errs) || isDefaultGateway;
  const hairpinMode = bool(o, 'hairpinMode', errs);
  const promiscMode = bool(o, 'promiscMode', errs);
  if (hairpinMode && promiscMode) errs.push('hairpinMode, promiscMode: cannot set hairpin mode and promiscuous mode at the same time');
  const vlan = int(o, 'vlan', errs, 0, 4094);
  const vlanTrunk: { minID?: number; maxID?: number; id?: number }[] = [];
  if (o['vlanTrunk'] !== undefined) {
    if (!Array.isArray(o['vlanTrunk'])) errs.push('vlanTrunk: must be a list of {id} or {minID, maxID}');
    else {
      o['vlanTrunk'].forEach((t: unknown, i: number) => {
        const r = obj(t);
        const inRange = (x: unknown): boolean => typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= 4094;
        if (!r) errs.push(`vlanTrunk[${i}]: must be an object`);
        else if (r['id'] !== undefined && !inRange(r['id'])) errs.push(`vlanTrunk[${i}].id: must be between 1 and 4094`);
        else if (
          (r['minID'] !== undefined || r['maxID'] !== undefined) &&
          (!inRange(r['minID']) || !inRange(r['maxID']) || (r['minID'] as number) > (r['maxID'] as number))
        )
          errs.push(`vlanTrunk[${i}]: minID and maxID must be between 1 and 4094 with minID <= maxID`);
        else vlanTrunk.push(r as { minID?: number; maxID?: number; id?: number });
      });
    }
    if (vlan !== 0 && vlanTrunk.length) errs.push('vlan, vlanTrunk: cannot set vlan and vlanTrunk at the same time');
  }

  // MAC: CNI_ARGS MAC < args.cni.mac < runtimeConfig.mac, as the reference plugin.
  let mac: string | undefined;
  const macCandidates: [string, unknown][] = [
    ['CNI_ARGS MAC', cniArgs['MAC']],
    ['args.cni.mac', obj(obj(o['args'])?.['cni'])?.['mac']],
    ['runtimeConfig.mac', obj(o['runtimeConfig'])?.['mac']],
  ];
  for (const [field, v] of macCandidates) {
    if (v === undefined || v === '') continue;
    const m = typeof v === 'string' ? parseMac(v) : undefined;
    if (!m) errs.push(`${field}: ${JSON.stringify(v)} is not a MAC address`);
    else mac = m;
  }

  let ipamType = '';
  if (o['ipam'] !== undefined) {
    const ipam = obj(o['ipam']);
    if (!ipam) errs.push('ipam: must be an object');
    else if (ipam['type'] !== undefined && typeof ipam['type'] !== 'string') errs.push('ipam.type: must be a string');
    else ipamType = (ipam['type'] as string | undefined) ?? '';
    const bad = ipamType === '' ? undefined : pluginTypeProblem(ipamType);
    if (bad) errs.push(`ipam.type: ${JSON.stringify(ipamType)} ${bad}`);
  }
  const ipMasq = bool(o, 'ipMasq', errs);
  const ipMasqBackend = parseBackend(o, 'ipMasqBackend', errs);
  const disableContainerInterface = bool(o, 'disableContainerInterface', errs);
  if (disableContainerInterface && ipamType !== '')
    errs.push('disableContainerInterface, ipam: IPAM cannot be used when the container interface is disabled');
  const forceAddress = bool(o, 'forceAddress', errs);
  const mtu = int(o, 'mtu', errs, 0, 65535);
  const enableDad = bool(o, 'enabledad', errs);
  let dns: DNS | undefined;
  if (o['dns'] !== undefined) {
    const d = obj(o['dns']);
    if (!d) errs.push('dns: must be an object');
    else dns = d as DNS;
  }
  if (errs.length) return E.left(invalidConfig(errs.join('; ')));
  return E.right({
    name: conf.name,
    cniVersion: conf.cniVersion,
    bridge: bridge as string,
    isGateway,
    isDefaultGateway,
    forceAddress,
    ipMasq,
    ...(ipMasqBackend ? { ipMasqBackend } : {}),
    mtu,
    hairpinMode,
    promiscMode,
    vlan,
    vlanTrunk,
    enableDad,
    disableContainerInterface,
    ...(mac ? { mac } : {}),
    ...(dns ? { dns } : {}),
    ipamType,
  });
}
