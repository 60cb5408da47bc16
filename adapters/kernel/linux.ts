// The Linux kernel adapter (iproute2, bridge, tc, iptables-restore/-save, /proc/sys). Effects are wrapped here
// once; everything else is pure (parse.ts, render.ts, core/kernel/plan.ts).
//
// Cost model (these run inside CNI executables whose whole ADD should take tens of milliseconds):
//  - observe: per namespace, at once: one `ip -json -d -batch -` (links, addresses, routes of all tables,
//    permanent neighbours; unless `ip: false`), one read of the sysctls asked for (grep, or no process at all in this process's
//    own namespace), and only when asked: iptables-save/ip6tables-save once per family, `bridge -json fdb
//    show`, `tc -json qdisc show` (and `tc -json filter show dev X ingress` for desired redirects),
//    `ip -json rule show` and `ip -6 -json rule show` (ip's family is a global option, so IPv6 rules cannot
//    share the batch). All of them run concurrently.
//  - apply: render.ts's steps in order: per namespace group one `ip -force -batch -` per run of ip ops, one
//    iptables-restore per family, sysctls by `tee` (or one `sysctl -p-` when their values differ). The
//    iptables steps run in order beside the others (rules need no link or address to exist), and the others
//    in order per namespace, namespaces beside each other between steps that reach across namespaces (a
//    veth pair, a move, a deletion). A failed step lets no further step start; the error (the first) names
//    the op and the namespace. Deletions of things already gone are not failures.
// No shell anywhere: argument vectors and stdin only (exec.ts).

import { existsSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { KernelState, NsRef, Op } from '../../core/kernel/model.ts';
import { createdFrom, HOST } from '../../core/kernel/model.ts';
import { sysctlPath, where } from '../../core/kernel/keys.ts';
import { inNetns, onPath, readOwn, run, startAhead, writeOwn, type DoneWhen, type ExecHooks, type Run } from './exec.ts';
import type { IpSession } from './ip-session.ts';
import { isLinkName, runNetnsName } from '../../core/kernel/names.ts';
import {
  IP_READ,
  pairVeths,
  parseFdb,
  parseIpBatch,
  parseIpRules,
  parseIptablesSave,
  parseQdiscs,
  parseRedirect,
  type IpState,
} from './parse.ts';
import { explain, failedLines, invocations, ipBatchArgv, steps, withSysctlsFirst, type RenderOptions, type Step } from './render.ts';
import { readsFor } from './request.ts';
import { NFT_NO_TABLE, parseNftList } from './nft.ts';

/** nft is not installed (spawned directly, or through nsenter). */
const NFT_MISSING = /spawn nft ENOENT|failed to execute nft/;
/** iptables-save / ip6tables-save is not installed. */
const IPT_MISSING = /spawn ip6?tables-save ENOENT|failed to execute ip6?tables-save/;
import type { Kernel, KernelError, ObserveRequest } from './types.ts';

export interface LinuxKernelOptions extends ExecHooks {
  /** PID of a process in the host namespace (this process): how `ip link add ... netns` names the host. */
  readonly pid: number;
  /**
   * Where HOST is, when it is not this process's namespace: a netns path entered with nsenter like any other.
   * Tests use it to run "the host" in a namespace of their own; production leaves it unset.
   */
  readonly hostNetns?: string;
  /**
   * A long-lived `ip` in the host namespace (feltd's own) for the host's `ip` reads and changes, instead of a
   * process each; a request it cannot answer runs in a process of its own.
   */
  readonly session?: IpSession;
  /** The same for `tc` (the host's qdiscs and filters): a long-lived `tc -json -force -batch -`. */
  readonly tcSession?: IpSession;
  /**
   * How long after an iptables-restore answered at its sentinel a save in that namespace runs under stdbuf
   * (see restoreClosing); default 50 ms, about three grace periods. Tests lengthen it to see that path for sure.
   */
  readonly restoreClosingMs?: number;
  /**
   * End each iptables-restore at its sentinel (runRestore) instead of its exit: for a long-lived process (feltd),
   * whose calls go on while the restore closes. A plugin run once waits for its children at its exit anyway,
   * and there the early answer measured slower (the standalone DEL took ~12 ms more): off by default.
   */
  readonly restoreSentinel?: boolean;
  /**
   * Whether Kernel.prestart starts a pod's ip batch now (exec.ts startAhead): for a long-lived process (feltd)
   * while few calls are in flight, where a process's start is on the call's way. Unset: never.
   */
  readonly prestart?: () => boolean;
}

/** Run one `ip` batch of the host namespace in the session when there is one, else in a process. */
const hostIp = async (o: LinuxKernelOptions, argv: readonly string[], input: string): Promise<Run> =>
  (await o.session?.request(input)) ?? run(argv, input, o);
/** Run a `tc` command (`line`, or a batch: `input`) of the host namespace in its session when there is one, else `argv` in a process. */
const hostTc = async (o: LinuxKernelOptions, argv: readonly string[], input: string, line = input): Promise<Run> =>
  (await o.tcSession?.request(line)) ?? run(argv, input, o);

const kerr = (msg: string, details?: string): KernelError => (details ? { kind: 'kernel', msg, details } : { kind: 'kernel', msg });

// ---------------------------------------------------------------------------------------------- observe

type Mutable = { -readonly [K in keyof KernelState]-?: NonNullable<KernelState[K]>[number][] };

// "failed to execute" is a tool missing inside a namespace that was entered.
const entered = (r: Run): boolean => !(r.code !== 0 && /^nsenter: (?!failed to execute)/.test(r.stderr));

async function observe(req: ObserveRequest, o: LinuxKernelOptions): Promise<E.Either<KernelError, KernelState>> {
  const reads = readsFor(req);
  const state: Mutable = {
    links: [],
    addresses: [],
    routes: [],
    neighbours: [],
    fdb: [],
    chains: [],
    rules: [],
    sysctls: [],
    qdiscs: [],
    ipRules: [],
    nftTables: [],
    nftChains: [],
    nftRules: [],
    nftSets: [],
  };
  if (reads.length === 0) return E.right(state);
  const ipv6 = existsSync('/proc/sys/net/ipv6');
  // Every read of every namespace at once.
  const got = await Promise.all(
    reads.map(async (rd) => {
      const pre = inNetns(rd.ns, o.hostNetns);
      const paths = rd.sysctls.map(sysctlPath);
      // A read of the host's goes to its tc session as a batch line (a device name only when no batch tool
      // could read it as more than one word: isLinkName), else it is a process of its own.
      const tcRead = (args: readonly string[], dev?: string): Promise<Run> =>
        rd.ns === HOST && (dev === undefined || isLinkName(dev))
          ? hostTc(o, [...pre, 'tc', '-json', ...args], '', `${args.join(' ')}\n`)
          : run([...pre, 'tc', '-json', ...args], '', o);
      const filters = Promise.all(rd.filters.map((dev) => tcRead(['filter', 'show', 'dev', dev, 'ingress'], dev)));
      const nft = Promise.all(rd.nftTables.map((t) => run([...pre, 'nft', '-j', 'list', 'table', t.family, t.name], '', o)));
      const [ip, sysctl, fdb, tc, rules4, rules6, ...ipt] = await Promise.all([
        req.ip === false
          ? undefined
          : rd.ns === HOST
            ? hostIp(o, [...pre, 'ip', '-json', '-d', '-batch', '-'], IP_READ)
            : run([...pre, 'ip', '-json', '-d', '-batch', '-'], IP_READ, o),
        paths.length === 0 ? undefined : pre.length === 0 ? readOwn(paths) : run([...pre, 'grep', '-sH', '', '--', ...paths], '', o),
        rd.fdb ? run([...pre, 'bridge', '-json', 'fdb', 'show'], '', o) : undefined,
        rd.qdiscs ? tcRead(['qdisc', 'show']) : undefined,
        rd.ipRules ? run([...pre, 'ip', '-json', 'rule', 'show'], '', o) : undefined,
        rd.ipRules && ipv6 ? run([...pre, 'ip', '-6', '-json', 'rule', 'show'], '', o) : undefined,
        ...[...rd.iptables].map(([family, tables]) => save(pre, family, tables, o)),
      ]);
      return {
        ip,
        sysctl,
        fdb,
        tc,
        rules: [
          [4, rules4],
          [6, rules6],
        ] as const,
        ipt,
        filters: await filters,
        nft: await nft,
      };
    }),
  );
  const ipStates: { ns: NsRef; state: IpState }[] = [];
  for (let i = 0; i < reads.length; i++) {
    const rd = reads[i]!;
    const { ns } = rd;
    const g = got[i]!;
    const first = g.ip ?? g.ipt[0];
    if (first && !entered(first)) return E.left(kerr(`failed to read ${where(ns)}: ${first.stderr.trim()}`));
    if (g.ip) {
      if (g.ip.code !== 0) return E.left(kerr(`failed to read links, addresses and routes in ${where(ns)}: ${g.ip.stderr.trim()}`));
      const s = parseIpBatch(ns, g.ip.stdout, rd.kernelRoutes);
      if (typeof s === 'string') return E.left(kerr(`failed to read links, addresses and routes in ${where(ns)}: ${s}`));
      ipStates.push({ ns, state: s });
      state.addresses.push(...s.addresses);
      state.routes.push(...s.routes);
      state.neighbours.push(...s.neighbours);
    }
    let j = 0;
    for (const [family, tables] of rd.iptables) {
      const x = g.ipt[j++]!;
      // No iptables installed (an nftables-only host): nothing of it can be there for felt to change.
      if (x.code !== 0 && IPT_MISSING.test(x.stderr)) continue;
      if (x.code !== 0) return E.left(kerr(`failed to read IPv${family} iptables in ${where(ns)}: ${x.stderr.trim()}`));
      const p = parseIptablesSave(ns, family, x.stdout, tables);
      state.chains.push(...p.chains);
      state.rules.push(...p.rules);
    }
    for (let k = 0; k < rd.nftTables.length; k++) {
      const x = g.nft[k]!;
      const t = rd.nftTables[k]!;
      if (x.code !== 0) {
        // No such table: nothing of it to read. No nft at all: nothing can be there that felt could change.
        if (NFT_NO_TABLE.test(x.stderr) || NFT_MISSING.test(x.stderr)) continue;
        return E.left(kerr(`failed to read nftables table ${t.family} ${t.name} in ${where(ns)}: ${x.stderr.trim()}`));
      }
      const p = parseNftList(ns, x.stdout);
      if (typeof p === 'string') return E.left(kerr(`failed to read nftables table ${t.family} ${t.name} in ${where(ns)}: ${p}`));
      state.nftTables.push(...p.nftTables);
      state.nftChains.push(...p.nftChains);
      state.nftRules.push(...p.nftRules);
      state.nftSets.push(...p.nftSets);
    }
    if (g.fdb) {
      const f = g.fdb.code === 0 ? parseFdb(ns, g.fdb.stdout) : g.fdb.stderr || 'no output';
      if (typeof f === 'string') return E.left(kerr(`failed to read the fdb in ${where(ns)}: ${f.trim()}`));
      state.fdb.push(...f);
    }
    if (g.tc) {
      const q = g.tc.code === 0 ? parseQdiscs(ns, g.tc.stdout) : g.tc.stderr || 'no output';
      if (typeof q === 'string') return E.left(kerr(`failed to read qdiscs in ${where(ns)}: ${q.trim()}`));
      // An ingress qdisc's redirect, where asked for; a device that is not there has no filters.
      const redirects = new Map<string, string>();
      for (let k = 0; k < rd.filters.length; k++) {
        const f = g.filters[k]!;
        if (f.code !== 0) {
          if (/Cannot find device/.test(f.stderr)) continue;
          return E.left(kerr(`failed to read the ingress filters of ${rd.filters[k]} in ${where(ns)}: ${f.stderr.trim()}`));
        }
        const to = parseRedirect(f.stdout);
        if (typeof to === 'object')
          return E.left(kerr(`failed to read the ingress filters of ${rd.filters[k]} in ${where(ns)}: ${to.error}`));
        if (to !== undefined) redirects.set(rd.filters[k]!, to);
      }
      state.qdiscs.push(...q.map((x) => (x.kind === 'ingress' && redirects.has(x.dev) ? { ...x, redirect: redirects.get(x.dev)! } : x)));
    }
    for (const [family, x] of g.rules) {
      if (!x) continue;
      const p = x.code === 0 ? parseIpRules(ns, family, x.stdout) : x.stderr || 'no output';
      if (typeof p === 'string') return E.left(kerr(`failed to read IPv${family} policy rules in ${where(ns)}: ${p.trim()}`));
      state.ipRules.push(...p);
    }
    if (g.sysctl) {
      // "path:value" lines; a missing key is just absent.
      const values = new Map<string, string>();
      for (const line of g.sysctl.stdout.split('\n')) {
        const c = line.indexOf(':');
        if (c > 0) values.set(line.slice(0, c), line.slice(c + 1).trim());
      }
      for (const key of rd.sysctls) {
        const v = values.get(sysctlPath(key));
        if (v !== undefined) state.sysctls.push({ ns, key, value: v });
      }
    }
  }
  const named = (ns: NsRef): string | undefined => {
    const path = ns === HOST ? o.hostNetns : ns;
    return path === undefined ? undefined : runNetnsName(path);
  };
  const links = pairVeths(ipStates, named);
  for (const { ns } of ipStates) state.links.push(...links.get(ns)!);
  const { ipRules, nftTables, nftChains, nftRules, nftSets, ...rest } = state;
  // Optional parts are reported only when read.
  return E.right({
    ...rest,
    ...(reads.some((rd) => rd.ipRules) ? { ipRules } : {}),
    ...(reads.some((rd) => rd.nftTables.length) ? { nftTables, nftChains, nftRules, nftSets } : {}),
  });
}

// ------------------------------------------------------------------------------------------------ apply

async function apply(ops: readonly Op[], o: LinuxKernelOptions): Promise<E.Either<KernelError, void>> {
  if (ops.length === 0) return E.right(undefined);
  const ro: RenderOptions = { pid: o.pid, ...(o.hostNetns !== undefined ? { hostNetns: o.hostNetns } : {}) };
  let all: readonly Step[];
  const ipv6 = existsSync('/proc/sys/net/ipv6');
  try {
    all = sysctlsIntoBatches(steps(ops, ro), ipv6);
  } catch (e) {
    return E.left(kerr((e as Error).message));
  }
  let failed: E.Left<KernelError> | undefined;
  const step = async (st: Step): Promise<void> => {
    if (failed) return;
    const r = await runStep(st, ro, ipv6, o);
    if (E.isLeft(r)) failed ??= r;
  };
  // iptables rules name links and addresses by value, never need them to exist, and nothing else needs a
  // rule: the iptables steps run in order in a lane of their own.
  const ipt = all.filter(isIptStep).reduce((p, st) => p.then(() => step(st)), Promise.resolve());
  // The other steps run in order per namespace, the namespaces beside each other, except that a step that
  // reaches into another namespace (a veth pair across namespaces, a link made from or moved to another
  // namespace, a link deleted, which may take its peer along) waits for every step before it, and every
  // step after it waits for it.
  // A pod's per-device sysctls (accept_dad, arp_notify) and its ip batch run side by side when the batch adds
  // no IPv6 address that would start duplicate address detection (see besideSysctls).
  let barrier = Promise.resolve();
  const lanes = new Map<NsRef, Promise<void>>();
  const sysctlStep = new Map<NsRef, { before: Promise<void>; st: Step }>();
  for (const st of all) {
    if (isIptStep(st)) continue;
    const prev = sysctlStep.get(st.ns);
    sysctlStep.delete(st.ns);
    if (st.lines.some((l) => l.op !== undefined && reachesOut(l.op))) {
      const before = Promise.all([barrier, ...lanes.values()]);
      barrier = before.then(() => step(st));
      lanes.clear();
      sysctlStep.clear();
    } else if (prev && besideSysctls(prev.st, st)) {
      lanes.set(
        st.ns,
        Promise.all([lanes.get(st.ns), prev.before.then(() => step(st))]).then(() => undefined),
      );
    } else {
      const before = lanes.get(st.ns) ?? barrier;
      lanes.set(
        st.ns,
        before.then(() => step(st)),
      );
      if (st.tool === 'sysctl') sysctlStep.set(st.ns, { before, st });
    }
  }
  await Promise.all([ipt, barrier, ...lanes.values()]);
  return failed ?? E.right(undefined);
}

/**
 * Each sysctl step of a pod (a namespace in /run/netns) joins the ip step that comes next in its namespace, when
 * no step reaching across namespaces comes between: one `ip -n NAME` whose batch first runs sysctl in the pod
 * (render.ts withSysctlsFirst). Other steps stay as they are.
 */
function sysctlsIntoBatches(all: readonly Step[], ipv6: boolean): Step[] {
  const out: (Step | undefined)[] = [...all];
  if (!hasSysctl()) return [...all];
  for (let i = 0; i < out.length; i++) {
    const s = out[i];
    if (!s || s.tool !== 'sysctl' || s.ns === HOST) continue;
    for (let j = i + 1; j < out.length; j++) {
      const n = out[j]!;
      if (isIptStep(n)) continue;
      if (n.lines.some((l) => l.op !== undefined && reachesOut(l.op))) break;
      if (n.ns !== s.ns) continue;
      const joined = withSysctlsFirst(s, n, ipv6);
      if (joined) {
        out[i] = undefined;
        out[j] = joined;
      }
      break;
    }
  }
  return out.filter((s): s is Step => s !== undefined);
}

/** Keys of one device's own settings: `net.ipv4.conf.<dev>.<key>` / `net.ipv6.conf.<dev>.<key>`, not all/default. */
const DEVICE_SYSCTL = /^net\.ipv[46]\.conf\.(?!all\.|default\.)[^.]+\.[a-z_]+$/;

/**
 * Whether an ip step may run beside the sysctl step before it in its namespace: the sysctls are settings of
 * single devices (no forwarding switch, whose order against addresses matters), and the batch adds no IPv6
 * address that would start duplicate address detection before accept_dad is written (felt adds them `nodad`
 * where it turns DAD off). The pod's sysctls and its addresses and routes are then two processes at once.
 */
export function besideSysctls(sysctls: Step, next: Step): boolean {
  if (next.tool !== 'ip' || next.label !== undefined) return false;
  const keysOk = sysctls.lines.every((l) => l.op?.op === 'sysctl.set' && DEVICE_SYSCTL.test(l.op.sysctl.key));
  const addrsOk = next.lines.every((l) => l.op?.op !== 'addr.add' || !l.op.addr.cidr.includes(':') || l.op.addr.nodad === true);
  return keysOk && addrsOk;
}

/** Whether `sysctl` is on PATH (looked up once, only when a sysctl step runs in another namespace). */
let sysctlFound: boolean | undefined;
const hasSysctl = (): boolean => (sysctlFound ??= onPath('sysctl'));
/** Whether `stdbuf` is on PATH (looked up once, when a save follows a restore that may still be closing). */
let stdbufFound: boolean | undefined;
const hasStdbuf = (): boolean => (stdbufFound ??= onPath('stdbuf'));

/**
 * Namespaces (by the argv prefix that enters them) where an iptables-restore was answered at its sentinel and
 * may still be closing its netlink socket, with until when. Any nf_tables socket closed there meanwhile waits
 * for the same grace period, and iptables-save prints its tables only as it exits, after its close; so a save
 * there runs under `stdbuf -oL` (each line printed as it is made) and is over at its "# Completed" line.
 */
const restoreClosing = new Map<string, number>();

/** `iptables-save` (or ip6tables-save) of `tables` (one: `-t TABLE`; several: all of them) in the namespace `pre` enters. */
function save(pre: readonly string[], family: 4 | 6, tables: readonly string[], o: LinuxKernelOptions): Promise<Run> {
  const argv = [family === 4 ? 'iptables-save' : 'ip6tables-save', ...(tables.length === 1 ? ['-t', tables[0]!] : [])];
  const key = pre.join('\0');
  const closing = (restoreClosing.get(key) ?? 0) > performance.now();
  if (!closing) restoreClosing.delete(key);
  return closing && tables.length === 1 && hasStdbuf()
    ? run([...pre, 'stdbuf', '-oL', ...argv], '', o, { on: 'stdout', line: /^# Completed on .*\n/m })
    : run([...pre, ...argv], '', o);
}

// nftables steps share that lane: rules name nothing that must exist, and nothing waits for them.
const isIptStep = (st: Step): boolean => st.tool === 'iptables-restore' || st.tool === 'ip6tables-restore' || st.tool === 'nft';

/** Whether an op changes another namespace than the one it runs in (or may: a deleted veth's peer goes too). */
export const reachesOut = (op: Op): boolean => {
  switch (op.op) {
    case 'link.add':
      return createdFrom(op.link) !== op.link.ns || (op.link.veth !== undefined && op.link.veth.peerNs !== op.link.ns);
    case 'link.move':
    case 'link.del':
      return true;
    default:
      return false;
  }
};

/**
 * iptables-restore commits each table at its COMMIT line, says nothing when that worked, and then closes its
 * netlink socket; with nf_tables, that close waits until the kernel has freed what the commit deleted (an RCU
 * grace period: 10-20 ms, most of a DEL's netfilter time), though the rules were changed at the commit. So the
 * input ends with one more line, outside any table, that iptables-restore refuses (`felt/sync`), and the run is
 * over, every COMMIT before it done, once it reports that line's failure; the process closes on its own. A
 * failure of the real input ends the process before the sentinel, with its exit code and message as before.
 */
export function withRestoreSentinel(input: string): { readonly input: string; readonly doneWhen: DoneWhen } {
  const n = input.split('\n').length; // the input ends with a newline: its line count + 1
  return {
    input: `${input}felt/sync\n`,
    doneWhen: { on: 'stderr', line: new RegExp(`^ip6?tables-restore(?: v[^:\n]*)?: line ${n} failed\n`, 'm') },
  };
}
const runRestore = async (step: Step, inv: { argv: readonly string[]; input: string }, o: LinuxKernelOptions): Promise<Run> => {
  if (!o.restoreSentinel) return run(inv.argv, inv.input, o);
  const { input, doneWhen } = withRestoreSentinel(inv.input);
  const r = await run(inv.argv, input, o, doneWhen);
  // Only a deletion (of a rule or chain, or a chain's flush) leaves the kernel something to free.
  if (r.code === 0 && /^-[DFXR] /m.test(inv.input))
    restoreClosing.set(inNetns(step.ns, o.hostNetns).join('\0'), performance.now() + (o.restoreClosingMs ?? 50));
  return r;
};

/**
 * One process of a step: the host's ip and tc batches to their sessions when there are (unlabeled: a label is a
 * process of its own), an iptables-restore through runRestore, anything else a process.
 */
function runInvocation(step: Step, inv: { argv: readonly string[]; input: string }, o: LinuxKernelOptions): Promise<Run> {
  const session = step.ns === HOST && step.label === undefined;
  if (session && step.tool === 'ip') return hostIp(o, inv.argv, inv.input);
  if (session && step.tool === 'tc') return hostTc(o, inv.argv, inv.input);
  if (step.tool === 'iptables-restore' || step.tool === 'ip6tables-restore') return runRestore(step, inv, o);
  return run(inv.argv, inv.input, o);
}

/** Run one step (an iptables-restore again without a deletion of a rule already gone, at most once per line). */
async function runStep(first: Step, ro: RenderOptions, ipv6: boolean, o: LinuxKernelOptions): Promise<E.Either<KernelError, void>> {
  let step = first;
  for (let tries = step.lines.length + 1; ; tries--) {
    let retry: Step | undefined;
    for (const inv of invocations(step, ro, ipv6, step.tool === 'sysctl' && hasSysctl())) {
      const r = inv.kind === 'write' ? await writeOwn(inv.path, inv.value) : await runInvocation(step, inv, o);
      const v = explain(step, inv, r.code, r.stderr);
      if (v.kind === 'error') return E.left(kerr(v.msg, v.details));
      if (v.kind === 'retry') retry = v.step;
    }
    if (!retry) return E.right(undefined);
    if (tries <= 0) return E.left(kerr(`failed to apply ${step.tool} changes in ${where(step.ns)}: no progress`));
    step = retry;
  }
}

/**
 * Several callers' ops in one `ip -force -batch` where they make one (one namespace, ip ops only), each part
 * judged by its own failed lines (-force runs every line, so a part's lines do not depend on another's);
 * otherwise each part on its own. Identical ops of several parts run once and count for each.
 */
async function applyParts(parts: readonly (readonly Op[])[], o: LinuxKernelOptions): Promise<E.Either<KernelError, void>[]> {
  const ro: RenderOptions = { pid: o.pid, ...(o.hostNetns !== undefined ? { hostNetns: o.hostNetns } : {}) };
  const owners = new Map<string, number[]>();
  const ops: Op[] = [];
  parts.forEach((part, i) =>
    part.forEach((op) => {
      const k = JSON.stringify(op);
      const seen = owners.get(k);
      if (seen) {
        if (!seen.includes(i)) seen.push(i);
      } else {
        owners.set(k, [i]);
        ops.push(op);
      }
    }),
  );
  let all: readonly Step[] | undefined;
  try {
    all = steps(ops, ro);
  } catch {
    all = undefined;
  }
  // Sysctls of this process's own namespace (written without a process) may come before the batch.
  const ipv6 = existsSync('/proc/sys/net/ipv6');
  const st = all?.[all.length - 1];
  const writes = (all ?? []).slice(0, -1).map((w) => ({ w, invs: invocations(w, ro, ipv6) }));
  const inv = st && st.tool === 'ip' && st.label === undefined ? invocations(st, ro)[0] : undefined;
  const alone = (): Promise<E.Either<KernelError, void>[]> => Promise.all(parts.map((p) => apply(p, o)));
  if (!st || !inv || inv.kind !== 'exec' || !writes.every(({ w, invs }) => w.tool === 'sysctl' && invs.every((i) => i.kind === 'write')))
    return alone();
  for (const { w, invs } of writes)
    for (const i of invs) {
      if (i.kind !== 'write') continue;
      const r = await writeOwn(i.path, i.value);
      // A sysctl that cannot be written: each part again on its own (nothing but sysctls was changed yet).
      if (explain(w, i, r.code, r.stderr).kind === 'error') return alone();
    }
  const r = st.ns === HOST ? await hostIp(o, inv.argv, inv.input) : await run(inv.argv, inv.input, o);
  if (r.code === 0) return parts.map(() => E.right(undefined));
  const whole = explain(st, inv, r.code, r.stderr);
  if (whole.kind !== 'error') return parts.map(() => E.right(undefined));
  // nsenter failed, or ip named no line: nothing tells the parts apart.
  const lines = failedLines(r.stderr);
  if (/^nsenter: /.test(r.stderr) || lines.has(0)) return parts.map(() => E.left(kerr(whole.msg, whole.details)));
  return parts.map((_, i) => {
    let text = '';
    for (const [n, msg] of lines) {
      // A group deletion's line fails every part whose link it deletes.
      const line = inv.lines[n - 1];
      const ops = line?.ops ?? (line?.op ? [line.op] : []);
      if (ops.some((op) => owners.get(JSON.stringify(op))?.includes(i))) text += `${msg}\nCommand failed -:${n}\n`;
    }
    const v = text ? explain(st, inv, r.code, text) : ({ kind: 'ok' } as const);
    return v.kind === 'error' ? E.left(kerr(v.msg, v.details)) : E.right(undefined);
  });
}

/** Start the ip batch of a pod's namespace ahead, waiting for its input (exec.ts startAhead). */
function prestart(ns: NsRef, o: LinuxKernelOptions): () => void {
  if (ns === HOST || !o.prestart?.()) return () => undefined;
  return startAhead(ipBatchArgv(ns, { pid: o.pid, ...(o.hostNetns !== undefined ? { hostNetns: o.hostNetns } : {}) }));
}

export function linuxKernel(opts: LinuxKernelOptions): Kernel {
  return {
    observe:
      (req): TE.TaskEither<KernelError, KernelState> =>
      () =>
        observe(req, opts),
    apply:
      (ops): TE.TaskEither<KernelError, void> =>
      () =>
        apply(ops, opts),
    applyParts: (parts) => () => applyParts(parts, opts),
    prestart: (ns) => prestart(ns, opts),
  };
}
