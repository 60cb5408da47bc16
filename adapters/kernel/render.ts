// Ops as processes. Per namespace group (consecutive ops in one namespace, as plan orders them), one
// `ip -force -batch -` per run of ip ops, `bridge -force -batch -` for fdb entries, `tc -force -batch -` for
// qdiscs, ONE `iptables-restore --noflush` per family for all of the group's iptables ops, and sysctls
// written with `tee -- PATH...` (one per run of equal values; /proc/sys/net shows the namespace of the
// writer) or, when a step's values differ, one `sysctl -q -p-` reading "path = value" lines, each prefixed
// with `nsenter --net=PATH` outside this process's namespace. No shell: every process
// is an argument vector and every batch goes to stdin. Pure: the same ops give the same invocations.
//
// Untrusted values reach these batches (names from configs and CNI_IFNAME, addresses from IPAM results), so
// `steps` refuses any op holding a string that could add a line or a word to a batch or a component to a
// /proc/sys path (core/kernel/names.ts), whatever the edge checked before.
//
// Why -force everywhere: deletions of things already gone must succeed (felix style) and other failures must
// be reported by line, so every batch runs to the end and stderr ("... Command failed -:N") is mapped back to
// the op that wrote line N.

import type { Fdb, IpRule, IptFamily, IptTable, Link, LinkKind, NsRef, Op, Qdisc, Route } from '../../core/kernel/model.ts';
import { randomInt } from 'node:crypto';
import { LINK_KINDS } from '../../core/kernel/link-kinds.ts';
import { HOST, lowerOf, opNs } from '../../core/kernel/model.ts';
import { routeMetric, routeTable, sysctlPath, where } from '../../core/kernel/keys.ts';
import { isBatchToken, linkNameProblem, runNetnsName } from '../../core/kernel/names.ts';
import { describeOp } from '../../core/kernel/plan.ts';
import { inNetns } from './exec.ts';
import { isNft, nftCommands, nftCommentLine, nftDocument, nftUnsafe, type NftOp } from './nft.ts';

/** `ip6`: `ip -6 -force -batch -`, for IPv6 policy rules (ip's family is a global option, not a batch word). */
type Tool = 'ip' | 'ip6' | 'bridge' | 'tc' | 'sysctl' | 'iptables-restore' | 'ip6tables-restore' | 'nft';

export interface Line {
  readonly text: string;
  /** The op this line belongs to (undefined for table headers and COMMIT). */
  readonly op?: Op;
  /** A line that does the work of several ops (the deletion of a group of links): all of them. */
  readonly ops?: readonly Op[];
}

/** One process (or, for sysctls, one run of sh builtins) in one namespace. */
export interface Step {
  readonly ns: NsRef;
  readonly tool: Tool;
  readonly lines: Line[];
  /** The SELinux context the tool runs under (`runcon CONTEXT`): a tap's `selinuxContext`. Such a step is its own. */
  readonly label?: string;
  /**
   * nft: `nft -f -` text lines that declare commented tables and chains (adapters/kernel/nft.ts), run before
   * the JSON batch of `lines` (one JSON command each).
   */
  readonly pre?: Line[];
  /** nft: run every rule deletion on its own (after a batch failed on one that was gone), then the rest. */
  readonly each?: boolean;
}

export interface RenderOptions {
  /** PID of a process in the host namespace: how `ip link add ... netns` names the host. */
  readonly pid: number;
  /** Where HOST is when it is not this process's namespace (tests run "host" in a namespace of their own). */
  readonly hostNetns?: string;
}

/** How `ip ... netns X` names a namespace: a PID for the host, a /run/netns name, or a path (iproute2 opens it). */
export function netnsArg(ns: NsRef, o: RenderOptions): string {
  if (ns === HOST) return o.hostNetns ?? String(o.pid);
  const proc = /^\/proc\/(\d+)\/ns\/net$/.exec(ns);
  if (proc) return proc[1]!;
  return namedNetns(ns) ?? ns;
}

// -------------------------------------------------------------------------------------------- ip lines

function linkSetLines(name: string, c: Partial<Link>): string[] {
  const out: string[] = [];
  const attrs: string[] = [];
  if (c.mtu !== undefined) attrs.push('mtu', String(c.mtu));
  if (c.mac !== undefined) attrs.push('address', c.mac);
  if (c.promisc !== undefined) attrs.push('promisc', c.promisc ? 'on' : 'off');
  if (c.allmulti !== undefined) attrs.push('allmulticast', c.allmulti ? 'on' : 'off');
  if (c.txqlen !== undefined) attrs.push('txqueuelen', String(c.txqlen));
  // ip's batch reader takes "" as one empty word: the way to clear an alias.
  if (c.alias !== undefined) attrs.push('alias', c.alias === '' ? '""' : c.alias);
  if (attrs.length) out.push(`link set dev ${name} ${attrs.join(' ')}`);
  if (c.master !== undefined) out.push(c.master ? `link set dev ${name} master ${c.master}` : `link set dev ${name} nomaster`);
  // A new bridge port starts with hairpin off: set it after (re-)enslaving.
  if (c.hairpin !== undefined) out.push(`link set dev ${name} type bridge_slave hairpin ${c.hairpin ? 'on' : 'off'}`);
  if (c.bridge?.vlanFiltering !== undefined) out.push(`link set dev ${name} type bridge vlan_filtering ${c.bridge.vlanFiltering ? 1 : 0}`);
  if (c.up !== undefined) out.push(`link set dev ${name} ${c.up ? 'up' : 'down'}`);
  return out;
}

/**
 * How each kind of link is made, one entry per LinkKind (the compiler checks that every kind has one, and no
 * other): `link add ... type X <words>` with the words given here, `ip tuntap add` (tap), or nothing (kinds
 * felt only ever finds).
 */
type Creator =
  | { readonly via: 'link'; readonly words: (l: Link, o: RenderOptions) => string[] }
  | { readonly via: 'tuntap' }
  | { readonly via: 'never' };

const CREATE = {
  bridge: {
    via: 'link',
    words: (l) => ['type bridge', ...(l.bridge?.vlanFiltering !== undefined ? [`vlan_filtering ${l.bridge.vlanFiltering ? 1 : 0}`] : [])],
  },
  veth: {
    via: 'link',
    words: (l, o) => {
      if (!l.veth) throw new Error(`veth ${l.name} has no peer`);
      return [
        `type veth peer name ${l.veth.peer}`,
        ...(l.veth.peerMac ? [`address ${l.veth.peerMac}`] : []),
        ...(l.veth.peerNs !== l.ns ? [`netns ${netnsArg(l.veth.peerNs, o)}`] : []),
      ];
    },
  },
  vxlan: {
    via: 'link',
    words: (l) => {
      const v = l.vxlan;
      if (!v) throw new Error(`vxlan ${l.name} has no vxlan settings`);
      return [
        `type vxlan id ${v.vni}`,
        ...(v.local ? [`local ${v.local}`] : []),
        ...(v.dev ? [`dev ${v.dev}`] : []),
        `dstport ${v.port}`,
        v.learning ? 'learning' : 'nolearning',
        ...(v.gbp ? ['gbp'] : []),
      ];
    },
  },
  macvlan: { via: 'link', words: (l) => [`type macvlan mode ${l.macvlan!.mode}`] },
  ipvlan: { via: 'link', words: (l) => [`type ipvlan mode ${l.ipvlan!.mode}`] },
  vlan: { via: 'link', words: (l) => [`type vlan id ${l.vlan!.id}`] },
  // As the reference bandwidth plugin makes them (netlink sends IFLA_TXQLEN 0): the tbf on top has its own limit.
  ifb: { via: 'link', words: () => ['txqlen 0 type ifb'] },
  vrf: {
    via: 'link',
    words: (l) => {
      if (!l.vrf) throw new Error(`vrf ${l.name} has no table`);
      return [`type vrf table ${l.vrf.table}`];
    },
  },
  dummy: { via: 'link', words: () => ['type dummy'] },
  tap: { via: 'tuntap' },
  loopback: { via: 'never' },
  device: { via: 'never' },
} satisfies Record<LinkKind, Creator>;

/** `link add` and the `link set` lines that give the new link every desired attribute. Throws on a link felt cannot make. */
export function linkAddLines(l: Link, o: RenderOptions): string[] {
  const how: Creator = CREATE[l.kind];
  if (how.via === 'never') throw new Error(`cannot create a link of kind ${l.kind}`);
  if (how.via === 'tuntap') return tapAddLines(l);
  // Always `name X` / `dev X`: a bare "a" or "d" would be read as a keyword (address, dev).
  const head = [`link add`];
  if (LINK_KINDS[l.kind].lower) {
    const lower = lowerOf(l);
    if (!lower || !(l as Partial<Record<LinkKind, unknown>>)[l.kind]) throw new Error(`${l.kind} ${l.name} has no lower device`);
    head.push(`link ${lower.master}`);
  }
  head.push(`name ${l.name}`);
  if (l.mac) head.push(`address ${l.mac}`);
  if (l.mtu) head.push(`mtu ${l.mtu}`);
  // Made from the master's namespace into its own: only the create-time settings here (plan sets the rest there).
  const masterNs = lowerOf(l)?.masterNs;
  const across = masterNs !== undefined && masterNs !== l.ns;
  if (across) head.push(`netns ${netnsArg(l.ns, o)}`);
  head.push(...how.words(l, o));
  if (across) return [head.join(' ')];
  const rest = linkSetLines(l.name, {
    ...(l.promisc ? { promisc: true } : {}),
    ...(l.allmulti ? { allmulti: true } : {}),
    ...(l.txqlen !== undefined ? { txqlen: l.txqlen } : {}),
    ...(l.alias ? { alias: l.alias } : {}),
    ...(l.master ? { master: l.master } : {}),
    ...(l.master && l.hairpin ? { hairpin: true } : {}),
    ...(l.up ? { up: true } : {}),
  });
  return [head.join(' '), ...rest];
}

/**
 * A tap: the tun driver makes it from an ioctl, not rtnetlink (`ip tuntap add`, in its own namespace), with its
 * flags, owner and group; then the attributes as for any new link.
 */
function tapAddLines(l: Link): string[] {
  const t = l.tap;
  if (!t) throw new Error(`tap ${l.name} has no tap settings`);
  const head = [`tuntap add dev ${l.name} mode tap`];
  if (t.pi) head.push('pi');
  if (t.vnetHdr) head.push('vnet_hdr');
  if (t.multiQueue) head.push('multi_queue');
  if (t.owner !== undefined) head.push(`user ${t.owner}`);
  if (t.group !== undefined) head.push(`group ${t.group}`);
  const rest = linkSetLines(l.name, {
    ...(l.mtu ? { mtu: l.mtu } : {}),
    ...(l.mac ? { mac: l.mac } : {}),
    ...(l.promisc ? { promisc: true } : {}),
    ...(l.allmulti ? { allmulti: true } : {}),
    ...(l.txqlen !== undefined ? { txqlen: l.txqlen } : {}),
    ...(l.alias ? { alias: l.alias } : {}),
    ...(l.master ? { master: l.master } : {}),
    ...(l.master && l.hairpin ? { hairpin: true } : {}),
    ...(l.up ? { up: true } : {}),
  });
  return [head.join(' '), ...rest];
}

const routeArgs = (r: Route): string =>
  [
    r.dst,
    r.gw ? `via ${r.gw}` : '',
    r.dev ? `dev ${r.dev}` : '',
    r.onlink ? 'onlink' : '',
    r.scope ? `scope ${r.scope}` : '',
    r.table !== undefined ? `table ${r.table}` : '',
    r.metric !== undefined ? `metric ${r.metric}` : '',
    r.mtu !== undefined ? `mtu ${r.mtu}` : '',
    r.src ? `src ${r.src}` : '',
  ]
    .filter(Boolean)
    .join(' ');

/** Delete by identity (dst, table, metric) on its device: whatever the gateway is now. */
const routeDelArgs = (r: Route): string =>
  [r.dst, r.dev ? `dev ${r.dev}` : '', `table ${routeTable(r)}`, `metric ${routeMetric(r)}`].filter(Boolean).join(' ');

const fdbLine = (verb: 'replace' | 'del', f: Fdb): string =>
  verb === 'replace' ? `fdb replace ${f.mac} dev ${f.dev} dst ${f.dst} self permanent` : `fdb del ${f.mac} dev ${f.dev} dst ${f.dst} self`;

/**
 * The one filter an ingress qdisc with a redirect carries: u32 at prio 1 with the handle the kernel gives the
 * first u32 filter (800::800), so that `replace` swaps it in place rather than adding another.
 */
const redirectLine = (dev: string, to: string): string =>
  `filter replace dev ${dev} parent ffff: protocol all prio 1 handle 800::800 u32 match u32 0 0 flowid 1:1 action mirred egress redirect dev ${to}`;

const qdiscLines = (verb: 'replace' | 'del', q: Qdisc): string[] => {
  if (q.kind === 'ingress') {
    // Deleting the ingress qdisc takes its filters.
    const head = `qdisc ${verb} dev ${q.dev} ingress`;
    return verb === 'replace' && q.redirect !== undefined ? [head, redirectLine(q.dev, q.redirect)] : [head];
  }
  if (verb === 'del') return [`qdisc del dev ${q.dev} root`];
  return [`qdisc replace dev ${q.dev} root handle 1: tbf rate ${q.rate ?? 0}bit burst ${q.burst ?? 0} latency ${q.latencyMs ?? 25}ms`];
};

/** `rule add|del from SRC table N [priority P]`; deletion names the observed preference, so exactly that rule goes. */
const ipRuleLine = (verb: 'add' | 'del', r: IpRule): string =>
  `rule ${verb} from ${r.src === '0.0.0.0/0' || r.src === '::/0' ? 'all' : r.src} table ${r.table}${r.priority !== undefined ? ` priority ${r.priority}` : ''}`;

/** The tool and lines for one non-iptables op. */
function render(o: Op, ro: RenderOptions): { tool: Tool; lines: string[]; label?: string } {
  switch (o.op) {
    case 'link.add': {
      const label = o.link.tap?.selinuxContext;
      return { tool: 'ip', lines: linkAddLines(o.link, ro), ...(label ? { label } : {}) };
    }
    case 'link.set':
      return { tool: 'ip', lines: linkSetLines(o.link.name, o.changes) };
    case 'link.del':
      return { tool: 'ip', lines: [`link del dev ${o.name}`] };
    case 'link.move':
      // One netlink request: the kernel renames the link as it moves it (no clash with the old name there).
      return { tool: 'ip', lines: [`link set dev ${o.name} netns ${netnsArg(o.toNs, ro)} name ${o.newName}`] };
    case 'addr.add': {
      const v6 = o.addr.cidr.includes(':');
      // replace: adding an address that is there already is not an error.
      return {
        tool: 'ip',
        lines: [
          `addr replace ${o.addr.cidr}${v6 ? '' : ' brd +'} dev ${o.addr.dev}${v6 && o.addr.nodad ? ' nodad' : ''}${o.addr.noprefixroute ? ' noprefixroute' : ''}`,
        ],
      };
    }
    case 'addr.del':
      return { tool: 'ip', lines: [`addr del ${o.addr.cidr} dev ${o.addr.dev}`] };
    case 'route.replace':
      return { tool: 'ip', lines: [`route replace ${routeArgs(o.route)}`] };
    case 'route.del':
      return { tool: 'ip', lines: [`route del ${routeDelArgs(o.route)}`] };
    case 'neigh.replace':
      return { tool: 'ip', lines: [`neigh replace ${o.neigh.ip} lladdr ${o.neigh.lladdr} dev ${o.neigh.dev} nud permanent`] };
    case 'neigh.del':
      // `neigh del` of a missing entry makes ip exit(2) mid-batch, -force or not; flush of nothing is silent.
      return { tool: 'ip', lines: [`neigh flush to ${o.neigh.ip} dev ${o.neigh.dev} nud permanent`] };
    case 'fdb.replace':
      return { tool: 'bridge', lines: [fdbLine('replace', o.fdb)] };
    case 'fdb.del':
      return { tool: 'bridge', lines: [fdbLine('del', o.fdb)] };
    case 'sysctl.set':
      return { tool: 'sysctl', lines: [`${o.sysctl.key}=${o.sysctl.value}`] };
    case 'qdisc.replace':
      return { tool: 'tc', lines: qdiscLines('replace', o.qdisc) };
    case 'qdisc.del':
      return { tool: 'tc', lines: qdiscLines('del', o.qdisc) };
    case 'iprule.add':
      return { tool: o.ipRule.family === 6 ? 'ip6' : 'ip', lines: [ipRuleLine('add', o.ipRule)] };
    case 'iprule.del':
      return { tool: o.ipRule.family === 6 ? 'ip6' : 'ip', lines: [ipRuleLine('del', o.ipRule)] };
    case 'nft.table.add':
    case 'nft.table.del':
    case 'nft.set.add':
    case 'nft.set.elements':
    case 'nft.chain.add':
    case 'nft.chain.sync':
    case 'nft.chain.del':
    case 'nft.rule.add':
    case 'nft.rule.del':
      throw new Error('nftables ops are rendered per namespace');
    case 'chain.sync':
    case 'chain.del':
    case 'chain.add':
    case 'rule.add':
    case 'rule.del':
      throw new Error('iptables ops are rendered per family');
  }
}

// -------------------------------------------------------------------------------------------- iptables

type IptOp = Extract<Op, { op: 'chain.sync' | 'chain.del' | 'chain.add' | 'rule.add' | 'rule.del' }>;
const isIpt = (o: Op): o is IptOp =>
  o.op === 'chain.sync' || o.op === 'chain.del' || o.op === 'chain.add' || o.op === 'rule.add' || o.op === 'rule.del';
const iptRef = (o: IptOp): { family: IptFamily; table: IptTable; chain: string } =>
  o.op === 'chain.sync' ? o.chain : o.op === 'chain.del' || o.op === 'chain.add' ? o : o.rule;

/**
 * iptables-restore --noflush input for one family: per table, the chains being written or deleted are declared
 * first (`:C - [0:0]` creates a chain or flushes an existing one; declaring a chain to delete makes deleting a
 * missing chain harmless), then the chains to create without flushing (`-N C`; when C exists meanwhile the
 * restore fails on that line and runs again without it), then every op's lines in order, then COMMIT. One
 * transaction per table.
 */
export function restoreLines(ops: readonly IptOp[]): Line[] {
  const tables = new Map<IptTable, { decl: Line[]; adds: Line[]; body: Line[] }>();
  const t = (table: IptTable) => {
    let x = tables.get(table);
    if (!x) tables.set(table, (x = { decl: [], adds: [], body: [] }));
    return x;
  };
  for (const o of ops) {
    const ref = iptRef(o);
    const x = t(ref.table);
    switch (o.op) {
      case 'chain.sync':
        x.decl.push({ text: `:${o.chain.chain} - [0:0]`, op: o });
        for (const r of o.chain.rules) x.body.push({ text: `-A ${o.chain.chain} ${r}`, op: o });
        break;
      case 'chain.del':
        x.decl.push({ text: `:${o.chain} - [0:0]`, op: o });
        x.body.push({ text: `-X ${o.chain}`, op: o });
        break;
      case 'chain.add':
        x.adds.push({ text: `-N ${o.chain}`, op: o });
        break;
      case 'rule.add':
        x.body.push({
          text: o.rule.position === 'head' ? `-I ${o.rule.chain} 1 ${o.rule.rule}` : `-A ${o.rule.chain} ${o.rule.rule}`,
          op: o,
        });
        break;
      case 'rule.del':
        x.body.push({ text: `-D ${o.rule.chain} ${o.rule.rule}`, op: o });
        break;
    }
  }
  return [...tables].flatMap(([table, x]) => [{ text: `*${table}` }, ...x.decl, ...x.adds, ...x.body, { text: 'COMMIT' }]);
}

// ----------------------------------------------------------------------------------------------- steps

// ------------------------------------------------------------------------------------------ checking

/** Keys whose string values are interface names. */
const NAME_KEYS: ReadonlySet<string> = new Set(['name', 'dev', 'master', 'peer', 'redirect', 'newName']);

/**
 * Why `o` cannot be rendered safely, or undefined: an interface name felt refuses, a value that is not one
 * word of a batch line (addresses, MACs, namespaces), a sysctl key that is not a plain /proc/sys/net path,
 * or an iptables rule or value holding a line break.
 */
export function unsafe(o: Op): string | undefined {
  if (o.op === 'sysctl.set') {
    const { key, value } = o.sysctl;
    const segs = key.split('.').map((x) => x.replace(/\//g, '.'));
    if (
      segs.length < 2 ||
      segs[0] !== 'net' ||
      segs.some((x) => x === '' || x === '.' || x === '..' || !isBatchToken(x) || x.includes('/'))
    ) {
      return `sysctl key ${JSON.stringify(key)} is not a /proc/sys/net path`;
    }
    if (/[\x00-\x1f\x7f]/.test(value)) return `sysctl value ${JSON.stringify(value)} holds control characters`;
    return undefined;
  }
  if (isNft(o)) return nftUnsafe(o);
  if (isIpt(o)) {
    const ref = iptRef(o);
    if (!isBatchToken(ref.chain)) return `iptables chain name ${JSON.stringify(ref.chain)} is not one word`;
    const rules = o.op === 'chain.sync' ? o.chain.rules : o.op === 'chain.del' || o.op === 'chain.add' ? [] : [o.rule.rule];
    const bad = rules.find((r) => /[\x00-\x1f\x7f]/.test(r));
    return bad === undefined ? undefined : `iptables rule ${JSON.stringify(bad)} holds a line break or control characters`;
  }
  const walk = (v: unknown, key: string): string | undefined => {
    if (typeof v === 'string') {
      if (v === '' && (key === 'ns' || key === 'peerNs' || key === 'masterNs' || key === 'toNs' || key === 'alias')) return undefined;
      if (NAME_KEYS.has(key)) {
        const p = linkNameProblem(v);
        return p ? `interface name ${JSON.stringify(v)} ${p}` : undefined;
      }
      return isBatchToken(v) ? undefined : `${key} ${JSON.stringify(v)} is not one word of a batch line`;
    }
    if (typeof v === 'object' && v !== null) {
      for (const [k, x] of Object.entries(v)) {
        const p = walk(x, k === 'changes' || k === 'link' || k === 'veth' || k === 'vxlan' || k === 'macvlan' || k === 'bridge' ? '' : k);
        if (p) return p;
      }
    }
    return undefined;
  };
  return walk(o, '');
}

/** Ops in plan order as steps: namespace groups in order; within a group, tools in op order. */
export function steps(ops: readonly Op[], ro: RenderOptions): Step[] {
  const out: Step[] = [];
  let i = 0;
  while (i < ops.length) {
    const ns = opNs(ops[i]!);
    let j = i;
    while (j < ops.length && opNs(ops[j]!) === ns) j++;
    const group = ops.slice(i, j);
    // iptables: one restore per family, where the group's first iptables op is.
    const ipt = new Map<IptFamily, IptOp[]>();
    const placed = new Set<IptFamily>();
    for (const o of group) if (isIpt(o)) ipt.set(iptRef(o).family, [...(ipt.get(iptRef(o).family) ?? []), o]);
    // nftables: one transaction per namespace group, where its first nftables op is.
    const nft = group.filter(isNft);
    let nftPlaced = false;
    for (const o of group) {
      if (isNft(o)) {
        const problem = unsafe(o);
        if (problem) throw new Error(`refusing to ${describeOp(o)}: ${problem}`);
        if (nftPlaced) continue;
        nftPlaced = true;
        out.push(nftStep(ns, nft));
        continue;
      }
      if (isIpt(o)) {
        const problem = unsafe(o);
        if (problem) throw new Error(`refusing to ${describeOp(o)}: ${problem}`);
        const f = iptRef(o).family;
        if (placed.has(f)) continue;
        placed.add(f);
        out.push({ ns, tool: f === 4 ? 'iptables-restore' : 'ip6tables-restore', lines: restoreLines(ipt.get(f)!) });
        continue;
      }
      let r: { tool: Tool; lines: string[]; label?: string };
      const problem = unsafe(o);
      if (problem) throw new Error(`refusing to ${describeOp(o)}: ${problem}`);
      try {
        r = render(o, ro);
      } catch (e) {
        throw new Error(`failed to ${describeOp(o)}: ${(e as Error).message}`);
      }
      const last = out[out.length - 1];
      const lines = r.lines.map((text) => ({ text, op: o }));
      if (last && last.ns === ns && last.tool === r.tool && last.label === undefined && r.label === undefined)
        for (const l of lines) last.lines.push(l);
      else out.push({ ns, tool: r.tool, lines, ...(r.label ? { label: r.label } : {}) });
    }
    i = j;
  }
  return out;
}

/** One nft step: the comment declarations, and every op's JSON commands. */
function nftStep(ns: NsRef, ops: readonly NftOp[]): Step {
  const pre: Line[] = [];
  const lines: Line[] = [];
  for (const o of ops) {
    const c = nftCommentLine(o);
    if (c !== undefined) pre.push({ text: c, op: o });
    for (const cmd of nftCommands(o)) lines.push({ text: JSON.stringify(cmd), op: o });
  }
  return { ns, tool: 'nft', lines, ...(pre.length ? { pre } : {}) };
}

/**
 * nft reads a JSON file by opening it, and /dev/stdin cannot be opened when stdin is a socket (as node gives
 * its children): the JSON document goes as one argv element instead (`nft -j DOC`; nft parses one argument as
 * the whole input, and a value inside a JSON string stays one). One argument holds at most 128 KiB
 * (MAX_ARG_STRLEN): a larger batch is cut into documents of whole commands, each its own transaction.
 */
const NFT_ARG_MAX = 120_000;
function nftChunks(lines: readonly Line[]): Line[][] {
  const out: Line[][] = [];
  let cur: Line[] = [];
  let size = 0;
  for (const l of lines) {
    if (cur.length && size + l.text.length + 1 > NFT_ARG_MAX) {
      out.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(l);
    size += l.text.length + 1;
  }
  if (cur.length) out.push(cur);
  return out;
}
const nftInvocation = (pre: readonly string[], lines: readonly Line[]): Invocation => ({
  kind: 'exec',
  argv: [...pre, 'nft', '-j', nftDocument(lines.map((l) => l.text))],
  input: '',
  lines,
});

const BATCH: Readonly<Record<Exclude<Tool, 'sysctl' | 'nft'>, readonly string[]>> = {
  ip: ['ip', '-force', '-batch', '-'],
  ip6: ['ip', '-6', '-force', '-batch', '-'],
  bridge: ['bridge', '-force', '-batch', '-'],
  tc: ['tc', '-force', '-batch', '-'],
  // -w: on a legacy-iptables host another process may hold the xtables lock (concurrent ADDs, kube-proxy);
  // wait for it rather than fail at once, as the reference plugins do (nf_tables takes no lock and ignores it).
  'iptables-restore': ['iptables-restore', '-w', '30', '--noflush'],
  'ip6tables-restore': ['ip6tables-restore', '-w', '30', '--noflush'],
};

const PROC_SYS = '/proc/sys/';
const SYSCTL_CONF_KEY = /^[A-Za-z0-9_][A-Za-z0-9_./-]*$/;
const SYSCTL_CONF_VALUE = /^[A-Za-z0-9_.:,-]+$/;

/** A sysctl step's lines ("key=value") as key and value; without IPv6 on this kernel, its IPv6 keys are skipped. */
const sysctlSets = (s: Step, ipv6: boolean): { l: Line; key: string; value: string }[] =>
  s.lines
    .map((l) => ({ l, key: l.text.slice(0, l.text.indexOf('=')), value: l.text.slice(l.text.indexOf('=') + 1) }))
    .filter((x) => ipv6 || !x.key.startsWith('net.ipv6.'));

/** A key and value sysctl (from sysctl.conf or its arguments) cannot read as anything but themselves. */
const confSafe = (x: { key: string; value: string }): boolean => SYSCTL_CONF_KEY.test(x.key) && SYSCTL_CONF_VALUE.test(x.value);

/**
 * A pod's device sysctls and its ip batch as one process: `ip -n NAME -force -batch -` whose first line is
 * `netns exec NAME sysctl -q -w KEY=VALUE ...` (ip forks and execs sysctl in the pod: an argument vector, no
 * shell; keys as /proc/sys paths, so a dot in a device name stays a dot), so the sysctls are written before
 * the batch brings the device up. One process to start and two execs instead of three. Undefined when the two
 * cannot go together: another namespace each, a label, a namespace not in /run/netns, a key or value that
 * sysctl or the batch could read as more than itself.
 */
export function withSysctlsFirst(sysctls: Step, next: Step, ipv6 = true): Step | undefined {
  if (sysctls.tool !== 'sysctl' || next.tool !== 'ip' || sysctls.label || next.label) return undefined;
  if (sysctls.ns !== next.ns || next.ns === HOST) return undefined;
  const name = namedNetns(next.ns);
  if (name === undefined) return undefined;
  const sets = sysctlSets(sysctls, ipv6);
  if (!sets.every(confSafe)) return undefined;
  const args = sets.map((x) => `${sysctlPath(x.key).slice(PROC_SYS.length)}=${x.value}`);
  if (!args.every(isBatchToken)) return undefined;
  if (args.length === 0) return next;
  const ops = sets.flatMap((x) => (x.l.op ? [x.l.op] : []));
  return {
    ...next,
    lines: [{ text: `netns exec ${name} sysctl -q -w ${args.join(' ')}`, ...(ops[0] ? { op: ops[0] } : {}), ops }, ...next.lines],
  };
}

/**
 * The process of an unlabeled ip step in `ns`. In a named namespace (/run/netns/NAME, as runtimes make them),
 * `ip -n NAME` enters it itself: one exec instead of nsenter's two.
 */
export function ipBatchArgv(ns: NsRef, ro: RenderOptions): readonly string[] {
  const named = ns !== HOST ? namedNetns(ns) : undefined;
  return named ? ['ip', '-n', named, ...BATCH.ip.slice(1)] : [...inNetns(ns, ro.hostNetns), ...BATCH.ip];
}

/** One process (argv, stdin), or a sysctl written by this process itself (its own namespace). */
export type Invocation =
  | { readonly kind: 'exec'; readonly argv: readonly string[]; readonly input: string; readonly lines: readonly Line[] }
  | { readonly kind: 'write'; readonly path: string; readonly value: string; readonly lines: readonly Line[] };

/**
 * How one step runs. `ipv6`: whether this kernel has IPv6 (/proc/sys/net/ipv6); without it IPv6 sysctls are
 * skipped, as the reference plugins do. `sysctl`: whether procps' `sysctl` is installed (else tee only).
 */
export function invocations(s: Step, ro: RenderOptions, ipv6 = true, sysctl = true): Invocation[] {
  const pre = inNetns(s.ns, ro.hostNetns);
  if (s.tool === 'nft') {
    const out: Invocation[] = [];
    if (s.pre?.length)
      out.push({ kind: 'exec', argv: [...pre, 'nft', '-f', '-'], input: s.pre.map((l) => `${l.text}\n`).join(''), lines: s.pre });
    const dels = s.each ? s.lines.filter((l) => l.op?.op === 'nft.rule.del') : [];
    for (const l of dels) out.push(nftInvocation(pre, [l]));
    const rest = s.lines.filter((l) => !dels.includes(l));
    for (const chunk of nftChunks(rest)) out.push(nftInvocation(pre, chunk));
    return out;
  }
  if (s.tool !== 'sysctl') {
    const lines = s.tool === 'ip' ? deletedTogether(s.lines) : s.lines;
    return [
      {
        kind: 'exec',
        argv: s.tool === 'ip' && !s.label ? ipBatchArgv(s.ns, ro) : [...pre, ...(s.label ? ['runcon', s.label] : []), ...BATCH[s.tool]],
        input: lines.map((l) => `${l.text}\n`).join(''),
        lines,
      },
    ];
  }
  const sets = sysctlSets(s, ipv6);
  if (pre.length === 0) return sets.map((x) => ({ kind: 'write', path: sysctlPath(x.key), value: x.value, lines: [x.l] }));
  // Values that differ: one `sysctl -q -p-` writes them all, in order, from "path = value" lines on stdin
  // (keys as /proc/sys paths, so a dot in a device name stays a dot). Only for keys and values sysctl.conf
  // cannot read as anything else (no '=', glob, comment, leading '-' or space); otherwise tee, run by run.
  if (sysctl && new Set(sets.map((x) => x.value)).size > 1 && sets.every(confSafe)) {
    return [
      {
        kind: 'exec',
        argv: [...pre, 'sysctl', '-q', '-p-'],
        input: sets.map((x) => `${sysctlPath(x.key).slice(PROC_SYS.length)} = ${x.value}\n`).join(''),
        lines: sets.map((x) => x.l),
      },
    ];
  }
  // One `tee` per run of equal values, in order.
  const out: Invocation[] = [];
  for (let i = 0; i < sets.length;) {
    let j = i;
    while (j < sets.length && sets[j]!.value === sets[i]!.value) j++;
    const run = sets.slice(i, j);
    out.push({
      kind: 'exec',
      argv: [...pre, 'tee', '--', ...run.map((x) => sysctlPath(x.key))],
      input: `${sets[i]!.value}\n`,
      lines: run.map((x) => x.l),
    });
    i = j;
  }
  return out;
}

/**
 * NAME of a namespace path /run/netns/NAME or /var/run/netns/NAME (ip's NETNS_RUN_DIR), when it is one and NAME
 * is made of characters no batch or argument reads as more (letters, digits, '_', '.', '-').
 */
const namedNetns = (path: string): string | undefined => {
  const name = runNetnsName(path);
  return name !== undefined && /^[A-Za-z0-9_.-]+$/.test(name) && name !== '.' && name !== '..' ? name : undefined;
};

/**
 * Links deleted one after another go in one deletion: each is put in a device group of its own drawn at random
 * (`link set dev X group G`), then `link del group G` unregisters them all at once. The kernel waits for a grace
 * period per unregistration, so 50 veths deleted one by one take ~0.8 s, and as one group ~20 ms. G is drawn
 * from [2^30, 2^31) for each run: no device felt does not own is ever in it (groups in use are small numbers).
 */
function deletedTogether(lines: readonly Line[]): readonly Line[] {
  const out: Line[] = [];
  for (let i = 0; i < lines.length;) {
    let j = i;
    while (j < lines.length && lines[j]!.op?.op === 'link.del') j++;
    if (j - i < 2) {
      out.push(lines[i]!);
      i++;
      continue;
    }
    const group = randomInt(2 ** 30, 2 ** 31 - 1);
    const run = lines.slice(i, j);
    for (const l of run) {
      const o = l.op as Extract<Op, { op: 'link.del' }>;
      out.push({ text: `link set dev ${o.name} group ${group}`, op: o });
    }
    out.push({ text: `link del group ${group}`, op: run[run.length - 1]!.op!, ops: run.map((l) => l.op!) });
    i = j;
  }
  return out;
}

// ------------------------------------------------------------------------------------------- failures

const DELETES: ReadonlySet<Op['op']> = new Set([
  'link.del',
  'addr.del',
  'route.del',
  'neigh.del',
  'fdb.del',
  'qdisc.del',
  'rule.del',
  'chain.del',
  'iprule.del',
  'nft.rule.del',
]);
/** What the tools say when the thing to delete is not there. */
const NOT_THERE =
  /Cannot find device|No such (?:device|process|file or directory)|does not exist|Address not found|Cannot assign requested address|FIB table does not exist|Cannot delete qdisc with handle of zero|Cannot find specified qdisc|Bad rule \(does a matching rule exist|No chain\/target\/match by that name/i;

export type Verdict =
  | { readonly kind: 'ok' }
  | { readonly kind: 'error'; readonly msg: string; readonly details?: string }
  /** An iptables-restore whose only failure was a deletion of a rule already gone: run `step` instead. */
  | { readonly kind: 'retry'; readonly step: Step };

const clean = (s: string): string =>
  s
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^Command failed -:\d+$/.test(l) && !/^Try `i?p?6?tables-restore -h'/.test(l))
    .join(' ')
    .replace(/^(?:iptables-restore|ip6tables-restore)(?: v[\d.]+)?(?: \(nf_tables\))?:\s*/i, '');

/** Messages of a -force batch, by failed line (1-based); text after the last "Command failed" under 0. */
export function failedLines(text: string): Map<number, string> {
  const out = new Map<number, string>();
  let acc: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^Command failed -:(\d+)$/.exec(line.trim());
    if (m) {
      out.set(Number(m[1]), acc.join('\n'));
      acc = [];
    } else if (line.trim()) acc.push(line);
  }
  if (acc.length) out.set(0, acc.join('\n'));
  return out;
}

/**
 * Why one invocation of a step failed, from its exit code and stderr: the op at fault (named in words), "ok"
 * when the only failures were deletions of things already gone, or an iptables-restore to run again without
 * such a deletion or without the creation of a shared chain that exists already (the whole restore was
 * rolled back).
 */
export function explain(step: Step, inv: Invocation, code: number, text: string): Verdict {
  if (code === 0) return { kind: 'ok' };
  const named = (op: Op | undefined, why: string): Verdict =>
    op
      ? { kind: 'error', msg: `failed to ${describeOp(op)}: ${why || `exit ${code}`}` }
      : { kind: 'error', msg: `failed to apply ${step.tool} changes in ${where(step.ns)}: ${why || `exit ${code}`}` };
  if (
    inv.kind === 'exec' &&
    ((inv.argv[0] === 'nsenter' && /^nsenter: /.test(text)) || (inv.argv[1] === '-n' && /^Cannot open network namespace/.test(text)))
  ) {
    return { kind: 'error', msg: `failed to enter ${where(step.ns)}: ${clean(text) || `exit ${code}`}` };
  }

  if (step.tool === 'iptables-restore' || step.tool === 'ip6tables-restore') {
    const m = /line:? (\d+)/.exec(text);
    let line = m ? step.lines[Number(m[1]) - 1] : undefined;
    // nft reports some errors at COMMIT: find the line that names what the message quotes.
    if (!line?.op) {
      const quoted = [...text.matchAll(/'([^'\s]+)'|`([^`'\s]+)'/g)].map((q) => q[1] ?? q[2]!).filter((q) => !/tables-restore/.test(q));
      line =
        step.lines.find(
          (l) => l.op && quoted.some((q) => new RegExp(`(?:^|\\s)${q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?:\\s|$)`).test(l.text)),
        ) ?? line;
    }
    const why = clean(text)
      .replace(/^line \d+ failed:?\s*/i, '')
      .replace(/\s*Error occurred at line: \d+/, '');
    const gone = line?.op?.op === 'rule.del' && NOT_THERE.test(text);
    const made = line?.op?.op === 'chain.add' && /Chain already exists/i.test(text);
    if (line?.op && (gone || made)) {
      const bad = line.op;
      const rest = step.lines.filter((l) => l.op !== bad);
      return rest.some((l) => l.op) ? { kind: 'retry', step: { ...step, lines: restoreLines(uniqueOps(rest)) } } : { kind: 'ok' };
    }
    return named(line?.op, why);
  }
  if (step.tool === 'nft') {
    const why = clean(text.replace(/^internal:\d+:\d+-\d+: /gm, '').replace(/^Error: /gm, ''));
    const ops = [...new Set(inv.lines.flatMap((l) => (l.op ? [l.op] : [])))];
    // A rule deleted by handle that is gone already: the whole transaction was refused. Run each deletion on
    // its own, where "not there" is no failure, then the rest.
    if (ops.length === 1 && ops[0]!.op === 'nft.rule.del' && NOT_THERE.test(text)) return { kind: 'ok' };
    if (!step.each && ops.some((o) => o.op === 'nft.rule.del') && NOT_THERE.test(text))
      return { kind: 'retry', step: { ...step, each: true } };
    // nft names no command in a failed JSON batch: a batch of one op names it, a larger one the namespace.
    return ops.length === 1
      ? named(ops[0], why)
      : {
          kind: 'error',
          msg: `failed to apply nftables changes in ${where(step.ns)}: ${why || `exit ${code}`}`,
          details: ops.map(describeOp).join('; '),
        };
  }
  if (step.tool === 'sysctl') {
    // tee and sysctl name the file ("cannot stat PATH"); sysctl names a key it could not set ("setting key \"KEY\"").
    const key = (l: Line): string => l.text.slice(0, l.text.indexOf('='));
    const op = inv.lines.find((l) => text.includes(sysctlPath(key(l))) || text.includes(`"${key(l)}"`))?.op ?? inv.lines[0]?.op;
    return named(op, clean(text.replace(/^(?:tee|sysctl): (?:cannot stat )?/gm, '')));
  }
  const failed = failedLines(text);
  let first: Verdict | undefined;
  for (const [n, msg] of [...failed].sort((a, b) => (a[0] || Infinity) - (b[0] || Infinity))) {
    // n = 0: ip gave up without naming a line (neigh errors exit(2)): blame the neighbour op on the named device.
    const line = n > 0 ? inv.lines[n - 1] : undefined;
    // A line of several sysctls (withSysctlsFirst): the one sysctl names ("cannot stat PATH").
    const op =
      line?.ops?.find((o) => o.op === 'sysctl.set' && msg.includes(sysctlPath(o.sysctl.key))) ??
      line?.op ??
      step.lines.find((l) => l.op?.op === 'neigh.replace' && msg.includes(`"${l.op.neigh.dev}"`))?.op ??
      step.lines.find((l) => l.op?.op === 'neigh.replace')?.op;
    if (op && n > 0 && DELETES.has(op.op) && NOT_THERE.test(msg)) continue;
    first ??= named(op, clean(msg));
  }
  return first ?? { kind: 'ok' };
}

const uniqueOps = (lines: readonly Line[]): IptOp[] => [...new Set(lines.flatMap((l) => (l.op && isIpt(l.op) ? [l.op] : [])))];
