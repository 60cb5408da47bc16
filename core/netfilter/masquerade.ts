// Masquerade, said once and rendered for either backend:
//   "masquerade traffic from these pod addresses to anything outside their own subnets (and not multicast)"
// as iptables (the reference's CNI-<hash> chain and POSTROUTING jump, core/cni/masq.ts, byte-identical to what
// felt wrote before) or as nftables (the reference v1.6+'s table `inet cni_plugins_masquerade`: a base chain
// `postrouting` that returns multicast and goes to `masq_checks`, where each attachment has one rule per
// address whose comment begins with a hash of (network, ifname, containerID); pkg/ip/ipmasq_nftables_linux.go).
// Teardown owns both renderings, whichever backend made them, as the reference does.

import { createHash } from 'node:crypto'; // a pure function of its input; no I/O
import { formatCIDR, formatIP, networkOf, parseCIDR } from '../ip/ip.ts';
import type { KernelState, NftChain, NftJson, NftRule, NftTable, NsRef, OwnershipScope } from '../kernel/model.ts';
import { masqFor, masqScope } from '../cni/masq.ts';
import { renderWith, type NetfilterBackend, type Renderers } from './backend.ts';

export interface Masquerade {
  readonly ns: NsRef;
  readonly network: string;
  readonly ifname: string;
  readonly containerId: string;
  /** The pod's addresses with their prefixes (10.22.0.5/24). */
  readonly addresses: readonly string[];
}

export type Netfilter = Required<Pick<KernelState, 'chains' | 'rules' | 'nftTables' | 'nftChains' | 'nftRules'>>;

export const MASQ_TABLE = 'cni_plugins_masquerade';
export const MASQ_CHAIN = 'masq_checks';
const TABLE_COMMENT = 'Masquerading for plugins from github.com/containernetworking/plugins';
const CHAIN_COMMENT = 'Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet';
/** knftables.CommentLengthMax. */
const NFT_COMMENT_MAX = 128;

const hash16 = (s: string): string => createHash('sha512').update(s).digest('hex').slice(0, 16);
/** hashForNetwork / hashForInstance of the reference. */
const masqNetworkHash = (network: string): string => hash16(network);
export const masqInstanceHash = (network: string, ifname: string, containerId: string): string =>
  `${hash16(network)}-${hash16(`${ifname}:${containerId}`)}`;
/** commentForInstance: the hash, then a readable description without double quotes, cut to 128 bytes. */
export function masqComment(network: string, ifname: string, containerId: string): string {
  const q = (s: string): string => s.replace(/"/g, '');
  const c = `${masqInstanceHash(network, ifname, containerId)}, net: ${q(network)}, if: ${q(ifname)}, id: ${q(containerId)}`;
  return Buffer.from(c).subarray(0, NFT_COMMENT_MAX).toString();
}

// Expressions in the form `nft -j` prints them, so desired and observed compare as JSON.
const payload = (protocol: 'ip' | 'ip6', field: 'saddr' | 'daddr'): NftJson => ({ payload: { protocol, field } });
const match = (op: '==' | '!=', left: NftJson, right: NftJson): NftJson => ({ match: { op, left, right } });
/** A prefix as nft prints it: a full-length one is a plain address. */
export const nftPrefix = (cidr: string): NftJson => {
  const c = parseCIDR(cidr)!;
  const full = c.ip.family === 4 ? 32 : 128;
  return c.prefix === full ? formatIP(c.ip) : { prefix: { addr: formatIP(c.ip), len: c.prefix } };
};

const masqTable = (ns: NsRef): NftTable => ({ ns, family: 'inet', name: MASQ_TABLE, comment: TABLE_COMMENT });
const masqChecks = (ns: NsRef): NftChain => ({
  ns,
  family: 'inet',
  table: MASQ_TABLE,
  name: MASQ_CHAIN,
  comment: CHAIN_COMMENT,
  rules: [],
  shared: true,
});
/** The base chain every ADD rewrites (flush + the same three rules): felt owns its content, not the chain. */
const masqPostrouting = (ns: NsRef): NftChain => ({
  ns,
  family: 'inet',
  table: MASQ_TABLE,
  name: 'postrouting',
  base: { type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' },
  rules: [
    { expr: [match('==', payload('ip', 'daddr'), nftPrefix('224.0.0.0/4')), { return: null }] },
    { expr: [match('==', payload('ip6', 'daddr'), nftPrefix('ff00::/8')), { return: null }] },
    { expr: [{ goto: { target: MASQ_CHAIN } }] },
  ],
});

function masqNftables(m: Masquerade): Pick<Netfilter, 'nftTables' | 'nftChains' | 'nftRules'> {
  const comment = masqComment(m.network, m.ifname, m.containerId);
  const rules: NftRule[] = [];
  for (const a of m.addresses) {
    const c = parseCIDR(a);
    if (!c) continue;
    const p = c.ip.family === 4 ? 'ip' : 'ip6';
    const rule: NftRule = {
      ns: m.ns,
      family: 'inet',
      table: MASQ_TABLE,
      chain: MASQ_CHAIN,
      comment,
      expr: [
        match('==', payload(p, 'saddr'), formatIP(c.ip)),
        match('!=', payload(p, 'daddr'), nftPrefix(formatCIDR(networkOf(c)))),
        { masquerade: null },
      ],
    };
    rules.push(rule);
  }
  if (rules.length === 0) return { nftTables: [], nftChains: [], nftRules: [] };
  return { nftTables: [masqTable(m.ns)], nftChains: [masqChecks(m.ns), masqPostrouting(m.ns)], nftRules: rules };
}

const NONE: Netfilter = { chains: [], rules: [], nftTables: [], nftChains: [], nftRules: [] };

/** The masquerade intent's renderers: every backend, compiler-checked. */
const MASQUERADE_RENDERERS = {
  iptables: (m: Masquerade) => masqFor(m.ns, m.network, m.containerId, m.addresses),
  nftables: (m: Masquerade) => ({ ...NONE, ...masqNftables(m) }),
} satisfies Renderers<Masquerade, Partial<Netfilter> & Pick<Netfilter, 'chains' | 'rules'>>;

/** The kernel objects of a masquerade in one backend. */
export const renderMasquerade = (m: Masquerade, backend: NetfilterBackend): Partial<Netfilter> & Pick<Netfilter, 'chains' | 'rules'> =>
  renderWith(MASQUERADE_RENDERERS, backend, m);

/** What one attachment's masquerade owns, in both backends (teardown removes what either left). */
export function masqueradeScope(
  ns: NsRef,
  network: string,
  ifname: string,
  containerId: string,
): Pick<OwnershipScope, 'chains' | 'ruleMarkers' | 'nftRuleMarkers'> {
  return {
    ...masqScope(ns, network, containerId),
    nftRuleMarkers: [{ ns, family: 'inet', table: MASQ_TABLE, chain: MASQ_CHAIN, comment: masqInstanceHash(network, ifname, containerId) }],
  };
}

/**
 * An attachment's scope narrowed to the masquerade of the backend an ADD uses: what the ADD makes, reads and
 * (on failure) removes. DEL and GC keep both backends' (teardown removes what either left).
 */
export function ownBackendOnly(scope: OwnershipScope, backend: NetfilterBackend | undefined): OwnershipScope {
  if (backend === 'iptables') {
    const { nftRuleMarkers: _other, ...rest } = scope;
    return rest;
  }
  if (backend === 'nftables') return { ...scope, chains: [], ruleMarkers: [] };
  return scope;
}

/** What a GC reads: every masquerade rule of the network (comment beginning with its hash), whoever wrote it. */
export const masqNetworkScope = (ns: NsRef, network: string): Pick<OwnershipScope, 'nftRuleMarkers'> => ({
  nftRuleMarkers: [{ ns, family: 'inet', table: MASQ_TABLE, chain: MASQ_CHAIN, comment: `${masqNetworkHash(network)}-` }],
});

/**
 * GC by network hash (the reference's gcIPMasqNFTables, pkg/ip/ipmasq_nftables_linux.go; v1.9.1 has it but no
 * plugin calls it): of the network's masquerade rules observed, those of no valid attachment (their comment
 * does not begin with a valid (ifname, containerID)'s instance hash), each by its exact comment. Works without
 * any record of the attachment: the comment alone says which network it is of.
 */
export function staleMasquerade(
  ns: NsRef,
  network: string,
  valid: readonly { readonly containerId: string; readonly ifname: string }[],
  observed: readonly NftRule[],
): Required<Pick<OwnershipScope, 'nftRuleMarkers'>> {
  const prefix = `${masqNetworkHash(network)}-`;
  const keep = valid.map((v) => masqInstanceHash(network, v.ifname, v.containerId));
  const stale = new Set<string>();
  for (const r of observed) {
    if (r.ns !== ns || r.family !== 'inet' || r.table !== MASQ_TABLE || r.chain !== MASQ_CHAIN || r.comment === undefined) continue;
    if (r.comment.startsWith(prefix) && !keep.some((k) => r.comment!.startsWith(k))) stale.add(r.comment);
  }
  return {
    nftRuleMarkers: [...stale].map((comment) => ({
      ns,
      family: 'inet' as const,
      table: MASQ_TABLE,
      chain: MASQ_CHAIN,
      comment,
      exact: true,
    })),
  };
}
