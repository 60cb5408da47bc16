// npm run bench:churn: pod churn on one bridge network. Per side (felt's dist/cni/bridge with felt's
// host-local, and the reference /usr/lib/cni/bridge + host-local; ipMasq, isGateway, a /24, own dataDir), one
// host namespace and N pod namespaces; a wave is N ADDs spawned at once, as a runtime starting N pods does
// (`ip netns exec <host> <plugin>`, CNI_* env, config on stdin), timed from the first spawn to the last exit;
// then N DELs at once. The sides take turns (rotated every round) over ROUNDS rounds (one warm-up round each, not counted) and every
// wave is checked: all succeeded, no error mentions EEXIST / "File exists", distinct addresses; after the DEL
// wave no allocation, no host veth and no CNI- nat rule or chain is left.
//
// With BENCH_FILL=1 it also fills a /21 with FILL allocations through host-local alone, 16 in
// parallel, and then times single ADDs with those allocations held, alternating sides.
//
// BENCH_FELT_CNI=<dir> runs another build of felt's plugins as the felt sides (e.g. an older commit's dist/cni,
// to measure a change side by side); BENCH_N, BENCH_ROUNDS, BENCH_FILL and BENCH_FILL_N resize the run,
// BENCH_SIDES picks sides.
//
// Prints markdown tables (pasted into docs/benchmarks.md).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCni, type CniOutcome } from '../support/cni.ts';
import { cniChains, cniRules, feltAllocations, refAllocations, veths } from '../support/ns.ts';
import { flavours, heading, load, median, ratioTable, rotated, sideEnv, startFeltd, type Feltd, type Flavour } from './sides.ts';

const N = Number(process.env['BENCH_N'] ?? 50);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const FILL = Number(process.env['BENCH_FILL_N'] ?? 2000);
const DO_FILL = (process.env['BENCH_FILL'] ?? '0') !== '0';
const FILL_PARALLEL = 16;
const tag = `fch${process.pid}`;
const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });

interface Side {
  readonly f: Flavour;
  readonly name: string;
  readonly dir: string;
  feltd?: Feltd;
  readonly host: string;
  readonly data: string;
  readonly pods: string[];
  readonly add: number[];
  readonly del: number[];
  /** Per-call latency inside the waves (spawn to exit), all rounds. */
  readonly addCalls: number[];
  readonly delCalls: number[];
  /** feltd's CPU time per wave (user + system), ms. */
  readonly feltdAddCpu: number[];
  readonly feltdDelCpu: number[];
  /** CPU time of feltd's spawning helpers per wave, ms. */
  readonly helpersAddCpu: number[];
  readonly helpersDelCpu: number[];
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
  const cpu0 = s.feltd?.cpuMs() ?? 0;
  const helpers0 = s.feltd?.helpersCpuMs() ?? 0;
  const outs = await Promise.all(
    s.pods.map((pod, i) =>
      runCni({
        dir: s.dir,
        type: 'bridge',
        command,
        hostNs: s.host,
        containerId: `r${round}c${i}`,
        netns: `/var/run/netns/${pod}`,
        ifname: 'eth0',
        config: config(s),
        env: sideEnv(s.f, s.feltd),
      }),
    ),
  );
  const ms = performance.now() - t0;
  if (s.feltd) (command === 'ADD' ? s.feltdAddCpu : s.feltdDelCpu).push(s.feltd.cpuMs() - cpu0);
  if (s.feltd) (command === 'ADD' ? s.helpersAddCpu : s.helpersDelCpu).push(s.feltd.helpersCpuMs() - helpers0);
  const failed = outs.filter((o) => o.code !== 0);
  if (failed.length)
    throw new Error(
      `${s.name} ${command} round ${round}: ${failed.length}/${outs.length} failed, e.g. ${failed[0]!.stdout}${failed[0]!.stderr}`,
    );
  const ee = outs.filter(eexist);
  if (ee.length) throw new Error(`${s.name} ${command} round ${round}: EEXIST surfaced: ${ee[0]!.stdout}${ee[0]!.stderr}`);
  return { ms, outs };
}

async function checkAdded(s: Side, outs: readonly CniOutcome[]): Promise<void> {
  const addrs = outs.map((o) => (o.json as { ips?: { address: string }[] }).ips?.[0]?.address);
  if (addrs.some((a) => !a)) throw new Error(`${s.name}: an ADD returned no address`);
  if (new Set(addrs).size !== addrs.length) throw new Error(`${s.name}: duplicate addresses: ${addrs.sort().join(' ')}`);
  const held = s.f.felt ? (await feltAllocations(s.data)).length : refAllocations(s.data, NETWORK).length;
  if (held !== N) throw new Error(`${s.name}: ${held} allocations after ${N} ADDs`);
  const v = await veths(s.host);
  if (v.length !== N) throw new Error(`${s.name}: ${v.length} host veths after ${N} ADDs`);
}

async function checkClean(s: Side): Promise<void> {
  const held = s.f.felt ? (await feltAllocations(s.data)).length : refAllocations(s.data, NETWORK).length;
  const v = await veths(s.host);
  const rules = await cniRules(s.host);
  const chains = await cniChains(s.host);
  if (held || v.length || rules.length || chains.length) {
    throw new Error(
      `${s.name} leaked after DEL: ${held} allocations, ${v.length} veths, rules ${rules.join('; ')}, chains ${chains.join(' ')}`,
    );
  }
}

async function churn(sides: readonly Side[]): Promise<void> {
  for (let round = -1; round < ROUNDS; round++) {
    for (const s of rotated(sides, round)) {
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
        const o = await runCni({
          dir: s.dir,
          type: 'host-local',
          command: 'ADD',
          containerId: `fill${i}`,
          netns: '/proc/self/ns/net',
          ifname: 'eth0',
          config: ipam,
          env: sideEnv(s.f, s.feltd),
        });
        if (o.code !== 0) throw new Error(`${s.name} fill ${i}: ${o.stdout}${o.stderr}`);
      }
    }),
  );
  return performance.now() - t0;
}

async function one(s: Side, i: number): Promise<number> {
  const ipam = { cniVersion: '1.0.0', name: NETWORK, ipam: config(s, '10.96.0.0/21').ipam, type: 'host-local' };
  const common = {
    dir: s.dir,
    type: 'host-local',
    containerId: `one${i}`,
    netns: '/proc/self/ns/net',
    ifname: 'eth0',
    config: ipam,
    env: sideEnv(s.f, s.feltd),
  };
  const a = await runCni({ ...common, command: 'ADD' });
  if (a.code !== 0) throw new Error(`${s.name} one ADD: ${a.stdout}${a.stderr}`);
  const d = await runCni({ ...common, command: 'DEL' });
  if (d.code !== 0) throw new Error(`${s.name} one DEL: ${d.stdout}${d.stderr}`);
  return a.ms;
}

async function main(): Promise<void> {
  const before = load();
  const sides: Side[] = flavours().map((f, k) => ({
    f,
    name: f.name,
    dir: f.felt ? (process.env['BENCH_FELT_CNI'] ?? f.dir) : f.dir,
    host: `${tag}-h${k}`,
    data: mkdtempSync(join(tmpdir(), `churn-${f.name}-`)),
    pods: Array.from({ length: N }, (_, i) => `${tag}-${k}p${i}`),
    add: [],
    del: [],
    addCalls: [],
    delCalls: [],
    feltdAddCpu: [],
    feltdDelCpu: [],
    helpersAddCpu: [],
    helpersDelCpu: [],
  }));
  const made: string[] = [];
  const fills: Record<string, { wall: number; one: number[] }> = {};
  try {
    for (const s of sides) for (const n of [s.host, ...s.pods]) (ip('netns', 'add', n), made.push(n));
    for (const s of sides) if (s.f.daemon) s.feltd = await startFeltd(s.host, s.f.dir);
    await churn(sides);
    if (DO_FILL) {
      for (const s of sides) {
        const wall = await fill(s, FILL, FILL_PARALLEL);
        const held = s.f.felt ? (await feltAllocations(s.data)).length : refAllocations(s.data, NETWORK).length;
        if (held !== FILL) throw new Error(`${s.name}: ${held} allocations after filling ${FILL}`);
        fills[s.name] = { wall, one: [] };
        process.stderr.write(`fill ${s.name}: ${(wall / 1000).toFixed(1)} s\n`);
      }
      for (let i = 0; i < 20; i++) for (const s of rotated(sides, i)) fills[s.name]!.one.push(await one(s, i));
    }
  } finally {
    for (const s of sides) await s.feltd?.stop();
    for (const n of made) {
      try {
        ip('netns', 'del', n);
      } catch {
        // already gone
      }
    }
    for (const s of sides) rmSync(s.data, { recursive: true, force: true });
  }
  const by = (f: (s: Side) => number) => new Map(sides.map((s) => [s.f.name, f(s)] as const));
  console.log(
    heading(
      `pod churn: ${N} ADDs at once then ${N} DELs at once, bridge + host-local + ipMasq on a /24, ${ROUNDS} rounds, sides rotated`,
      before,
    ),
  );
  console.log(
    ratioTable(
      'wave, ms',
      [
        { what: `${N} ADDs at once (wall)`, bySide: by((s) => median(s.add)) },
        { what: `${N} DELs at once (wall)`, bySide: by((s) => median(s.del)) },
        { what: 'one ADD inside the wave (spawn to exit)', bySide: by((s) => median(s.addCalls)) },
        { what: 'one DEL inside the wave (spawn to exit)', bySide: by((s) => median(s.delCalls)) },
      ],
      0,
    ),
  );
  for (const s of sides)
    if (s.feltd)
      console.log(
        `${s.name}: feltd's own CPU time per wave (user + system, not its children's): ADD ${median(s.feltdAddCpu).toFixed(0)} ms, DEL ${median(s.feltdDelCpu).toFixed(0)} ms; its spawning helpers': ADD ${median(s.helpersAddCpu).toFixed(0)} ms, DEL ${median(s.helpersDelCpu).toFixed(0)} ms`,
      );
  console.log(
    `ranges (ms): ${sides.map((s) => `${s.name} ADD ${Math.min(...s.add).toFixed(0)}–${Math.max(...s.add).toFixed(0)}, DEL ${Math.min(...s.del).toFixed(0)}–${Math.max(...s.del).toFixed(0)}`).join('; ')}`,
  );
  if (DO_FILL) {
    console.log('');
    console.log(
      `host-local alone, a /21: ${FILL} ADDs, ${FILL_PARALLEL} in parallel; then 20 single ADD+DELs each with ${FILL} allocations held (ADD timed)`,
    );
    console.log(
      ratioTable('measure', [
        { what: `fill ${FILL} (s)`, bySide: by((s) => fills[s.name]!.wall / 1000) },
        { what: `one ADD with ${FILL} held, median ms`, bySide: by((s) => median(fills[s.name]!.one)) },
      ]),
    );
  }
}

await main();
