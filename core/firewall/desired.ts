// The desired filter-table rules of one firewall attachment, byte for byte as the reference plugin
// (containernetworking/plugins v1.1.1, plugins/meta/firewall) writes them and iptables-save prints them:
//
//   FORWARD      (head) -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
//   CNI-FORWARD  (head) -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
//                (tail) -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT      per address
//                (tail) -s <ip>/32 -j ACCEPT                                                 per address
//   CNI-ADMIN    created empty, never touched again: the administrator's
//
// and for ingressPolicy same-bridge / isolated, per bridge (v1.1.1's comments; isolated as v1.2.0 adds it):
//
//   FORWARD                (head) -m comment --comment "<C>" -j CNI-ISOLATION-STAGE-1
//   CNI-ISOLATION-STAGE-1  (head) -i BR ! -o BR -m comment --comment "<P>" -j CNI-ISOLATION-STAGE-2
//                          (head) -i BR -o BR -m comment --comment "<P>" -j DROP                 isolated only
//                          (tail) -m comment --comment "<C>" -j RETURN
//   CNI-ISOLATION-STAGE-2  (head) -o BR -m comment --comment "<C>" -j DROP
//                          (tail) -m comment --comment "<C>" -j RETURN
//   <C> = CNI firewall plugin rules (ingressPolicy: same-bridge), <P> = ... (ingressPolicy: <policy>)
//
// Only the per-address rules belong to the attachment (its scope): the jumps, CNI-ADMIN and the isolation
// chains are shared by every attachment on the node and stay after DEL, as the reference leaves them.
// Every chain is shared, so none is desired whole; missing ones are created empty (plan's chain.add).

import { bits, formatIP, parseCIDR, type Family } from '../ip/ip.ts';
import { emptyKernelState, HOST, type IptFamily, type IptRule, type KernelState, type OwnershipScope } from '../kernel/model.ts';
import { quoteComment } from '../cni/masq.ts';
import { nftRuleKey } from '../kernel/keys.ts';
import { renderWith, type Renderers } from '../netfilter/backend.ts';
import { firewallNftables, firewallNftScope, type PodForward } from '../netfilter/firewall.ts';
import type { FirewallConf, IngressPolicy } from './config.ts';

const FORWARD_CHAIN = 'CNI-FORWARD';
const STAGE1 = 'CNI-ISOLATION-STAGE-1';
const STAGE2 = 'CNI-ISOLATION-STAGE-2';
const FORWARD_COMMENT = 'CNI firewall plugin rules';
const ADMIN_COMMENT = 'CNI firewall plugin admin overrides';
const policyComment = (p: Exclude<IngressPolicy, 'open'>): string => `CNI firewall plugin rules (ingressPolicy: ${p})`;
/**
 * The comment of the isolation rules every policy shares. v1.1.1 (Debian's, this node's reference) writes
 * "(ingressPolicy: same-bridge)"; v1.2.0+ write "(ingressPolicy: same-bridge|isolated)". felt keeps v1.1.1's.
 */
const SHARED_POLICY_COMMENT = policyComment('same-bridge');

const comment = (c: string): string => `-m comment --comment ${quoteComment(c)}`;

/** The addresses of a result's IPs as host prefixes (`10.22.0.5/32`, `fd00::5/128`), per family, deduplicated. */
export function hostPrefixes(ips: readonly { address: string }[]): { family: Family; prefix: string }[] {
  const out: { family: Family; prefix: string }[] = [];
  for (const { address } of ips) {
    const c = parseCIDR(address);
    if (!c) continue;
    const prefix = `${formatIP(c.ip)}/${bits(c.ip.family)}`;
    if (!out.some((p) => p.prefix === prefix)) out.push({ family: c.ip.family, prefix });
  }
  return out;
}

/** The attachment's own rules in CNI-FORWARD: what DEL removes. */
const addressRules = (prefix: string): string[] => [
  `-d ${prefix} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  `-s ${prefix} -j ACCEPT`,
];

const rule = (family: IptFamily, chain: string, text: string, position: 'head' | 'tail', ensureTarget = false): IptRule => ({
  ns: HOST,
  family,
  table: 'filter',
  chain,
  rule: text,
  position,
  ...(ensureTarget ? { ensureTarget } : {}),
});

/** The isolation rules for one bridge in one family, in the order the reference inserts them. */
function isolationRules(family: IptFamily, bridge: string, policy: Exclude<IngressPolicy, 'open'>): IptRule[] {
  const p = comment(policyComment(policy));
  const c = comment(SHARED_POLICY_COMMENT);
  return [
    rule(family, 'FORWARD', `${c} -j ${STAGE1}`, 'head'),
    rule(family, STAGE1, `-i ${bridge} ! -o ${bridge} ${p} -j ${STAGE2}`, 'head', true),
    ...(policy === 'isolated' ? [rule(family, STAGE1, `-i ${bridge} -o ${bridge} ${p} -j DROP`, 'head')] : []),
    rule(family, STAGE1, `${c} -j RETURN`, 'tail'),
    rule(family, STAGE2, `-o ${bridge} ${c} -j DROP`, 'head'),
    rule(family, STAGE2, `${c} -j RETURN`, 'tail'),
  ];
}

export interface FirewallAttachment {
  readonly kernel: KernelState;
  /** What belongs to this attachment alone: its address rules in CNI-FORWARD (both families). */
  readonly scope: OwnershipScope;
}

/** The attachment's scope from the addresses alone (DEL, rollback): works without the bridge or the netns. */
export function attachmentScope(ips: readonly { address: string }[]): OwnershipScope {
  return {
    // Both backends: DEL removes what either left.
    ...firewallNftScope(
      HOST,
      hostPrefixes(ips).map((p) => p.prefix),
    ),
    links: [],
    devices: [],
    chains: [],
    ruleMarkers: hostPrefixes(ips).flatMap(({ family, prefix }) =>
      addressRules(prefix).map((marker) => ({ ns: HOST, family, table: 'filter' as const, chain: FORWARD_CHAIN, marker })),
    ),
  };
}

/**
 * The intent in iptables, in the order the reference makes it (the shared jumps are inserted at the head, so
 * the isolation jump, made last, ends up first). Families without an address get nothing, as in the reference.
 */
function renderFirewallIptables(p: PodForward): Pick<KernelState, 'rules'> {
  const { prefixes } = p;
  const families = ([4, 6] as const).filter((f) => prefixes.some((x) => x.family === f));
  const rules: IptRule[] = [];
  for (const family of families) {
    rules.push(rule(family, 'FORWARD', `${comment(FORWARD_COMMENT)} -j ${FORWARD_CHAIN}`, 'head'));
    rules.push(rule(family, FORWARD_CHAIN, `${comment(ADMIN_COMMENT)} -j ${p.adminChain}`, 'head', true));
    for (const x of prefixes)
      if (x.family === family) for (const r of addressRules(x.prefix)) rules.push(rule(family, FORWARD_CHAIN, r, 'tail'));
  }
  if (p.policy !== 'open' && p.bridge) {
    for (const family of families) rules.push(...isolationRules(family, p.bridge, p.policy));
  }
  return { rules };
}

/** The intent in nftables (core/netfilter/firewall.ts): nothing at all without an address. */
const renderFirewallNft = (p: PodForward): Partial<KernelState> =>
  p.prefixes.length
    ? firewallNftables(
        HOST,
        p.prefixes.map((x) => x.prefix),
        p.policy,
        p.bridge,
      )
    : {};

/** The firewall intent's renderers: every backend, compiler-checked. */
const FIREWALL_RENDERERS = {
  iptables: renderFirewallIptables,
  nftables: renderFirewallNft,
} satisfies Renderers<PodForward>;

/** The intent of an ADD's config: the addresses of `fc.prevResult`, its policy, bridge and admin chain. */
const podForwardOf = (fc: FirewallConf): PodForward => ({
  prefixes: hostPrefixes(fc.prevResult?.ips ?? []),
  policy: fc.ingressPolicy,
  bridge: fc.prevResult?.interfaces?.[0]?.name,
  adminChain: fc.adminChain,
});

/** Everything ADD wants for an attachment with the addresses of `fc.prevResult`, in the config's backend. */
export function firewallDesired(fc: FirewallConf): FirewallAttachment {
  const kernel = renderWith(FIREWALL_RENDERERS, fc.backend ?? 'iptables', podForwardOf(fc));
  return { kernel: { ...emptyKernelState(), ...kernel }, scope: attachmentScope(fc.prevResult?.ips ?? []) };
}

/**
 * The desired rules to plan with, given what is there: shared rules (jumps, isolation rules) that exist
 * already are left out, so plan only ever adds them. Two ADDs racing on a fresh node may both insert a
 * shared jump (the reference can do the same); plan would remove the extra copy, and two such removals
 * racing could remove both. Shared rules are therefore never removed, duplicates included.
 */
export function toPlan(a: FirewallAttachment, observed: KernelState): KernelState {
  const own = new Set(a.scope.ruleMarkers.map((m) => `${m.family} ${m.chain} ${m.marker}`));
  const present = new Set<string>();
  for (const r of observed.rules) present.add(`${r.ns} ${r.family} ${r.table} ${r.chain} ${r.rule}`);
  for (const c of observed.chains) for (const r of c.rules) present.add(`${c.ns} ${c.family} ${c.table} ${c.chain} ${r}`);
  // The same for nftables: a shared rule (no comment) that is there already is not desired again.
  const nftPresent = new Set((observed.nftRules ?? []).map(nftRuleKey));
  return {
    ...a.kernel,
    rules: a.kernel.rules.filter(
      (r) => own.has(`${r.family} ${r.chain} ${r.rule}`) || !present.has(`${r.ns} ${r.family} ${r.table} ${r.chain} ${r.rule}`),
    ),
    ...(a.kernel.nftRules ? { nftRules: a.kernel.nftRules.filter((r) => r.comment !== undefined || !nftPresent.has(nftRuleKey(r))) } : {}),
  };
}
