// The event log as an operator's tool: felt events (time and type filters, JSON lines, --follow), felt replay
// (--at, --to, --desired, every stream kind), felt export / felt import (round trip, all or nothing). In-process
// through cli(), and --follow once through dist/bin/felt in a child process while the test appends.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachmentsProjection, attachmentStream, decideAttachments } from '../../core/bridge/attachments.ts';
import { decide as decideNode, nodeProjection, nodeStream, type NodeCommand } from '../../core/flannel/node.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import type { Lease } from '../../core/flannel/types.ts';
import { parseIpamConf } from '../../core/ipam/config.ts';
import { decide, ipamProjection, ipamStream, type IpamCommand } from '../../core/ipam/decider.ts';
import { streamKindOf } from '../../core/projections.ts';
import { replay } from '../../adapters/store/replay.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import { cli } from '../../apps/felt/cli.ts';
import { parseTime } from '../../apps/felt/commands/events.ts';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const root = mkdtempSync(join(tmpdir(), 'felt-events-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => mkdtempSync(join(root, `d${n++}-`));

const NOW = new Date('2024-01-01T01:00:00.000Z');
const t = (s: number): string => new Date(Date.parse('2024-01-01T00:00:00.000Z') + s * 1000).toISOString();

const open = (dir: string): EventStore => {
  const s = openSqliteStore(dir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  return s.right;
};
const ipamConf = (name: string, subnet: string) => {
  const c = parseIpamConf({ cniVersion: '1.0.0', name, type: 'bridge', raw: { ipam: { subnet } } }, {});
  if (E.isLeft(c)) throw new Error(c.left.msg);
  return c.right;
};
const blue = ipamConf('blue', '10.50.0.0/24');
const ipam = (s: EventStore, time: string, cmd: IpamCommand) => {
  const r = s.transact(ipamStream('blue'), ipamProjection, (st) => decide(cmd, st), { time });
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
};
const alloc = (s: EventStore, time: string, containerId: string) =>
  ipam(s, time, { type: 'AllocateAddresses', data: { conf: blue, containerId, ifname: 'eth0' } });

const config = (() => {
  const c = parseNetConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  if (E.isLeft(c)) throw new Error(c.left);
  return c.right.config;
})();
const lease = (i: number, mac: string): Lease => ({
  subnet: `10.244.${i}.0/24`,
  attrs: { PublicIP: `198.51.100.${i}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } },
  expiration: '2030-01-01T00:00:00.000Z',
});
const NODE = nodeStream('198.51.100.1');
const node = (s: EventStore, time: string, cmd: NodeCommand) => {
  const r = s.transact(NODE, nodeProjection, (st) => E.mapLeft((m: string) => ({ code: 999, msg: m }))(decideNode(cmd, st)), { time });
  if (E.isLeft(r)) throw new Error(r.left.msg);
};

/**
 * The shared log: ipam/blue (t1..t4, t9), node/198.51.100.1 (t5..t7), bridge/blue (t8).
 *   1 t1 AddressAllocated pod-a   2 t2 AddressAllocated pod-b   3 t3 AddressAllocated pod-c
 *   4 t4 AddressReleased pod-a    5 t5 ConfigLoaded   6 t5 SubnetLeased   7 t6 RemoteLeaseSeen .2
 *   8 t7 RemoteLeaseSeen .3       9 t8 AttachmentRecorded   10 t9 AddressAllocated pod-d
 */
const dir = fresh();
beforeAll(() => {
  const s = open(dir);
  alloc(s, t(1), 'pod-a');
  alloc(s, t(2), 'pod-b');
  alloc(s, t(3), 'pod-c');
  ipam(s, t(4), { type: 'ReleaseAddresses', data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0' } });
  node(s, t(5), { type: 'LoadConfig', data: { config } });
  node(s, t(5), { type: 'RecordOwnLease', data: { lease: lease(1, '3e:00:00:00:00:01') } });
  node(s, t(6), {
    type: 'ApplyLeaseEvents',
    data: { events: [{ type: 'added', lease: lease(2, '3e:00:00:00:00:02') }], own: '198.51.100.1' },
  });
  node(s, t(7), {
    type: 'ApplyLeaseEvents',
    data: { events: [{ type: 'added', lease: lease(3, '3e:00:00:00:00:03') }], own: '198.51.100.1' },
  });
  const r = s.transact(
    attachmentStream('blue'),
    attachmentsProjection,
    (st) =>
      decideAttachments(
        {
          type: 'RecordAttachment',
          data: { network: 'blue', containerId: 'pod-b', ifname: 'eth0', netns: '/run/netns/b', hostVeth: 'veth0b', dataDir: dir },
        },
        st,
      ),
    { time: t(8) },
  );
  if (E.isLeft(r)) throw new Error(r.left.msg);
  alloc(s, t(9), 'pod-d');
  s.close();
});

const call = async (argv: string[], extra: { signal?: AbortSignal; onOut?: (s: string) => void } = {}) => {
  let out = '';
  let err = '';
  const code = await cli(argv, {
    out: (s) => {
      out += s;
      extra.onOut?.(s);
    },
    err: (s) => (err += s),
    env: {},
    now: () => NOW,
    ...(extra.signal ? { signal: extra.signal } : {}),
  });
  return { code, out, err };
};
const lines = (out: string) =>
  out
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { position: number; time: string; stream: string; type: string; data: unknown });
const positions = (out: string) => lines(out).map((e) => e.position);

describe('felt events: filters', () => {
  it('--json prints one object per line: position, time, stream, type, data', async () => {
    const r = await call(['events', '--data-dir', dir, '--json', '--limit', '1']);
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toBe(
      '{"position":1,"time":"2024-01-01T00:00:01.000Z","stream":"ipam/blue","type":"AddressAllocated","data":{"network":"blue","containerId":"pod-a","ifname":"eth0","rangeSet":0,"ip":"10.50.0.2"}}\n',
    );
  });
  it('--since and --until take ISO 8601 times, inclusive', async () => {
    expect(
      positions((await call(['events', '--data-dir', dir, '--json', '--since', t(5), '--until', '2024-01-01T00:00:07Z'])).out),
    ).toEqual([5, 6, 7, 8]);
    // Without an offset it is UTC; another offset is converted.
    expect(
      positions(
        (await call(['events', '--data-dir', dir, '--json', '--since', '2024-01-01T00:00:08', '--until', '2024-01-01T02:00:08+02:00'])).out,
      ),
    ).toEqual([9]);
    expect(positions((await call(['events', '--data-dir', dir, '--json', '--until', '2024-01-01'])).out)).toEqual([]);
  });
  it('relative times count back from the clock the app passes in', async () => {
    // NOW is 01:00:00; 59m59s ago is 00:00:01.
    expect(positions((await call(['events', '--data-dir', dir, '--json', '--until', '3599s'])).out)).toEqual([1]);
    expect(positions((await call(['events', '--data-dir', dir, '--json', '--since', '1h', '--until', '59m'])).out)).toEqual([
      1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
    ]);
    expect(parseTime('2h', NOW, 'since')).toBe('2023-12-31T23:00:00.000Z');
    expect(parseTime('1d', NOW, 'since')).toBe('2023-12-31T01:00:00.000Z');
  });
  it('--type is repeatable and takes comma lists; --stream and --network stay', async () => {
    expect(
      positions(
        (await call(['events', '--data-dir', dir, '--json', '--type', 'AddressReleased', '--type', 'RemoteLeaseSeen,AttachmentRecorded']))
          .out,
      ),
    ).toEqual([4, 7, 8, 9]);
    expect(
      positions(
        (await call(['events', '--data-dir', dir, '--json', '--network', 'blue', '--type', 'AddressAllocated', '--since', t(2)])).out,
      ),
    ).toEqual([2, 3, 10]);
    expect(positions((await call(['events', '--data-dir', dir, '--json', '--stream', NODE, '--from', '5'])).out)).toEqual([6, 7, 8]);
    expect((await call(['events', '--data-dir', dir, '--type', 'NoSuchType'])).out).toBe('POSITION  TIME  STREAM  TYPE  DATA\n');
  });
  it('bad times and types are refused naming the option', async () => {
    expect(await call(['events', '--data-dir', dir, '--since', 'yesterday'])).toEqual({
      code: 2,
      out: '',
      err: 'felt events: --since: "yesterday" is not a time (want ISO 8601 such as 2024-01-01T10:00:00Z, or a duration before now such as 10m, 2h, 1d)\n',
    });
    expect((await call(['events', '--data-dir', dir, '--until', '2024-13-01'])).err).toContain('--until: "2024-13-01" is not a time');
    expect((await call(['events', '--data-dir', dir, '--since', t(5), '--until', t(4)])).err).toContain(
      `--since ${t(5)} is after --until ${t(4)}`,
    );
    expect((await call(['events', '--data-dir', dir, '--type', ','])).err).toContain('--type: want an event type');
    expect((await call(['events', '--data-dir', dir, '--follow', '--until', '1h'])).err).toContain(
      '--until cannot be combined with --follow',
    );
    expect((await call(['events', '--data-dir', dir, '--follow', '--limit', '3'])).err).toContain(
      '--limit cannot be combined with --follow',
    );
  });
});

describe('felt events --follow', () => {
  it('in-process: prints what is there, then new events as they are appended, and stops when told', async () => {
    const d = fresh();
    const w = open(d);
    alloc(w, t(1), 'pod-a');
    const stop = new AbortController();
    let seen = '';
    const running = call(['events', '--data-dir', d, '--follow', '--json', '--type', 'AddressAllocated'], {
      signal: stop.signal,
      onOut: (s) => (seen += s),
    });
    try {
      await eventually(() => positions(seen).join() === '1', { what: 'the existing event' });
      alloc(w, t(2), 'pod-b');
      ipam(w, t(3), { type: 'ReleaseAddresses', data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0' } });
      alloc(w, t(4), 'pod-c');
      await eventually(() => positions(seen).join() === '1,2,4', { what: 'the appended allocations (not the release)' });
    } finally {
      stop.abort();
      w.close();
    }
    const r = await running;
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(positions(r.out)).toEqual([1, 2, 4]);
  });

  it('dist/bin/felt: follows a log another process writes, and exits 0 on SIGTERM', async () => {
    const d = fresh();
    const w = open(d);
    alloc(w, t(1), 'pod-a');
    const child = spawn(FELT, ['events', '--data-dir', d, '--follow'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    try {
      await eventually(() => out.includes('10.50.0.2 -> pod-a/eth0'), {
        what: 'felt events --follow prints the existing event',
        timeoutMs: 20_000,
      });
      expect(out.startsWith('POSITION')).toBe(true);
      alloc(w, t(2), 'pod-b');
      alloc(w, t(3), 'pod-c');
      await eventually(() => out.includes('10.50.0.3 -> pod-b/eth0') && out.includes('10.50.0.4 -> pod-c/eth0'), {
        what: 'the events appended by the test',
        timeoutMs: 20_000,
      });
    } finally {
      child.kill('SIGTERM');
      w.close();
    }
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(err).toBe('');
    // The header once, then one line per event.
    expect(
      out
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(/\s+/)[0]),
    ).toEqual(['POSITION', '1', '2', '3']);
  });
});

interface Replayed {
  stream: string;
  position: number;
  events: number;
  state: unknown;
  [k: string]: unknown;
}
const replayJson = async (...argv: string[]): Promise<Replayed> => {
  const r = await call(['replay', '--data-dir', dir, ...argv]);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as Replayed;
};

describe('felt replay', () => {
  it('--at: the stream as it stood at a time; --to: after a position', async () => {
    const at3 = await replayJson('--stream', 'ipam/blue', '--at', t(3));
    expect(at3).toMatchObject({ stream: 'ipam/blue', at: t(3), position: 3, events: 3 });
    expect(Object.keys((at3.state as { allocations: object }).allocations).sort()).toEqual(['10.50.0.2', '10.50.0.3', '10.50.0.4']);
    const to4 = await replayJson('--stream', 'ipam/blue', '--to', '4');
    expect(Object.keys((to4.state as { allocations: object }).allocations).sort()).toEqual(['10.50.0.3', '10.50.0.4']);
    // Relative: 59m59s before NOW is t(1).
    expect(await replayJson('--stream', 'ipam/blue', '--at', '3599s')).toMatchObject({ position: 1, events: 1 });
    // Before anything: the initial state.
    expect(await replayJson('--stream', 'ipam/blue', '--at', '2023-12-31')).toMatchObject({
      position: 0,
      events: 0,
      state: { allocations: {}, lastReserved: {} },
    });
  });

  it('equals the snapshot at the end, for every stream in the log', async () => {
    const all = (await replayJson()) as unknown as {
      position: number;
      events: number;
      streams: Record<string, { position: number; events: number; state: unknown }>;
    };
    expect(all).toMatchObject({ position: 10, events: 10 });
    expect(Object.keys(all.streams)).toEqual(['bridge/blue', 'ipam/blue', NODE]);
    const s = open(dir);
    try {
      for (const [stream, r] of Object.entries(all.streams)) {
        const loaded = s.load(stream, streamKindOf(stream)!.projection);
        expect(E.isRight(loaded) && loaded.right).toEqual({ state: r.state, position: r.position });
      }
    } finally {
      s.close();
    }
  });

  it('--desired: allocations (ipam), attachments (bridge), leases (node)', async () => {
    const ipamAt = await replayJson('--stream', 'ipam/blue', '--at', t(4), '--desired');
    expect((ipamAt['allocations'] as { ip: string; containerId: string }[]).map((a) => `${a.ip} ${a.containerId}`)).toEqual([
      '10.50.0.3 pod-b',
      '10.50.0.4 pod-c',
    ]);
    const bridge = await replayJson('--stream', 'bridge/blue', '--desired');
    expect(bridge['attachments']).toEqual([
      { network: 'blue', containerId: 'pod-b', ifname: 'eth0', netns: '/run/netns/b', hostVeth: 'veth0b', dataDir: dir },
    ]);
    const leases = await replayJson('--stream', NODE, '--at', t(6), '--desired');
    expect(leases).toMatchObject({ position: 7, ownLease: { subnet: '10.244.1.0/24', publicIP: '198.51.100.1' }, kernel: null });
    expect((leases['remoteLeases'] as { subnet: string }[]).map((l) => l.subnet)).toEqual(['10.244.2.0/24']);
    expect(leases['missing']).toContain('--underlay-dev, --underlay-cidr and --underlay-mtu');
  });

  it('--desired with the underlay: the kernel state feltd wants at that time', async () => {
    const args = [
      '--stream',
      NODE,
      '--desired',
      '--underlay-dev',
      'eth0',
      '--underlay-cidr',
      '198.51.100.1/24',
      '--underlay-mtu',
      '1500',
      '--vtep-mac',
      '3e:00:00:00:00:01',
    ];
    const at6 = await replayJson(...args, '--at', t(6));
    const at7 = await replayJson(...args);
    const routes = (r: Replayed) => (r['kernel'] as { routes: { dst: string }[] }).routes.map((x) => x.dst).sort();
    expect(routes(at6)).toEqual(['10.244.2.0/24']);
    expect(routes(at7)).toEqual(['10.244.2.0/24', '10.244.3.0/24']);
    expect(at7['mtu']).toBe(1450);
    expect(at7['subnetEnv']).toContain('FLANNEL_SUBNET=10.244.1.1/24');
    const bad = await call(['replay', '--data-dir', dir, '--stream', NODE, '--desired', '--underlay-dev', 'eth0']);
    expect(bad).toMatchObject({ code: 2, err: 'felt replay: --underlay-cidr is required with --underlay-dev\n' });
    const mtu = await call(['replay', '--data-dir', dir, '--stream', NODE, '--desired', ...args.slice(3, 7), '--underlay-mtu', 'big']);
    expect(mtu.err).toBe('felt replay: --underlay-mtu: "big" is not an MTU (68-65535)\n');
  });

  it('refuses what it cannot replay, naming the option', async () => {
    expect((await call(['replay', '--data-dir', dir, '--stream', 'nope/x'])).err).toContain(
      '--stream: no projection for stream "nope/x" (ipam/..., node/..., bridge/..., ptp/..., host-device/..., tuning/..., firewall/..., cni/...)',
    );
    expect((await call(['replay', '--data-dir', dir, '--stream', 'ipam/blue', '--at', 'soon'])).err).toContain(
      '--at: "soon" is not a time',
    );
    expect((await call(['replay', '--data-dir', dir, '--stream', 'ipam/blue', '--to', '-1'])).err).toContain(
      '--to: "-1" is not an event position',
    );
  });
});

describe('felt export / felt import', () => {
  const withoutPositions = (out: string) => lines(out).map(({ position: _p, ...rest }) => rest);

  it('round trip: export, import into a fresh log, export again: the same lines but positions; snapshots equal the fold', async () => {
    const exported = await call(['export', '--data-dir', dir]);
    expect(exported).toMatchObject({ code: 0, err: '' });
    expect(positions(exported.out)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const file = join(fresh(), 'log.jsonl');
    writeFileSync(file, exported.out);
    const target = fresh();
    // A log that already holds another stream: the import is appended and renumbered.
    const w = open(target);
    const r = w.transact(
      ipamStream('red'),
      ipamProjection,
      (st) =>
        decide({ type: 'AllocateAddresses', data: { conf: ipamConf('red', '10.60.0.0/24'), containerId: 'old-pod', ifname: 'eth0' } }, st),
      { time: '2023-06-01T00:00:00.000Z' },
    );
    expect(E.isRight(r)).toBe(true);
    w.close();
    const imported = await call(['import', '--data-dir', target, file]);
    expect(imported).toEqual({ code: 0, err: '', out: `imported 10 events (positions 2-11) into ${join(target, 'felt.db')}: 3 streams\n` });
    const again = await call(['export', '--data-dir', target, '--since', t(0)]);
    expect(positions(again.out)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(again.out.split('\n').map((l) => l.replace(/^\{"position":\d+,/, ''))).toEqual(
      exported.out.split('\n').map((l) => l.replace(/^\{"position":\d+,/, '')),
    );
    expect(withoutPositions(again.out)).toEqual(withoutPositions(exported.out));
    // The snapshots (what felt allocations reads) equal the fold of the log.
    const s = open(target);
    try {
      expect(s.streams()).toEqual(E.right(['bridge/blue', 'ipam/blue', 'ipam/red', NODE]));
      for (const stream of ['bridge/blue', 'ipam/blue', NODE]) {
        const p = streamKindOf(stream)!.projection;
        expect(s.load(stream, p)).toEqual(replay(s, stream, p));
      }
    } finally {
      s.close();
    }
    const allocations = await call(['allocations', '--data-dir', target]);
    expect(allocations.out).toContain('old-pod');
    expect(allocations.out).toContain('pod-d');
  });

  it('refuses to fold two histories of one stream together unless --merge', async () => {
    const target = fresh();
    const w = open(target);
    alloc(w, t(1), 'pod-x');
    w.close();
    const file = join(target, 'blue.jsonl');
    writeFileSync(file, (await call(['export', '--data-dir', dir, '--network', 'blue', '--until', t(2)])).out);
    expect(await call(['import', '--data-dir', target, file])).toEqual({
      code: 1,
      out: '',
      err: `felt import: stream ipam/blue already has events in ${join(target, 'felt.db')}; nothing imported (import into a new --data-dir, or pass --merge to fold both histories together)\n`,
    });
    expect(positions((await call(['export', '--data-dir', target])).out)).toEqual([1]);
    expect(await call(['import', '--data-dir', target, '--merge', file])).toMatchObject({
      code: 0,
      out: expect.stringContaining('imported 2 events (positions 2-3)'),
    });
    // The fold of both: pod-a's allocation of 10.50.0.2 (imported) overwrote pod-x's.
    const s = open(target);
    try {
      const loaded = s.load(ipamStream('blue'), ipamProjection);
      expect(
        E.isRight(loaded) &&
          Object.values(loaded.right.state.allocations)
            .map((a) => a.containerId)
            .sort(),
      ).toEqual(['pod-a', 'pod-b']);
      expect(loaded).toEqual(replay(s, ipamStream('blue'), ipamProjection));
    } finally {
      s.close();
    }
  });

  it('dist/bin/felt: export | import - through a pipe', () => {
    const target = fresh();
    const exported = spawnSync(FELT, ['export', '--data-dir', dir, '--stream', NODE], { encoding: 'utf8' });
    expect(exported.status).toBe(0);
    const r = spawnSync(FELT, ['import', '--data-dir', target, '-'], { input: exported.stdout, encoding: 'utf8' });
    expect({ status: r.status, stderr: r.stderr, stdout: r.stdout }).toEqual({
      status: 0,
      stderr: '',
      stdout: `imported 4 events (positions 1-4) into ${join(target, 'felt.db')}: 1 stream\n`,
    });
    const again = spawnSync(FELT, ['export', '--data-dir', target], { encoding: 'utf8' });
    expect(withoutPositions(again.stdout)).toEqual(withoutPositions(exported.stdout));
  });

  it('--out FILE, and the filters', async () => {
    const file = join(fresh(), 'node.jsonl');
    const r = await call(['export', '--data-dir', dir, '--stream', NODE, '--type', 'RemoteLeaseSeen', '--out', file]);
    expect(r).toEqual({ code: 0, out: '', err: `felt export: 2 events written to ${file}\n` });
    expect(positions(readFileSync(file, 'utf8'))).toEqual([7, 8]);
    expect(positions((await call(['export', '--data-dir', dir, '--since', t(8), '--until', t(8)])).out)).toEqual([9]);
  });

  it('a bad line imports nothing and names its line number', async () => {
    const good = (await call(['export', '--data-dir', dir, '--network', 'blue'])).out.split('\n').filter(Boolean);
    const target = fresh();
    const w = open(target);
    alloc(w, t(1), 'pod-a');
    w.close();
    const cases: [string, string][] = [
      ['{"time":', 'line 3: not JSON'],
      ['[1,2]', 'line 3: want a JSON object with time, stream, type and data'],
      ['{"time":"2024-01-01T00:00:00.000Z","stream":"ipam/blue","type":"AddressAllocated"}', 'line 3: data: missing'],
      ['{"time":"yesterday","stream":"ipam/blue","type":"AddressAllocated","data":{}}', 'line 3: time: want an ISO 8601 time'],
      ['{"time":"2024-01-01T00:00:00.000Z","stream":"","type":"AddressAllocated","data":{}}', 'line 3: stream: want a non-empty string'],
      [
        '{"time":"2024-01-01T00:00:00.000Z","stream":"ipam/blue","type":"Boom","data":{}}',
        'line 3: type: "Boom" is not an event of ipam/ streams (AddressAllocated, AddressReleased)',
      ],
      [
        '{"position":-4,"time":"2024-01-01T00:00:00.000Z","stream":"ipam/blue","type":"AddressReleased","data":{}}',
        'line 3: position: want a positive integer',
      ],
    ];
    for (const [bad, message] of cases) {
      const file = join(target, 'bad.jsonl');
      writeFileSync(file, [good[0], good[1], bad, good[2]].join('\n') + '\n');
      const r = await call(['import', '--data-dir', target, file]);
      expect(r.code, bad).toBe(1);
      expect(r.err, bad).toContain(`felt import: ${file}: ${message}`);
      expect(r.err, bad).toMatch(/nothing imported\n$/);
    }
    expect(positions((await call(['export', '--data-dir', target])).out)).toEqual([1]);
    expect((await call(['import', '--data-dir', target])).err).toBe('felt import: which file? (FILE, or - for stdin)\n');
    expect((await call(['import', '--data-dir', target, join(target, 'missing.jsonl')])).err).toContain('missing.jsonl: ENOENT');
  });

  it("every event's data is checked as its decider makes it: a bad value names the line and field, and nothing is imported", async () => {
    const target = fresh();
    const w = open(target);
    alloc(w, t(1), 'pod-a');
    w.close();
    const ev = (stream: string, type: string, data: unknown) => JSON.stringify({ time: t(5), stream, type, data });
    const addr = { network: 'blue', containerId: 'pod-z', ifname: 'eth0', rangeSet: 0, ip: '10.50.0.9' };
    const rec = {
      network: 'blue',
      containerId: 'pod-z',
      ifname: 'eth0',
      netns: '/run/netns/p',
      hostVeth: 'veth01',
      dataDir: '/var/lib/felt',
    };
    const cases: [string, string][] = [
      [ev('ipam/blue', 'AddressAllocated', { ...addr, ip: 5 }), 'data.ip: 5 is not a string'],
      [ev('ipam/blue', 'AddressAllocated', { ...addr, ip: '10.50.0.9\n' }), 'data.ip: "10.50.0.9\\n" is not an IP address'],
      [ev('ipam/blue', 'AddressAllocated', { ...addr, ip: '10.050.0.9' }), 'data.ip'],
      [ev('ipam/blue', 'AddressAllocated', { ...addr, ifname: '../x' }), 'data.ifname: interface name "../x"'],
      [ev('ipam/blue', 'AddressAllocated', { ...addr, containerId: 'a/b' }), 'data.containerId'],
      [
        ev('ipam/blue', 'AddressAllocated', { ...addr, network: 'red' }),
        `data.network: "red" is not the stream's network ("blue" of ipam/blue)`,
      ],
      [ev('ipam/blue', 'AddressAllocated', { ...addr, rangeSet: -1 }), 'data.rangeSet'],
      [ev('ipam/blue', 'AddressAllocated', { ...addr, extra: 1 }), 'data: unknown field "extra"'],
      [ev('ipam/blue', 'AddressReleased', { ...addr, reason: 'oops' }), 'data.reason'],
      [ev('ipam/blue', 'AddressAllocated', 'x'), 'data: "x" is not an object'],
      [ev('bridge/blue', 'AttachmentRecorded', { ...rec, hostVeth: 'cni0\nx' }), 'data.hostVeth'],
      [ev('bridge/blue', 'AttachmentRecorded', { ...rec, dataDir: 'rel' }), 'data.dataDir: "rel" is not an absolute path'],
      [ev('bridge/blue', 'AttachmentRecorded', { ...rec, netns: '/run/netns/../x' }), 'data.netns'],
      [ev('bridge/blue', 'AttachmentRecorded', { ...rec, hostVethMac: 'zz' }), 'data.hostVethMac'],
      [
        ev(NODE, 'SubnetLeased', {
          key: '10.244.1.0-24',
          subnet: '10.244.2.0/24',
          publicIP: '198.51.100.1',
          backendType: 'vxlan',
          expiration: t(9),
          renewal: false,
        }),
        'are not those of key',
      ],
      [ev(NODE, 'ConfigLoaded', { config: { ...config, network: '10.244.0.0/33' } }), 'data.config.network'],
      [ev(NODE, 'ConfigLoaded', { config: { ...config, subnetLen: 8 } }), 'data.config: not a config feltd accepts'],
      [
        ev(NODE, 'RemoteLeaseSeen', {
          key: '10.244.3.0-24',
          subnet: '10.244.3.0/24',
          attrs: { PublicIP: 7, BackendType: 'vxlan' },
          expiration: t(9),
          change: 'appeared',
        }),
        'data.attrs.PublicIP',
      ],
      [
        ev('tuning/blue', 'TuningApplied', {
          network: 'blue',
          containerId: 'c',
          ifname: 'eth0',
          netns: '/run/netns/p',
          original: { link: {}, sysctls: [{ key: 'kernel.core_pattern', value: '|x' }] },
        }),
        'data.original.sysctls[0].key',
      ],
      [
        ev('cni/blue', 'AttachmentAdded', {
          network: 'blue',
          containerId: 'c',
          ifname: 'eth0',
          netns: '/run/netns/p',
          plugins: ['../../bin/sh'],
          ips: [],
        }),
        'data.plugins[0]',
      ],
    ];
    for (const [bad, message] of cases) {
      const file = join(target, 'bad.jsonl');
      writeFileSync(file, [ev('ipam/blue', 'AddressAllocated', { ...addr, ip: '10.50.0.8', containerId: 'pod-y' }), bad].join('\n') + '\n');
      const r = await call(['import', '--data-dir', target, '--merge', file]);
      expect(r.code, bad).toBe(1);
      expect(r.err, bad).toContain(`felt import: ${file}: line 2: `);
      expect(r.err, bad).toContain(message);
      expect(r.err, bad).toMatch(/nothing imported\n$/);
    }
    expect(positions((await call(['export', '--data-dir', target])).out)).toEqual([1]);
    // The same events with good data go in, and the log stays readable.
    const file = join(target, 'good.jsonl');
    writeFileSync(
      file,
      [
        ev('ipam/blue', 'AddressAllocated', addr),
        ev('bridge/blue', 'AttachmentRecorded', rec),
        ev('bridge/blue', 'AttachmentReady', { ...rec, netns: undefined, dataDir: undefined, durationMs: 12 }),
      ].join('\n') + '\n',
    );
    expect(await call(['import', '--data-dir', target, '--merge', file])).toMatchObject({ code: 0 });
    expect((await call(['allocations', '--data-dir', target])).out).toContain('10.50.0.9');
  });

  it('a line of a stream felt does not know is imported as it is (and skipped by replay)', async () => {
    const target = fresh();
    const file = join(target, 'x.jsonl');
    writeFileSync(file, '{"time":"2024-01-01T00:00:00.000Z","stream":"other/x","type":"Whatever","data":{"a":1}}\n');
    expect((await call(['import', '--data-dir', target, file])).code).toBe(0);
    const r = await call(['replay', '--data-dir', target]);
    expect(JSON.parse(r.out)).toEqual({ position: 0, events: 0, streams: {}, unknownStreams: { 'other/x': 1 } });
  });
});
