// npm run bench:kernel: the Linux kernel adapter (observe → plan → apply: one `ip -force -batch` process per apply) against the same
// route lines fed straight to `ip -batch`, alternately in one run, each side in its own namespace. Prints the
// medians and the ratio felt/raw as a markdown table (pasted into docs/benchmarks.md). What the adapter does at
// this size (every route lands, a replan is empty, one process per apply) is tested in
// test/adapters/kernel.test.ts; this file only measures.

import * as E from 'fp-ts/lib/Either.js';
import { linuxKernel } from '../../adapters/kernel/linux.ts';
import type { Kernel, ObserveRequest } from '../../adapters/kernel/types.ts';
import { emptyKernelState, HOST, type KernelState, type Op, type Route } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';
import { scopeOf } from '../../core/kernel/scope.ts';
import { cleanupNetns, createNetns, execFile, type Netns } from '../support/netns.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 9);
const N = Number(process.env['BENCH_ROUTES'] ?? 10_000);

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const time = async <T>(f: () => Promise<T> | T): Promise<[number, T]> => {
  const t0 = performance.now();
  const r = await f();
  return [performance.now() - t0, r];
};

async function observe(k: Kernel, req: ObserveRequest): Promise<KernelState> {
  const r = await k.observe(req)();
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
}
async function apply(k: Kernel, ops: readonly Op[]): Promise<void> {
  const r = await k.apply(ops)();
  if (E.isLeft(r)) throw new Error(r.left.msg);
}

const base = (ns: string): KernelState => ({
  ...emptyKernelState(),
  links: [
    { ns, name: 'r0', kind: 'veth', up: true, veth: { peer: 'r1', peerNs: ns } },
    { ns, name: 'r1', kind: 'veth', up: true },
  ],
  addresses: [{ ns, dev: 'r0', cidr: '10.255.0.1/16' }],
});
const routes = (ns: string, n: number, gw: string): Route[] =>
  Array.from({ length: n }, (_, i) => ({ ns, dst: `10.${(i >> 8) & 255}.${i & 255}.0/24`, gw, dev: 'r0' }));
const withRoutes = (ns: string, n: number, gw: string): KernelState => ({ ...base(ns), routes: routes(ns, n, gw) });

/** felt: plan against a fresh observation (untimed), then the timed apply. */
async function feltApply(k: Kernel, desired: KernelState, ns: string): Promise<number> {
  const ops = plan(desired, await observe(k, { namespaces: [ns] }), scopeOf(withRoutes(ns, N, '10.255.0.2')));
  const [ms] = await time(() => apply(k, ops));
  return ms;
}

/** raw: the same routes as `route replace` (or `route del`) lines to one `ip -batch` in the namespace. */
async function rawApply(ns: Netns, n: number, gw: string, verb: 'replace' | 'del' = 'replace'): Promise<number> {
  const input =
    routes(ns.path, n, gw)
      .map((r) => `route ${verb} ${r.dst} via ${r.gw} dev ${r.dev}`)
      .join('\n') + '\n';
  const [ms, r] = await time(() => execFile(['nsenter', `--net=${ns.path}`, 'ip', '-batch', '-'], { input }));
  if (r.code !== 0) throw new Error(`ip -batch: ${r.stderr}`);
  return ms;
}
async function rawFlush(ns: Netns): Promise<void> {
  await ns.run(['ip', 'route', 'flush', 'dev', 'r0', 'proto', 'boot']);
}
async function rawObserve(ns: Netns): Promise<number> {
  const [ms, r] = await time(() => execFile(['nsenter', `--net=${ns.path}`, 'ip', '-json', '-d', 'route', 'show']));
  if (r.code !== 0) throw new Error(`ip route show: ${r.stderr}`);
  JSON.parse(r.stdout);
  return ms;
}

const rows: [string, number[], number[]][] = [];
const row = (name: string): [number[], number[]] => {
  const r: [string, number[], number[]] = [name, [], []];
  rows.push(r);
  return [r[1], r[2]];
};

try {
  const host = await createNetns('fkb');
  const felt = await createNetns('fkb');
  const raw = await createNetns('fkb');
  const k = linuxKernel({ pid: process.pid, hostNetns: host.path });
  for (const ns of [felt.path, raw.path]) await apply(k, plan(base(ns), await observe(k, { namespaces: [ns] }), scopeOf(base(ns))));

  const [newF, newR] = row(`apply ${N} new routes`);
  const [chgF, chgR] = row(`apply ${N} changed routes (new gateway)`);
  const [delF, delR] = row(`remove ${N} routes`);
  const [obsF, obsR] = row(`observe a namespace with ${N} routes`);
  const [smallF, smallR] = row('apply 100 changed routes');
  for (let round = 0; round < ROUNDS; round++) {
    // felt and raw alternate within a round, so both see the same machine.
    newF.push(await feltApply(k, withRoutes(felt.path, N, '10.255.0.2'), felt.path));
    newR.push(await rawApply(raw, N, '10.255.0.2'));
    chgF.push(await feltApply(k, withRoutes(felt.path, N, '10.255.0.3'), felt.path));
    chgR.push(await rawApply(raw, N, '10.255.0.3'));
    obsF.push((await time(() => observe(k, { namespaces: [felt.path] })))[0]);
    obsR.push(await rawObserve(raw));
    delF.push(await feltApply(k, base(felt.path), felt.path));
    delR.push(await rawApply(raw, N, '10.255.0.3', 'del'));
    for (let i = 0; i < 2; i++) {
      smallF.push(await feltApply(k, withRoutes(felt.path, 100, i % 2 ? '10.255.0.2' : '10.255.0.3'), felt.path));
      smallR.push(await rawApply(raw, 100, i % 2 ? '10.255.0.2' : '10.255.0.3'));
    }
    await feltApply(k, base(felt.path), felt.path);
    await rawFlush(raw);
  }
  // Planning alone (pure, no kernel): N new routes, and a no-op plan against N observed ones.
  const big = withRoutes(felt.path, N, '10.255.0.2');
  const empty = await observe(k, { namespaces: [felt.path] });
  const [tPlan] = await time(() => plan(big, empty, scopeOf(big)));
  await apply(k, plan(big, empty, scopeOf(big)));
  const full = await observe(k, { namespaces: [felt.path] });
  const [tNoop, noop] = await time(() => plan(big, full, scopeOf(big)));
  if (noop.length) throw new Error(`a replan against ${N} observed routes is not empty: ${noop.length} ops`);
  const [tObsHost] = await time(() => observe(k, { namespaces: [HOST, felt.path] }));

  console.log(`kernel adapter vs raw ip -batch; ${new Date().toISOString().slice(0, 10)}, node ${process.version}, ${ROUNDS} rounds`);
  console.log('| operation | felt median ms | raw median ms | ratio felt/raw | felt min | raw min |');
  console.log('|---|---|---|---|---|---|');
  for (const [name, f, r] of rows) {
    console.log(
      `| ${name} | ${median(f).toFixed(1)} | ${median(r).toFixed(1)} | ${(median(f) / median(r)).toFixed(2)} | ${Math.min(...f).toFixed(1)} | ${Math.min(...r).toFixed(1)} |`,
    );
  }
  console.log(
    `\nplan ${N} new routes: ${tPlan.toFixed(1)} ms; no-op plan against ${N} observed: ${tNoop.toFixed(1)} ms; observe host + that namespace: ${tObsHost.toFixed(1)} ms`,
  );
  console.log(
    'raw peers: `route replace` lines to one `nsenter ip -batch -`; removal `route del` lines; observe `ip -json -d route show`, parsed',
  );
} finally {
  await cleanupNetns();
}
