// npm run bench:cni: N ADD+DEL cycles of bridge + host-local with ipMasq, side by side in one run (test/bench/
// sides.ts): felt with a feltd serving (feltd started inside that side's host namespace), felt standalone, the
// reference 1.1.1 and 1.9.1; the sides take turns (rotated every cycle), each in its own host namespace, timed
// from spawn to exit as a runtime sees it (`ip netns exec <host> <plugin>`). Prints the medians and the
// ratios felt/reference as a markdown table (pasted into docs/benchmarks.md), then the peak RSS of one ADD
// (GNU time's %M: the largest resident set of the plugin or any process it waited for: for felt with feltd
// serving, the forwarder; for the reference, bridge and its host-local), measured apart from the timed cycles.
//
// BENCH_RSS_CYCLES=2000 (npm run bench:cni-rss) instead runs that many ADD+DEL cycles through felt-daemon
// alone and prints feltd's resident set before (after a warm-up of 50 cycles), along the way and after.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
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
  const fs = RSS_CYCLES > 0 ? flavours().filter((f) => f.name === 'felt-daemon') : flavours();
  const sides: Side[] = fs.map((f, i) => ({
    f,
    host: `${tag}-h${i}`,
    pod: `${tag}-p${i}`,
    data: mkdtempSync(join(tmpdir(), 'felt-bench-')),
    add: [],
    del: [],
  }));
  const rss = new Map<SideName, number | undefined>();
  const feltdRss: string[] = [];
  try {
    for (const s of sides) {
      ip('netns', 'add', s.host);
      ip('netns', 'add', s.pod);
      if (s.f.daemon) s.feltd = await startFeltd(s.host, s.f.dir);
    }
    if (RSS_CYCLES > 0) {
      const s = sides[0]!;
      for (let i = 0; i < 50; i++) await cycle(s, `w${i}`);
      const first = s.feltd!.rssKb();
      feltdRss.push(`| 0 (after 50 warm-up cycles) | ${(first / 1024).toFixed(1)} |`);
      for (let i = 0; i < RSS_CYCLES; i++) {
        const [a, d] = await cycle(s, `c${i}`);
        s.add.push(a);
        s.del.push(d);
        if ((i + 1) % Math.max(1, Math.floor(RSS_CYCLES / 4)) === 0)
          feltdRss.push(`| ${i + 1} | ${(s.feltd!.rssKb() / 1024).toFixed(1)} |`);
      }
      const last = s.feltd!.rssKb();
      console.log(heading(`feltd --cni-only serving bridge + host-local + ipMasq, ${RSS_CYCLES} ADD+DEL cycles`, before));
      console.log('| cycles | feltd RSS MB |');
      console.log('|---|---|');
      console.log(feltdRss.join('\n'));
      console.log(
        `growth over ${RSS_CYCLES} cycles: ${((last - first) / 1024).toFixed(1)} MB (${(((last - first) / first) * 100).toFixed(1)} %); ADD median ${median(s.add).toFixed(1)} ms, DEL ${median(s.del).toFixed(1)} ms`,
      );
      return;
    }
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

await main();
