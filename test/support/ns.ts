// Network namespaces for kernel tests: unique names, commands run inside them, kernel state read back as
// plain data, and cleanup that runs even when a test fails. Nothing here touches the root namespace: every
// command that changes something runs under `ip netns exec <ns>` (or `ip -n <ns>`).

import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, runCni, type CniOutcome } from './cni.ts';
import { createNetns, execFile, type Netns, type Run } from './netns.ts';

export type { Run };

/** Run a command (not through a shell); never rejects. */
export const exec = (argv: readonly string[], input?: string): Promise<Run> => execFile(argv, input === undefined ? {} : { input });

/** Run a command inside namespace `ns`; throws with its stderr when it fails. */
export async function nsRun(ns: string, argv: readonly string[], input?: string): Promise<string> {
  const r = await exec(['ip', 'netns', 'exec', ns, ...argv], input);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} in ${ns} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Run a command inside namespace `ns` and return its outcome, failure included. */
export const nsTry = (ns: string, argv: readonly string[], input?: string): Promise<Run> =>
  exec(['ip', 'netns', 'exec', ns, ...argv], input);

export const nsPath = (name: string): string => `/run/netns/${name}`;

/**
 * The namespaces (from support/netns.ts) and temp directories one test file made; `cleanup()` removes them
 * all (call it from afterEach/afterAll). Removing a pod namespace takes its veth ends, and so their host
 * peers, with it.
 */
export class Sandbox {
  private readonly names = new Map<string, Netns>();
  private readonly dirs = new Set<string>();

  async ns(): Promise<string> {
    const n = await createNetns();
    this.names.set(n.name, n);
    return n.name;
  }

  /** Delete one namespace now (e.g. to test DEL after the pod is gone). */
  async delNs(name: string): Promise<void> {
    await this.names.get(name)?.del();
    this.names.delete(name);
  }

  dir(): string {
    const d = mkdtempSync(join(tmpdir(), 'felt-test-'));
    this.dirs.add(d);
    return d;
  }

  async cleanup(): Promise<void> {
    for (const n of this.names.values()) await n.del();
    this.names.clear();
    for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
    this.dirs.clear();
  }
}

// ------------------------------------------------------------------------------------- kernel state

export interface IpLink {
  ifname: string;
  flags: string[];
  mtu: number;
  address: string;
  master?: string;
  promiscuity?: number;
  linkinfo?: { info_kind?: string; info_slave_kind?: string; info_slave_data?: { hairpin?: boolean } };
  addr_info?: { family: string; local: string; prefixlen: number; scope: string }[];
}

export async function links(ns: string): Promise<IpLink[]> {
  return JSON.parse(await nsRun(ns, ['ip', '-json', '-d', 'link', 'show'])) as IpLink[];
}

export async function link(ns: string, name: string): Promise<IpLink | undefined> {
  return (await links(ns)).find((l) => l.ifname === name);
}

export const veths = async (ns: string): Promise<string[]> =>
  (await links(ns)).filter((l) => l.linkinfo?.info_kind === 'veth').map((l) => l.ifname);

/** Addresses per device, without kernel-made IPv6 link-local ones: { eth0: ['10.0.0.2/24'] }. */
export async function addrs(ns: string): Promise<Record<string, string[]>> {
  const ls = JSON.parse(await nsRun(ns, ['ip', '-json', 'addr', 'show'])) as IpLink[];
  const out: Record<string, string[]> = {};
  for (const l of ls) {
    const a = (l.addr_info ?? []).filter((x) => x.scope !== 'link' || x.family === 'inet').map((x) => `${x.local}/${x.prefixlen}`);
    if (a.length) out[l.ifname] = a.sort();
  }
  return out;
}

/** Routes as `ip route` prints them, both families, minus kernel-made IPv6 link-local routes, sorted. */
export async function routes(ns: string): Promise<string[]> {
  const v4 = await nsRun(ns, ['ip', '-4', 'route', 'show']);
  const v6 = await nsRun(ns, ['ip', '-6', 'route', 'show']);
  return [...v4.split('\n'), ...v6.split('\n')]
    .map((l) => l.trim().replace(/\s+/g, ' '))
    .filter((l) => l && !l.startsWith('fe80::/64') && !l.startsWith('multicast'))
    .sort();
}

/** iptables-save of one table without its comment and counter noise (lines starting with '#'; "[0:0]"). */
export async function iptSave(ns: string, family: 4 | 6, table = 'nat'): Promise<string[]> {
  const out = await nsRun(ns, [family === 4 ? 'iptables-save' : 'ip6tables-save', '-t', table]);
  return out
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'))
    .map((l) => l.replace(/ \[\d+:\d+\]$/, ''));
}

/** Chains named CNI-* in the nat table of both families. */
export async function cniChains(ns: string): Promise<string[]> {
  const lines = [...(await iptSave(ns, 4)), ...(await iptSave(ns, 6))];
  return lines.filter((l) => /^:CNI-/.test(l)).map((l) => l.slice(1).split(' ')[0]!);
}

/** Rules anywhere in nat (both families) that mention a CNI- chain. */
export async function cniRules(ns: string): Promise<string[]> {
  const lines = [...(await iptSave(ns, 4)), ...(await iptSave(ns, 6))];
  return lines.filter((l) => l.startsWith('-A ') && l.includes('CNI-'));
}

/**
 * What the kernel of each named namespace holds (links, addresses, routes and rules, neighbours, qdiscs and
 * filters, bridge ports, iptables, conntrack, listening sockets), as text for a failed traffic assertion: a
 * failure that does not reproduce can still be read afterwards.
 */
export async function netState(namespaces: Readonly<Record<string, string>>): Promise<string> {
  const commands: readonly (readonly string[])[] = [
    ['ip', '-d', 'link', 'show'],
    ['ip', 'addr', 'show'],
    ['ip', 'route', 'show', 'table', 'all'],
    ['ip', 'rule', 'show'],
    ['ip', 'neigh', 'show'],
    ['tc', '-s', 'qdisc', 'show'],
    ['bridge', 'link', 'show'],
    ['iptables-save', '-c'],
    ['conntrack', '-L'],
    ['ss', '-tuanp'],
  ];
  const out: string[] = [];
  for (const [label, ns] of Object.entries(namespaces)) {
    for (const argv of commands) {
      const r = await nsTry(ns, [...argv]);
      out.push(`--- ${label} (${ns}): ${argv.join(' ')}`, `${r.stdout}${r.stderr}`.trimEnd());
    }
    for (const dev of (await links(ns).catch(() => [] as IpLink[])).map((l) => l.ifname)) {
      const r = await nsTry(ns, ['tc', '-s', 'filter', 'show', 'dev', dev, 'ingress']);
      if (r.stdout.trim()) out.push(`--- ${label} (${ns}): tc -s filter show dev ${dev} ingress`, r.stdout.trimEnd());
    }
  }
  return out.join('\n');
}

export async function sysctl(ns: string, key: string): Promise<string> {
  return (await nsRun(ns, ['cat', `/proc/sys/${key.replace(/\./g, '/')}`])).trim();
}

/** One ping; retried a few times (bounded) because the first ARP on a fresh bridge port can be lost or slow under load. */
export async function ping(fromNs: string, to: string, tries = 5): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    const r = await exec(['ip', 'netns', 'exec', fromNs, 'ping', ...(to.includes(':') ? ['-6'] : []), '-c1', '-W2', to]);
    if (r.code === 0) return true;
  }
  return false;
}

// ----------------------------------------------------------------------------------------- IPAM state

export interface FeltAllocation {
  network: string;
  ip: string;
  containerId: string;
  ifname: string;
}

/** felt's allocations in `dataDir` (through `felt allocations --json`); none when the log does not exist. */
export async function feltAllocations(dataDir: string): Promise<FeltAllocation[]> {
  if (!existsSync(join(dataDir, 'felt.db'))) return [];
  const r = await exec([join(ROOT, 'dist', 'bin', 'felt'), 'allocations', '--data-dir', dataDir, '--json']);
  if (r.code !== 0) throw new Error(`felt allocations failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as FeltAllocation[];
}

/** The reference host-local's allocations: one file per address under <dataDir>/<network>/. */
export function refAllocations(dataDir: string, network: string): string[] {
  const d = join(dataDir, network);
  if (!existsSync(d)) return [];
  return readdirSync(d)
    .filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip'))
    .sort();
}

// ------------------------------------------------------------------------------------------ plugin calls

export interface Call {
  /** Plugin directory (FELT_CNI or REF_CNI); also CNI_PATH. */
  readonly dir: string;
  readonly type?: string;
  readonly hostNs: string;
  /** Pod namespace name; '' passes an empty CNI_NETNS; a path is passed as is. */
  readonly pod: string;
  readonly cid: string;
  readonly ifname?: string;
  readonly args?: string;
}

/** Run one command of a plugin the way a runtime does, inside `hostNs`, for the pod namespace `pod`. */
export const cni = (
  c: Call,
  command: 'ADD' | 'DEL' | 'CHECK',
  config: unknown,
  env?: Readonly<Record<string, string>>,
): Promise<CniOutcome> =>
  runCni({
    dir: c.dir,
    type: c.type ?? (config as { type: string }).type,
    command,
    hostNs: c.hostNs,
    containerId: c.cid,
    netns: c.pod === '' || c.pod.startsWith('/') ? c.pod : nsPath(c.pod),
    ifname: c.ifname ?? 'eth0',
    ...(c.args !== undefined ? { args: c.args } : {}),
    ...(env !== undefined ? { env } : {}),
    config,
  }).then(async (r) => {
    // A call that failed is printed if the test then fails: the answer says why (a failure a test expects stays
    // quiet). vitest is loaded only here: the benches use these helpers outside vitest, where it cannot load.
    if (r.code !== 0) {
      try {
        const { onTestFailed } = await import('vitest');
        onTestFailed(() =>
          console.error(
            `${command} ${(config as { type?: string }).type} ${c.cid} exited ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`,
          ),
        );
      } catch {
        // outside a test (a hook, a bench): nothing to attach to
      }
    }
    return r;
  });
