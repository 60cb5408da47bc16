// Host ports, said once ("DNAT this host port (on this host address) to that pod port, with hairpin and
// localhost masquerade") and rendered as nftables the way the reference v1.9.1 writes them
// (plugins/meta/portmap/portmap_nftables.go): per family a table `ip cni_hostport` / `ip6 cni_hostport`
// (comment "CNI portmap plugin") with the chains hostports, hostip_hostports (kept empty, for upgrades),
// hostports_all (jump to both), the base chains prerouting and output (`fib daddr type local jump
// hostports_all`, dstnat) and, with snat, masquerading (srcnat). Each mapping is one rule in hostports,
// `[ip daddr HOSTIP] PROTO dport P dnat to POD:PORT` with the container id as its comment: the host address is
// matched when the mapping names one (GHSA-jv3w-x3r3-g6rm, fixed in v1.9.0), a mapping of the other family is
// skipped and an unspecified one (0.0.0.0, ::) matches every address. With snat, hairpin (`saddr POD daddr
// POD masquerade`) and, for IPv4, localhost (`saddr 127.0.0.1 daddr POD masquerade`). The iptables rendering
// is core/portmap/desired.ts; HOSTPORT_RENDERERS there picks one by backend.

import { formatIP, type CIDR } from '../ip/ip.ts';
import type { KernelState, NftChain, NftFamily, NftJson, NftRule, NsRef, OwnershipScope } from '../kernel/model.ts';
import type { ContainerAddresses, PortMapConf } from '../portmap/config.ts';

/**
 * The host-port intent of one attachment, as data: DNAT each mapping's host port (on its host address, if any)
 * to the pod's port, per pod address; with `snat`, masquerade hairpin traffic (the pod to its own host port)
 * and, for IPv4, traffic from 127.0.0.1. The mark bit, an external mark chain, masqAll and the extra entry
 * conditions are the iptables rendering's (the reference's options); nftables has no use for them.
 */
export interface HostPorts extends Pick<
  PortMapConf,
  'name' | 'snat' | 'masqAll' | 'markMasqBit' | 'externalSetMarkChain' | 'conditionsV4' | 'conditionsV6' | 'portMappings'
> {
  readonly ns: NsRef;
  readonly containerId: string;
  /** The pod's addresses, one per family. */
  readonly addresses: ContainerAddresses;
}

/** The intent of a portmap config for one container. */
export const hostPortsOf = (pc: PortMapConf, ns: NsRef, containerId: string, addresses: ContainerAddresses): HostPorts => ({
  ns,
  containerId,
  addresses,
  name: pc.name,
  snat: pc.snat,
  masqAll: pc.masqAll,
  markMasqBit: pc.markMasqBit,
  ...(pc.externalSetMarkChain !== undefined ? { externalSetMarkChain: pc.externalSetMarkChain } : {}),
  conditionsV4: pc.conditionsV4,
  conditionsV6: pc.conditionsV6,
  portMappings: pc.portMappings,
});

type HostportsNft = Required<Pick<KernelState, 'nftTables' | 'nftChains' | 'nftRules'>>;

/** The intent in nftables: one table per family the pod has an address of. */
export function renderHostportsNft(h: HostPorts): HostportsNft {
  const parts = [h.addresses.v4, h.addresses.v6].flatMap((a) => (a ? [hostportsNftables(h.ns, h, h.containerId, a)] : []));
  return {
    nftTables: parts.flatMap((p) => p.nftTables),
    nftChains: parts.flatMap((p) => p.nftChains),
    nftRules: parts.flatMap((p) => p.nftRules),
  };
}

const HOSTPORT_TABLE = 'cni_hostport';
const TABLE_COMMENT = 'CNI portmap plugin';
/** The chains whose rules carry a container id (what DEL removes), as the reference's unforwardPorts. */
const HOSTPORT_RULE_CHAINS = ['hostports', 'hostip_hostports', 'masquerading'] as const;

const match = (left: NftJson, right: NftJson): NftJson => ({ match: { op: '==', left, right } });
const payload = (protocol: string, field: string): NftJson => ({ payload: { protocol, field } });
const localDst = (): NftJson[] => [match({ fib: { result: 'type', flags: ['daddr'] } }, 'local'), { jump: { target: 'hostports_all' } }];

const isUnspecified = (ip: string): boolean => ip === '0.0.0.0' || ip === '::';

function hostportsNftables(ns: NsRef, pc: Pick<HostPorts, 'snat' | 'portMappings'>, containerId: string, addr: CIDR): HostportsNft {
  const v6 = addr.ip.family === 6;
  const family: NftFamily = v6 ? 'ip6' : 'ip';
  const ipX = v6 ? 'ip6' : 'ip';
  const pod = formatIP(addr.ip);
  const at = { ns, family, table: HOSTPORT_TABLE };
  const chain = (name: string, extra: Partial<NftChain> = {}): NftChain => ({ ...at, name, rules: [], ...extra });
  const chains: NftChain[] = [
    chain('hostports', { shared: true }),
    chain('hostip_hostports', { shared: true }),
    chain('hostports_all', {
      rules: [{ expr: [{ jump: { target: 'hostip_hostports' } }] }, { expr: [{ jump: { target: 'hostports' } }] }],
    }),
    chain('prerouting', { base: { type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' }, rules: [{ expr: localDst() }] }),
    chain('output', { base: { type: 'nat', hook: 'output', prio: -100, policy: 'accept' }, rules: [{ expr: localDst() }] }),
    ...(pc.snat ? [chain('masquerading', { base: { type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' }, shared: true })] : []),
  ];
  const rules: NftRule[] = [];
  const rule = (chainName: string, expr: NftJson[]): NftRule => ({ ...at, chain: chainName, comment: containerId, expr });
  for (const m of pc.portMappings) {
    const host = m.hostIP ? formatIP(m.hostIP) : undefined;
    if (m.hostIP && (m.hostIP.family === 6) !== v6) continue;
    const dst = host !== undefined && !isUnspecified(host) ? [match(payload(ipX, 'daddr'), host)] : [];
    rules.push(
      rule('hostports', [...dst, match(payload(m.protocol, 'dport'), m.hostPort), { dnat: { addr: pod, port: m.containerPort } }]),
    );
  }
  if (pc.snat) {
    rules.push(rule('masquerading', [match(payload(ipX, 'saddr'), pod), match(payload(ipX, 'daddr'), pod), { masquerade: null }]));
    if (!v6)
      rules.push(
        rule('masquerading', [match(payload(ipX, 'saddr'), '127.0.0.1'), match(payload(ipX, 'daddr'), pod), { masquerade: null }]),
      );
  }
  return { nftTables: [{ ns, family, name: HOSTPORT_TABLE, comment: TABLE_COMMENT }], nftChains: chains, nftRules: rules };
}

/** The container's rules in both families' tables (comment = the container id, exactly). */
export function hostportsNftScope(ns: NsRef, containerId: string): Pick<OwnershipScope, 'nftRuleMarkers'> {
  return {
    nftRuleMarkers: (['ip', 'ip6'] as const).flatMap((family) =>
      HOSTPORT_RULE_CHAINS.map((chain) => ({ ns, family, table: HOSTPORT_TABLE, chain, comment: containerId, exact: true })),
    ),
  };
}
