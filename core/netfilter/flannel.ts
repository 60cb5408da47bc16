// feltd's overlay masquerade and forward rules as nftables, in flannel's tables and chains (EnableNFTables,
// flannel v0.25+, pkg/trafficmngr/nftables): a table `ip flannel-ipv4` / `ip6 flannel-ipv6` ("rules for
// <table>"; flannel makes both whatever the families) with
//   postrtg  type nat hook postrouting priority srcnat (100), with --ip-masq, flushed and written whole:
//              meta mark 0x4000 return                          (kube-proxy's mark: no double NAT)
//              saddr POD daddr CLUSTER return ; saddr CLUSTER daddr POD return
//              saddr != POD daddr CLUSTER return
//              saddr CLUSTER daddr != MULTICAST masquerade [fully-random]
//              saddr != CLUSTER daddr CLUSTER masquerade [fully-random]
//   forward  type filter hook forward priority filter (0): saddr CLUSTER accept ; daddr CLUSTER accept
// plus, felt's addition, a set `remote-subnets` (flags interval) holding every remote node's pod subnet of
// that family, one element per lease: what a lease change touches (an element), and what `felt plan` can show.
// The iptables rendering is core/flannel/desired.ts (FLANNEL-POSTRTG, FLANNEL-FWD); OVERLAY_RENDERERS there
// picks one by EnableNFTables.

import type { Family } from '../ip/ip.ts';
import type { KernelState, NftChain, NftFamily, NftJson, NftSet, NftTable, NsRef, OwnershipScope } from '../kernel/model.ts';
import { nftPrefix } from './masquerade.ts';

const FLANNEL_TABLES = { 4: 'flannel-ipv4', 6: 'flannel-ipv6' } as const;
const REMOTE_SET = 'remote-subnets';
const fam = (f: Family): NftFamily => (f === 4 ? 'ip' : 'ip6');

const m = (op: '==' | '!=', left: NftJson, right: NftJson): NftJson => ({ match: { op, left, right } });
const addr = (f: Family, field: 'saddr' | 'daddr'): NftJson => ({ payload: { protocol: fam(f), field } });

/** The overlay's netfilter intent in one family. */
export interface OverlayFamily {
  readonly family: Family;
  /** The cluster network and this node's pod subnet, canonical CIDRs. */
  readonly cluster: string;
  readonly pod: string;
  /** Masquerade what leaves the cluster network (--ip-masq), with --random-fully or not. */
  readonly ipMasq: boolean;
  readonly randomFully: boolean;
  /** Accept forwarded traffic from and to the cluster network. */
  readonly forwardRules: boolean;
}

/**
 * feltd's netfilter intent, as data: per enabled family, masquerade and forward rules for the cluster network;
 * and the remote nodes' pod subnets (which the nftables rendering keeps in a set; iptables has no use for them).
 */
export interface OverlayRules {
  readonly ns: NsRef;
  readonly families: readonly OverlayFamily[];
  readonly remotes: readonly { readonly subnet?: string | undefined; readonly ipv6Subnet?: string | undefined }[];
}

/** The intent in nftables: both tables (whatever the families), per family its chains and its remote-subnets set. */
export function renderOverlayNft(o: OverlayRules): Required<Pick<KernelState, 'nftTables' | 'nftChains' | 'nftSets'>> {
  const parts = o.families.map((f) =>
    flannelNftables(o.ns, {
      ...f,
      remotes: o.remotes.flatMap((r) => {
        const s = f.family === 4 ? r.subnet : r.ipv6Subnet;
        return s ? [s] : [];
      }),
    }),
  );
  return { nftTables: flannelNftTables(o.ns), nftChains: parts.flatMap((p) => p.nftChains), nftSets: parts.flatMap((p) => p.nftSets) };
}

/** One family's chains and set; `remotes` are the remote pod subnets of that family. */
export function flannelNftables(
  ns: NsRef,
  x: OverlayFamily & { readonly remotes: readonly string[] },
): Required<Pick<KernelState, 'nftChains' | 'nftSets'>> {
  const at = { ns, family: fam(x.family), table: FLANNEL_TABLES[x.family] };
  const masq: NftJson = x.randomFully ? { masquerade: { flags: 'fully-random' } } : { masquerade: null };
  const multicast = x.family === 4 ? '224.0.0.0/4' : 'ff00::/8';
  const chains: NftChain[] = [];
  if (x.ipMasq) {
    chains.push({
      ...at,
      name: 'postrtg',
      base: { type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' },
      rules: [
        { expr: [m('==', { meta: { key: 'mark' } }, 0x4000), { return: null }] },
        {
          expr: [
            m('==', addr(x.family, 'saddr'), nftPrefix(x.pod)),
            m('==', addr(x.family, 'daddr'), nftPrefix(x.cluster)),
            { return: null },
          ],
        },
        {
          expr: [
            m('==', addr(x.family, 'saddr'), nftPrefix(x.cluster)),
            m('==', addr(x.family, 'daddr'), nftPrefix(x.pod)),
            { return: null },
          ],
        },
        {
          expr: [
            m('!=', addr(x.family, 'saddr'), nftPrefix(x.pod)),
            m('==', addr(x.family, 'daddr'), nftPrefix(x.cluster)),
            { return: null },
          ],
        },
        { expr: [m('==', addr(x.family, 'saddr'), nftPrefix(x.cluster)), m('!=', addr(x.family, 'daddr'), nftPrefix(multicast)), masq] },
        { expr: [m('!=', addr(x.family, 'saddr'), nftPrefix(x.cluster)), m('==', addr(x.family, 'daddr'), nftPrefix(x.cluster)), masq] },
      ],
    });
  }
  if (x.forwardRules) {
    chains.push({
      ...at,
      name: 'forward',
      base: { type: 'filter', hook: 'forward', prio: 0, policy: 'accept' },
      rules: [
        { expr: [m('==', addr(x.family, 'saddr'), nftPrefix(x.cluster)), { accept: null }] },
        { expr: [m('==', addr(x.family, 'daddr'), nftPrefix(x.cluster)), { accept: null }] },
      ],
    });
  }
  const set: NftSet = {
    ...at,
    name: REMOTE_SET,
    type: x.family === 4 ? 'ipv4_addr' : 'ipv6_addr',
    flags: ['interval'],
    elements: [...x.remotes].sort(),
  };
  return { nftChains: chains, nftSets: [set] };
}

/** Both tables, whatever the families (as flannel's Init makes them). */
export const flannelNftTables = (ns: NsRef): NftTable[] =>
  ([4, 6] as const).map((f) => ({ ns, family: fam(f), name: FLANNEL_TABLES[f], comment: `rules for ${FLANNEL_TABLES[f]}` }));

/** flannel's tables are feltd's whole: in iptables mode they go (switching modes needs no reboot). */
export const flannelNftScope = (ns: NsRef): Pick<OwnershipScope, 'nftTables'> => ({
  nftTables: ([4, 6] as const).map((f) => ({ ns, family: fam(f), name: FLANNEL_TABLES[f] })),
});
