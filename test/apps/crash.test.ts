// Crash safety of the built bridge plugin (with host-local in-process): an ADD killed with SIGKILL at any
// moment leaves nothing that a following DEL, or a GC with an empty valid set, does not remove, and the log
// stays sound. Storage that cannot be written (a read-only or full data dir, a corrupt felt.db) fails ADD
// with code 5 naming the file, before any kernel change.
//
// Kills are at seeded random delays spread over one ADD's duration (FELT_CRASH_SEED picks another seed).
// Half of them kill the plugin's whole process group (its `sh`/`ip`/`iptables-restore` children too); the
// other half kill only the plugin, as the OOM killer would, and let the orphaned children finish first.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { attachmentsProjection, attachmentStream } from '../../core/bridge/attachments.ts';
import { FELT_CNI, runCni } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import {
  addrs,
  cni,
  cniChains,
  cniRules,
  exec,
  feltAllocations,
  iptSave,
  links,
  nsPath,
  nsRun,
  routes,
  Sandbox,
  veths,
  type Call,
} from '../support/ns.ts';

const sb = new Sandbox();
afterAll(() => sb.cleanup());

const NET = 'crashnet';
const confOf = (dataDir: string) => ({
  cniVersion: '1.1.0',
  name: NET,
  type: 'bridge',
  bridge: 'brcrash0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.78.0.0/24' }]], dataDir },
});

/** mulberry32: small, seeded, good enough to spread kill times. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Live (not zombie) processes in process group `pgid`, from /proc. */
function liveInGroup(pgid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${d}/stat`, 'utf8');
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(f[2]) === pgid && f[0] !== 'Z' && f[0] !== 'X') out.push(Number(d));
  }
  return out;
}

/** Poll (bounded) until `pred` holds. */
async function until(pred: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Killed {
  /** Whether the ADD had already finished (exit code) when the kill came, or was killed. */
  readonly outcome: 'killed' | `exited ${number}`;
}

/** Start an ADD in `hostNs` as its own process group and SIGKILL it (or the group) after `delayMs`. */
function addAndKill(hostNs: string, podNs: string, cid: string, conf: unknown, delayMs: number, group: boolean): Promise<Killed> {
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: 'ADD',
    CNI_PATH: FELT_CNI,
    FELT_CNI_SOCKET: process.env['FELT_CNI_SOCKET'] ?? '',
    CNI_CONTAINERID: cid,
    CNI_NETNS: nsPath(podNs),
    CNI_IFNAME: 'eth0',
  };
  // `ip netns exec` execs the plugin, so the child is the plugin itself and leads its own group.
  const child = spawn('ip', ['netns', 'exec', hostNs, join(FELT_CNI, 'bridge')], {
    env,
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  child.stdin.on('error', () => undefined);
  child.stdin.end(JSON.stringify(conf));
  const pid = child.pid!;
  return new Promise((resolve, reject) => {
    let exited: number | undefined;
    child.on('error', reject);
    child.on('exit', async (code, signal) => {
      exited = code ?? undefined;
      try {
        // Only the plugin died: its children carry on; DEL comes after they are done.
        await until(() => liveInGroup(pid).length === 0, `the process group of ${cid}`);
        resolve({ outcome: signal === 'SIGKILL' ? 'killed' : `exited ${code ?? -1}` });
      } catch (e) {
        reject(e);
      }
    });
    setTimeout(() => {
      if (exited !== undefined) return;
      try {
        process.kill(group ? -pid : pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, delayMs);
  });
}

const gc = (hostNs: string, conf: Record<string, unknown>) =>
  runCni({ dir: FELT_CNI, type: 'bridge', command: 'GC', hostNs, config: { ...conf, 'cni.dev/valid-attachments': [] } });

/** The log opens, passes integrity_check, and a writer can still use it (felt allocations reads it). */
function expectSoundLog(dataDir: string): void {
  const file = join(dataDir, 'felt.db');
  if (!existsSync(file)) return;
  const db = new Database(file);
  try {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
  } finally {
    db.close();
  }
}

/** The bridge's attachment records of the network (none without a log). */
function recorded(dataDir: string): string[] {
  if (!existsSync(join(dataDir, 'felt.db'))) return [];
  const store = openSqliteStore(dataDir, { readonly: true });
  if (E.isLeft(store)) throw new Error(store.left.msg);
  try {
    const st = store.right.load(attachmentStream(NET), attachmentsProjection);
    if (E.isLeft(st)) throw new Error(st.left.msg);
    return Object.values(st.right.state.attachments).map((a) => `${a.containerId}/${a.ifname} ${a.hostVeth}`);
  } finally {
    store.right.close();
  }
}

describe('SIGKILL during ADD', () => {
  const seed = Number(process.env['FELT_CRASH_SEED'] ?? 20260412);
  const KILLS = 12;

  it(`DEL or GC afterwards leaves no veth, chain, rule or allocation, and the log is sound (seed ${seed})`, async () => {
    const host = await sb.ns();
    const dataDir = sb.dir();
    const conf = confOf(dataDir);
    // One ADD to learn how long an ADD takes here; then DEL it.
    const calib = await sb.ns();
    const first = await cni({ dir: FELT_CNI, hostNs: host, pod: calib, cid: 'calibrate' }, 'ADD', conf);
    expect(first.code, first.stdout).toBe(0);
    expect((await cni({ dir: FELT_CNI, hostNs: host, pod: calib, cid: 'calibrate' }, 'DEL', conf)).code).toBe(0);
    const span = first.ms * 1.2;

    const rnd = prng(seed);
    const seen: string[] = [];
    for (let i = 0; i < KILLS; i++) {
      const pod = await sb.ns();
      const cid = `crash-${i}`;
      // Stratified: kill i falls in the i-th slice of the ADD's duration.
      const delay = ((i + rnd()) / KILLS) * span;
      const group = i % 2 === 0;
      const k = await addAndKill(host, pod, cid, conf, delay, group);
      const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid };
      // What the kill left, for the report: host veths, CNI- chains, allocations, the pod's interfaces.
      const left = [
        `${(await veths(host)).length} veth`,
        `${(await cniChains(host)).length} chain`,
        `${(await feltAllocations(dataDir)).length} allocation`,
        `pod ${(await links(pod)).map((l) => l.ifname).join('+')}`,
      ].join(', ');
      const cleanup = i % 4 < 2 ? 'DEL' : 'GC';
      const r = cleanup === 'DEL' ? await cni(c, 'DEL', conf) : await gc(host, conf);
      const label = `kill ${i} at ${delay.toFixed(0)} ms (${group ? 'group' : 'plugin only'}, ${k.outcome}) left ${left}, then ${cleanup}`;
      seen.push(label);
      expect(r.stdout, label).toBe('');
      expect(r.code, label).toBe(0);
      expect(await veths(host), label).toEqual([]);
      expect(
        (await links(pod)).map((l) => l.ifname),
        label,
      ).toEqual(['lo']);
      expect(await cniChains(host), label).toEqual([]);
      expect(await cniRules(host), label).toEqual([]);
      expect(await feltAllocations(dataDir), label).toEqual([]);
      expectSoundLog(dataDir);
      expect(recorded(dataDir), label).toEqual([]);
      await sb.delNs(pod);
    }
    if (process.env['FELT_CRASH_VERBOSE']) console.log(seen.join('\n'));
    // Not vacuous: the early kills land before the plugin can finish.
    expect(
      seen.some((s) => s.includes(', killed)')),
      seen.join('\n'),
    ).toBe(true);

    // The log still serves a normal ADD and DEL.
    const pod = await sb.ns();
    const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid: 'after' };
    const again = await cni(c, 'ADD', conf);
    expect(again.code, again.stdout).toBe(0);
    expect((await cni(c, 'DEL', conf)).code).toBe(0);
    expect(await veths(host)).toEqual([]);
    expect(await feltAllocations(dataDir)).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------- storage failures

interface Snapshot {
  links: string[];
  addrs: Record<string, string[]>;
  routes: string[];
  nat4: string[];
  nat6: string[];
}

const snapshot = async (ns: string): Promise<Snapshot> => ({
  links: (await links(ns)).map((l) => `${l.ifname} ${l.linkinfo?.info_kind ?? ''}`).sort(),
  addrs: await addrs(ns),
  routes: await routes(ns),
  nat4: await iptSave(ns, 4),
  nat6: await iptSave(ns, 6),
});

/** A tmpfs of `size` on a fresh test directory, unmounted when `fn` settles. */
async function withTmpfs<T>(size: string, fn: (mnt: string) => Promise<T>): Promise<T> {
  const mnt = sb.dir();
  const m = await exec(['mount', '-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'felt-crash-test', mnt]);
  if (m.code !== 0) throw new Error(`mount tmpfs on ${mnt}: ${m.stderr}`);
  try {
    return await fn(mnt);
  } finally {
    await exec(['umount', '-l', mnt]);
  }
}

/**
 * Remount read-only. In daemon mode feltd keeps a log it served open for a moment after the last call (its
 * warm stores' idle close), and the kernel refuses a read-only remount while a file is open for writing: wait
 * for it to let go (closing checkpoints the log away: the WAL file goes).
 */
const remountRo = async (mnt: string): Promise<void> => {
  await released(mnt);
  const r = await exec(['mount', '-o', 'remount,ro', mnt]);
  if (r.code !== 0) throw new Error(`remount ro ${mnt}: ${r.stderr}`);
};

/** No felt.db under `dir` (at any depth) is open: none has a WAL file left. */
const released = (dir: string): Promise<true> =>
  eventually(() => !readdirSync(dir, { recursive: true }).some((f) => String(f).endsWith('felt.db-wal')), {
    what: `the logs under ${dir} closed`,
  });

/** Fill a file system until writing fails. */
function fill(mnt: string): void {
  const chunk = Buffer.alloc(4096, 1);
  for (let i = 0; ; i++) {
    try {
      writeFileSync(join(mnt, `fill-${i}`), chunk);
    } catch {
      // One byte at a time into the last block, so not even a small page fits.
      for (let j = 0; ; j++) {
        try {
          writeFileSync(join(mnt, `tail-${i}-${j}`), 'x');
        } catch {
          return;
        }
      }
    }
  }
}

/** ADD fails with code 5 naming `file`, and neither namespace changed. */
async function expectIoErrorNoChange(dataDir: string, file: string): Promise<void> {
  const host = await sb.ns();
  const pod = await sb.ns();
  const before = { host: await snapshot(host), pod: await snapshot(pod) };
  const r = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'io' }, 'ADD', confOf(dataDir));
  expect(r.code, r.stdout).toBe(1);
  expect(r.json, r.stdout).toMatchObject({ code: 5, msg: expect.stringContaining(file) });
  expect(r.stderr).toBe('');
  if (process.env['FELT_CRASH_VERBOSE']) console.log(r.json.msg);
  expect({ host: await snapshot(host), pod: await snapshot(pod) }).toEqual(before);
}

describe('storage that cannot be written: code 5 naming the file, no kernel change', () => {
  it('a read-only data dir without felt.db (bridge, and host-local on its own)', async () => {
    await withTmpfs('1m', async (mnt) => {
      await remountRo(mnt);
      await expectIoErrorNoChange(mnt, join(mnt, 'felt.db'));
      const host = await sb.ns();
      const r = await cni({ dir: FELT_CNI, type: 'host-local', hostNs: host, pod: host, cid: 'io' }, 'ADD', {
        ...confOf(mnt),
        type: 'host-local',
      });
      expect(r.json).toMatchObject({ code: 5, msg: expect.stringContaining(join(mnt, 'felt.db')) });
      expect(r.code).toBe(1);
    });
  });

  it('a read-only data dir whose parent does not exist yet', async () => {
    await withTmpfs('1m', async (mnt) => {
      await remountRo(mnt);
      await expectIoErrorNoChange(join(mnt, 'sub', 'dir'), join(mnt, 'sub', 'dir', 'felt.db'));
    });
  });

  it('a read-only data dir holding a log', async () => {
    await withTmpfs('4m', async (mnt) => {
      // A real log first: one ADD and DEL while writable.
      const host = await sb.ns();
      const pod = await sb.ns();
      const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid: 'before' };
      expect((await cni(c, 'ADD', confOf(mnt))).code).toBe(0);
      expect((await cni(c, 'DEL', confOf(mnt))).code).toBe(0);
      await remountRo(mnt);
      await expectIoErrorNoChange(mnt, join(mnt, 'felt.db'));
    });
  });

  it('a full data dir, with and without a log', async () => {
    await withTmpfs('256k', async (mnt) => {
      const empty = join(mnt, 'empty');
      mkdirSync(empty);
      const used = join(mnt, 'used');
      const host = await sb.ns();
      const pod = await sb.ns();
      const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid: 'before' };
      expect((await cni(c, 'ADD', confOf(used))).code).toBe(0);
      expect((await cni(c, 'DEL', confOf(used))).code).toBe(0);
      // A log still open (feltd's, for a moment) would write into the WAL it has: the disk fills up after.
      await released(mnt);
      fill(mnt);
      await expectIoErrorNoChange(empty, join(empty, 'felt.db'));
      await expectIoErrorNoChange(used, join(used, 'felt.db'));
      // With room again (SQLite needs some just to open a WAL log), the log is sound and usable.
      for (const f of readdirSync(mnt)) if (/^(fill|tail)-/.test(f)) rmSync(join(mnt, f));
      expectSoundLog(used);
      const add = await cni(c, 'ADD', confOf(used));
      expect(add.code, add.stdout).toBe(0);
      const del = await cni(c, 'DEL', confOf(used));
      expect(del.code, del.stdout).toBe(0);
    });
  });

  it('a corrupt felt.db', async () => {
    const dir = sb.dir();
    const garbage = Buffer.alloc(16384);
    const rnd = prng(7);
    for (let i = 0; i < garbage.length; i++) garbage[i] = Math.floor(rnd() * 256);
    writeFileSync(join(dir, 'felt.db'), garbage);
    await expectIoErrorNoChange(dir, join(dir, 'felt.db'));
    // DEL and GC of a corrupt log fail the same way; DEL still removes what it finds without the log.
    const host = await sb.ns();
    const pod = await sb.ns();
    await nsRun(pod, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'vethio', 'netns', host]);
    const del = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'io' }, 'DEL', confOf(dir));
    expect(await veths(host)).toEqual([]);
    expect(del.json).toMatchObject({ code: 5, msg: expect.stringContaining(join(dir, 'felt.db')) });
    const g = await gc(host, confOf(dir));
    expect(g.json).toMatchObject({ code: 5, msg: expect.stringContaining(join(dir, 'felt.db')) });
  });
});
