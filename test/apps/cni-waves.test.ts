// Waves through a real feltd (adapters/kernel/waves.ts, apps/cni/store.ts's group commit): 50 ADDs started at
// once through the forwarders to a `feltd --cni-only`, then 50 DELs at once. Every call succeeds, no address is
// handed out twice, every pod answers a ping from the host namespace, and after the DELs nothing is left (no
// allocation, host veth, CNI- chain or rule). feltd's counters (/metrics) show that the calls shared work:
// fewer reads of the kernel than asked for, fewer shared applies than host parts sent to them, and fewer SQLite
// transactions than decisions. No timing is asserted (test/bench/churn.bench.ts measures).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, ROOT, runCni, type CniOutcome } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { cniChains, cniRules, feltAllocations, nsPath, ping, Sandbox, veths } from '../support/ns.ts';

const N = 50;

const conf = (dataDir: string) => ({
  cniVersion: '1.0.0',
  name: 'wavesnet',
  type: 'bridge',
  bridge: 'cni0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/24' }]], dataDir },
});

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });

const connects = (path: string): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

/** The value of a counter (no labels) on feltd's /metrics. */
async function counter(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`${name} is not on /metrics:\n${text}`);
  return Number(m[1]);
}

const failures = (outs: readonly CniOutcome[]): string[] =>
  outs.filter((o) => o.code !== 0).map((o) => `${o.code}: ${o.stdout}${o.stderr}`);

describe(`waves: ${N} ADDs at once then ${N} DELs at once through feltd`, () => {
  const sb = new Sandbox();
  const dir = mkdtempSync(join(tmpdir(), 'felt-waves-'));
  const socket = join(dir, 'cni.sock');
  let feltd: ChildProcess | undefined;
  let log = '';
  let port = 0;
  let host = '';
  let dataDir = '';
  const pods: string[] = [];

  beforeAll(async () => {
    port = await freePort();
    feltd = spawn(
      join(ROOT, 'dist/bin/feltd'),
      ['--cni-only', `--cni-socket=${socket}`, `--state-dir=${join(dir, 'state')}`, '--healthz-ip=127.0.0.1', `--healthz-port=${port}`],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    feltd.stdout!.on('data', (b: Buffer) => (log += b.toString()));
    feltd.stderr!.on('data', (b: Buffer) => (log += b.toString()));
    await eventually(async () => feltd!.exitCode === null && (await connects(socket)), {
      what: `feltd serving ${socket}`,
      timeoutMs: 30_000,
    });
    host = await sb.ns();
    dataDir = sb.dir();
    for (let i = 0; i < N; i++) pods.push(await sb.ns());
  }, 240_000);

  afterAll(async () => {
    feltd?.kill('SIGTERM');
    await sb.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (command: 'ADD' | 'DEL', pod: string, i: number) =>
    runCni({
      dir: FELT_CNI,
      type: 'bridge',
      command,
      hostNs: host,
      containerId: `w${i}`,
      netns: nsPath(pod),
      ifname: 'eth0',
      config: conf(dataDir),
      env: { FELT_CNI_SOCKET: socket },
    });

  it(
    'every ADD succeeds with its own address, every pod is reachable, every DEL leaves nothing; the calls shared reads, writes and transactions',
    { timeout: 300_000 },
    async () => {
      const before = {
        served: await counter(port, 'felt_cni_wave_observe_requests_total'),
      };
      expect(before.served).toBe(0);

      const added = await Promise.all(pods.map((pod, i) => call('ADD', pod, i)));
      expect(failures(added), log).toEqual([]);
      const addresses = added.map((o) => (o.json as { ips?: { address: string }[] }).ips?.[0]?.address ?? '');
      expect(addresses.filter((a) => a === '')).toEqual([]);
      expect(new Set(addresses).size).toBe(N);
      expect((await feltAllocations(dataDir)).length).toBe(N);
      expect((await veths(host)).length).toBe(N);
      const unreachable: string[] = [];
      for (const a of addresses) if (!(await ping(host, a.split('/')[0]!))) unreachable.push(a);
      expect(unreachable).toEqual([]);

      const removed = await Promise.all(pods.map((pod, i) => call('DEL', pod, i)));
      expect(failures(removed), log).toEqual([]);
      expect(await feltAllocations(dataDir)).toEqual([]);
      expect(await veths(host)).toEqual([]);
      expect(await cniRules(host)).toEqual([]);
      expect(await cniChains(host)).toEqual([]);

      // The calls shared work (feltd's counters, /metrics).
      const c = async (name: string) => counter(port, `felt_cni_${name}_total`);
      const reads = { asked: await c('wave_observe_requests'), made: await c('wave_observations') };
      const writes = { parts: await c('wave_shared_parts'), shared: await c('wave_shared_applies') };
      const store = { decisions: await c('store_calls'), transactions: await c('store_transactions') };
      // 100 bridge calls: each reads the kernel at least once and records (ADD: its attachment, the IPAM's
      // allocation, its readiness; DEL: the release and the removal) in the log.
      expect(reads.asked).toBeGreaterThanOrEqual(2 * N);
      expect(reads.made).toBeLessThan(reads.asked);
      expect(writes.parts).toBeGreaterThanOrEqual(2 * N);
      expect(writes.shared).toBeLessThan(writes.parts);
      expect(store.decisions).toBeGreaterThanOrEqual(4 * N);
      expect(store.transactions).toBeLessThan(store.decisions);
      if (process.env['FELT_WAVES_VERBOSE']) console.log({ reads, writes, store });
    },
  );
});
