// What the CNI benches (cni, churn, chain, cni-rss) compare, side by side in one run: felt with a feltd
// serving the calls (a `feltd --cni-only` started inside that side's host namespace with `ip netns exec`, the
// forwarders pointed at its socket with FELT_CNI_SOCKET), felt standalone (FELT_CNI_SOCKET empty: every call
// runs in the forwarder's node bundle), the reference plugins 1.1.1 (Debian's, /usr/lib/cni) and 1.9.1
// (/work/shared/reference-plugins/v1.9.1, when present). BENCH_SIDES=felt-daemon,ref-1.1.1 picks some.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { FELT_CNI, REF_CNI, ROOT } from '../support/cni.ts';

/** shared/ sits beside the project (../shared); from a git worktree one level deeper (/work/wt/x), at ../../shared. */
export const REF_191 =
  process.env['BENCH_REF_191'] ??
  [join(ROOT, '..', 'shared'), join(ROOT, '..', '..', 'shared')]
    .map((d) => join(d, 'reference-plugins', 'v1.9.1'))
    .find((d) => existsSync(join(d, 'bridge'))) ??
  join(ROOT, '..', 'shared', 'reference-plugins', 'v1.9.1');

export type SideName = 'felt-daemon' | 'felt' | 'felt-base-daemon' | 'felt-base' | 'ref-1.1.1' | 'ref-1.9.1';

export interface Flavour {
  readonly name: SideName;
  /** The plugins' directory (CNI_PATH). */
  readonly dir: string;
  /** felt's sides: whether a feltd serves the calls. */
  readonly daemon: boolean;
  readonly felt: boolean;
}

const ALL: readonly Flavour[] = [
  { name: 'felt-daemon', dir: FELT_CNI, daemon: true, felt: true },
  { name: 'felt', dir: FELT_CNI, daemon: false, felt: true },
  { name: 'ref-1.1.1', dir: REF_CNI, daemon: false, felt: false },
  { name: 'ref-1.9.1', dir: REF_191, daemon: false, felt: false },
];

/**
 * The sides of this run: all four (1.9.1 only when its directory exists), or BENCH_SIDES. BENCH_FELT_BASE=<dir>
 * (another build's dist/cni, e.g. main's) adds felt-base (standalone) and felt-base-daemon (served by the
 * feltd of <dir>/../bin/feltd), to measure a change side by side.
 */
export function flavours(): Flavour[] {
  const want = (process.env['BENCH_SIDES'] ?? '').split(',').filter(Boolean);
  const base = process.env['BENCH_FELT_BASE'];
  const all: Flavour[] = [
    ...ALL.slice(0, 2),
    ...(base
      ? [
          { name: 'felt-base-daemon' as const, dir: base, daemon: true, felt: true },
          { name: 'felt-base' as const, dir: base, daemon: false, felt: true },
        ]
      : []),
    ...ALL.slice(2),
  ];
  return all.filter((f) => (want.length ? want.includes(f.name) : f.name !== 'ref-1.9.1' || existsSync(join(f.dir, 'bridge'))));
}

const connects = (path: string): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

export interface Feltd {
  readonly socket: string;
  readonly pid: number;
  /** Resident set size now, in kB (VmRSS). */
  readonly rssKb: () => number;
  /** CPU time feltd used so far (user + system), ms. */
  readonly cpuMs: () => number;
  /**
   * CPU time its spawning helpers (adapters/kernel/exec.ts spawnFromHelpers, `feltd-spawn`) used so far
   * (user + system), ms; 0 for a feltd without them.
   */
  readonly helpersCpuMs: () => number;
  readonly stop: () => Promise<void>;
}

/**
 * A `feltd --cni-only` serving on a socket in a temporary directory, started in the named network namespace
 * (`ip netns exec` execs, so the child's PID is feltd's), with this process's environment and `env`. FELT_TRACE
 * passes through for profiling.
 */
export async function startFeltd(
  hostNs: string,
  cniDir = join(ROOT, 'dist', 'cni'),
  env: Readonly<Record<string, string>> = {},
): Promise<Feltd> {
  const dir = mkdtempSync(join(tmpdir(), 'felt-bench-feltd-'));
  const socket = join(dir, 'cni.sock');
  const child: ChildProcess = spawn(
    'ip',
    [
      'netns',
      'exec',
      hostNs,
      join(cniDir, '..', 'bin', 'feltd'),
      '--cni-only',
      `--cni-socket=${socket}`,
      `--state-dir=${join(dir, 'state')}`,
    ],
    {
      // Its own call-lock file: feltds of other sides (and other suites) never wait on one another's.
      env: { ...process.env, FELT_LOCK_DIR: join(dir, 'locks'), ...env },
      stdio: ['ignore', 'ignore', process.env['BENCH_FELTD_LOG'] ? 'inherit' : 'ignore'],
    },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 30_000;
  while (!(await connects(socket))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`feltd --cni-only did not serve ${socket} in ${hostNs}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const pid = child.pid!;
  return {
    socket,
    pid,
    rssKb: () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN),
    cpuMs: () => cpuOf(pid),
    helpersCpuMs: () => {
      let ms = 0;
      for (const task of readdirSync(`/proc/${pid}/task`))
        for (const c of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean)) {
          try {
            if (readFileSync(`/proc/${c}/cmdline`, 'utf8').startsWith('feltd-spawn')) ms += cpuOf(Number(c));
          } catch {
            // gone meanwhile: a kernel tool, not a helper
          }
        }
      return ms;
    },
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A process's CPU time so far (user + system), ms; 0 when it is gone. */
function cpuOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

/** The environment a side's plugins get besides CNI_*: where the forwarder sends the call (empty: nowhere). */
export const sideEnv = (f: Flavour, feltd: Feltd | undefined): Record<string, string> =>
  f.felt ? { FELT_CNI_SOCKET: f.daemon && feltd ? feltd.socket : '' } : {};

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export const p90 = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)] ?? NaN;

export const load = (): string =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

/** The first line of every table: what ran, the date, node and the load average before and after. */
export const heading = (what: string, loadBefore: string): string =>
  `${what}, ${new Date().toISOString().slice(0, 10)}, node ${process.version}, load average before ${loadBefore}, after ${load()}`;

/** Rotate the sides by the round, so each side runs first as often as the others. */
export const rotated = <A>(xs: readonly A[], round: number): A[] => {
  const k = ((round % xs.length) + xs.length) % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
};

/** "| a | b |" cells of `values` per side, then the ratio of each felt side to each reference side. */
export function ratioTable(title: string, rows: readonly { what: string; bySide: ReadonlyMap<SideName, number> }[], digits = 1): string {
  const names = [...(rows[0]?.bySide.keys() ?? [])];
  const felts = names.filter((n) => n.startsWith('felt') && !n.startsWith('felt-base'));
  const refs = names.filter((n) => n.startsWith('ref'));
  // Each felt side against each reference; and against the same side of the base build, when there is one.
  const bases = felts.map((f) => [f, f === 'felt' ? 'felt-base' : 'felt-base-daemon'] as const).filter(([, b]) => names.includes(b));
  const ratioCols = [...felts.flatMap((f) => refs.map((r) => [f, r] as const)), ...bases];
  const head = `| ${title} | ${names.map((n) => `${n} median`).join(' | ')} | ${ratioCols.map(([f, r]) => `${f}/${r}`).join(' | ')} |`;
  const sep = `|${'---|'.repeat(1 + names.length + ratioCols.length)}`;
  const lines = rows.map(
    (row) =>
      `| ${row.what} | ${names.map((n) => row.bySide.get(n)!.toFixed(digits)).join(' | ')} | ${ratioCols.map(([f, r]) => (row.bySide.get(f)! / row.bySide.get(r)!).toFixed(2)).join(' | ')} |`,
  );
  return [head, sep, ...lines].join('\n');
}
