// The firewall plugin's rules as nftables: felt goes beyond the reference here (its firewall has iptables and
// firewalld only). The same intent as felt's iptables firewall (core/firewall/desired.ts), in one table
// `inet cni_firewall`:
//
//   forward     base chain, filter hook forward priority 0, policy accept; its content is felt's:
//                 jump isolation1 ; jump pods                         (isolation first, as in FORWARD)
//   isolation1  per isolating bridge BR:  iifname BR oifname != BR jump isolation2
//                                         iifname BR oifname BR drop   (isolated only)
//   isolation2  per isolating bridge BR:  oifname BR drop
//   pods        jump admin (first), then per pod address A:
//                 ip[6] daddr A ct state established,related accept ; ip[6] saddr A accept
//   admin       created empty, never touched again: the administrator's (a drop there wins)
//
// Only the pod's two rules per address are the attachment's (comment = the address prefix, exactly); the
// table, the chains and the shared rules stay after DEL. nftables semantics differ in one way that no
// rendering can hide: an accept ends only the base chain it is in, so felt's accepts do not override a drop
// policy in another table's forward chain (iptables' CNI-FORWARD sits inside FORWARD and does).

import type { Family } from '../ip/ip.ts';
import type { KernelState, NftChain, NftJson, NftRule, NsRef, OwnershipScope } from '../kernel/model.ts';

const FIREWALL_TABLE = 'cni_firewall';
const at = (ns: NsRef) => ({ ns, family: 'inet' as const, table: FIREWALL_TABLE });
const meta = (key: string): NftJson => ({ meta: { key } });
const m = (op: '==' | '!=' | 'in', left: NftJson, right: NftJson): NftJson => ({ match: { op, left, right } });

export type Policy = 'open' | 'same-bridge' | 'isolated';

/**
 * The firewall intent of one attachment, as data: accept forwarded traffic from each pod address and to it
 * when established or related, behind the administrator's chain; with same-bridge or isolated, keep other
 * bridges' traffic off this bridge (isolated: and the bridge's own pods from each other). Rendered by
 * FIREWALL_RENDERERS (core/firewall/desired.ts); always in the host namespace.
 */
export interface PodForward {
  /** The pod's addresses as host prefixes (10.22.0.5/32), deduplicated, in the result's order. */
  readonly prefixes: readonly { readonly family: Family; readonly prefix: string }[];
  readonly policy: Policy;
  /** The bridge (the result's first interface); isolation needs it. */
  readonly bridge: string | undefined;
  /** The administrator's chain in iptables (iptablesAdminChainName); nftables' is always `admin`. */
  readonly adminChain: string;
}

/** Rules of one pod address (a host prefix, e.g. 10.22.0.5/32): what its DEL removes. */
function podRules(ns: NsRef, prefix: string): NftRule[] {
  const v6 = prefix.includes(':');
  const ip = v6 ? 'ip6' : 'ip';
  const addr = prefix.slice(0, prefix.indexOf('/'));
  const r = (expr: NftJson[]): NftRule => ({ ...at(ns), chain: 'pods', comment: prefix, expr });
  return [
    r([
      m('==', { payload: { protocol: ip, field: 'daddr' } }, addr),
      m('in', { ct: { key: 'state' } }, ['established', 'related']),
      { accept: null },
    ]),
    r([m('==', { payload: { protocol: ip, field: 'saddr' } }, addr), { accept: null }]),
  ];
}

export function firewallNftables(
  ns: NsRef,
  prefixes: readonly string[],
  policy: Policy,
  bridge: string | undefined,
): Required<Pick<KernelState, 'nftTables' | 'nftChains' | 'nftRules'>> {
  const chain = (name: string, extra: Partial<NftChain> = {}): NftChain => ({ ...at(ns), name, rules: [], shared: true, ...extra });
  const chains: NftChain[] = [
    chain('admin'),
    chain('isolation2'),
    chain('isolation1'),
    chain('pods'),
    chain('forward', {
      shared: false,
      base: { type: 'filter', hook: 'forward', prio: 0, policy: 'accept' },
      rules: [{ expr: [{ jump: { target: 'isolation1' } }] }, { expr: [{ jump: { target: 'pods' } }] }],
    }),
  ];
  const shared = (c: string, expr: NftJson[]): NftRule => ({ ...at(ns), chain: c, expr });
  const rules: NftRule[] = [shared('pods', [{ jump: { target: 'admin' } }])];
  if (policy !== 'open' && bridge !== undefined) {
    rules.push(
      shared('isolation1', [m('==', meta('iifname'), bridge), m('!=', meta('oifname'), bridge), { jump: { target: 'isolation2' } }]),
    );
    if (policy === 'isolated')
      rules.push(shared('isolation1', [m('==', meta('iifname'), bridge), m('==', meta('oifname'), bridge), { drop: null }]));
    rules.push(shared('isolation2', [m('==', meta('oifname'), bridge), { drop: null }]));
  }
  for (const p of prefixes) rules.push(...podRules(ns, p));
  return { nftTables: [{ ns, family: 'inet', name: FIREWALL_TABLE }], nftChains: chains, nftRules: rules };
}

/** The pod's rules (both families) by their comment, the address prefix. */
export function firewallNftScope(ns: NsRef, prefixes: readonly string[]): Pick<OwnershipScope, 'nftRuleMarkers'> {
  return { nftRuleMarkers: prefixes.map((comment) => ({ ...at(ns), chain: 'pods', comment, exact: true })) };
}
