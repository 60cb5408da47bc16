// The felt CLI: `events` and `allocations` over a log written by the IPAM Decider, usage and version, in-process
// and through the built dist/bin/felt.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseIpamConf } from '../../core/ipam/config.ts';
import { decide, ipamProjection, ipamStream, type IpamCommand } from '../../core/ipam/decider.ts';
import Database from 'better-sqlite3';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { summarize } from '../../apps/felt/summary.ts';
import { cli } from '../../apps/felt/cli.ts';
import { parseArgs } from '../../apps/felt/args.ts';
import { ROOT } from '../support/cni.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const dir = mkdtempSync(join(tmpdir(), 'felt-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(() => {
  const store = openSqliteStore(dir);
  if (E.isLeft(store)) throw new Error(store.left.msg);
  const s = store.right;
  const conf = (name: string, subnet: string) => {
    const c = parseIpamConf({ cniVersion: '1.0.0', name, type: 'bridge', raw: { ipam: { subnet } } }, {});
    if (E.isLeft(c)) throw new Error(c.left.msg);
    return c.right;
  };
  const run = (network: string, time: string, cmd: IpamCommand) =>
    s.transact(ipamStream(network), ipamProjection, (st) => decide(cmd, st), { time });
  const blue = conf('blue', '10.50.0.0/24');
  const red = conf('red', 'fd50::/64');
  run('blue', '2024-01-01T00:00:01.000Z', { type: 'AllocateAddresses', data: { conf: blue, containerId: 'pod-a', ifname: 'eth0' } });
  run('red', '2024-01-01T00:00:02.000Z', { type: 'AllocateAddresses', data: { conf: red, containerId: 'pod-b', ifname: 'net1' } });
  run('blue', '2024-01-01T00:00:03.000Z', { type: 'AllocateAddresses', data: { conf: blue, containerId: 'pod-c', ifname: 'eth0' } });
  run('blue', '2024-01-01T00:00:04.000Z', { type: 'ReleaseAddresses', data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0' } });
  s.close();
}, 180_000);

const call = async (...argv: string[]) => {
  let out = '';
  let err = '';
  const code = await cli(argv, { out: (s) => (out += s), err: (s) => (err += s), env: {} });
  return { code, out, err };
};

describe('felt events', () => {
  it('lists the log as a table', async () => {
    const r = await call('events', '--data-dir', dir);
    expect(r).toEqual({
      code: 0,
      err: '',
      out: [
        'POSITION  TIME                      STREAM     TYPE              DATA',
        '1         2024-01-01T00:00:01.000Z  ipam/blue  AddressAllocated  10.50.0.2 -> pod-a/eth0 (range set 0)',
        '2         2024-01-01T00:00:02.000Z  ipam/red   AddressAllocated  fd50::2 -> pod-b/net1 (range set 0)',
        '3         2024-01-01T00:00:03.000Z  ipam/blue  AddressAllocated  10.50.0.3 -> pod-c/eth0 (range set 0)',
        '4         2024-01-01T00:00:04.000Z  ipam/blue  AddressReleased   10.50.0.2 <- pod-a/eth0 (del)',
        '',
      ].join('\n'),
    });
  });
  it('filters by network, position and limit; prints JSON', async () => {
    const r = await call('events', `--data-dir=${dir}`, '--network', 'blue', '--from', '1', '--limit', '1', '--json');
    expect(r.code).toBe(0);
    // One JSON object per line.
    expect(
      r.out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as unknown),
    ).toEqual([
      {
        position: 3,
        stream: 'ipam/blue',
        type: 'AddressAllocated',
        data: { network: 'blue', containerId: 'pod-c', ifname: 'eth0', rangeSet: 0, ip: '10.50.0.3' },
        time: '2024-01-01T00:00:03.000Z',
      },
    ]);
  });
  it('says where it looked when there is no log', async () => {
    const r = await call('events', '--data-dir', join(dir, 'nope'));
    expect(r.code).toBe(1);
    expect(r.err).toContain(`no event log at ${join(dir, 'nope', 'felt.db')}`);
  });
  it('refuses bad options with the usage', async () => {
    expect(await call('events', '--limit', 'x', '--data-dir', dir)).toMatchObject({
      code: 2,
      err: 'felt events: --limit: want a non-negative integer, got "x"\n',
    });
    const r = await call('events', '--bogus');
    expect(r.code).toBe(2);
    expect(r.err).toContain('unknown option --bogus');
    expect(r.err).toContain('usage: felt events');
  });
});

describe('felt allocations', () => {
  it('shows who holds which address', async () => {
    const r = await call('allocations', '--data-dir', dir);
    expect(r.out).toBe(
      [
        'NETWORK  IP         CONTAINER  IFNAME  SINCE',
        'blue     10.50.0.3  pod-c      eth0    2024-01-01T00:00:03.000Z',
        'red      fd50::2    pod-b      net1    2024-01-01T00:00:02.000Z',
        '',
      ].join('\n'),
    );
  });
  it('one network, as JSON; FELT_DATA_DIR works too', async () => {
    let out = '';
    const code = await cli(['allocations', '--network', 'red', '--json'], {
      out: (s) => (out += s),
      err: () => {},
      env: { FELT_DATA_DIR: dir },
    });
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual([
      { network: 'red', ip: 'fd50::2', containerId: 'pod-b', ifname: 'net1', rangeSet: 0, since: '2024-01-01T00:00:02.000Z', position: 2 },
    ]);
  });
});

describe('felt', () => {
  it('help lists the subcommands', async () => {
    const r = await call('--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/events\s+list the event log/);
    expect(r.out).toMatch(/allocations\s+show who holds which address/);
    expect((await call('help', 'events')).out).toContain('--network NAME');
    expect(await call('frobnicate')).toMatchObject({ code: 2, err: expect.stringContaining('unknown command "frobnicate"') });
  });
  it('without arguments prints the usage on stderr and fails; --help prints it on stdout and succeeds', async () => {
    const bare = await call();
    expect(bare).toEqual({ code: 2, out: '', err: expect.stringContaining('usage: felt <command>') });
    expect(await call('--help')).toEqual({ code: 0, out: bare.err, err: '' });
    expect(await call('-h')).toEqual({ code: 0, out: bare.err, err: '' });
  });
  it('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(await call('--version')).toEqual({ code: 0, out: `felt v${version}\n`, err: '' });
  });
  it('parses --name value, --name=value, switches and --', () => {
    const specs = [
      { name: 'a', value: 'X', help: '' },
      { name: 'b', help: '' },
    ];
    expect(parseArgs(['--a', '1', '--b', 'pos', '--', '--a'], specs)).toEqual({
      ok: true,
      parsed: { options: { a: '1', b: true }, positionals: ['pos', '--a'] },
    });
    expect(parseArgs(['--a=2'], specs)).toEqual({ ok: true, parsed: { options: { a: '2' }, positionals: [] } });
    expect(parseArgs(['--a'], specs)).toEqual({ ok: false, error: '--a needs a value (X)' });
    expect(parseArgs(['--b=1'], specs)).toEqual({ ok: false, error: '--b takes no value' });
  });
  it('the built dist/bin/felt runs', () => {
    const help = spawnSync(FELT, ['--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('usage: felt <command>');
    const bare = spawnSync(FELT, [], { encoding: 'utf8' });
    expect(bare).toMatchObject({ status: 2, stdout: '', stderr: help.stdout });
    const allocs = spawnSync(FELT, ['allocations', '--data-dir', dir, '--json'], { encoding: 'utf8' });
    expect(allocs.status).toBe(0);
    expect(JSON.parse(allocs.stdout).map((a: { ip: string }) => a.ip)).toEqual(['10.50.0.3', 'fd50::2']);
  });
});

describe('a log without felt tables (a plugin killed before its first commit)', () => {
  const bare = (name: string, make: (file: string) => void): string => {
    const d = join(dir, name);
    mkdirSync(d);
    make(join(d, 'felt.db'));
    return d;
  };
  const cases: [string, (file: string) => void][] = [
    ['an empty file', (f) => writeFileSync(f, '')],
    [
      'WAL set, no tables',
      (f) => {
        const db = new Database(f);
        db.pragma('journal_mode = WAL');
        db.close();
      },
    ],
  ];
  it.each(cases)('%s reads as an empty log, in-process and through dist/bin/felt', async (name, make) => {
    const d = bare(name.replace(/\W+/g, '-'), make);
    expect(await call('allocations', '--data-dir', d, '--json')).toEqual({ code: 0, err: '', out: '[]\n' });
    expect(await call('events', '--data-dir', d, '--json')).toEqual({ code: 0, err: '', out: '' });
    const r = spawnSync(FELT, ['allocations', '--data-dir', d], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // The next writer creates the schema.
    const s = openSqliteStore(d);
    if (E.isLeft(s)) throw new Error(s.left.msg);
    s.right.close();
  });
  it('a corrupt file is an error naming it', async () => {
    const d = bare('garbage', (f) => writeFileSync(f, Buffer.alloc(8192, 0x5a)));
    const r = await call('allocations', '--data-dir', d);
    expect(r.code).toBe(1);
    expect(r.err).toContain(join(d, 'felt.db'));
  });
});

describe('felt events: bridge attachments', () => {
  it('summarizes AttachmentRecorded and AttachmentRemoved', () => {
    const at = { position: 1, stream: 'bridge/blue', time: '2024-01-01T00:00:00.000Z' };
    const rec = { network: 'blue', containerId: 'pod-a', ifname: 'eth0', hostVeth: 'veth0a1b2c3d' };
    expect(summarize({ ...at, type: 'AttachmentRecorded', data: { ...rec, netns: '/run/netns/p', dataDir: '/var/lib/felt' } })).toBe(
      'pod-a/eth0 in /run/netns/p, host veth veth0a1b2c3d',
    );
    expect(summarize({ ...at, type: 'AttachmentRemoved', data: { ...rec, reason: 'gc' } })).toBe('pod-a/eth0, host veth veth0a1b2c3d (gc)');
  });

  it('summarizes AttachmentReady, host-device and tuning events in words, not JSON', () => {
    const at = { position: 1, stream: 'bridge/blue', time: '2024-01-01T00:00:00.000Z' };
    const ref = { network: 'blue', containerId: 'pod-a', ifname: 'eth0' };
    expect(summarize({ ...at, type: 'AttachmentReady', data: { ...ref, hostVeth: 'veth0a1b2c3d', durationMs: 41 } })).toBe(
      'pod-a/eth0, host veth veth0a1b2c3d: ready in 41 ms',
    );
    const original = { name: 'enp3s0', up: true, alias: '' };
    expect(summarize({ ...at, type: 'HostDeviceAttached', data: { ...ref, netns: '/run/netns/p', original } })).toBe(
      'enp3s0 moved into /run/netns/p as pod-a/eth0',
    );
    expect(summarize({ ...at, type: 'HostDeviceReleased', data: { ...ref, reason: 'del' } })).toBe(
      'pod-a/eth0 given back to the host (del)',
    );
    const tuned = { link: { mtu: 1500 }, sysctls: [{ key: 'net.ipv4.conf.eth0.arp_notify', value: '0' }] };
    expect(summarize({ ...at, type: 'TuningApplied', data: { ...ref, netns: '/run/netns/p', original: tuned } })).toBe(
      'pod-a/eth0 in /run/netns/p tuned: mtu, net.ipv4.conf.eth0.arp_notify (originals kept)',
    );
    expect(summarize({ ...at, type: 'TuningReverted', data: { ...ref, reason: 'netns-gone' } })).toBe('pod-a/eth0 restored (netns-gone)');
  });
});
