// The Linux kernel adapter (iproute2, bridge, tc, iptables-restore/-save, /proc/sys). Effects are wrapped here
// once; everything else is pure (parse.ts, render.ts, core/kernel/plan.ts).
//
// Cost model (these run inside CNI executables whose whole ADD should take ~100 ms):
//  - observe: ONE `sh -s` spawned from node. Per namespace (entered once with `nsenter --net=PATH sh -s`):
//    sysctls read by one grep, one `ip -json -d -batch -` (links, addresses, routes of all tables,
//    permanent neighbours), and only when asked: iptables-save/ip6tables-save once per family, `bridge -json
//    fdb show`, `tc -json qdisc show`.
//  - apply: ONE `sh -s` spawned from node running render.ts's script: per namespace group one nsenter, one
//    `ip -force -batch -` per run of ip ops (a run ends where sysctls or fdb entries must come between),
//    one iptables-restore per family. A failed step stops the script; the error names the op and namespace.
//    If the only failures were deletions of things already gone, the rest is run by a second process.

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { KernelState, NsRef, Op } from '../../core/kernel/model.ts';
import { HOST } from '../../core/kernel/model.ts';
import { sysctlPath, where } from '../../core/kernel/keys.ts';
import { runScript, shq, type ExecHooks, type Run } from './exec.ts';
import { IP_READ, pairVeths, parseFdb, parseIpBatch, parseIptablesSave, parseQdiscs, type IpState } from './parse.ts';
import { explain, script, steps, type RenderOptions, type Step } from './render.ts';
import { readsFor, type NsReads } from './request.ts';
import type { Kernel, KernelError, ObserveRequest } from './types.ts';

export { parseIptablesSave } from './parse.ts';

export interface LinuxKernelOptions extends ExecHooks {
  /** PID of a process in the host namespace (this process): how `ip link add ... netns` names the host. */
  readonly pid: number;
  /**
   * Where HOST is, when it is not this process's namespace: a netns path entered with nsenter like any other.
   * Tests use it to run "the host" in a namespace of their own; production leaves it unset.
   */
  readonly hostNetns?: string;
}

const kerr = (msg: string, details?: string): KernelError => (details ? { kind: 'kernel', msg, details } : { kind: 'kernel', msg });

// ---------------------------------------------------------------------------------------------- observe

const BEGIN = '@@felt-begin';
const END = '@@felt-end';

/** One command's output framed on stdout (and its stderr on stderr) so that one sh can run them all. */
function framed(id: string, cmd: string): string[] {
  return [`echo '${BEGIN} ${id}'; echo '${BEGIN} ${id}' >&2`, cmd, `printf '\\n${END} ${id} %s\\n' $?`];
}

function observeScript(reads: readonly NsReads[], o: LinuxKernelOptions): string {
  const out: string[] = [];
  reads.forEach((r, i) => {
    const body: string[] = [];
    if (r.sysctls.length) {
      // One grep for all keys ("path:value" lines; a missing key is just absent). Not sh's `read`: dash reads
      // byte by byte and /proc/sys answers a read at offset 1 with EOF, so it would see "4" for 4096.
      body.push(...framed(`${i}.sysctl`, `grep -H '' ${r.sysctls.map((k) => shq(sysctlPath(k))).join(' ')} 2>/dev/null; [ $? -le 1 ]`));
    }
    body.push(...framed(`${i}.ip`, `ip -json -d -batch - <<'FELT_IP'\n${IP_READ}FELT_IP`));
    for (const [family, tables] of r.iptables) {
      const save = family === 4 ? 'iptables-save' : 'ip6tables-save';
      body.push(...framed(`${i}.ipt${family}`, tables.length === 1 ? `${save} -t ${tables[0]}` : save));
    }
    if (r.fdb) body.push(...framed(`${i}.fdb`, 'bridge -json fdb show'));
    if (r.qdiscs) body.push(...framed(`${i}.tc`, 'tc -json qdisc show'));
    const path = r.ns === HOST ? o.hostNetns : r.ns;
    if (path === undefined) out.push(...body);
    else out.push(`echo '${BEGIN} ${i}.ns' >&2`, `nsenter --net=${shq(path)} sh -s <<'FELT_NS_${i}'`, ...body, `FELT_NS_${i}`);
  });
  return out.join('\n') + '\n';
}

interface Out {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function demux(r: Run): Map<string, Out> {
  const out = new Map<string, Out>();
  const errs = new Map<string, string>();
  const parts = r.stderr.split(new RegExp(`^${BEGIN} (\\S+)$`, 'm'));
  for (let k = 1; k < parts.length; k += 2) errs.set(parts[k]!, parts[k + 1] ?? '');
  const re = new RegExp(`^${BEGIN} (\\S+)\\n([\\s\\S]*?)\\n?${END} \\1 (\\d+)$`, 'gm');
  for (const m of r.stdout.matchAll(re)) out.set(m[1]!, { code: Number(m[3]), stdout: m[2]!, stderr: errs.get(m[1]!) ?? '' });
  // Namespaces that could not be entered: their nsenter error is all there is.
  for (const [id, text] of errs) if (id.endsWith('.ns')) out.set(id, { code: 0, stdout: '', stderr: text });
  return out;
}

type Mutable = { -readonly [K in keyof KernelState]: KernelState[K][number][] };

async function observe(req: ObserveRequest, o: LinuxKernelOptions): Promise<E.Either<KernelError, KernelState>> {
  const reads = readsFor(req);
  const state: Mutable = { links: [], addresses: [], routes: [], neighbours: [], fdb: [], chains: [], rules: [], sysctls: [], qdiscs: [] };
  if (reads.length === 0) return E.right(state);
  const r = await runScript(observeScript(reads, o), o);
  const got = demux(r);
  const ipStates: { ns: NsRef; state: IpState }[] = [];
  for (let i = 0; i < reads.length; i++) {
    const { ns } = reads[i]!;
    const ip = got.get(`${i}.ip`);
    if (!ip) {
      const why = (got.get(`${i}.ns`)?.stderr ?? r.stderr).trim();
      return E.left(kerr(`failed to read ${where(ns)}: ${why || `sh exited with ${r.code}`}`));
    }
    if (ip.code !== 0) return E.left(kerr(`failed to read links, addresses and routes in ${where(ns)}: ${ip.stderr.trim()}`));
    const s = parseIpBatch(ns, ip.stdout);
    if (typeof s === 'string') return E.left(kerr(`failed to read links, addresses and routes in ${where(ns)}: ${s}`));
    ipStates.push({ ns, state: s });
    state.addresses.push(...s.addresses);
    state.routes.push(...s.routes);
    state.neighbours.push(...s.neighbours);
    const rd = reads[i]!;
    for (const [family, tables] of rd.iptables) {
      const x = got.get(`${i}.ipt${family}`);
      if (!x || x.code !== 0) return E.left(kerr(`failed to read IPv${family} iptables in ${where(ns)}: ${(x?.stderr ?? '').trim()}`));
      const p = parseIptablesSave(ns, family, x.stdout, tables);
      state.chains.push(...p.chains);
      state.rules.push(...p.rules);
    }
    if (rd.fdb) {
      const x = got.get(`${i}.fdb`);
      const f = x && x.code === 0 ? parseFdb(ns, x.stdout) : (x?.stderr ?? 'no output');
      if (typeof f === 'string') return E.left(kerr(`failed to read the fdb in ${where(ns)}: ${f.trim()}`));
      state.fdb.push(...f);
    }
    if (rd.qdiscs) {
      const x = got.get(`${i}.tc`);
      const q = x && x.code === 0 ? parseQdiscs(ns, x.stdout) : (x?.stderr ?? 'no output');
      if (typeof q === 'string') return E.left(kerr(`failed to read qdiscs in ${where(ns)}: ${q.trim()}`));
      state.qdiscs.push(...q);
    }
    if (rd.sysctls.length) {
      const x = got.get(`${i}.sysctl`);
      const values = new Map<string, string>();
      for (const line of (x?.stdout ?? '').split('\n')) {
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
    return path === undefined ? undefined : /^\/(?:var\/)?run\/netns\/([^/]+)$/.exec(path)?.[1];
  };
  const links = pairVeths(ipStates, named);
  for (const { ns } of ipStates) state.links.push(...links.get(ns)!);
  return E.right(state);
}

// ------------------------------------------------------------------------------------------------ apply

async function apply(ops: readonly Op[], o: LinuxKernelOptions): Promise<E.Either<KernelError, void>> {
  if (ops.length === 0) return E.right(undefined);
  const ro: RenderOptions = { pid: o.pid, ...(o.hostNetns !== undefined ? { hostNetns: o.hostNetns } : {}) };
  let all: readonly Step[];
  try {
    all = steps(ops, ro);
  } catch (e) {
    return E.left(kerr((e as Error).message));
  }
  let from = 0;
  // Each round either finishes, fails with the op named, or moves past an "already gone" deletion.
  for (let round = 0; round <= all.length + ops.length; round++) {
    if (from >= all.length) return E.right(undefined);
    const r = await runScript(script(all, from, ro), o);
    const v = explain(all, from, r.code, r.stderr);
    if (v.kind === 'ok') return E.right(undefined);
    if (v.kind === 'error') return E.left(kerr(v.msg, v.details));
    all = v.steps;
    from = v.next;
  }
  return E.left(kerr('failed to apply kernel changes: no progress'));
}

export function linuxKernel(opts: LinuxKernelOptions): Kernel {
  return {
    observe: (req): TE.TaskEither<KernelError, KernelState> => () => observe(req, opts),
    apply: (ops): TE.TaskEither<KernelError, void> => () => apply(ops, opts),
  };
}
