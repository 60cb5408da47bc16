// Drift: what differs between the kernel and what felt wants, in words: the plan felt would apply, read as a
// list of what is wrong (CNI CHECK, `felt` drift reports).

import type { KernelState, Link, OwnershipScope } from './model.ts';
import { HOST } from './model.ts';
import { chainKey, devKey, nftChainKey, linkKey, neighKey, qdiscKey, routeKey, sysctlKey, where } from './keys.ts';
import { plan } from './diff.ts';
import { chainName, describeIpRule, describeLink, describeRoute, nftName, nftRuleText, qdiscText } from './words.ts';

const FIELD: Record<string, string> = {
  mtu: 'MTU',
  mac: 'MAC address',
  master: 'master',
  promisc: 'promiscuous mode',
  hairpin: 'hairpin mode',
  allmulti: 'all-multicast mode',
  txqlen: 'transmit queue length',
  alias: 'alias',
};
const show = (k: string, v: unknown): string =>
  k === 'master' || k === 'alias'
    ? v === null || v === undefined || v === ''
      ? 'none'
      : String(v)
    : typeof v === 'boolean' || v === undefined
      ? v
        ? 'on'
        : 'off'
      : String(v);

/**
 * What differs between the kernel and what felt wants, in words (CNI CHECK, `felt` drift reports), e.g.
 * "missing route 0.0.0.0/0 via 10.22.0.1 dev eth0 in /var/run/netns/x", "wrong MTU on eth0: 1400, want 1500
 * (in /var/run/netns/x)", "missing iptables rule in nat/POSTROUTING: -s ...". Empty when nothing drifted.
 */
export function drift(desired: KernelState, observed: KernelState, scope: OwnershipScope): string[] {
  const ops = plan(desired, observed, scope);
  const links = new Map(observed.links.map((l) => [linkKey(l), l]));
  const routes = new Map(observed.routes.map((r) => [routeKey(r), r]));
  const neigh = new Map(observed.neighbours.map((n) => [neighKey(n), n]));
  const sysctls = new Map(observed.sysctls.map((s) => [sysctlKey(s), s.value]));
  const chains = new Map(observed.chains.map((c) => [chainKey(c), c]));
  const qdiscs = new Map(observed.qdiscs.map((q) => [qdiscKey(q), q]));
  const nftChains = new Map((observed.nftChains ?? []).map((c) => [nftChainKey({ ...c, chain: c.name }), c]));
  const added = new Set(ops.flatMap((o) => (o.op === 'link.add' ? [linkKey(o.link)] : [])));
  const deleted = new Set(ops.flatMap((o) => (o.op === 'link.del' ? [devKey(o.ns, o.name)] : [])));
  const moved = new Set(ops.flatMap((o) => (o.op === 'link.move' ? [devKey(o.toNs, o.newName)] : [])));
  const out: string[] = [];
  for (const o of ops) {
    switch (o.op) {
      case 'link.del': {
        const k = devKey(o.ns, o.name);
        const have = links.get(k);
        const d = desired.links.find((l) => linkKey(l) === k);
        if (d && have && have.kind !== d.kind) out.push(`${o.name} in ${where(o.ns)} is a ${have.kind}, want ${d.kind}`);
        else if (d) out.push(`${describeLink(d)} in ${where(o.ns)} has the wrong settings or peer`);
        else out.push(`unexpected ${have ? have.kind : 'link'} ${o.name} in ${where(o.ns)}`);
        break;
      }
      case 'link.add':
        if (!deleted.has(linkKey(o.link))) out.push(`missing ${o.link.kind} ${o.link.name} in ${where(o.link.ns)}`);
        break;
      case 'link.move':
        out.push(
          `missing ${o.newName} in ${where(o.toNs)}${links.has(devKey(o.ns, o.name)) ? ` (it is ${o.name} in ${where(o.ns)})` : ''}`,
        );
        break;
      case 'link.set': {
        const k = linkKey(o.link);
        const have = links.get(k);
        if (moved.has(k)) break; // the move says it
        if (!have || deleted.has(k) || added.has(k)) {
          if (!deleted.has(k)) out.push(`missing ${o.link.kind} ${o.link.name} in ${where(o.link.ns)}`);
          break;
        }
        for (const [f, v] of Object.entries(o.changes)) {
          if (f === 'up') out.push(`${o.link.name} is ${have.up ? 'up' : 'down'}, want ${v ? 'up' : 'down'} (in ${where(o.link.ns)})`);
          else if (f === 'bridge') out.push(`wrong vlan_filtering on ${o.link.name} (in ${where(o.link.ns)})`);
          else
            out.push(
              `wrong ${FIELD[f] ?? f} on ${o.link.name}: ${show(f, have[f as keyof Link])}, want ${show(f, v)} (in ${where(o.link.ns)})`,
            );
        }
        break;
      }
      case 'addr.add':
        out.push(`missing address ${o.addr.cidr} on ${o.addr.dev} in ${where(o.addr.ns)}`);
        break;
      case 'addr.del':
        out.push(`unexpected address ${o.addr.cidr} on ${o.addr.dev} in ${where(o.addr.ns)}`);
        break;
      case 'route.replace': {
        const have = routes.get(routeKey(o.route));
        out.push(
          have
            ? `wrong route ${describeRoute(have)}, want ${describeRoute(o.route)} in ${where(o.route.ns)}`
            : `missing route ${describeRoute(o.route)} in ${where(o.route.ns)}`,
        );
        break;
      }
      case 'route.del':
        out.push(`unexpected route ${describeRoute(o.route)} in ${where(o.route.ns)}`);
        break;
      case 'neigh.replace': {
        const have = neigh.get(neighKey(o.neigh));
        out.push(
          have
            ? `wrong neighbour ${o.neigh.ip} on ${o.neigh.dev}: lladdr ${have.lladdr}, want ${o.neigh.lladdr} (in ${where(o.neigh.ns)})`
            : `missing neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} on ${o.neigh.dev} in ${where(o.neigh.ns)}`,
        );
        break;
      }
      case 'neigh.del':
        out.push(`unexpected neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} on ${o.neigh.dev} in ${where(o.neigh.ns)}`);
        break;
      case 'fdb.replace':
        out.push(`missing fdb entry ${o.fdb.mac} dst ${o.fdb.dst} on ${o.fdb.dev} in ${where(o.fdb.ns)}`);
        break;
      case 'fdb.del':
        out.push(`unexpected fdb entry ${o.fdb.mac} dst ${o.fdb.dst} on ${o.fdb.dev} in ${where(o.fdb.ns)}`);
        break;
      case 'chain.sync': {
        const have = chains.get(chainKey(o.chain));
        out.push(
          have
            ? `iptables chain ${chainName(o.chain)} differs: ${have.rules.length} rules, want ${o.chain.rules.length} (in ${where(o.chain.ns)})`
            : `missing iptables chain ${chainName(o.chain)} in ${where(o.chain.ns)}`,
        );
        break;
      }
      case 'chain.del':
        out.push(`unexpected iptables chain ${chainName(o)} in ${where(o.ns)}`);
        break;
      case 'chain.add':
        out.push(`missing iptables chain ${chainName(o)} in ${where(o.ns)}`);
        break;
      case 'rule.add':
        out.push(`missing iptables rule in ${chainName(o.rule)}${o.rule.ns === HOST ? '' : ` of ${o.rule.ns}`}: ${o.rule.rule}`);
        break;
      case 'rule.del':
        out.push(`unexpected iptables rule in ${chainName(o.rule)}${o.rule.ns === HOST ? '' : ` of ${o.rule.ns}`}: ${o.rule.rule}`);
        break;
      case 'sysctl.set': {
        const have = sysctls.get(sysctlKey(o.sysctl));
        out.push(`sysctl ${o.sysctl.key} is ${have === undefined ? 'unknown' : have}, want ${o.sysctl.value} (in ${where(o.sysctl.ns)})`);
        break;
      }
      case 'qdisc.replace':
        out.push(`${qdiscs.has(qdiscKey(o.qdisc)) ? 'wrong' : 'missing'} qdisc ${qdiscText(o.qdisc)} in ${where(o.qdisc.ns)}`);
        break;
      case 'qdisc.del':
        out.push(`unexpected qdisc ${qdiscText(o.qdisc)} in ${where(o.qdisc.ns)}`);
        break;
      case 'iprule.add':
        out.push(`missing ${describeIpRule(o.ipRule)} in ${where(o.ipRule.ns)}`);
        break;
      case 'iprule.del':
        out.push(`unexpected ${describeIpRule(o.ipRule)} in ${where(o.ipRule.ns)}`);
        break;
      case 'nft.table.add':
        out.push(`missing nftables table ${o.table.family} ${o.table.name} in ${where(o.table.ns)}`);
        break;
      case 'nft.table.del':
        out.push(`unexpected nftables table ${o.family} ${o.name} in ${where(o.ns)}`);
        break;
      case 'nft.set.add':
        out.push(`missing nftables set ${nftName({ ...o.set, chain: o.set.name })} in ${where(o.set.ns)}`);
        break;
      case 'nft.set.elements':
        if (o.add.length)
          out.push(`nftables set ${nftName({ ...o.set, chain: o.set.name })} lacks ${o.add.join(', ')} (in ${where(o.set.ns)})`);
        if (o.del.length)
          out.push(`nftables set ${nftName({ ...o.set, chain: o.set.name })} has unexpected ${o.del.join(', ')} (in ${where(o.set.ns)})`);
        break;
      case 'nft.chain.add':
        out.push(`missing nftables chain ${nftName({ ...o.chain, chain: o.chain.name })} in ${where(o.chain.ns)}`);
        break;
      case 'nft.chain.sync': {
        const have = nftChains.get(nftChainKey({ ...o.chain, chain: o.chain.name }));
        const name = nftName({ ...o.chain, chain: o.chain.name });
        out.push(
          have
            ? `nftables chain ${name} differs: ${have.rules.length} rules, want ${o.chain.rules.length} (in ${where(o.chain.ns)})`
            : `missing nftables chain ${name} in ${where(o.chain.ns)}`,
        );
        break;
      }
      case 'nft.chain.del':
        out.push(`unexpected nftables chain ${nftName(o)} in ${where(o.ns)}`);
        break;
      case 'nft.rule.add':
        out.push(`missing nftables rule in ${nftName(o.rule)}${o.rule.ns === HOST ? '' : ` of ${o.rule.ns}`}: ${nftRuleText(o.rule)}`);
        break;
      case 'nft.rule.del':
        out.push(`unexpected nftables rule in ${nftName(o.rule)}${o.rule.ns === HOST ? '' : ` of ${o.rule.ns}`}: ${nftRuleText(o.rule)}`);
        break;
    }
  }
  return out;
}
