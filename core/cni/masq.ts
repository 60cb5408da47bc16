// IP masquerade for a container, with the reference plugins' chain names and comments so that a node can
// switch between felt and the reference plugins without leftovers:
//   nat CNI-<24 hex of sha512(network + containerID)>:  -d <pod net> ACCEPT ; ! -d <multicast> MASQUERADE
//   nat POSTROUTING:                                      -s <pod ip> -j CNI-...
// Rules are written as `iptables-save` prints them, so desired and observed compare as strings.

import { createHash } from 'node:crypto'; // a pure function of its input; no I/O
import { formatCIDR, formatIP, networkOf, parseCIDR } from '../ip/ip.ts';
import type { IptChain, IptFamily, IptRule, NsRef, OwnershipScope } from '../kernel/model.ts';

const MAX_CHAIN = 28;

export const chainName = (network: string, containerId: string, prefix = 'CNI-'): string =>
  (
    prefix +
    createHash('sha512')
      .update(network + containerId)
      .digest('hex')
  ).slice(0, MAX_CHAIN);

/** The longest comment the kernel keeps (xt_comment's 256 bytes with the NUL); iptables-nft stores a longer one cut to this. */
export const MAX_COMMENT = 255;

/**
 * The reference's comment (`name: %q id: %q`), cut to what the kernel keeps: the reference hands iptables the
 * whole text and iptables-nft silently stores its first 255 bytes, so a long network name plus container id
 * would never read back as written (CHECK would always report drift, and a legacy iptables would refuse the
 * rule). Network names and container ids are ASCII (CNI's character set), so characters are bytes.
 */
export const chainComment = (network: string, containerId: string): string =>
  `name: "${network}" id: "${containerId}"`.slice(0, MAX_COMMENT);

/** How iptables-save quotes a comment. */
export const quoteComment = (c: string): string => `"${c.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

export interface MasqState {
  readonly chains: IptChain[];
  readonly rules: IptRule[];
}

/** Desired masquerade objects for a container's addresses (CIDRs with host part, e.g. 10.22.0.5/16). */
export function masqFor(ns: NsRef, network: string, containerId: string, addresses: readonly string[]): MasqState {
  const chain = chainName(network, containerId);
  const comment = `-m comment --comment ${quoteComment(chainComment(network, containerId))}`;
  const chains: IptChain[] = [];
  const rules: IptRule[] = [];
  for (const family of [4, 6] as const) {
    const mine = addresses.map(parseCIDR).filter((c) => c !== undefined && c.ip.family === family);
    if (mine.length === 0) continue;
    const multicast = family === 4 ? '224.0.0.0/4' : 'ff00::/8';
    const body: string[] = [];
    // AppendUnique per address, as the reference: ACCEPT for each pod network, one MASQUERADE.
    for (const c of mine) {
      if (!c) continue;
      const accept = `-d ${formatCIDR(networkOf(c))} ${comment} -j ACCEPT`;
      const masq = `! -d ${multicast} ${comment} -j MASQUERADE`;
      if (!body.includes(accept)) body.push(accept);
      if (!body.includes(masq)) body.push(masq);
      const jump = `-s ${formatIP(c.ip)}/${family === 4 ? 32 : 128} ${comment} -j ${chain}`;
      if (!rules.some((r) => r.family === family && r.rule === jump)) {
        rules.push({ ns, family, table: 'nat', chain: 'POSTROUTING', rule: jump });
      }
    }
    chains.push({ ns, family, table: 'nat', chain, rules: body });
  }
  return { chains, rules };
}

/** Ownership of a container's masquerade objects in both families, whether or not they exist. */
export function masqScope(ns: NsRef, network: string, containerId: string): Pick<OwnershipScope, 'chains' | 'ruleMarkers'> {
  const chain = chainName(network, containerId);
  const fams: IptFamily[] = [4, 6];
  return {
    chains: fams.map((family) => ({ ns, family, table: 'nat' as const, chain })),
    ruleMarkers: fams.map((family) => ({ ns, family, table: 'nat' as const, chain: 'POSTROUTING', marker: `-j ${chain}` })),
  };
}
