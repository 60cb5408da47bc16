// npm run bench:cni: N ADD+DEL cycles of bridge + host-local with ipMasq, side by side in one run (test/bench/
// sides.ts): felt with a feltd serving (feltd started inside that side's host namespace), felt standalone, the
// reference 1.1.1 and 1.9.1; the sides take turns (rotated every cycle), each in its own host namespace, timed
// from spawn to exit as a runtime sees it (`ip netns exec <host> <plugin>`). Prints the medians and the
// ratios felt/reference as a markdown table (pasted into docs/benchmarks.md), then the peak RSS of one ADD
// (GNU time's %M: the largest resident set of the plugin or any process it waited for: for felt with feltd
// serving, the forwarder; for the reference, bridge and its host-local), measured apart from the timed cycles.
//
// BENCH_RSS_CYCLES=2000 (npm run bench:cni-rss) instead runs that many ADD+DEL cycles through felt-daemon
// (and felt-base-daemon with BENCH_FELT_BASE) alone and prints feltd's resident set along the way and its live
// heap after a full collection (rssRun below).

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCni } from '../support/cni.ts';
import {
  flavours,
  heading,
  load,
  median,
  p90,
  ratioTable,
  rotated,
  sideEnv,
  startFeltd,
  type Feltd,
  type Flavour,
  type SideName,
} from './sides.ts';

const TIME = '/usr/bin/time';

const N = Number(process.env['BENCH_N'] ?? 40);
const RSS_CYCLES = Number(process.env['BENCH_RSS_CYCLES'] ?? 0);
const tag = `fb${process.pid}`;
const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });

interface Side {
  readonly f: Flavour;
  readonly host: string;
  readonly pod: string;
  readonly data: string;
  feltd?: Feltd;
  readonly add: number[];
  readonly del: number[];
}

const config = (s: Side) => ({
  cniVersion: '1.0.0',
  name: 'benchnet',
  type: 'bridge',
  bridge: 'cni0',
  isGateway: true,
  isDefaultGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.99.0.0/16' }]], dataDir: s.data },
});

/** Peak RSS in kB of one `command` of `s` under GNU time (undefined without /usr/bin/time). */
function peakRss(s: Side, command: 'ADD' | 'DEL', containerId: string): Promise<number | undefined> {
  if (!existsSync(TIME)) return Promise.resolve(undefined);
  const env = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_PATH: s.f.dir,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: `/var/run/netns/${s.pod}`,
    CNI_IFNAME: 'eth0',
    ...sideEnv(s.f, s.feltd),
  };
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', s.host, TIME, '-f', 'felt-rss-kb %M', join(s.f.dir, 'bridge')], {
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const err: Buffer[] = [];
    child.stdout.resume();
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      const text = Buffer.concat(err).toString();
      const m = /felt-rss-kb (\d+)/.exec(text);
      if (code !== 0 || !m) reject(new Error(`${s.f.name} ${command} under ${TIME} failed (exit ${code}): ${text}`));
      else resolve(Number(m[1]));
    });
    child.stdin.end(JSON.stringify(config(s)));
  });
}

async function cycle(s: Side, id: string): Promise<[number, number]> {
  const common = {
    dir: s.f.dir,
    type: 'bridge',
    hostNs: s.host,
    containerId: id,
    netns: `/var/run/netns/${s.pod}`,
    ifname: 'eth0',
    config: config(s),
    env: sideEnv(s.f, s.feltd),
  };
  const a = await runCni({ ...common, command: 'ADD' });
  if (a.code !== 0) throw new Error(`${s.f.name} ADD failed: ${a.stdout}${a.stderr}`);
  const d = await runCni({ ...common, command: 'DEL' });
  if (d.code !== 0) throw new Error(`${s.f.name} DEL failed: ${d.stdout}${d.stderr}`);
  return [a.ms, d.ms];
}

async function main(): Promise<void> {
  const before = load();
  const fs = RSS_CYCLES > 0 ? flavours().filter((f) => f.daemon) : flavours();
  const sides: Side[] = fs.map((f, i) => ({
    f,
    host: `${tag}-h${i}`,
    pod: `${tag}-p${i}`,
    data: mkdtempSync(join(tmpdir(), 'felt-bench-')),
    add: [],
    del: [],
  }));
  const rss = new Map<SideName, number | undefined>();
  try {
    for (const s of sides) {
      ip('netns', 'add', s.host);
      ip('netns', 'add', s.pod);
      if (s.f.daemon) {
        // The RSS run asks feltd for heap snapshots (node's own signal handler: nothing added to feltd).
        const diag: Record<string, string> =
          RSS_CYCLES > 0 ? { NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${s.data}` } : {};
        s.feltd = await startFeltd(s.host, s.f.dir, diag);
      }
    }
    if (RSS_CYCLES > 0) return await rssRun(sides, before);
    // One warm-up cycle each (page cache, bridge creation, feltd's first call), not counted.
    for (let i = -1; i < N; i++) {
      for (const s of rotated(sides, i)) {
        const [a, d] = await cycle(s, `c${i + 1}`);
        if (i >= 0) {
          s.add.push(a);
          s.del.push(d);
        }
      }
    }
    // Peak RSS of one ADD (then its DEL), apart from the timed cycles.
    for (const s of sides) {
      rss.set(s.f.name, await peakRss(s, 'ADD', 'rss'));
      await peakRss(s, 'DEL', 'rss');
    }
  } finally {
    for (const s of sides) {
      await s.feltd?.stop();
      for (const n of [s.pod, s.host]) {
        try {
          ip('netns', 'del', n);
        } catch {
          // never made
        }
      }
      rmSync(s.data, { recursive: true, force: true });
    }
  }
  const by = (f: (s: Side) => number) => new Map(sides.map((s) => [s.f.name, f(s)] as const));
  const both = (s: Side): number[] => s.add.map((x, i) => x + s.del[i]!);
  console.log(heading(`bridge + host-local + ipMasq, ${N} ADD+DEL cycles each, sides rotated`, before));
  console.log(
    ratioTable('ms', [
      { what: 'ADD', bySide: by((s) => median(s.add)) },
      { what: 'DEL', bySide: by((s) => median(s.del)) },
      { what: 'ADD+DEL', bySide: by((s) => median(both(s))) },
      { what: 'ADD p90', bySide: by((s) => p90(s.add)) },
      { what: 'DEL p90', bySide: by((s) => p90(s.del)) },
    ]),
  );
  if ([...rss.values()].every((x) => x !== undefined)) {
    console.log('');
    console.log(
      ratioTable(
        'peak RSS of one ADD, MB',
        [{ what: `${TIME} %M of the plugin (felt-daemon: the forwarder)`, bySide: by((s) => rss.get(s.f.name)! / 1024) }],
        2,
      ),
    );
  } else console.log(`(no ${TIME}: peak RSS not measured)`);
}

/**
 * The live heap of `s`'s feltd after a full garbage collection: a heap snapshot (node's --heapsnapshot-signal,
 * which collects first) written to its data dir, summed by V8's node types. `code`: V8's code objects (bytecode,
 * optimized code and their metadata).
 */
async function heapAfterGc(s: Side): Promise<{ total: number; code: number; byKind: Map<string, number> }> {
  const had = new Set(readdirSync(s.data));
  process.kill(s.feltd!.pid, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (Date.now() > deadline) throw new Error(`${s.f.name}: feltd wrote no heap snapshot in ${s.data}`);
    await new Promise((r) => setTimeout(r, 200));
    const file = readdirSync(s.data).find((f) => f.endsWith('.heapsnapshot') && !had.has(f));
    if (!file) continue;
    let snap: HeapSnapshot;
    try {
      snap = JSON.parse(readFileSync(join(s.data, file), 'utf8')) as HeapSnapshot;
    } catch {
      continue; // still being written
    }
    rmSync(join(s.data, file));
    const fields = snap.snapshot.meta.node_fields;
    const types = snap.snapshot.meta.node_types[0];
    const [ty, nm, sz] = [fields.indexOf('type'), fields.indexOf('name'), fields.indexOf('self_size')];
    const byKind = new Map<string, number>();
    let total = 0;
    let code = 0;
    for (let i = 0; i < snap.nodes.length; i += fields.length) {
      const type = types[snap.nodes[i + ty]!]!;
      const size = snap.nodes[i + sz]!;
      total += size;
      if (type === 'code') code += size;
      else {
        const kind = type === 'object' || type === 'closure' || type === 'hidden' ? `${type} ${snap.strings[snap.nodes[i + nm]!]}` : type;
        byKind.set(kind, (byKind.get(kind) ?? 0) + size);
      }
    }
    return { total, code, byKind };
  }
}

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/**
 * BENCH_RSS_CYCLES: feltd's resident set over that many ADD+DEL cycles, after BENCH_RSS_WARMUP (200) cycles that
 * let V8 settle (its heap sizes, the first full collections, the compiler's hot code), read every tenth of the
 * run without disturbing feltd; then its live heap after a full collection (a heap snapshot) at the end and
 * after a quarter as many cycles again, to tell kept data from compiled code. The daemon sides
 * (felt-daemon, and felt-base-daemon with BENCH_FELT_BASE) take turns cycle by cycle.
 */
async function rssRun(sides: Side[], before: string): Promise<void> {
  const warmup = Number(process.env['BENCH_RSS_WARMUP'] ?? 200);
  const mb = (kb: number): string => (kb / 1024).toFixed(1);
  const rows: string[] = [];
  const point = (what: string): number[] => {
    const kb = sides.map((s) => s.feltd!.rssKb());
    rows.push(`| ${what} | ${kb.map(mb).join(' | ')} |`);
    return kb;
  };
  const cycles = async (n: number, prefix: string, every?: (i: number) => void): Promise<void> => {
    for (let i = 0; i < n; i++) {
      for (const s of rotated(sides, i)) {
        const [a, d] = await cycle(s, `${prefix}${i}`);
        if (every) {
          s.add.push(a);
          s.del.push(d);
        }
      }
      every?.(i + 1);
    }
  };
  await cycles(1, 'f');
  point('1 (the first cycle)');
  await cycles(warmup - 1, 'w');
  const first = point(`${warmup} (warm-up)`);
  const cpu0 = sides.map((s) => s.feltd!.cpuMs());
  const step = Math.max(1, Math.floor(RSS_CYCLES / 10));
  const points: number[][] = [];
  await cycles(RSS_CYCLES, 'c', (i) => {
    if (i % step === 0 || i === RSS_CYCLES) points.push(point(`${warmup} + ${i}`));
  });
  const cpu = sides.map((s, k) => (s.feltd!.cpuMs() - cpu0[k]!) / RSS_CYCLES);
  // Heap snapshots make feltd's resident set grow (the snapshot's own memory): no RSS is read after the first.
  const extra = Math.max(1, Math.floor(RSS_CYCLES / 4));
  const heapA = await Promise.all(sides.map(heapAfterGc));
  await cycles(extra, 'h');
  const heapB = await Promise.all(sides.map(heapAfterGc));

  console.log(
    heading(
      `feltd --cni-only serving bridge + host-local + ipMasq, ${warmup} warm-up + ${RSS_CYCLES} ADD+DEL cycles${sides.length > 1 ? ', sides alternating' : ''}`,
      before,
    ),
  );
  console.log(`| cycles | ${sides.map((s) => `${s.f.name} feltd RSS MB`).join(' | ')} |`);
  console.log(`|---|${sides.map(() => '---|').join('')}`);
  console.log(rows.join('\n'));
  console.log('');
  const second = points.slice(Math.floor(points.length / 2));
  for (const [k, s] of sides.entries()) {
    const last = points[points.length - 1]![k]!;
    const half = second.map((p) => p[k]!);
    const heapMb = (h: { total: number }): string => (h.total / 1048576).toFixed(2);
    const a = heapA[k]!;
    const b = heapB[k]!;
    const kinds = [...new Set([...a.byKind.keys(), ...b.byKind.keys()])]
      .map((kind) => [kind, (b.byKind.get(kind) ?? 0) - (a.byKind.get(kind) ?? 0)] as const)
      .sort((x, y) => y[1] - x[1])
      .slice(0, 3)
      .map(([kind, d]) => `${kind} ${(d / 1024).toFixed(0)}`)
      .join(', ');
    console.log(
      `${s.f.name}: RSS ${mb(first[k]!)} MB after the warm-up, ${mb(last)} after ${RSS_CYCLES} more cycles (${last >= first[k]! ? '+' : ''}${mb(last - first[k]!)} MB); ` +
        `over the second half of the run ${mb(Math.min(...half))}–${mb(Math.max(...half))} MB; feltd CPU ${cpu[k]!.toFixed(1)} ms per cycle; ` +
        `ADD median ${median(s.add).toFixed(1)} ms, DEL ${median(s.del).toFixed(1)} ms`,
    );
    console.log(
      `${s.f.name}: live heap after a full GC ${heapMb(a)} MB after the run, ${heapMb(b)} MB after ${extra} more cycles: ` +
        `${((b.total - a.total) / 1024).toFixed(0)} kB, of which V8's code objects ${((b.code - a.code) / 1024).toFixed(0)} kB; ` +
        `largest other changes (kB): ${kinds}`,
    );
  }
}

await main();
