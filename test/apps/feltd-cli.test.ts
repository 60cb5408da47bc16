// feltd's command line before the daemon starts: flags (flanneld's names, unknown ones named as such), --help,
// --version, and that bad arguments leave nothing behind: no state dir, no store, until all of them are valid.
// The bad-underlay and bad-config cases run inside a namespace of their own with one veth pair (eth0: 198.51.100.7/24).

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFlags, USAGE } from '../../apps/feltd/flags.ts';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { cleanupNetns, createNetns, execFile, type Netns } from '../support/netns.ts';

const FELTD = join(ROOT, 'dist', 'bin', 'feltd');
const env = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

describe('feltd flags', () => {
  it('names an unknown flag as unknown, whatever follows it', () => {
    expect(parseFlags(['--bogus'])).toEqual({ error: 'unknown flag: --bogus' });
    expect(parseFlags(['--bogus', 'x'])).toEqual({ error: 'unknown flag: --bogus' });
    expect(parseFlags(['--bogus=x'])).toEqual({ error: 'unknown flag: --bogus' });
    expect(parseFlags(['--iface', 'eth0', '-x'])).toEqual({ error: 'unknown flag: -x' });
  });
  it('still says when a known flag lacks its value', () => {
    expect(parseFlags(['--iface'])).toEqual({ error: '--iface needs a value' });
  });
  it('--version and --help are switches', () => {
    expect(parseFlags(['--version'])).toMatchObject({ flags: { version: true, help: false } });
    expect(parseFlags(['--help'])).toMatchObject({ flags: { version: false, help: true } });
    expect(USAGE).toContain('--version');
  });
});

describe('the built dist/bin/feltd', () => {
  const dir = mkdtempSync(join(tmpdir(), 'feltd-cli-'));
  let ns: Netns;
  beforeAll(async () => {
    ns = await createNetns();
    await ns.run(['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    await ns.run(['ip', 'addr', 'add', '198.51.100.7/24', 'dev', 'eth0']);
    await ns.run(['ip', 'link', 'set', 'eth0', 'up']);
  });
  afterAll(async () => {
    await cleanupNetns();
    rmSync(dir, { recursive: true, force: true });
  });

  it('--bogus: "unknown flag: --bogus" and the usage on stderr, exit 2', async () => {
    const r = await execFile([FELTD, '--bogus'], { env });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')[0]).toBe('feltd: unknown flag: --bogus');
    expect(r.stderr).toContain('Usage: feltd [flags]');
  });

  it('--help: the usage on stdout, exit 0', async () => {
    const r = await execFile([FELTD, '--help'], { env });
    expect(r).toEqual({ code: 0, stdout: USAGE, stderr: '' });
  });

  // V8 grows a busy process's young generation to 2 x 16 MB; feltd, long-lived and serving a steady stream of
  // calls, runs with 1 MB semi-spaces instead (scripts/build.mjs): its resident set stays flat ~25 MB lower.
  it('runs node with 1 MB semi-spaces (a young generation that does not grow to 32 MB)', async () => {
    const state = join(dir, 'semi');
    const feltd = spawn(FELTD, ['--cni-only', `--cni-socket=${join(state, 'cni.sock')}`, `--state-dir=${state}`], { env, stdio: 'ignore' });
    const exited = new Promise((resolve) => feltd.once('exit', resolve));
    try {
      // `env -S` (the shebang) execs node: wait for it, then read the arguments node runs with.
      const argv = await eventually(
        () => {
          const a = readFileSync(`/proc/${feltd.pid}/cmdline`, 'utf8').split('\0');
          return a.includes('--cni-only') && a[0]!.split('/').pop() === 'node' && a;
        },
        { what: 'feltd running as node' },
      );
      expect(argv.slice(1, argv.indexOf(FELTD))).toContain('--max-semi-space-size=1');
    } finally {
      feltd.kill('SIGTERM');
      await exited;
    }
  });

  it('a SIGTERM while feltd waits for its network config stops it cleanly: exit 0, its CNI socket removed', () =>
    sigtermWhileWaiting(ns, dir));

  const common = (stateDir: string): string[] => ['--state-dir', stateDir, '--subnet-file', join(stateDir, 'subnet.env')];

  it.each([
    ['an unknown flag', (s: string) => [...common(s), '--iface', 'eth0', '--bogus', 'x'], 2, 'unknown flag: --bogus'],
    ['a bad number', (s: string) => [...common(s), '--iface', 'eth0', '--lease-ttl', 'soon'], 2, '--lease-ttl'],
    [
      'no such underlay interface',
      (s: string) => [...common(s), '--iface', 'nope0', '--net-config-path', join(dir, 'good.json')],
      1,
      'underlay',
    ],
    [
      'a missing net-conf.json',
      (s: string) => [...common(s), '--iface', 'eth0', '--net-config-path', join(dir, 'missing.json')],
      1,
      'missing.json',
    ],
    [
      'an invalid net-conf.json',
      (s: string) => [...common(s), '--iface', 'eth0', '--net-config-path', join(dir, 'bad.json')],
      1,
      'bad.json',
    ],
    [
      'a missing --etcd-cafile',
      (s: string) => [...common(s), '--iface', 'eth0', '--etcd-endpoints', 'http://127.0.0.1:1', '--etcd-cafile', join(dir, 'ca.pem')],
      1,
      'ca.pem',
    ],
  ] as const)('with %s it fails and creates nothing', async (_what, args, code, says) => {
    writeFileSync(join(dir, 'good.json'), '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
    writeFileSync(join(dir, 'bad.json'), '{"Network":"not a network"}');
    const stateDir = join(dir, `state-${Math.random().toString(16).slice(2)}`);
    const r = await ns.exec([FELTD, ...args(stateDir)], { env });
    expect(r.code, r.stderr).toBe(code);
    expect(r.stderr).toContain(says);
    expect(existsSync(stateDir)).toBe(false);
  });
});

/**
 * The CNI socket serves before the network config is read; a SIGTERM from then on (here while feltd waits for
 * an etcd that does not answer) must stop feltd by its own hand: exit 0 and its socket removed. Before, the
 * signal's default action killed it there, and left the socket behind.
 */
async function sigtermWhileWaiting(ns: Netns, dir: string): Promise<void> {
  const state = join(dir, 'early-term');
  const socket = join(state, 'cni.sock');
  const feltd = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns.name,
      FELTD,
      '--iface',
      'eth0',
      '--etcd-endpoints',
      'http://127.0.0.1:1',
      `--cni-socket=${socket}`,
      `--state-dir=${state}`,
    ],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  feltd.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<[number | null, string | null]>((resolve) => feltd.once('exit', (code, signal) => resolve([code, signal])));
  try {
    await eventually(() => /"serving CNI"/.test(stderr) && existsSync(socket), { what: 'feltd serving CNI' });
    feltd.kill('SIGTERM');
    expect(await exited, stderr).toEqual([0, null]);
    expect(existsSync(socket)).toBe(false);
    expect(stderr).toContain('stopping before the network config was read');
  } finally {
    feltd.kill('SIGKILL');
  }
}
