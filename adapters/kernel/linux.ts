// The Linux kernel adapter. Observing costs one process per namespace (`ip -json -d -batch -`, with
// iptables-save and the fdb read alongside); applying costs one process per namespace group: a small sh
// script, entered with `nsenter --net=PATH` for a container namespace, that feeds `ip -batch`,
// `bridge -batch`, sysctl writes and `iptables-restore --noflush` in the order plan gave. Never one process
// per rule or route.

import { spawn } from 'node:child_process';
import * as E from 'fp-ts/lib/Either.js';
import type {
  Address,
  Fdb,
  IptChain,
  IptFamily,
  IptRule,
  IptTable,
  KernelState,
  Link,
  LinkKind,
  Neighbour,
  NsRef,
  Op,
  Route,
  Sysctl,
} from '../../core/kernel/model.ts';
import { HOST, opNs } from '../../core/kernel/model.ts';
import { describeOp } from '../../core/kernel/plan.ts';
import type { Kernel, KernelError, ObserveRequest } from './types.ts';

export interface LinuxKernelOptions {
  /** PID of a process in the host namespace (this process): names the host netns to `ip ... netns`. */
  readonly pid: number;
  /** Called once per child process spawned (tests count them to prove batching). */
  readonly onSpawn?: (argv: readonly string[]) => void;
}

const where = (ns: NsRef): string => (ns === HOST ? 'the host namespace' : ns);
const kerr = (msg: string, details?: string): KernelError => (details ? { kind: 'kernel', msg, details } : { kind: 'kernel', msg });

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

const trace = !!process.env['FELT_TRACE'];

function run(argv: readonly string[], input: string, onSpawn?: (argv: readonly string[]) => void): Promise<Run> {
  onSpawn?.(argv);
  const t0 = trace ? performance.now() : 0;
  return new Promise((resolve0) => {
    const resolve = (r: Run): void => {
      if (trace) process.stderr.write(`# ${(performance.now() - t0).toFixed(1)} ms: ${argv.join(' ')}\n`);
      resolve0(r);
    };
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => resolve({ code: 127, stdout: '', stderr: String(e.message) }));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

const inNs = (ns: NsRef, argv: readonly string[]): string[] => (ns === HOST ? [...argv] : ['nsenter', `--net=${ns}`, ...argv]);

// ---------------------------------------------------------------------------------------------- observe

interface IpLink {
  ifname: string;
  flags?: string[];
  mtu?: number;
  address?: string;
  master?: string;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_kind?: string;
    info_slave_data?: { hairpin?: boolean };
  };
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

interface IpRoute {
  type?: string;
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  table?: string;
  metric?: number;
  prefsrc?: string;
  flags?: string[];
  metrics?: { mtu?: number }[];
}

const KINDS: readonly LinkKind[] = ['bridge', 'veth', 'vxlan', 'macvlan', 'ipvlan', 'vlan'];

function toLink(ns: NsRef, l: IpLink): Link {
  const flags = l.flags ?? [];
  const k = l.linkinfo?.info_kind;
  const kind: LinkKind = flags.includes('LOOPBACK') ? 'loopback' : k && (KINDS as string[]).includes(k) ? (k as LinkKind) : 'device';
  const d = l.linkinfo?.info_data ?? {};
  return {
    ns,
    name: l.ifname,
    kind,
    ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
    ...(l.address ? { mac: l.address } : {}),
    up: flags.includes('UP'),
    master: l.master ?? null,
    promisc: flags.includes('PROMISC'),
    hairpin: l.linkinfo?.info_slave_data?.hairpin === true,
    ...(kind === 'vxlan'
      ? {
          vxlan: {
            vni: Number(d['id']),
            ...(typeof d['local'] === 'string' ? { local: d['local'] } : typeof d['local6'] === 'string' ? { local: d['local6'] } : {}),
            port: Number(d['port'] ?? 8472),
            learning: d['learning'] === true,
            gbp: d['gbp'] === true,
          },
        }
      : {}),
  };
}

function toRoute(ns: NsRef, r: IpRoute): Route | undefined {
  // Kernel-made routes (connected, local, broadcast, multicast) are not anybody's to manage.
  if (r.protocol === 'kernel' || (r.type && r.type !== 'unicast') || r.table === 'local') return undefined;
  const v6 = r.dst.includes(':') || (r.gateway ?? '').includes(':');
  const dst = r.dst === 'default' ? (v6 ? '::/0' : '0.0.0.0/0') : r.dst.includes('/') ? r.dst : `${r.dst}/${v6 ? 128 : 32}`;
  const table = r.table === undefined || r.table === 'main' ? undefined : Number(r.table);
  const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
  return {
    ns,
    dst,
    ...(r.gateway ? { gw: r.gateway } : {}),
    ...(r.dev ? { dev: r.dev } : {}),
    ...(r.flags?.includes('onlink') ? { onlink: true } : {}),
    ...(r.scope && r.scope !== 'global' && (r.scope === 'link' || r.scope === 'host') ? { scope: r.scope } : {}),
    ...(table !== undefined && !Number.isNaN(table) ? { table } : {}),
    ...(r.metric !== undefined && r.metric !== (v6 ? 1024 : 0) ? { metric: r.metric } : {}),
    ...(mtu !== undefined ? { mtu } : {}),
    ...(r.prefsrc ? { src: r.prefsrc } : {}),
  };
}

/** Parse `iptables-save` output into chains (user chains, whole) and rules (builtin chains). */
export function parseIptablesSave(ns: NsRef, family: IptFamily, text: string): { chains: IptChain[]; rules: IptRule[] } {
  const chains: IptChain[] = [];
  const rules: IptRule[] = [];
  let table: IptTable | undefined;
  let user = new Map<string, string[]>();
  const builtin = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      table = line.slice(1).trim() as IptTable;
      user = new Map();
    } else if (line.startsWith(':') && table) {
      const name = line.slice(1).split(' ')[0]!;
      if (!builtin.has(name)) user.set(name, []);
    } else if (line.startsWith('-A ') && table) {
      const rest = line.slice(3);
      const sp = rest.indexOf(' ');
      const chain = sp < 0 ? rest : rest.slice(0, sp);
      const rule = sp < 0 ? '' : rest.slice(sp + 1);
      const list = user.get(chain);
      if (list) list.push(rule);
      else rules.push({ ns, family, table, chain, rule });
    } else if (line.startsWith('COMMIT') && table) {
      for (const [chain, rs] of user) chains.push({ ns, family, table, chain, rules: rs });
      table = undefined;
    }
  }
  return { chains, rules };
}

const sysctlPath = (key: string): string => `/proc/sys/${key.replace(/\./g, '/')}`;

interface Cmd {
  readonly ns: NsRef;
  readonly argv: readonly string[];
  readonly input?: string;
}

/**
 * Run several commands, in several namespaces, from ONE child process (`sh -s`): spawning from node costs
 * several times what sh's fork+exec does. Each command's stdout, stderr and exit code come back separately.
 */
async function runMany(cmds: readonly Cmd[], opts: LinuxKernelOptions): Promise<Run[]> {
  const lines: string[] = [];
  cmds.forEach((c, i) => {
    const argv = inNs(c.ns, c.argv).map(shq).join(' ');
    lines.push(`echo '@@felt ${i}' >&2`);
    lines.push(c.input !== undefined ? `${argv} <<'FELT_EOF_${i}'\n${c.input.endsWith('\n') ? c.input : c.input + '\n'}FELT_EOF_${i}` : `${argv} </dev/null`);
    lines.push(`printf '\\n@@felt-end ${i} %s\\n' $?`);
  });
  const r = await run(['sh', '-s'], lines.join('\n') + '\n', opts.onSpawn);
  const out: Run[] = cmds.map(() => ({ code: r.code === 0 ? 127 : r.code, stdout: '', stderr: '' }));
  let from = 0;
  for (const m of r.stdout.matchAll(/\n@@felt-end (\d+) (\d+)\n/g)) {
    const i = Number(m[1]);
    out[i] = { code: Number(m[2]), stdout: r.stdout.slice(from, m.index), stderr: '' };
    from = m.index + m[0].length;
  }
  const errs = r.stderr.split(/^@@felt (\d+)\n/m);
  for (let k = 1; k < errs.length; k += 2) {
    const i = Number(errs[k]);
    if (out[i]) out[i] = { ...out[i]!, stderr: errs[k + 1] ?? '' };
  }
  return out;
}

const IP_READ = 'link show\naddr show\nroute show table all\nneigh show nud permanent\n';

/** The commands that read one namespace, in a fixed order that parseNs relies on. */
function observeCmds(ns: NsRef, req: ObserveRequest): { cmds: Cmd[]; fams: IptFamily[]; tables: Map<IptFamily, string[]>; keys: { ns: NsRef; key: string }[] } {
  const cmds: Cmd[] = [{ ns, argv: ['ip', '-json', '-d', '-batch', '-'], input: IP_READ }];
  const owned = [...(req.scope?.chains ?? []), ...(req.scope?.ruleMarkers ?? [])].filter((c) => c.ns === ns);
  const tables = new Map<IptFamily, string[]>();
  const fams = (req.iptables ?? []).filter((f) => owned.some((c) => c.family === f) || (req.scope === undefined && ns === HOST));
  for (const f of fams) {
    const ts = [...new Set(owned.filter((c) => c.family === f).map((c) => c.table))];
    tables.set(f, ts);
    const save = f === 4 ? 'iptables-save' : 'ip6tables-save';
    // One table: `-t T`; several: all of them in one call.
    cmds.push({ ns, argv: ts.length === 1 ? [save, '-t', ts[0]!] : [save] });
  }
  if (req.fdb) cmds.push({ ns, argv: ['bridge', '-json', 'fdb', 'show'] });
  const keys = (req.sysctls ?? []).filter((s) => s.ns === ns);
  if (keys.length) cmds.push({ ns, argv: ['sh', '-c', keys.map((k) => `cat ${sysctlPath(k.key)} 2>/dev/null || echo`).join('\n')] });
  return { cmds, fams, tables, keys };
}

function parseNs(ns: NsRef, req: ObserveRequest, results: readonly Run[]): E.Either<KernelError, KernelState> {
  const { fams, keys } = observeCmds(ns, req);
  const ip = results[0]!;
  if (ip.code !== 0) return E.left(kerr(`failed to read links, addresses and routes in ${where(ns)}`, ip.stderr.trim()));
  let parts: unknown[][];
  try {
    parts = JSON.parse(`[${ip.stdout.trim().split('\n').filter((l) => l.trim()).join(',')}]`) as unknown[][];
  } catch (e) {
    return E.left(kerr(`failed to parse ip -json output in ${where(ns)}`, (e as Error).message));
  }
  const [linksJ = [], addrsJ = [], routesJ = [], neighJ = []] = parts as [IpLink[], IpLink[], IpRoute[], Neighbour[]];
  const links = linksJ.map((l) => toLink(ns, l));
  const addresses: Address[] = [];
  for (const l of addrsJ) {
    for (const a of l.addr_info ?? []) {
      if (a.family === 'inet6' && a.scope === 'link') continue; // kernel-made link-local
      addresses.push({ ns, dev: l.ifname, cidr: `${a.local}/${a.prefixlen}` });
    }
  }
  const routes = routesJ.map((r) => toRoute(ns, r)).filter((r): r is Route => r !== undefined);
  const neighbours: Neighbour[] = (neighJ as unknown as { dst: string; dev: string; lladdr?: string }[])
    .filter((n) => n.lladdr)
    .map((n) => ({ ns, dev: n.dev, ip: n.dst, lladdr: n.lladdr! }));
  const chains: IptChain[] = [];
  const rules: IptRule[] = [];
  let i = 1;
  for (const f of fams) {
    const r = results[i++]!;
    if (r.code !== 0) return E.left(kerr(`failed to read IPv${f} iptables in ${where(ns)}`, r.stderr.trim()));
    const p = parseIptablesSave(ns, f, r.stdout);
    chains.push(...p.chains);
    rules.push(...p.rules);
  }
  const fdb: Fdb[] = [];
  if (req.fdb) {
    const r = results[i++]!;
    if (r.code !== 0) return E.left(kerr(`failed to read the fdb in ${where(ns)}`, r.stderr.trim()));
    const entries = JSON.parse(r.stdout.trim() || '[]') as { mac: string; ifname?: string; dst?: string; state?: string }[];
    for (const e of entries) if (e.dst && e.ifname && e.state === 'permanent') fdb.push({ ns, dev: e.ifname, mac: e.mac, dst: e.dst });
  }
  const sysctls: Sysctl[] = [];
  if (keys.length) {
    const values = results[i++]!.stdout.split('\n');
    keys.forEach((k, j) => {
      const v = values[j]?.trim();
      if (v) sysctls.push({ ns, key: k.key, value: v });
    });
  }
  return E.right({ links, addresses, routes, neighbours, fdb, chains, rules, sysctls, qdiscs: [] });
}

// ------------------------------------------------------------------------------------------------ apply

const netnsArg = (ns: NsRef, pid: number): string => {
  if (ns === HOST) return String(pid);
  const m = /^\/(?:var\/)?run\/netns\/([^/]+)$/.exec(ns);
  return m ? m[1]! : ns;
};

function linkSetLines(l: Link, changes: Partial<Link>): string[] {
  const out: string[] = [];
  const base: string[] = [];
  if (changes.mtu !== undefined) base.push('mtu', String(changes.mtu));
  if (changes.mac !== undefined) base.push('address', changes.mac);
  if (changes.promisc !== undefined) base.push('promisc', changes.promisc ? 'on' : 'off');
  if (base.length) out.push(`link set dev ${l.name} ${base.join(' ')}`);
  if (changes.master !== undefined) out.push(changes.master ? `link set dev ${l.name} master ${changes.master}` : `link set dev ${l.name} nomaster`);
  if (changes.hairpin !== undefined) out.push(`link set dev ${l.name} type bridge_slave hairpin ${changes.hairpin ? 'on' : 'off'}`);
  if (changes.up !== undefined) out.push(`link set dev ${l.name} ${changes.up ? 'up' : 'down'}`);
  return out;
}

function linkAddLines(l: Link, pid: number): string[] {
  const head = [`link add ${l.name}`];
  if (l.mac) head.push(`address ${l.mac}`);
  if (l.mtu) head.push(`mtu ${l.mtu}`);
  switch (l.kind) {
    case 'bridge':
      head.push('type bridge');
      if (l.bridge?.vlanFiltering) head.push('vlan_filtering 1');
      break;
    case 'veth': {
      if (!l.veth) throw new Error(`veth ${l.name} has no peer`);
      head.push(`type veth peer name ${l.veth.peer}`);
      if (l.veth.peerMac) head.push(`address ${l.veth.peerMac}`);
      if (l.mtu) head.push(`mtu ${l.mtu}`);
      if (l.veth.peerNs !== l.ns) head.push(`netns ${netnsArg(l.veth.peerNs, pid)}`);
      break;
    }
    case 'vxlan': {
      const v = l.vxlan;
      if (!v) throw new Error(`vxlan ${l.name} has no vxlan settings`);
      head.push(`type vxlan id ${v.vni}`);
      if (v.local) head.push(`local ${v.local}`);
      if (v.dev) head.push(`dev ${v.dev}`);
      head.push(`dstport ${v.port}`, v.learning ? 'learning' : 'nolearning');
      if (v.gbp) head.push('gbp');
      break;
    }
    case 'macvlan':
      if (!l.macvlan) throw new Error(`macvlan ${l.name} has no master`);
      head.splice(1, 0, `link ${l.macvlan.master}`);
      head.push(`type macvlan mode ${l.macvlan.mode}`);
      break;
    default:
      throw new Error(`cannot create a link of kind ${l.kind}`);
  }
  const rest = linkSetLines(l, {
    ...(l.promisc ? { promisc: true } : {}),
    ...(l.master ? { master: l.master } : {}),
    ...(l.hairpin ? { hairpin: true } : {}),
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

type Tool = 'ip' | 'ip-del' | 'bridge' | 'bridge-del' | 'sysctl' | 'ipt4' | 'ipt6' | 'tc' | 'tc-del';

/** One op as lines for one tool. */
function render(o: Op, pid: number): { tool: Tool; lines: string[] } {
  switch (o.op) {
    case 'link.add':
      return { tool: 'ip', lines: linkAddLines(o.link, pid) };
    case 'link.set':
      return { tool: 'ip', lines: linkSetLines(o.link, o.changes) };
    case 'link.del':
      return { tool: 'ip-del', lines: [`link del dev ${o.name}`] };
    case 'addr.add':
      return { tool: 'ip', lines: [`addr add ${o.addr.cidr}${o.addr.cidr.includes(':') ? '' : ' brd +'} dev ${o.addr.dev}${o.addr.nodad ? ' nodad' : ''}`] };
    case 'addr.del':
      return { tool: 'ip-del', lines: [`addr del ${o.addr.cidr} dev ${o.addr.dev}`] };
    case 'route.replace':
      return { tool: 'ip', lines: [`route replace ${routeArgs(o.route)}`] };
    case 'route.del':
      return { tool: 'ip-del', lines: [`route del ${routeArgs(o.route)}`] };
    case 'neigh.replace':
      return { tool: 'ip', lines: [`neigh replace ${o.neigh.ip} lladdr ${o.neigh.lladdr} dev ${o.neigh.dev} nud permanent`] };
    case 'neigh.del':
      return { tool: 'ip-del', lines: [`neigh del ${o.neigh.ip} dev ${o.neigh.dev}`] };
    case 'fdb.replace':
      return { tool: 'bridge', lines: [`fdb replace ${o.fdb.mac} dev ${o.fdb.dev} dst ${o.fdb.dst} self permanent`] };
    case 'fdb.del':
      return { tool: 'bridge-del', lines: [`fdb del ${o.fdb.mac} dev ${o.fdb.dev} dst ${o.fdb.dst} self`] };
    case 'sysctl.set':
      return { tool: 'sysctl', lines: [`${o.sysctl.key}=${o.sysctl.value}`] };
    case 'chain.sync':
      return {
        tool: o.chain.family === 4 ? 'ipt4' : 'ipt6',
        lines: [`*${o.chain.table}`, `:${o.chain.chain} - [0:0]`, ...o.chain.rules.map((r) => `-A ${o.chain.chain} ${r}`)],
      };
    case 'chain.del':
      return { tool: o.family === 4 ? 'ipt4' : 'ipt6', lines: [`*${o.table}`, `-F ${o.chain}`, `-X ${o.chain}`] };
    case 'rule.add':
      return {
        tool: o.rule.family === 4 ? 'ipt4' : 'ipt6',
        lines: [`*${o.rule.table}`, o.rule.position === 'head' ? `-I ${o.rule.chain} 1 ${o.rule.rule}` : `-A ${o.rule.chain} ${o.rule.rule}`],
      };
    case 'rule.del':
      return { tool: o.rule.family === 4 ? 'ipt4' : 'ipt6', lines: [`*${o.rule.table}`, `-D ${o.rule.chain} ${o.rule.rule}`] };
    case 'qdisc.replace': {
      const q = o.qdisc;
      const spec =
        q.kind === 'tbf' ? `tbf rate ${q.rate ?? 0}bit burst ${q.burst ?? 0} latency ${q.latencyMs ?? 25}ms` : 'ingress';
      return { tool: 'tc', lines: [`qdisc replace dev ${q.dev} ${q.kind === 'ingress' ? 'ingress' : `root ${spec}`}`] };
    }
    case 'qdisc.del':
      return { tool: 'tc-del', lines: [`qdisc del dev ${o.qdisc.dev} ${o.qdisc.kind === 'ingress' ? 'ingress' : 'root'}`] };
  }
}

interface Segment {
  ns: NsRef;
  tool: Tool;
  lines: string[];
  /** ops[k] produced lines [from, to). */
  owners: { op: Op; from: number; to: number }[];
}

/** Consecutive ops for the same tool share one batch (iptables ops of one family share one restore). */
function segments(ops: readonly Op[], pid: number): Segment[] {
  const segs: Segment[] = [];
  for (const o of ops) {
    const r = render(o, pid);
    const last = segs[segs.length - 1];
    const ns = opNs(o);
    const seg = last && last.tool === r.tool && last.ns === ns ? last : { ns, tool: r.tool, lines: [], owners: [] };
    if (seg !== last) segs.push(seg);
    const from = seg.lines.length;
    seg.lines.push(...r.lines);
    seg.owners.push({ op: o, from, to: seg.lines.length });
  }
  return segs;
}

/** iptables-restore input: group lines by table, one COMMIT each. */
function restoreInput(seg: Segment): string {
  const byTable = new Map<string, string[]>();
  for (let i = 0; i < seg.lines.length; ) {
    const table = seg.lines[i]!;
    let j = i + 1;
    while (j < seg.lines.length && !seg.lines[j]!.startsWith('*')) j++;
    const list = byTable.get(table) ?? [];
    list.push(...seg.lines.slice(i + 1, j));
    byTable.set(table, list);
    i = j;
  }
  // Declarations (":CHAIN") first so that rules may jump to chains declared in the same restore.
  return [...byTable]
    .map(([t, ls]) => [t, ...ls.filter((l) => l.startsWith(':')), ...ls.filter((l) => !l.startsWith(':')), 'COMMIT'].join('\n'))
    .join('\n') + '\n';
}

const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
const NOT_THERE = /Cannot find device|No such (?:device|process|file or directory)|does not exist|Cannot assign requested address|not found|No such file/i;

function script(segs: readonly Segment[]): string {
  const parts: string[] = [];
  segs.forEach((s, i) => {
    const mark = `echo '@@felt ${i}' >&2`;
    const body = s.lines.join('\n') + '\n';
    const enter = s.ns === HOST ? '' : `nsenter --net=${shq(s.ns)} `;
    const heredoc = (cmd: string, onError: string): string => `${enter}${cmd} <<'FELT_EOF_${i}' ${onError}\n${body}FELT_EOF_${i}`;
    switch (s.tool) {
      case 'ip':
        parts.push(mark, `${heredoc('ip -batch -', '|| exit 1')}`);
        break;
      case 'ip-del':
        parts.push(mark, `${heredoc('ip -force -batch -', '|| true')}`);
        break;
      case 'bridge':
        parts.push(mark, `${heredoc('bridge -batch -', '|| exit 1')}`);
        break;
      case 'bridge-del':
        parts.push(mark, `${heredoc('bridge -force -batch -', '|| true')}`);
        break;
      case 'tc':
        parts.push(mark, `${heredoc('tc -batch -', '|| exit 1')}`);
        break;
      case 'tc-del':
        parts.push(mark, `${heredoc('tc -force -batch -', '|| true')}`);
        break;
      case 'sysctl':
        parts.push(mark);
        {
          // /proc/sys/net shows the namespace of the process that opens it: write from inside.
          const writes = s.lines.map((l) => {
            const eq = l.indexOf('=');
            const key = l.slice(0, eq);
            const p = sysctlPath(key);
            // IPv6 settings are skipped where IPv6 is disabled, as the reference plugins do.
            return key.startsWith('net.ipv6.') ? `[ ! -e ${p} ] || echo ${shq(l.slice(eq + 1))} > ${p} || exit 1` : `echo ${shq(l.slice(eq + 1))} > ${p} || exit 1`;
          });
          parts.push(s.ns === HOST ? writes.join('\n') : `${enter}sh -c ${shq(writes.join('\n'))} || exit 1`);
        }
        break;
      case 'ipt4':
      case 'ipt6': {
        const cmd = s.tool === 'ipt4' ? 'iptables-restore' : 'ip6tables-restore';
        parts.push(mark, `${enter}${cmd} --noflush <<'FELT_EOF_${i}' || exit 1\n${restoreInput(s)}FELT_EOF_${i}`);
        break;
      }
    }
  });
  return parts.join('\n') + '\n';
}

/** Map a failed group's stderr to the op at fault. */
function failure(segs: readonly Segment[], stderr: string): KernelError | undefined {
  const blocks = stderr.split(/^@@felt (\d+)\n/m);
  // split gives [pre, idx, text, idx, text, ...]
  let lastIdx = -1;
  let lastText = '';
  for (let i = 1; i < blocks.length; i += 2) {
    const idx = Number(blocks[i]);
    const text = blocks[i + 1] ?? '';
    const seg = segs[idx];
    if (!seg) continue;
    const tolerant = seg.tool.endsWith('-del');
    const bad = text.split('\n').filter((l) => l.trim() && !(tolerant && (/^Command failed/.test(l) || NOT_THERE.test(l))));
    if (bad.length === 0) continue;
    lastIdx = idx;
    lastText = text;
  }
  const seg = segs[lastIdx];
  if (!seg) return undefined;
  const m = /Command failed -:(\d+)|line (\d+) failed/.exec(lastText);
  const line = m ? Number(m[1] ?? m[2]) - 1 : -1;
  const owner = seg.owners.find((o) => line >= o.from && line < o.to) ?? (seg.owners.length === 1 ? seg.owners[0] : undefined);
  const why = lastText.split('\n').filter((l) => l.trim() && !/^Command failed/.test(l)).join(' ').trim();
  if (owner) return kerr(`failed to ${describeOp(owner.op)}: ${why || 'error'}`);
  return kerr(`failed to apply ${seg.tool} changes in ${where(seg.ns)}: ${why}`);
}

/** Apply ops, in plan order, from one child process: a sh script that enters each namespace in turn. */
async function applyAll(ops: readonly Op[], opts: LinuxKernelOptions): Promise<E.Either<KernelError, void>> {
  if (ops.length === 0) return E.right(undefined);
  let segs: Segment[];
  try {
    segs = segments(ops, opts.pid);
  } catch (e) {
    return E.left(kerr((e as Error).message));
  }
  const text = script(segs);
  // FELT_TRACE=1 shows every batch on stderr (never stdout: that is the CNI result).
  if (trace) process.stderr.write(text);
  const r = await run(['sh', '-s'], text, opts.onSpawn);
  // Deletions tolerate "already gone"; any other error, in any segment, fails the whole apply.
  const err = failure(segs, r.stderr);
  if (err) return E.left(err);
  if (r.code !== 0) return E.left(kerr('failed to apply kernel changes', r.stderr.replace(/^@@felt \d+\n/gm, '').trim()));
  return E.right(undefined);
}

export function linuxKernel(opts: LinuxKernelOptions): Kernel {
  return {
    observe: (req) => async () => {
      const plans = req.namespaces.map((ns) => ({ ns, n: observeCmds(ns, req).cmds.length }));
      const results = await runMany(req.namespaces.flatMap((ns) => observeCmds(ns, req).cmds), opts);
      let at = 0;
      const states = plans.map(({ ns, n }) => parseNs(ns, req, results.slice(at, (at += n))));
      const out: { [K in keyof KernelState]: KernelState[K][number][] } = {
        links: [],
        addresses: [],
        routes: [],
        neighbours: [],
        fdb: [],
        chains: [],
        rules: [],
        sysctls: [],
        qdiscs: [],
      };
      for (const s of states) {
        if (E.isLeft(s)) return s;
        for (const k of Object.keys(out) as (keyof KernelState)[]) (out[k] as unknown[]).push(...s.right[k]);
      }
      return E.right(out);
    },
    apply: (ops) => () => applyAll(ops, opts),
  };
}
