// The difference between the desired and the observed kernel state in words, one finding per object, for
// `felt plan`: "route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink is missing (in the host namespace)".
// It is the plan felt would apply (core/kernel/plan.ts), read as a list of what is wrong, so `felt plan` and
// a resync can never disagree: no findings exactly when plan(desired, observed) is empty. Pure.

import { describeRoute, plan } from '../kernel/plan.ts';
import {
  chainKey,
  devKey,
  linkKey,
  neighKey,
  nftBodyKey,
  nftChainKey,
  qdiscKey,
  routeKey,
  sysctlDevice,
  sysctlKey,
  where,
} from '../kernel/keys.ts';
import { nftName, nftRuleText } from '../kernel/words.ts';
import type { KernelState, Link, NsRef, Op, OwnershipScope } from '../kernel/model.ts';

type ObjectKind = 'link' | 'address' | 'route' | 'neighbour' | 'fdb' | 'chain' | 'rule' | 'sysctl' | 'qdisc' | 'iprule' | 'nftables';
type Problem = 'missing' | 'unexpected' | 'differs';

export interface Finding {
  readonly kind: ObjectKind;
  /** The object as `ip`/`iptables` would name it: "route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink". */
  readonly object: string;
  readonly problem: Problem;
  /** For `differs`: what the kernel has instead, e.g. "mtu 1400, want 1450". */
  readonly detail?: string;
  /** The namespace: '' (the host namespace of the check) or a netns path. */
  readonly ns: NsRef;
  /** The whole sentence. */
  readonly text: string;
}

const KIND_ORDER: readonly ObjectKind[] = [
  'link',
  'address',
  'route',
  'neighbour',
  'fdb',
  'chain',
  'rule',
  'nftables',
  'sysctl',
  'qdisc',
  'iprule',
];

const fam = (f: number): string => (f === 6 ? ' (IPv6)' : '');

const sentence = (object: string, problem: Problem, ns: NsRef, detail?: string): string =>
  `${object} ${problem === 'missing' ? 'is missing' : problem === 'unexpected' ? 'is there but not wanted' : `differs: ${detail ?? ''}`} (in ${where(ns)})`;

const finding = (kind: ObjectKind, object: string, problem: Problem, ns: NsRef, detail?: string): Finding => ({
  kind,
  object,
  problem,
  ...(detail !== undefined ? { detail } : {}),
  ns,
  text: sentence(object, problem, ns, detail),
});

const linkWords = (l: Pick<Link, 'kind' | 'name'>): string => `${l.kind} ${l.name}`;

const onOff = (v: unknown): string => (v === true ? 'on' : v === false || v === undefined ? 'off' : String(v));

function linkDetail(changes: Partial<Link>, have: Link): string {
  return Object.entries(changes)
    .map(([k, v]) => {
      if (k === 'up') return `${have.up ? 'up' : 'down'}, want ${v ? 'up' : 'down'}`;
      if (k === 'master') return `master ${have.master ?? 'none'}, want ${v ?? 'none'}`;
      if (k === 'bridge')
        return `vlan_filtering ${have.bridge?.vlanFiltering ? 'on' : 'off'}, want ${(v as Link['bridge'])?.vlanFiltering ? 'on' : 'off'}`;
      const h = have[k as keyof Link];
      return typeof v === 'boolean'
        ? `${k} ${onOff(h)}, want ${onOff(v)}`
        : `${k} ${h === undefined ? 'unset' : String(h)}, want ${String(v)}`;
    })
    .join('; ');
}

/** What is wrong, one finding per object, ordered by kind then by text. Empty exactly when plan() is. */
export function findings(desired: KernelState, observed: KernelState, scope: OwnershipScope): Finding[] {
  return describe(plan(desired, observed, scope), desired, observed);
}

/** The ops of a plan read as findings against what was observed. */
export function describe(ops: readonly Op[], desired: KernelState, observed: KernelState): Finding[] {
  const links = new Map(observed.links.map((l) => [linkKey(l), l]));
  const routes = new Map(observed.routes.map((r) => [routeKey(r), r]));
  const neigh = new Map(observed.neighbours.map((n) => [neighKey(n), n]));
  const sysctls = new Map(observed.sysctls.map((s) => [sysctlKey(s), s.value]));
  const chains = new Map(observed.chains.map((c) => [chainKey(c), c]));
  const qdiscs = new Set(observed.qdiscs.map(qdiscKey));
  const nftChains = new Map((observed.nftChains ?? []).map((c) => [nftChainKey({ ...c, chain: c.name }), c]));
  const deleted = new Set(ops.flatMap((o) => (o.op === 'link.del' ? [devKey(o.ns, o.name)] : [])));
  const out: Finding[] = [];
  const seen = new Set<string>();
  const push = (f: Finding): void => {
    if (seen.has(f.text)) return;
    seen.add(f.text);
    out.push(f);
  };
  for (const o of ops) {
    switch (o.op) {
      case 'link.add':
        // A link deleted and added again (wrong kind or peer) is one finding, the del's.
        if (!deleted.has(linkKey(o.link))) push(finding('link', linkWords(o.link), 'missing', o.link.ns));
        break;
      case 'link.del': {
        const have = links.get(devKey(o.ns, o.name));
        const want = desired.links.find((l) => l.ns === o.ns && l.name === o.name);
        if (want && have) {
          push(
            finding(
              'link',
              linkWords(want),
              'differs',
              o.ns,
              have.kind !== want.kind ? `it is a ${have.kind}` : 'wrong peer or create-time settings (it would be made again)',
            ),
          );
        } else push(finding('link', have ? linkWords(have) : `link ${o.name}`, 'unexpected', o.ns));
        break;
      }
      case 'link.move':
        push(finding('link', `link ${o.newName}`, 'missing', o.toNs, undefined));
        break;
      case 'link.set': {
        const have = links.get(linkKey(o.link));
        if (deleted.has(linkKey(o.link))) break;
        // The far end of a veth pair made from its other end: missing too.
        if (!have) {
          push(finding('link', linkWords(o.link), 'missing', o.link.ns));
          break;
        }
        push(finding('link', linkWords(o.link), 'differs', o.link.ns, linkDetail(o.changes, have)));
        break;
      }
      case 'addr.add':
        push(finding('address', `address ${o.addr.cidr} on ${o.addr.dev}`, 'missing', o.addr.ns));
        break;
      case 'addr.del':
        push(finding('address', `address ${o.addr.cidr} on ${o.addr.dev}`, 'unexpected', o.addr.ns));
        break;
      case 'route.replace': {
        const have = routes.get(routeKey(o.route));
        push(
          have
            ? finding('route', `route ${describeRoute(o.route)}`, 'differs', o.route.ns, `the kernel has ${describeRoute(have)}`)
            : finding('route', `route ${describeRoute(o.route)}`, 'missing', o.route.ns),
        );
        break;
      }
      case 'route.del':
        push(finding('route', `route ${describeRoute(o.route)}`, 'unexpected', o.route.ns));
        break;
      case 'neigh.replace': {
        const have = neigh.get(neighKey(o.neigh));
        const obj = `neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} on ${o.neigh.dev}`;
        push(
          have
            ? finding('neighbour', obj, 'differs', o.neigh.ns, `the kernel has lladdr ${have.lladdr}`)
            : finding('neighbour', obj, 'missing', o.neigh.ns),
        );
        break;
      }
      case 'neigh.del':
        push(finding('neighbour', `neighbour ${o.neigh.ip} lladdr ${o.neigh.lladdr} on ${o.neigh.dev}`, 'unexpected', o.neigh.ns));
        break;
      case 'fdb.replace':
        push(finding('fdb', `fdb entry ${o.fdb.mac} dst ${o.fdb.dst} on ${o.fdb.dev}`, 'missing', o.fdb.ns));
        break;
      case 'fdb.del':
        push(finding('fdb', `fdb entry ${o.fdb.mac} dst ${o.fdb.dst} on ${o.fdb.dev}`, 'unexpected', o.fdb.ns));
        break;
      case 'chain.sync': {
        const have = chains.get(chainKey(o.chain));
        const obj = `iptables chain ${o.chain.table}/${o.chain.chain}${fam(o.chain.family)}`;
        if (!have) push(finding('chain', obj, 'missing', o.chain.ns));
        else {
          const lost = o.chain.rules.filter((r) => !have.rules.includes(r));
          const extra = have.rules.filter((r) => !o.chain.rules.includes(r));
          const detail =
            [...lost.map((r) => `missing rule ${r}`), ...extra.map((r) => `unexpected rule ${r}`)].join('; ') ||
            'its rules are out of order';
          push(finding('chain', obj, 'differs', o.chain.ns, detail));
        }
        break;
      }
      case 'chain.add':
        push(finding('chain', `iptables chain ${o.table}/${o.chain}${fam(o.family)}`, 'missing', o.ns));
        break;
      case 'chain.del':
        push(finding('chain', `iptables chain ${o.table}/${o.chain}${fam(o.family)}`, 'unexpected', o.ns));
        break;
      case 'rule.add':
        push(finding('rule', `iptables rule ${o.rule.table}/${o.rule.chain}${fam(o.rule.family)} ${o.rule.rule}`, 'missing', o.rule.ns));
        break;
      case 'rule.del':
        push(finding('rule', `iptables rule ${o.rule.table}/${o.rule.chain}${fam(o.rule.family)} ${o.rule.rule}`, 'unexpected', o.rule.ns));
        break;
      case 'sysctl.set': {
        const have = sysctls.get(sysctlKey(o.sysctl));
        // A setting of a device that is missing says nothing more than the missing device.
        const dev = sysctlDevice(o.sysctl.key);
        const missingLink =
          dev !== undefined && !links.has(devKey(o.sysctl.ns, dev)) && desired.links.some((l) => l.ns === o.sysctl.ns && l.name === dev);
        if (have === undefined && missingLink) break;
        push(finding('sysctl', `sysctl ${o.sysctl.key}=${o.sysctl.value}`, 'differs', o.sysctl.ns, `it is ${have ?? 'unreadable'}`));
        break;
      }
      case 'qdisc.replace': {
        const obj = `qdisc ${o.qdisc.kind} on ${o.qdisc.dev}`;
        push(
          finding(
            'qdisc',
            obj,
            qdiscs.has(qdiscKey(o.qdisc)) ? 'differs' : 'missing',
            o.qdisc.ns,
            qdiscs.has(qdiscKey(o.qdisc)) ? 'other parameters' : undefined,
          ),
        );
        break;
      }
      case 'qdisc.del':
        push(finding('qdisc', `qdisc ${o.qdisc.kind} on ${o.qdisc.dev}`, 'unexpected', o.qdisc.ns));
        break;
      case 'iprule.add':
        push(finding('iprule', `policy rule from ${o.ipRule.src} table ${o.ipRule.table}${fam(o.ipRule.family)}`, 'missing', o.ipRule.ns));
        break;
      case 'iprule.del':
        push(
          finding('iprule', `policy rule from ${o.ipRule.src} table ${o.ipRule.table}${fam(o.ipRule.family)}`, 'unexpected', o.ipRule.ns),
        );
        break;
      case 'nft.table.add':
        push(finding('nftables', `nftables table ${o.table.family} ${o.table.name}`, 'missing', o.table.ns));
        break;
      case 'nft.table.del':
        push(finding('nftables', `nftables table ${o.family} ${o.name}`, 'unexpected', o.ns));
        break;
      case 'nft.set.add':
        push(finding('nftables', `nftables set ${nftName({ ...o.set, chain: o.set.name })}`, 'missing', o.set.ns));
        break;
      case 'nft.set.elements': {
        const detail = [...o.add.map((e) => `missing element ${e}`), ...o.del.map((e) => `unexpected element ${e}`)].join('; ');
        push(finding('nftables', `nftables set ${nftName({ ...o.set, chain: o.set.name })}`, 'differs', o.set.ns, detail));
        break;
      }
      case 'nft.chain.add':
        push(finding('nftables', `nftables chain ${nftName({ ...o.chain, chain: o.chain.name })}`, 'missing', o.chain.ns));
        break;
      case 'nft.chain.sync': {
        const have = nftChains.get(nftChainKey({ ...o.chain, chain: o.chain.name }));
        const obj = `nftables chain ${nftName({ ...o.chain, chain: o.chain.name })}`;
        if (!have) push(finding('nftables', obj, 'missing', o.chain.ns));
        else {
          const want = new Set(o.chain.rules.map(nftBodyKey));
          const got = new Set(have.rules.map(nftBodyKey));
          const lost = o.chain.rules.filter((r) => !got.has(nftBodyKey(r))).length;
          const extra = have.rules.filter((r) => !want.has(nftBodyKey(r))).length;
          const detail =
            lost || extra ? `${lost} missing rule(s), ${extra} unexpected rule(s)` : 'its rules are out of order, or its hook differs';
          push(finding('nftables', obj, 'differs', o.chain.ns, detail));
        }
        break;
      }
      case 'nft.chain.del':
        push(finding('nftables', `nftables chain ${nftName(o)}`, 'unexpected', o.ns));
        break;
      case 'nft.rule.add':
        push(finding('nftables', `nftables rule ${nftName(o.rule)} ${nftRuleText(o.rule)}`, 'missing', o.rule.ns));
        break;
      case 'nft.rule.del':
        push(finding('nftables', `nftables rule ${nftName(o.rule)} ${nftRuleText(o.rule)}`, 'unexpected', o.rule.ns));
        break;
      default: {
        const never: never = o;
        return never;
      }
    }
  }
  return out
    .map((f, i) => ({ f, i }))
    .sort((a, b) => KIND_ORDER.indexOf(a.f.kind) - KIND_ORDER.indexOf(b.f.kind) || a.i - b.i)
    .map((x) => x.f);
}
