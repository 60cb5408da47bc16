// Ops and kernel objects in words: what `failed to ...` errors, `felt plan` and drift reports say.

import type { IpRule, Link, NftRuleBody, Op, Qdisc, Route } from './model.ts';
import { routeTable, where } from './keys.ts';

export function describeRoute(r: Route): string {
  return [
    r.dst,
    r.gw ? `via ${r.gw}` : '',
    r.dev ? `dev ${r.dev}` : '',
    r.onlink ? 'onlink' : '',
    r.scope ? `scope ${r.scope}` : '',
    routeTable(r) !== 254 ? `table ${routeTable(r)}` : '',
    r.metric !== undefined ? `metric ${r.metric}` : '',
    r.mtu !== undefined ? `mtu ${r.mtu}` : '',
    r.src ? `src ${r.src}` : '',
  ]
    .filter(Boolean)
    .join(' ');
}

export const describeLink = (l: Link): string => {
  const extra: string[] = [];
  if (l.veth) extra.push(`peer ${l.veth.peer}${l.veth.peerNs !== l.ns ? ` in ${where(l.veth.peerNs)}` : ''}`);
  if (l.vxlan) extra.push(`vni ${l.vxlan.vni}${l.vxlan.local ? ` local ${l.vxlan.local}` : ''} port ${l.vxlan.port}`);
  if (l.macvlan) extra.push(`on ${l.macvlan.master} mode ${l.macvlan.mode}`);
  if (l.ipvlan) extra.push(`on ${l.ipvlan.master} mode ${l.ipvlan.mode}`);
  if (l.vlan) extra.push(`on ${l.vlan.master} id ${l.vlan.id}`);
  if (l.vrf) extra.push(`table ${l.vrf.table}`);
  if (l.tap)
    extra.push(
      ['tap', l.tap.multiQueue ? 'multi_queue' : '', l.tap.vnetHdr ? 'vnet_hdr' : '', l.tap.pi ? 'pi' : ''].filter(Boolean).join(' '),
    );
  return `${l.kind} ${l.name}${extra.length ? ` (${extra.join(', ')})` : ''}`;
};

const describeChanges = (c: Partial<Link>): string =>
  Object.entries(c)
    .map(([k, v]) =>
      k === 'up'
        ? v
          ? 'up'
          : 'down'
        : k === 'master'
          ? v === null
            ? 'nomaster'
            : `master ${String(v)}`
          : k === 'alias' && v === ''
            ? 'no alias'
            : k === 'bridge'
              ? `vlan_filtering ${(v as { vlanFiltering?: boolean }).vlanFiltering ? 1 : 0}`
              : typeof v === 'boolean'
                ? `${k} ${v ? 'on' : 'off'}`
                : `${k} ${String(v)}`,
    )
    .join(' ');

export const describeIpRule = (r: IpRule): string =>
  `rule from ${r.src} table ${r.table}${r.priority !== undefined ? ` priority ${r.priority}` : ''}${r.family === 6 ? ' (IPv6)' : ''}`;

export const chainName = (c: { table: string; chain: string; family: number }): string =>
  `${c.table}/${c.chain}${c.family === 6 ? ' (IPv6)' : ''}`;
export const qdiscText = (q: Qdisc): string =>
  q.kind === 'tbf'
    ? `tbf rate ${q.rate ?? 0}bit burst ${q.burst ?? 0}${q.latencyMs !== undefined ? ` latency ${q.latencyMs}ms` : ''} on ${q.dev}`
    : `ingress on ${q.dev}${q.redirect !== undefined ? ` redirecting to ${q.redirect}` : ''}`;

/** An nftables chain or table as nft names it: `inet cni_plugins_masquerade masq_checks`. */
export const nftName = (c: { family: string; table: string; chain?: string }): string =>
  `${c.family} ${c.table}${c.chain !== undefined ? ` ${c.chain}` : ''}`;
/** A rule body, short: its comment, or its expressions as JSON. */
export const nftRuleText = (r: NftRuleBody): string =>
  r.comment !== undefined ? `comment ${JSON.stringify(r.comment)}` : JSON.stringify(r.expr);

/** One op in words: what it does, to which object, where (`failed to ${describeOp(op)}: ${why}`). */
export function describeOp(o: Op): string {
  switch (o.op) {
    case 'link.add':
      return `add ${describeLink(o.link)} in ${where(o.link.ns)}`;
    case 'link.set':
      return `set ${describeChanges(o.changes)} on ${o.link.name} in ${where(o.link.ns)}`;
    case 'link.del':
      return `delete link ${o.name} in ${where(o.ns)}`;
    case 'link.move':
      return `move link ${o.name} from ${where(o.ns)} to ${where(o.toNs)} as ${o.newName}`;
    case 'addr.add':
      return `add address ${o.addr.cidr} to ${o.addr.dev} in ${where(o.addr.ns)}`;
    case 'addr.del':
      return `delete address ${o.addr.cidr} from ${o.addr.dev} in ${where(o.addr.ns)}`;
    case 'route.replace':
      return `add route ${describeRoute(o.route)} in ${where(o.route.ns)}`;
    case 'route.del':
      return `delete route ${describeRoute(o.route)} in ${where(o.route.ns)}`;
    case 'neigh.replace':
      return `add neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} dev ${o.neigh.dev} in ${where(o.neigh.ns)}`;
    case 'neigh.del':
      return `delete neighbour ${o.neigh.ip} dev ${o.neigh.dev} in ${where(o.neigh.ns)}`;
    case 'fdb.replace':
      return `add fdb entry ${o.fdb.mac} dst ${o.fdb.dst} dev ${o.fdb.dev} in ${where(o.fdb.ns)}`;
    case 'fdb.del':
      return `delete fdb entry ${o.fdb.mac} dst ${o.fdb.dst} dev ${o.fdb.dev} in ${where(o.fdb.ns)}`;
    case 'chain.sync':
      return `write iptables chain ${chainName(o.chain)} (${o.chain.rules.length} rules) in ${where(o.chain.ns)}`;
    case 'chain.del':
      return `delete iptables chain ${chainName(o)} in ${where(o.ns)}`;
    case 'chain.add':
      return `create iptables chain ${chainName(o)} in ${where(o.ns)}`;
    case 'rule.add':
      return `add iptables rule in ${chainName(o.rule)} in ${where(o.rule.ns)}: ${o.rule.rule}`;
    case 'rule.del':
      return `delete iptables rule in ${chainName(o.rule)} in ${where(o.rule.ns)}: ${o.rule.rule}`;
    case 'sysctl.set':
      return `set sysctl ${o.sysctl.key}=${o.sysctl.value} in ${where(o.sysctl.ns)}`;
    case 'qdisc.replace':
      return `set qdisc ${qdiscText(o.qdisc)} in ${where(o.qdisc.ns)}`;
    case 'qdisc.del':
      return `delete qdisc ${qdiscText(o.qdisc)} in ${where(o.qdisc.ns)}`;
    case 'iprule.add':
      return `add ${describeIpRule(o.ipRule)} in ${where(o.ipRule.ns)}`;
    case 'iprule.del':
      return `delete ${describeIpRule(o.ipRule)} in ${where(o.ipRule.ns)}`;
    case 'nft.table.add':
      return `create nftables table ${o.table.family} ${o.table.name} in ${where(o.table.ns)}`;
    case 'nft.table.del':
      return `delete nftables table ${o.family} ${o.name} in ${where(o.ns)}`;
    case 'nft.set.add':
      return `create nftables set ${nftName({ ...o.set, chain: o.set.name })} (${o.set.elements.length} elements) in ${where(o.set.ns)}`;
    case 'nft.set.elements':
      return `change nftables set ${nftName({ ...o.set, chain: o.set.name })}: add ${o.add.length ? o.add.join(' ') : 'nothing'}, delete ${o.del.length ? o.del.join(' ') : 'nothing'} in ${where(o.set.ns)}`;
    case 'nft.chain.add':
      return `create nftables chain ${nftName({ ...o.chain, chain: o.chain.name })} in ${where(o.chain.ns)}`;
    case 'nft.chain.sync':
      return `write nftables chain ${nftName({ ...o.chain, chain: o.chain.name })} (${o.chain.rules.length} rules) in ${where(o.chain.ns)}`;
    case 'nft.chain.del':
      return `delete nftables chain ${nftName(o)} in ${where(o.ns)}`;
    case 'nft.rule.add':
      return `add nftables rule in ${nftName(o.rule)} in ${where(o.rule.ns)}: ${nftRuleText(o.rule)}`;
    case 'nft.rule.del':
      return `delete nftables rule in ${nftName(o.rule)} in ${where(o.rule.ns)}: ${nftRuleText(o.rule)}`;
  }
}

/** A count of ops by kind, e.g. "3 changes: 1 link.add, 2 route.replace" (or "no changes"). */
export function diffSummary(ops: readonly Op[]): string {
  if (ops.length === 0) return 'no changes';
  const counts = new Map<string, number>();
  for (const o of ops) counts.set(o.op, (counts.get(o.op) ?? 0) + 1);
  return `${ops.length} change${ops.length === 1 ? '' : 's'}: ${[...counts].map(([k, n]) => `${n} ${k}`).join(', ')}`;
}
