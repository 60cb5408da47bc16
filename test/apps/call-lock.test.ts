// The per-attachment call lock (apps/cni/call-lock.ts): one call at a time per key among many concurrent
// calls in one process (feltd's daemon mode), other keys not held up, reentrant within a call, and across
// processes a holder killed with SIGKILL (or a pid now naming another process) does not hold it any more.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { lockEnv, lockKey, LOCK_FILE, startTimeOf, withCallLock, type CallKey } from '../../apps/cni/call-lock.ts';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';

const dir = mkdtempSync(join(tmpdir(), 'felt-call-lock-'));
// The lock directory comes from the process's own environment (a call's environment only hands locks down).
process.env['FELT_LOCK_DIR'] = dir;
const env = {};
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
  delete process.env['FELT_LOCK_DIR'];
});

const key = (i: number): CallKey => ({ network: 'locknet', containerId: `ctr-${i}`, ifname: 'eth0' });
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A process holding the lock of `k` until killed; resolves once it holds it. */
async function holder(k: CallKey): Promise<ChildProcess> {
  const script = join(dir, `holder-${children.length}.mts`);
  writeFileSync(
    script,
    `import { withCallLock } from ${JSON.stringify(join(ROOT, 'apps', 'cni', 'call-lock.ts'))};\n` +
      `setInterval(() => undefined, 1 << 30);\n` +
      `await withCallLock(${JSON.stringify(k)}, {}, async () => { process.stdout.write('held\\n'); await new Promise(() => undefined); });\n`,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: ROOT,
    env: { ...process.env, FELT_LOCK_DIR: dir },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  await eventually(
    () => out.includes('held') || (child.exitCode === null ? false : Promise.reject(new Error(`holder exited ${child.exitCode}`))),
    {
      what: 'the holder process takes the lock',
      timeoutMs: 30_000,
    },
  );
  return child;
}

describe('call lock', () => {
  it('in one process: 400 concurrent calls on 8 keys, never two inside one key, different keys at once', async () => {
    const inside = new Map<number, number>();
    let most = 0;
    let overlap = 0;
    let entered = 0;
    await Promise.all(
      Array.from({ length: 400 }, (_, n) =>
        withCallLock(key(n % 8), env, async () => {
          const i = n % 8;
          inside.set(i, (inside.get(i) ?? 0) + 1);
          most = Math.max(most, inside.get(i)!);
          overlap = Math.max(overlap, [...inside.values()].filter((v) => v > 0).length);
          for (let t = 0; t < 1 + (n % 5); t++) await tick();
          inside.set(i, inside.get(i)! - 1);
          entered++;
        }),
      ),
    );
    expect(entered).toBe(400);
    expect(most).toBe(1);
    expect(overlap).toBeGreaterThan(1);
  });

  it("takes the lock directory from the process's environment, never from a call's", async () => {
    const elsewhere = join(dir, 'from-a-call');
    expect(await withCallLock(key(50), { FELT_LOCK_DIR: elsewhere }, async () => 'entered')).toBe('entered');
    expect(existsSync(elsewhere)).toBe(false);
    expect(existsSync(join(dir, LOCK_FILE))).toBe(true);
  });

  it('is reentrant within a call, and hands the lock to a process it starts', async () => {
    const seen = await withCallLock(key(100), env, async () => {
      const inner = await withCallLock(key(100), env, async () => 'inner ran');
      return { inner, env: lockEnv() };
    });
    expect(seen.inner).toBe('inner ran');
    expect(Object.keys(seen.env)).toEqual(['FELT_CALL_LOCKS']);
    // Outside any call, nothing to hand down.
    expect(lockEnv()).toEqual({});
  });

  it('across processes: waits for a live holder (and gives up naming it), takes over from one killed with SIGKILL', async () => {
    const k = key(200);
    const child = await holder(k);
    const refused = await withCallLock(k, env, async () => 'entered', 300).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 11, msg: expect.stringContaining(`pid ${child.pid}`) });
    // A handed-down token that is not the holder's does not let a call in either.
    const forged = await withCallLock(
      k,
      { ...env, FELT_CALL_LOCKS: `${Buffer.from(lockKey(k)).toString('base64url')}=${'0'.repeat(32)}` },
      async () => 'entered',
      300,
    ).catch((e: unknown) => e);
    expect(forged).toMatchObject({ code: 11 });

    child.kill('SIGKILL');
    await eventually(() => child.signalCode === 'SIGKILL', { what: 'the holder is dead' });
    expect(await withCallLock(k, env, async () => 'entered')).toBe('entered');
  });

  it('a row naming a live pid with another start time (the pid was reused) is stale', async () => {
    const k = key(300);
    await withCallLock(k, env, async () => undefined); // makes the file
    const db = new Database(join(dir, LOCK_FILE));
    try {
      const initStart = startTimeOf(1);
      expect(initStart).toBeDefined();
      db.prepare('INSERT OR REPLACE INTO call_locks (key, pid, start, token, since) VALUES (?, 1, ?, ?, ?)').run(
        lockKey(k),
        `${initStart}9`,
        'f'.repeat(32),
        new Date().toISOString(),
      );
      expect(await withCallLock(k, env, async () => 'entered', 5_000)).toBe('entered');
      // The same row with pid 1's real start time is live.
      db.prepare('INSERT OR REPLACE INTO call_locks (key, pid, start, token, since) VALUES (?, 1, ?, ?, ?)').run(
        lockKey(k),
        initStart,
        'f'.repeat(32),
        new Date().toISOString(),
      );
      expect(await withCallLock(k, env, async () => 'entered', 300).catch((e: unknown) => e)).toMatchObject({ code: 11 });
      db.prepare('DELETE FROM call_locks WHERE key = ?').run(lockKey(k));
    } finally {
      db.close();
    }
  });
});
