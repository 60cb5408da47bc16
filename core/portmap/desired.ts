// The desired nat-table state of one portmap attachment, with the reference plugin's chains, rules and
// comments byte for byte (as iptables-save prints them), so that a node can switch between felt and the
// reference without leftovers:
//
//   PREROUTING, OUTPUT:   -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT                  (shared, appended)
//   CNI-HOSTPORT-DNAT:    -p tcp -m comment --comment "dnat name: ..." -m multiport --dports 8080,8081
//                         -j CNI-DN-<hash>                                                   (one per protocol
//                                                                                            and 15 ports)
//   CNI-DN-<hash>:        per mapping: hairpin mark, localhost mark (IPv4), DNAT             (owned whole)
//   CNI-HOSTPORT-SETMARK: -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//   CNI-HOSTPORT-MASQ:    -m mark --mark 0x2000/0x2000 -j MASQUERADE
//   POSTROUTING (head):   -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
//
// CNI-HOSTPORT-DNAT, -SETMARK and -MASQ are shared by every attachment (and by the reference plugin): felt
// creates them when missing and only ever adds or removes its own single rules in them. Only the attachment's
// CNI-DN- chain and its entry rules are removed by DEL, as the reference does.

import { renderWith, type Renderers } from '../netfilter/backend.ts';
import { hostPortsOf, hostportsNftScope, renderHostportsNft, type HostPorts } from '../netfilter/hostports.ts';
import { chainName, MAX_COMMENT, quoteComment } from '../cni/masq.ts';
import { formatCIDR, formatIP, networkOf, parseCIDR, parseIP, type CIDR, type Family } from '../ip/ip.ts';
import { devSysctl } from '../kernel/keys.ts';
import {
  emptyKernelState,
  type IptChain,
  type IptFamily,
  type IptRule,
  type KernelState,
  type NsRef,
  type OwnershipScope,
} from '../kernel/model.ts';
import type { ContainerAddresses, PortMapConf, PortMapping, Protocol } from './config.ts';

const TOP_DNAT = 'CNI-HOSTPORT-DNAT';
const SETMARK = 'CNI-HOSTPORT-SETMARK';
const MARK_MASQ = 'CNI-HOSTPORT-MASQ';
/** Older plugin versions made a per-container SNAT chain under this one; DEL still removes it. */
const OLD_TOP_SNAT = 'CNI-HOSTPORT-SNAT';

export const dnatChain = (network: string, containerId: string): string => chainName(network, containerId, 'CNI-DN-');
const oldSnatChain = (network: string, containerId: string): string => chainName(network, containerId, 'CNI-SN-');

/**
 * The reference's trimComment (a longer comment becomes its first 253 characters and "...", 256 in all), then
 * cut to the 255 bytes the kernel keeps (MAX_COMMENT): what iptables-save reads back, so CHECK and the plan
 * compare like with like. Names and ids are ASCII.
 */
const trimComment = (c: string): string => (c.length <= 255 ? c : `${c.slice(0, 253)}...`).slice(0, MAX_COMMENT);

const dnatComment = (network: string, containerId: string): string => trimComment(`dnat name: "${network}" id: "${containerId}"`);

/** `1 << bit` as Go's `%#x/%#x`. */
const markDef = (bit: number): string => {
  const v = `0x${(2 ** bit).toString(16)}`;
  return `${v}/${v}`;
};

const localDstRule = `-m addrtype --dst-type LOCAL -j ${TOP_DNAT}`;
const masqEntryRule = `-m comment --comment ${quoteComment('CNI portfwd requiring masquerade')} -j ${MARK_MASQ}`;
const setMarkRule = (bit: number): string =>
  `-m comment --comment ${quoteComment('CNI portfwd masquerade mark')} -j MARK --set-xmark ${markDef(bit)}`;
const masqRule = (bit: number): string => `-m mark --mark ${markDef(bit)} -j MASQUERADE`;

/** An address as iptables-save prints a `-s`/`-d` match: the network, with its prefix. */
const addrMatch = (text: string, family: Family): string => {
  const c = text.includes('/')
    ? parseCIDR(text)
    : (() => {
        const ip = parseIP(text);
        return ip ? { ip, prefix: family === 4 ? 32 : 128 } : undefined;
      })();
  return c ? formatCIDR(networkOf(c)) : text;
};

const HEADER: Readonly<Record<string, '-s' | '-d' | '-i' | '-o'>> = {
  '-s': '-s',
  '--source': '-s',
  '--src': '-s',
  '-d': '-d',
  '--destination': '-d',
  '--dst': '-d',
  '-i': '-i',
  '--in-interface': '-i',
  '-o': '-o',
  '--out-interface': '-o',
};

/**
 * Condition tokens split as iptables-save orders a rule: the address and interface matches (`[!] -s/-d/-i/-o
 * X`, addresses written as networks with a prefix) go before `-p`, everything else (`-m ...` matches) after
 * the rule's own matches, as given.
 */
export function splitConditions(tokens: readonly string[], family: Family): { header: string[]; matches: string[] } {
  const found = new Map<string, string[]>();
  const matches: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const neg = tokens[i] === '!' && HEADER[tokens[i + 1] ?? ''] !== undefined;
    const opt = HEADER[tokens[neg ? i + 1 : i]!];
    const val = tokens[neg ? i + 2 : i + 1];
    if (opt && val !== undefined) {
      const v = opt === '-s' || opt === '-d' ? addrMatch(val, family) : val;
      found.set(opt, [...(neg ? ['!'] : []), opt, v]);
      i += neg ? 2 : 1;
    } else matches.push(tokens[i]!);
  }
  const header = (['-s', '-d', '-i', '-o'] as const).flatMap((k) => found.get(k) ?? []);
  return { header, matches };
}

const fmtIPPort = (c: CIDR, port: number): string => (c.ip.family === 6 ? `[${formatIP(c.ip)}]:${port}` : `${formatIP(c.ip)}:${port}`);

const unique = (xs: readonly string[]): string[] => [...new Set(xs)];

/** The rules of the attachment's CNI-DN- chain for one container address (the reference's fillDnatRules). */
function dnatRules(pc: Pick<HostPorts, 'portMappings' | 'snat' | 'masqAll' | 'externalSetMarkChain'>, addr: CIDR): string[] {
  const family = addr.ip.family;
  const mark = pc.externalSetMarkChain ?? SETMARK;
  const rules: string[] = [];
  for (const m of pc.portMappings) {
    // A host IP of the other family: the mapping is for the other address.
    if (m.hostIP && m.hostIP.family !== family) continue;
    const dst = m.hostIP && m.hostIP.value !== 0n ? `-d ${formatIP(m.hostIP)}/${family === 4 ? 32 : 128} ` : '';
    const match = `-p ${m.protocol} -m ${m.protocol} --dport ${m.hostPort}`;
    if (pc.snat) {
      // Hairpin (the pod to its own host port), then localhost (IPv4); masqAll marks every source instead
      // (-s 0.0.0.0/0, which iptables-save leaves out).
      rules.push(pc.masqAll ? `${dst}${match} -j ${mark}` : `-s ${formatCIDR(networkOf(addr))} ${dst}${match} -j ${mark}`);
      if (family === 4 && !pc.masqAll) rules.push(`-s 127.0.0.1/32 ${dst}${match} -j ${mark}`);
    }
    rules.push(`${dst}${match} -j DNAT --to-destination ${fmtIPPort(addr, m.containerPort)}`);
  }
  // The reference appends each rule unless it is there already.
  return unique(rules);
}

/** Host ports per protocol, in mapping order, in runs of at most 15 (multiport's limit). */
const portLists = (ms: readonly PortMapping[]): [Protocol, string][] => {
  const by = new Map<Protocol, number[]>();
  for (const m of ms) by.set(m.protocol, [...(by.get(m.protocol) ?? []), m.hostPort]);
  return [...by.keys()].sort().flatMap((p) => {
    const ports = by.get(p)!;
    const out: [Protocol, string][] = [];
    for (let i = 0; i < ports.length; i += 15) out.push([p, ports.slice(i, i + 15).join(',')]);
    return out;
  });
};

/** The jumps from CNI-HOSTPORT-DNAT into the attachment's chain. */
function entryRules(
  pc: Pick<HostPorts, 'name' | 'conditionsV4' | 'conditionsV6' | 'portMappings'>,
  containerId: string,
  family: Family,
): string[] {
  const chain = dnatChain(pc.name, containerId);
  const comment = `-m comment --comment ${quoteComment(dnatComment(pc.name, containerId))}`;
  const { header, matches } = splitConditions(family === 4 ? pc.conditionsV4 : pc.conditionsV6, family);
  const pre = header.length ? `${header.join(' ')} ` : '';
  const post = matches.length ? ` ${matches.join(' ')}` : '';
  return unique(
    portLists(pc.portMappings).map(([p, ports]) => `${pre}-p ${p} ${comment} -m multiport --dports ${ports}${post} -j ${chain}`),
  );
}

export interface PortmapInput {
  readonly conf: PortMapConf;
  readonly containerId: string;
  readonly addresses: ContainerAddresses;
  /**
   * The host interface that routes to the container's IPv4 address (the reference's getRoutableHostIF):
   * route_localnet is turned on there so that 127.0.0.1 can be DNATed to the container.
   */
  readonly hostIf?: string;
  /** Where the nat table is: the host namespace. */
  readonly ns: NsRef;
}

/** The host-port intent in iptables: the reference's chains and rules, per family the pod has an address of. */
function renderHostportsIptables(h: HostPorts): Pick<KernelState, 'chains' | 'rules'> {
  const { ns, containerId } = h;
  const chains: IptChain[] = [];
  const rules: IptRule[] = [];
  const shared = (family: IptFamily, chain: string): IptChain => ({ ns, family, table: 'nat', chain, rules: [], shared: true });
  const rule = (family: IptFamily, chain: string, r: string, position?: 'head'): IptRule => ({
    ns,
    family,
    table: 'nat',
    chain,
    rule: r,
    ...(position ? { position } : {}),
  });
  for (const addr of [h.addresses.v4, h.addresses.v6]) {
    if (!addr) continue;
    const family = addr.ip.family;
    if (h.snat && !h.externalSetMarkChain) {
      chains.push(shared(family, SETMARK), shared(family, MARK_MASQ));
      rules.push(rule(family, SETMARK, setMarkRule(h.markMasqBit)), rule(family, MARK_MASQ, masqRule(h.markMasqBit)));
      // At the head: otherwise bridge's and ptp's masquerade rules would take these packets first.
      rules.push(rule(family, 'POSTROUTING', masqEntryRule, 'head'));
    }
    chains.push(shared(family, TOP_DNAT));
    rules.push(rule(family, 'PREROUTING', localDstRule), rule(family, 'OUTPUT', localDstRule));
    chains.push({ ns, family, table: 'nat', chain: dnatChain(h.name, containerId), rules: dnatRules(h, addr) });
    for (const r of entryRules(h, containerId, family)) rules.push(rule(family, TOP_DNAT, r));
  }
  return { chains, rules };
}

/** The host-port intent's renderers: every backend, compiler-checked. */
const HOSTPORT_RENDERERS = {
  iptables: renderHostportsIptables,
  nftables: renderHostportsNft,
} satisfies Renderers<HostPorts>;

/**
 * Everything the attachment needs in the nat table (or nftables) and the route_localnet sysctl (for the
 * localhost DNAT, whichever the backend).
 */
export function portmapDesired(i: PortmapInput): KernelState {
  const { conf: pc, ns } = i;
  if (pc.portMappings.length === 0) return emptyKernelState();
  const sysctls: KernelState['sysctls'][number][] =
    i.addresses.v4 && pc.snat && i.hostIf ? [{ ns, key: devSysctl('net.ipv4.conf', i.hostIf, 'route_localnet'), value: '1' }] : [];
  return {
    ...emptyKernelState(),
    ...renderWith(HOSTPORT_RENDERERS, pc.backend ?? 'iptables', hostPortsOf(pc, ns, i.containerId, i.addresses)),
    sysctls,
  };
}

/**
 * What the attachment owns in both families, whether or not it exists: its CNI-DN- chain, its jumps in
 * CNI-HOSTPORT-DNAT, and an old CNI-SN- chain with its jumps. The shared chains and their jumps are never
 * the attachment's: DEL leaves them, as the reference does.
 */
export function portmapScope(ns: NsRef, network: string, containerId: string): OwnershipScope {
  const dn = dnatChain(network, containerId);
  const sn = oldSnatChain(network, containerId);
  const fams: IptFamily[] = [4, 6];
  return {
    // Both backends: DEL removes what either left, as the reference does.
    ...hostportsNftScope(ns, containerId),
    links: [],
    devices: [],
    chains: fams.flatMap((family) => [dn, sn].map((chain) => ({ ns, family, table: 'nat' as const, chain }))),
    ruleMarkers: fams.flatMap((family) => [
      { ns, family, table: 'nat' as const, chain: TOP_DNAT, marker: `-j ${dn}` },
      { ns, family, table: 'nat' as const, chain: OLD_TOP_SNAT, marker: `-j ${sn}` },
    ]),
  };
}

/** UDP host ports whose conntrack entries ADD flushes (stale entries would keep blackholing new traffic). */
export const udpHostPorts = (pc: PortMapConf): number[] =>
  unique(pc.portMappings.filter((m) => m.protocol === 'udp').map((m) => String(m.hostPort))).map(Number);
