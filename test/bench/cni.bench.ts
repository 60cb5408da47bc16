// npm run bench: N ADD+DEL cycles of bridge + host-local with ipMasq, through felt's executables and through
// the reference plugins in /usr/lib/cni, alternately in one run, each in its own host namespace. Prints the
// medians and the ratio felt/reference as a markdown table (pasted into docs/benchmarks.md), then the peak
// RSS of one ADD of each (GNU time's %M: the largest resident set of the plugin or any process it waited for,
// e.g. the reference's host-local), measured apart from the timed cycles.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { FELT_CNI, REF_CNI, runCni } from '../support/cni.ts';

const TIME = '/usr/bin/time';

const N = Number(process.env['BENCH_N'] ?? 40);
const tag = `fb${process.pid}`;
const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const p90 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!;

interface Side {
  name: string;
  dir: string;
  host: string;
  data: string;
  add: number[];
  del: number[];
}

// BENCH_FELT_DIRS="label=dir,label=dir": more felt builds (e.g. of earlier commits) in the same alternation,
// each compared with the reference, to measure what one change pays. The first felt side is `felt`.
const extra = (process.env['BENCH_FELT_DIRS'] ?? '')
  .split(',')
  .filter(Boolean)
  .map((x) => [x.slice(0, x.indexOf('=')), x.slice(x.indexOf('=') + 1)] as const);
const side = (name: string, dir: string, i: number): Side => ({ name, dir, host: `${tag}-${i}`, data: mkdtempSync(join(tmpdir(), 'felt-bench-')), add: [], del: [] });
const sides: Side[] = [side('felt', FELT_CNI, 0), side('reference', REF_CNI, 1), ...extra.map(([name, dir], i) => side(name, dir, i + 2))];

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
function peakRss(s: Side, command: 'ADD' | 'DEL', pod: string, containerId: string): Promise<number | undefined> {
  if (!existsSync(TIME)) return Promise.resolve(undefined);
  const env = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: command, CNI_PATH: s.dir, CNI_CONTAINERID: containerId, CNI_NETNS: `/var/run/netns/${pod}`, CNI_IFNAME: 'eth0' };
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', s.host, TIME, '-f', 'felt-rss-kb %M', join(s.dir, 'bridge')], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const err: Buffer[] = [];
    child.stdout.resume();
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      const text = Buffer.concat(err).toString();
      const m = /felt-rss-kb (\d+)/.exec(text);
      if (code !== 0 || !m) reject(new Error(`${s.name} ${command} under ${TIME} failed (exit ${code}): ${text}`));
      else resolve(Number(m[1]));
    });
    child.stdin.end(JSON.stringify(config(s)));
  });
}

async function main(): Promise<void> {
  const load = loadavg().map((x) => x.toFixed(2)).join(' ');
  const rss = new Map<string, number | undefined>();
  for (const s of sides) ip('netns', 'add', s.host);
  try {
    // One warm-up cycle each (page cache, bridge creation), not counted.
    for (let i = -1; i < N; i++) {
      for (const s of i % 2 === 0 ? sides : [...sides].reverse()) {
        const pod = `${tag}-pod`;
        ip('netns', 'add', pod);
        try {
          const common = { dir: s.dir, type: 'bridge', hostNs: s.host, containerId: `c${i + 1}`, netns: `/var/run/netns/${pod}`, ifname: 'eth0', config: config(s) };
          const a = await runCni({ ...common, command: 'ADD' });
          if (a.code !== 0) throw new Error(`${s.name} ADD failed: ${a.stdout}${a.stderr}`);
          const d = await runCni({ ...common, command: 'DEL' });
          if (d.code !== 0) throw new Error(`${s.name} DEL failed: ${d.stdout}${d.stderr}`);
          if (i >= 0) {
            s.add.push(a.ms);
            s.del.push(d.ms);
          }
        } finally {
          ip('netns', 'del', pod);
        }
      }
    }
    // Peak RSS of one ADD (then its DEL), apart from the timed cycles.
    for (const s of sides.slice(0, 2)) {
      const pod = `${tag}-pod`;
      ip('netns', 'add', pod);
      try {
        rss.set(s.name, await peakRss(s, 'ADD', pod, 'rss'));
        await peakRss(s, 'DEL', pod, 'rss');
      } finally {
        ip('netns', 'del', pod);
      }
    }
  } finally {
    for (const s of sides) {
      ip('netns', 'del', s.host);
      rmSync(s.data, { recursive: true, force: true });
    }
  }
  const [f, r] = sides as [Side, Side];
  const row = (what: string, a: number[], b: number[]) =>
    `| ${what} | ${median(a).toFixed(1)} | ${median(b).toFixed(1)} | ${(median(a) / median(b)).toFixed(2)} | ${p90(a).toFixed(1)} | ${p90(b).toFixed(1)} |`;
  const both = (s: Side): number[] => s.add.map((x, i) => x + s.del[i]!);
  console.log(`bridge + host-local + ipMasq, ${N} ADD+DEL cycles each, alternating, ${new Date().toISOString().slice(0, 10)}, node ${process.version}, load average before ${load}, after ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log('| command | felt median ms | reference median ms | ratio felt/ref | felt p90 | ref p90 |');
  console.log('|---|---|---|---|---|---|');
  console.log(row('ADD', f.add, r.add));
  console.log(row('DEL', f.del, r.del));
  console.log(row('ADD+DEL', both(f), both(r)));
  const [fr, rr] = [rss.get('felt'), rss.get('reference')];
  if (fr !== undefined && rr !== undefined) {
    console.log(`| peak RSS of one ADD, MB | ${(fr / 1024).toFixed(1)} | ${(rr / 1024).toFixed(1)} | ${(fr / rr).toFixed(2)} | | |`);
  } else console.log(`(no ${TIME}: peak RSS not measured)`);
  if (sides.length > 2) {
    console.log('\n| felt build | ADD median ms | ratio | DEL median ms | ratio | ADD+DEL median ms | ratio |');
    console.log('|---|---|---|---|---|---|---|');
    for (const s of [sides[0]!, ...sides.slice(2)]) {
      const cell = (a: number[], b: number[]) => `${median(a).toFixed(1)} | ${(median(a) / median(b)).toFixed(2)}`;
      console.log(`| ${s.name} | ${cell(s.add, r.add)} | ${cell(s.del, r.del)} | ${cell(both(s), both(r))} |`);
    }
  }
}

await main();
