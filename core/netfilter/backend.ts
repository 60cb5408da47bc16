// One intent, two renderers. Each netfilter user says what it wants as data (an intent: masquerade these
// addresses; DNAT these host ports to this pod; accept this pod's forwarded traffic; feltd's overlay masquerade
// and forward rules) and renders it through a table of renderers keyed by backend:
//
//   const RENDERERS = { iptables: ..., nftables: ... } satisfies Renderers<Intent, Out>;
//
// A new backend is one more key: every table that lacks it stops compiling. No desired-state function picks a
// backend by hand (no `if (backend === 'nftables')`); it looks its renderer up with renderWith.

import type { KernelState } from '../kernel/model.ts';

export type NetfilterBackend = 'iptables' | 'nftables';

/** The kernel objects a rendering can produce (each renderer gives only the kinds its backend has). */
type NetfilterObjects = Pick<KernelState, 'chains' | 'rules' | 'nftTables' | 'nftChains' | 'nftRules' | 'nftSets'>;

/** One backend's rendering of an intent. */
type Renderer<I, O extends Partial<NetfilterObjects> = Partial<NetfilterObjects>> = (intent: I) => O;

/** A renderer for every backend: what `satisfies` checks each table against. */
export type Renderers<I, O extends Partial<NetfilterObjects> = Partial<NetfilterObjects>> = Record<NetfilterBackend, Renderer<I, O>>;

/** The intent rendered in one backend: what any of the table's renderers gives. */
export const renderWith = <T extends Renderers<never>>(
  table: T,
  backend: NetfilterBackend,
  intent: Parameters<T[NetfilterBackend]>[0],
): ReturnType<T[NetfilterBackend]> => (table[backend] as (i: typeof intent) => ReturnType<T[NetfilterBackend]>)(intent);

/**
 * A backend field of a plugin config (`ipMasqBackend`, portmap's `backend`): absent is undefined (the host
 * decides, see apps/cni/netfilter.ts); anything but "iptables" or "nftables" is an error naming the field.
 */
export function parseBackend(o: Readonly<Record<string, unknown>>, field: string, errs: string[]): NetfilterBackend | undefined {
  const v = o[field];
  if (v === undefined || v === null) return undefined;
  if (v === 'iptables' || v === 'nftables') return v;
  errs.push(`${field}: must be "iptables" or "nftables", got ${JSON.stringify(v)}`);
  return undefined;
}
