// npm run bench:churn: pod churn on one bridge network. Per side (felt's dist/cni/bridge with felt's
// host-local, and the reference /usr/lib/cni/bridge + host-local; ipMasq, isGateway, a /24, own dataDir), one
// host namespace and N pod namespaces; a wave is N ADDs spawned at once, as a runtime starting N pods does
// (`ip netns exec <host> <plugin>`, CNI_* env, config on stdin), timed from the first spawn to the last exit;
// then N DELs at once. The sides alternate over ROUNDS rounds (one warm-up round each, not counted) and every
// wave is checked: all succeeded, no error mentions EEXIST / "File exists", distinct addresses; after the DEL
// wave no allocation, no host veth and no CNI- nat rule or chain is left.
//
// With BENCH_FILL=1 (default) it also fills a /21 with FILL allocations through host-local alone, 16 in
// parallel, and then times single ADDs with those allocations held, alternating sides.
//
// BENCH_FELT_CNI=<dir> runs another build of felt's plugins as the felt side (e.g. an older commit's dist/cni,
// to measure a change side by side); BENCH_N, BENCH_ROUNDS, BENCH_FILL=0 and BENCH_FILL_N resize the run.
//
// Prints markdown tables (pasted into docs/benchmarks.md).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FELT_CNI, REF_CNI, runCni, type CniOutcome } from '../support/cni.ts';
import { cniChains, cniRules, feltAllocations, refAllocations, veths } from '../support/ns.ts';

const N = Number(process.env['BENCH_N'] ?? 50);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const FILL = Number(process.env['BENCH_FILL_N'] ?? 2000);
const DO_FILL = (process.env['BENCH_FILL'] ?? '1') !== '0';
const FILL_PARALLEL = 16;
const tag = `fch${process.pid}`;
const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Side {
  readonly name: 'felt' | 'reference';
  readonly dir: string;
  readonly host: string;
  readonly data: string;
  readonly pods: string[];
  readonly add: number[];
  readonly del: number[];
  /** Per-call latency inside the waves (spawn to exit), all rounds. */
  readonly addCalls: number[];
  readonly delCalls: number[];
}

const NETWORK = 'churnnet';
const config = (s: Side, subnet = '10.97.0.0/24') => ({
  cniVersion: '1.0.0',
  name: NETWORK,
  type: 'bridge',
  bridge: 'cni0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir: s.data },
});

const eexist = (o: CniOutcome): boolean => /EEXIST|File exists/i.test(o.stdout + o.stderr);

async function wave(s: Side, command: 'ADD' | 'DEL', round: number): Promise<{ ms: number; outs: CniOutcome[] }> {
  const t0 = performance.now();
  const outs = await Promise.all(
    s.pods.map((pod, i) =>
      runCni({ dir: s.dir, type: 'bridge', command, hostNs: s.host, containerId: `r${round}c${i}`, netns: `/var/run/netns/${pod}`, ifname: 'eth0', config: config(s) }),
    ),
  );
  const ms = performance.now() - t0;
  const failed = outs.filter((o) => o.code !== 0);
  if (failed.length) throw new Error(`${s.name} ${command} round ${round}: ${failed.length}/${outs.length} failed, e.g. ${failed[0]!.stdout}${failed[0]!.stderr}`);
  const ee = outs.filter(eexist);
  if (ee.length) throw new Error(`${s.name} ${command} round ${round}: EEXIST surfaced: ${ee[0]!.stdout}${ee[0]!.stderr}`);
  return { ms, outs };
}

async function checkAdded(s: Side, outs: readonly CniOutcome[]): Promise<void> {
  const addrs = outs.map((o) => (o.json as { ips?: { address: string }[] }).ips?.[0]?.address);
  if (addrs.some((a) => !a)) throw new Error(`${s.name}: an ADD returned no address`);
  if (new Set(addrs).size !== addrs.length) throw new Error(`${s.name}: duplicate addresses: ${addrs.sort().join(' ')}`);
  const held = s.name === 'felt' ? (await feltAllocations(s.data)).length : refAllocations(s.data, NETWORK).length;
  if (held !== N) throw new Error(`${s.name}: ${held} allocations after ${N} ADDs`);
  const v = await veths(s.host);
  if (v.length !== N) throw new Error(`${s.name}: ${v.length} host veths after ${N} ADDs`);
}

async function checkClean(s: Side): Promise<void> {
  const held = s.name === 'felt' ? (await feltAllocations(s.data)).length : refAllocations(s.data, NETWORK).length;
  const v = await veths(s.host);
  const rules = await cniRules(s.host);
  const chains = await cniChains(s.host);
  if (held || v.length || rules.length || chains.length) {
    throw new Error(`${s.name} leaked after DEL: ${held} allocations, ${v.length} veths, rules ${rules.join('; ')}, chains ${chains.join(' ')}`);
  }
}

async function churn(sides: readonly Side[]): Promise<void> {
  for (let round = -1; round < ROUNDS; round++) {
    for (const s of round % 2 === 0 ? sides : [...sides].reverse()) {
      const a = await wave(s, 'ADD', round);
      await checkAdded(s, a.outs);
      const d = await wave(s, 'DEL', round);
      await checkClean(s);
      if (round >= 0) {
        s.add.push(a.ms);
        s.del.push(d.ms);
        s.addCalls.push(...a.outs.map((o) => o.ms));
        s.delCalls.push(...d.outs.map((o) => o.ms));
      }
      process.stderr.write(`round ${round} ${s.name}: ADD wave ${a.ms.toFixed(0)} ms, DEL wave ${d.ms.toFixed(0)} ms\n`);
    }
  }
}

/** host-local alone: `count` ADDs, `parallel` at a time; returns the wall time. */
async function fill(s: Side, count: number, parallel: number): Promise<number> {
  const conf = { ...config(s, '10.96.0.0/21'), type: 'host-local' };
  const ipam = { cniVersion: '1.0.0', name: NETWORK, ipam: conf.ipam, type: 'host-local' };
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      for (let i = next++; i < count; i = next++) {
        const o = await runCni({ dir: s.dir, type: 'host-local', command: 'ADD', containerId: `fill${i}`, netns: '/proc/self/ns/net', ifname: 'eth0', config: ipam });
        if (o.code !== 0) throw new Error(`${s.name} fill ${i}: ${o.stdout}${o.stderr}`);
      }
    }),
  );
  return performance.now() - t0;
}

async function one(s: Side, i: number): Promise<number> {
  const ipam = { cniVersion: '1.0.0', name: NETWORK, ipam: config(s, '10.96.0.0/21').ipam, type: 'host-local' };
  const common = { dir: s.dir, type: 'host-local', containerId: `one${i}`, netns: '/proc/self/ns/net', ifname: 'eth0', config: ipam };
  const a = await runCni({ ...common, command: 'ADD' });
  if (a.code !== 0) throw new Error(`${s.name} one ADD: ${a.stdout}${a.stderr}`);
  const d = await runCni({ ...common, command: 'DEL' });
  if (d.code !== 0) throw new Error(`${s.name} one DEL: ${d.stdout}${d.stderr}`);
  return a.ms;
}

async function main(): Promise<void> {
  const sides: Side[] = (['felt', 'reference'] as const).map((name) => ({
    name,
    dir: name === 'felt' ? (process.env['BENCH_FELT_CNI'] ?? FELT_CNI) : REF_CNI,
    host: `${tag}-${name}`,
    data: mkdtempSync(join(tmpdir(), `churn-${name}-`)),
    pods: Array.from({ length: N }, (_, i) => `${tag}-${name[0]}${i}`),
    add: [],
    del: [],
    addCalls: [],
    delCalls: [],
  }));
  const made: string[] = [];
  const fills: Record<string, { wall: number; one: number[] }> = {};
  try {
    for (const s of sides) for (const n of [s.host, ...s.pods]) (ip('netns', 'add', n), made.push(n));
    await churn(sides);
    if (DO_FILL) {
      for (const s of sides) {
        const wall = await fill(s, FILL, FILL_PARALLEL);
        const held = s.name === 'felt' ? (await feltAllocations(s.data)).length : refAllocations(s.data, NETWORK).length;
        if (held !== FILL) throw new Error(`${s.name}: ${held} allocations after filling ${FILL}`);
        fills[s.name] = { wall, one: [] };
        process.stderr.write(`fill ${s.name}: ${(wall / 1000).toFixed(1)} s\n`);
      }
      for (let i = 0; i < 20; i++) for (const s of i % 2 ? sides : [...sides].reverse()) fills[s.name]!.one.push(await one(s, i));
    }
  } finally {
    for (const n of made) {
      try {
        ip('netns', 'del', n);
      } catch {
        // already gone
      }
    }
    for (const s of sides) rmSync(s.data, { recursive: true, force: true });
  }
  const [f, r] = sides as [Side, Side];
  const row = (what: string, a: readonly number[], b: readonly number[]) =>
    `| ${what} | ${median(a).toFixed(0)} | ${median(b).toFixed(0)} | ${(median(a) / median(b)).toFixed(2)} | ${Math.min(...a).toFixed(0)}–${Math.max(...a).toFixed(0)} | ${Math.min(...b).toFixed(0)}–${Math.max(...b).toFixed(0)} |`;
  console.log(`pod churn: ${N} ADDs at once then ${N} DELs at once, bridge + host-local + ipMasq on a /24, ${ROUNDS} rounds alternating, ${new Date().toISOString().slice(0, 10)}, node ${process.version}`);
  console.log('| wave | felt median ms | reference median ms | ratio felt/ref | felt range | ref range |');
  console.log('|---|---|---|---|---|---|');
  console.log(row(`${N} ADDs at once`, f.add, r.add));
  console.log(row(`${N} DELs at once`, f.del, r.del));
  console.log(row('one ADD inside the wave (spawn to exit)', f.addCalls, r.addCalls));
  console.log(row('one DEL inside the wave (spawn to exit)', f.delCalls, r.delCalls));
  if (DO_FILL) {
    const ff = fills['felt']!;
    const rf = fills['reference']!;
    console.log('');
    console.log(`host-local alone, a /21: ${FILL} ADDs, ${FILL_PARALLEL} in parallel; then 20 single ADD+DELs each with ${FILL} allocations held (ADD timed)`);
    console.log('| measure | felt | reference | ratio felt/ref |');
    console.log('|---|---|---|---|');
    console.log(`| fill ${FILL} (s) | ${(ff.wall / 1000).toFixed(1)} | ${(rf.wall / 1000).toFixed(1)} | ${(ff.wall / rf.wall).toFixed(2)} |`);
    console.log(`| one ADD with ${FILL} held, median ms | ${median(ff.one).toFixed(1)} | ${median(rf.one).toFixed(1)} | ${(median(ff.one) / median(rf.one)).toFixed(2)} |`);
  }
}

await main();
