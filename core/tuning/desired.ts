// The desired kernel state of one tuned attachment: the container interface with the attributes the config
// manages (a link of kind 'device': "whatever is there", never created or replaced), and the sysctls in the
// container's namespace. Three views of it: what ADD wants (the configured values), what CHECK expects, and
// what DEL wants (the values that were there before ADD, for what still exists). Pure.

import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, invalidConfig, type CniError } from '../cni/errors.ts';
import type { Interface, Result } from '../cni/result.ts';
import { sysctlDevice, sysctlKey } from '../kernel/keys.ts';
import { emptyKernelState, type KernelState, type Link, type NsRef } from '../kernel/model.ts';
import { sysctlField, type TuningConf } from './config.ts';

/** The link attributes tuning manages; undefined ones are not touched. */
export interface LinkValues {
  readonly mac?: string;
  readonly mtu?: number;
  readonly promisc?: boolean;
  readonly allmulti?: boolean;
  readonly txqlen?: number;
}

/** What was there before ADD changed it: the attributes and sysctls this attachment's config manages. */
export interface Originals {
  readonly link: LinkValues;
  readonly sysctls: readonly { readonly key: string; readonly value: string }[];
}

/**
 * Multi-valued sysctls read back with tabs (`net.ipv4.ping_group_range` is "1\t0"); the kernel takes any
 * blank between the values, and a batch must not carry control characters: one space each.
 */
const sysctlValue = (v: string): string => v.trim().split(/\s+/).join(' ');

const defined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/** The attributes ADD sets: promiscuous mode only when asked for, as the reference. */
const tunedValues = (tc: TuningConf): LinkValues =>
  defined({ mac: tc.mac, mtu: tc.mtu, promisc: tc.promisc ? true : undefined, allmulti: tc.allmulti, txqlen: tc.txqlen });

const stateOf = (netns: NsRef, ifname: string, v: LinkValues, sysctls: readonly { key: string; value: string }[]): KernelState => {
  const link: Link = { ns: netns, name: ifname, kind: 'device', ...v };
  return { ...emptyKernelState(), links: [link], sysctls: sysctls.map((s) => ({ ns: netns, key: s.key, value: s.value })) };
};

/** What ADD wants. */
export const tunedState = (tc: TuningConf, netns: NsRef, ifname: string): KernelState =>
  stateOf(netns, ifname, tunedValues(tc), tc.sysctls);

/** What CHECK expects: as ADD, and (as the reference checks it) promiscuous mode off unless configured on. */
export const checkedState = (tc: TuningConf, netns: NsRef, ifname: string): KernelState =>
  stateOf(netns, ifname, { ...tunedValues(tc), promisc: tc.promisc }, tc.sysctls);

/**
 * The current values of everything ADD is about to change, from an observation of the container namespace
 * (links and the configured sysctls). Left when the interface is not there (code 4, naming CNI_IFNAME) or a
 * configured sysctl does not exist (code 7, naming the key): nothing has been changed yet.
 */
export function originalsOf(tc: TuningConf, seen: KernelState, netns: NsRef, ifname: string): E.Either<CniError, Originals> {
  const link = seen.links.find((l) => l.ns === netns && l.name === ifname);
  if (!link) return E.left(cniError(ErrCode.InvalidEnvironment, `CNI_IFNAME: no interface "${ifname}" in ${netns}`));
  const want = tunedValues(tc);
  const values: LinkValues = defined({
    mac: want.mac !== undefined ? link.mac : undefined,
    mtu: want.mtu !== undefined ? link.mtu : undefined,
    promisc: want.promisc !== undefined ? !!link.promisc : undefined,
    allmulti: want.allmulti !== undefined ? !!link.allmulti : undefined,
    txqlen: want.txqlen !== undefined ? link.txqlen : undefined,
  });
  const have = new Map(seen.sysctls.map((s) => [sysctlKey(s), s.value]));
  const sysctls: { key: string; value: string }[] = [];
  const missing: string[] = [];
  for (const s of tc.sysctls) {
    const v = have.get(sysctlKey({ ns: netns, key: s.key }));
    if (v === undefined) missing.push(`${sysctlField(s)}: no such sysctl in ${netns}`);
    else sysctls.push({ key: s.key, value: sysctlValue(v) });
  }
  if (missing.length) return E.left(invalidConfig(missing.join('; ')));
  return E.right({ link: values, sysctls });
}

/**
 * Originals recorded by an earlier ADD of the same attachment win over the values seen now (which may be that
 * ADD's own), attribute by attribute and key by key; what only the new config manages comes from `now`.
 */
export function mergeOriginals(first: Originals | undefined, now: Originals): Originals {
  if (!first) return now;
  const keys = new Set(first.sysctls.map((s) => s.key));
  return {
    link: { ...now.link, ...first.link },
    sysctls: [...first.sysctls, ...now.sysctls.filter((s) => !keys.has(s.key))],
  };
}

/**
 * What DEL wants: the original values back, for what still exists in the observation (an interface that is
 * gone takes its attributes and per-device sysctls with it; a sysctl that is not there cannot be written).
 */
export function restoredState(orig: Originals, seen: KernelState, netns: NsRef, ifname: string): KernelState {
  const links = new Set(seen.links.filter((l) => l.ns === netns).map((l) => l.name));
  const have = new Set(seen.sysctls.map(sysctlKey));
  const sysctls = orig.sysctls.filter((s) => {
    const dev = sysctlDevice(s.key);
    return have.has(sysctlKey({ ns: netns, key: s.key })) && (dev === undefined || links.has(dev));
  });
  if (!links.has(ifname)) return { ...emptyKernelState(), sysctls: sysctls.map((s) => ({ ns: netns, ...s })) };
  return stateOf(netns, ifname, orig.link, sysctls);
}

/** The result ADD prints: prevResult, with the new MAC on the interfaces named CNI_IFNAME (as the reference). */
export function tunedResult(prev: Result, tc: TuningConf, ifname: string): Result {
  if (tc.mac === undefined || !prev.interfaces) return prev;
  const mac = tc.mac;
  return { ...prev, interfaces: prev.interfaces.map((i): Interface => (i.name === ifname ? { ...i, mac } : i)) };
}
