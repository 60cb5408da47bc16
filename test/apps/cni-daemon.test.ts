// feltd serving CNI (apps/feltd/cni-server.ts, cni-service.ts) and felt's forwarders
// (apps/cni/forwarder/forwarder.c): a call forwarded from a runtime's namespace acts there, as the
// executable would; nothing but CNI_* from the caller is honoured; bad clients are dropped with one log line
// while the daemon keeps serving; a lost daemon makes ADD answer 11 and DEL run in-process; SIGKILL and
// restarts with calls in flight leave nothing a DEL does not remove; the socket's life cycle (0600, a stale
// one replaced, a live one refused by name). Each test starts its own `feltd --cni-only` on a temporary socket.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, openSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { CNI_ENTRIES } from '../../apps/cni/entries.ts';
import { MAX_BODY, parseReply, requestFrame, type CniRequest } from '../../apps/feltd/cni-server.ts';
import { cniService } from '../../apps/feltd/cni-service.ts';
import { parseFlags } from '../../apps/feltd/flags.ts';
import { Metrics } from '../../apps/feltd/observability.ts';
import { eventually } from '../support/eventually.ts';
import { FELT_CNI, ROOT, runCni, type CniCall } from '../support/cni.ts';
import { cniChains, cniRules, feltAllocations, nsPath, Sandbox, veths } from '../support/ns.ts';

const sb = new Sandbox();
const daemons: Feltd[] = [];
afterAll(async () => {
  for (const d of daemons) d.proc.exitCode === null && d.proc.signalCode === null && d.proc.kill('SIGKILL');
  await sb.cleanup();
});

interface Feltd {
  readonly proc: ChildProcess;
  readonly socket: string;
  readonly log: () => string;
  readonly exited: Promise<number | null>;
}

const connects = (path: string): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

let logs = 0;
/** Start `feltd --cni-only` on `socket` (its own process group) and wait until it serves; or until it exits. */
async function feltd(socket: string, extra: readonly string[] = [], wait = true, inNs?: string): Promise<Feltd> {
  const logFile = join(sb.dir(), `feltd-${logs++}.log`);
  const out = openSync(logFile, 'a');
  const state = join(sb.dir(), 'state');
  const argv = [join(ROOT, 'dist/bin/feltd'), '--cni-only', `--cni-socket=${socket}`, `--state-dir=${state}`, ...extra];
  // In a namespace of the test's (`ip netns exec` execs: the PID is feltd's), traced: a node's feltd beside its runtime.
  const proc = spawn(inNs ? 'ip' : argv[0]!, inNs ? ['netns', 'exec', inNs, ...argv] : argv.slice(1), {
    stdio: ['ignore', out, out],
    detached: true,
    ...(inNs ? { env: { ...process.env, FELT_TRACE: '1' } } : {}),
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const d: Feltd = { proc, socket, log: () => readFileSync(logFile, 'utf8'), exited };
  daemons.push(d);
  if (wait)
    await eventually(async () => (await connects(socket)) || (proc.exitCode !== null ? 'exited' : false), {
      what: `feltd serving ${socket}`,
      timeoutMs: 30_000,
    });
  return d;
}

/** The daemon's log lines with this message. */
const lines = (d: Feltd, msg: string): Record<string, unknown>[] =>
  d
    .log()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['msg'] === msg);

/** Send raw bytes, half-close, and collect what comes back until the server closes. */
function raw(socket: string, bytes: Buffer, end = true): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = connect(socket);
    const got: Buffer[] = [];
    s.on('data', (b) => got.push(b));
    s.on('error', () => undefined);
    s.on('close', () => resolve(Buffer.concat(got)));
    s.write(bytes);
    if (end) s.end();
  });
}

const ownNetns = () => {
  const st = statSync('/proc/self/ns/net', { bigint: true });
  return { dev: st.dev, ino: st.ino };
};

const hostLocalConf = (dataDir: string, subnet = '198.51.100.0/24') =>
  JSON.stringify({ cniVersion: '1.1.0', name: 'dnet', type: 'x', ipam: { type: 'host-local', dataDir, ranges: [[{ subnet }]] } });

/** A host-local ADD as the forwarder would send it, from this process (feltd's own namespace). */
const hostLocalAdd = (dataDir: string, cid: string, env: readonly string[] = []): CniRequest => ({
  pid: process.pid,
  netns: ownNetns(),
  type: 'host-local',
  env: ['CNI_COMMAND=ADD', `CNI_CONTAINERID=${cid}`, 'CNI_NETNS=/proc/self/ns/net', 'CNI_IFNAME=eth0', `CNI_PATH=${FELT_CNI}`, ...env],
  stdin: hostLocalConf(dataDir),
});

const bridgeConf = (dataDir: string, bridge: string) => ({
  cniVersion: '1.1.0',
  name: 'dbr',
  type: 'bridge',
  bridge,
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '198.51.100.0/24' }]] },
});

const via = (socket: string, c: Omit<CniCall, 'dir'> & { dir?: string }, more: Record<string, string> = {}) =>
  runCni({ dir: FELT_CNI, ...c, env: { FELT_CNI_SOCKET: socket, ...more, ...(c.env ?? {}) } });

function expectSoundLog(dataDir: string): void {
  const file = join(dataDir, 'felt.db');
  if (!existsSync(file)) return;
  const db = new Database(file, { readonly: true });
  try {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
  } finally {
    db.close();
  }
}

/** Processes still in process group `pgid` (feltd's children outlive a SIGKILL of feltd). */
function liveInGroup(pgid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) === pgid && f[0] !== 'Z' && f[0] !== 'X') out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

/** The seeded delays of the kill tests (FELT_CRASH_SEED picks another seed). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0), s / 2 ** 32);
}

describe('the plugin table', () => {
  it('feltd serves every plugin executable apps/cni/bin builds', () => {
    const bins = readdirSync(join(ROOT, 'apps/cni/bin'))
      .map((f) => f.replace(/\.ts$/, ''))
      .sort();
    expect(Object.keys(CNI_ENTRIES).sort()).toEqual(bins);
    for (const [type, e] of Object.entries(CNI_ENTRIES)) expect(e.plugin.type).toBe(type);
  });
});

describe('feltd serving CNI', () => {
  it('acts in the namespace the runtime ran the plugin in, as the executable does; counted in /metrics', async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    const port = 20000 + (process.pid % 20000);
    const d = await feltd(socket, ['--healthz-ip=127.0.0.1', `--healthz-port=${port}`]);
    expect(lstatSync(socket).mode & 0o777).toBe(0o600);
    const host = await sb.ns();
    const pod = await sb.ns();
    const data = join(dir, 'data');
    const conf = bridgeConf(data, 'brdm0');
    const add = await via(socket, {
      type: 'bridge',
      command: 'ADD',
      hostNs: host,
      netns: nsPath(pod),
      containerId: 'c1',
      ifname: 'eth0',
      config: conf,
    });
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(add.json.ips[0].address).toBe('198.51.100.2/24');
    // The bridge and the veth are in the test's host namespace, not feltd's.
    expect((await veths(host)).length).toBe(1);
    expect(await cniChains(host)).toHaveLength(1);
    expect((await feltAllocations(data)).map((a) => a.ip)).toEqual(['198.51.100.2']);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toContain('felt_cni_requests_total{code="0",command="ADD",plugin="bridge"} 1');
    expect(metrics).toMatch(/felt_cni_request_duration_seconds_count\{command="ADD",plugin="bridge"\} 1/);
    const del = await via(socket, {
      type: 'bridge',
      command: 'DEL',
      hostNs: host,
      netns: nsPath(pod),
      containerId: 'c1',
      ifname: 'eth0',
      config: conf,
    });
    expect(del.code, del.stdout).toBe(0);
    expect(await veths(host)).toEqual([]);
    expect(await cniChains(host)).toEqual([]);
    expect(await feltAllocations(data)).toEqual([]);
    // Without CNI_COMMAND: the about text on stderr, from the daemon.
    const about = await via(socket, { type: 'bridge', command: 'VERSION', config: '' }, {});
    expect(about.json.supportedVersions).toContain('1.1.0');
    d.proc.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    expect(existsSync(socket)).toBe(false);
  });

  it("in the runtime's own namespace (a node's feltd), the host's ip reads and changes go to one long-lived ip; pods attach, reach each other and go", async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    const host = await sb.ns();
    const d = await feltd(socket, [], true, host);
    const pods = [await sb.ns(), await sb.ns(), await sb.ns()];
    const data = join(dir, 'data');
    const conf = bridgeConf(data, 'brds0');
    const call = (command: 'ADD' | 'DEL', i: number) =>
      via(socket, { type: 'bridge', command, hostNs: host, netns: nsPath(pods[i]!), containerId: `s${i}`, ifname: 'eth0', config: conf });
    // One alone (it makes the bridge), then two at once.
    const first = await call('ADD', 0);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const more = await Promise.all([call('ADD', 1), call('ADD', 2)]);
    for (const r of more) expect(r.code, r.stdout + r.stderr).toBe(0);
    const ips = [first, ...more].map((r) => (r.json.ips[0].address as string).split('/')[0]!);
    expect(new Set(ips).size).toBe(3);
    expect((await veths(host)).length).toBe(3);
    expect(await cniChains(host)).toHaveLength(3);
    const ping = spawnSync('ip', ['netns', 'exec', pods[0]!, 'ping', '-c', '1', '-W', '5', ips[2]!]);
    expect(ping.status, ping.stdout?.toString()).toBe(0);
    for (const r of await Promise.all([0, 1, 2].map((i) => call('DEL', i)))) expect(r.code, r.stdout).toBe(0);
    expect(await veths(host)).toEqual([]);
    expect(await cniChains(host)).toEqual([]);
    expect(await feltAllocations(data)).toEqual([]);
    // Every host ip batch went to the session: no `ip` process of its own in feltd's namespace (the pods' enter
    // theirs: `ip -n NAME`), while the pods' were run.
    const spawned = d
      .log()
      .split('\n')
      .filter((l) => / \$ \[/.test(l));
    expect(spawned.filter((l) => /\$ \["ip","(?!-n")/.test(l))).toEqual([]);
    expect(spawned.some((l) => /\$ \["ip","-n","[^"]+","-force"|\$ \["nsenter","--net=[^"]+","ip"/.test(l))).toBe(true);
    d.proc.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });

  it("in the runtime's own namespace, a bridge ADD answers before any iptables-save: its masquerade is written as desired and checked once feltd is idle; its pod's ip batch was started ahead; feltd runs at nice -10", async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    const host = await sb.ns();
    const d = await feltd(socket, [], true, host);
    // `ip netns exec` execs: the PID is feltd's.
    expect(Number(readFileSync(`/proc/${d.proc.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16])).toBe(-10);
    const pod = await sb.ns();
    const conf = { ...bridgeConf(join(dir, 'data'), 'brdm0'), ipam: { type: 'static', addresses: [{ address: '198.51.100.77/24' }] } };
    const call = (command: 'ADD' | 'DEL') =>
      via(socket, { type: 'bridge', command, hostNs: host, netns: nsPath(pod), containerId: 'm1', ifname: 'eth0', config: conf });
    const jumps = async (): Promise<string[]> => (await cniRules(host)).filter((l) => l.startsWith('-A POSTROUTING '));
    // The trace lines of feltd's answer to the n-th ADD (from its request to its reply).
    const addTrace = (n: number): string[] => {
      const all = d.log().split('\n');
      const starts = all.flatMap((l, i) => (/ request bridge ADD$/.test(l) ? [i] : []));
      const from = starts[n]!;
      const to = all.findIndex((l, i) => i > from && / reply bridge ADD: /.test(l));
      return all.slice(from, to + 1);
    };
    const first = await call('ADD');
    expect(first.code, first.stdout).toBe(0);
    const jump = await jumps();
    expect(jump).toHaveLength(1);
    expect(addTrace(0).filter((l) => /iptables-save/.test(l))).toEqual([]);
    expect(addTrace(0).some((l) => /\$ \["ip","-n","[^"]+","-force","-batch","-"\] \(started ahead\)/.test(l))).toBe(true);
    // Its DEL drops the check that was waiting (the DEL reads and removes all of it).
    expect((await call('DEL')).code).toBe(0);
    expect(await cniRules(host)).toEqual([]);
    // The same container and address added again with a jump of its left behind (a second ADD with no DEL,
    // which the spec rules out): the ADD, which did not read first, makes a second copy, and the check removes it
    // once feltd is idle, saying so.
    const chain = / -j (CNI-\S+)$/.exec(jump[0]!)![1]!;
    const plant = (): void => {
      const planted = spawnSync('ip', ['netns', 'exec', host, 'iptables-restore', '--noflush'], {
        input: `*nat\n:${chain} - [0:0]\n${jump[0]}\nCOMMIT\n`,
      });
      expect(planted.status, planted.stderr?.toString()).toBe(0);
    };
    const found = (): number =>
      d
        .log()
        .split('\n')
        .filter((l) => /bridge: m1\/eth0: the masquerade check found what the ADD did not expect; rule\.del/.test(l)).length;
    plant();
    expect((await call('ADD')).code).toBe(0);
    await eventually(() => found() === 1, { what: 'the check finds the second jump' });
    expect(await jumps()).toEqual(jump);
    expect((await call('DEL')).code).toBe(0);
    expect(await cniRules(host)).toEqual([]);
    // Again, and the next call on the attachment is a DEL of another plugin (of its chain, say): the check runs
    // before it instead of going.
    plant();
    expect((await call('ADD')).code).toBe(0);
    const other = await via(socket, {
      type: 'host-local',
      command: 'DEL',
      hostNs: host,
      netns: nsPath(pod),
      containerId: 'm1',
      ifname: 'eth0',
      config: JSON.parse(hostLocalConf(join(dir, 'other'))) as Record<string, unknown>,
    });
    expect(other.code, other.stdout).toBe(0);
    expect(found()).toBe(2);
    expect(await jumps()).toEqual(jump);
    expect((await call('DEL')).code).toBe(0);
    expect(await cniRules(host)).toEqual([]);
    expect(await cniChains(host)).toEqual([]);
    d.proc.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });

  it("in the runtime's own namespace, bandwidth's qdisc and filter reads and changes go to one long-lived tc", async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    const host = await sb.ns();
    const d = await feltd(socket, [], true, host);
    const pod = await sb.ns();
    const conf = bridgeConf(join(dir, 'data'), 'brdt0');
    const bw = (prevResult: unknown) => ({
      cniVersion: '1.1.0',
      name: 'dbr',
      type: 'bandwidth',
      ingressRate: 8_000_000,
      ingressBurst: 100_000,
      egressRate: 8_000_000,
      egressBurst: 100_000,
      prevResult,
    });
    const call = (type: string, command: 'ADD' | 'DEL', config: object) =>
      via(socket, { type, command, hostNs: host, netns: nsPath(pod), containerId: 't0', ifname: 'eth0', config });
    const added = await call('bridge', 'ADD', conf);
    expect(added.code, added.stdout + added.stderr).toBe(0);
    const limited = await call('bandwidth', 'ADD', bw(added.json));
    expect(limited.code, limited.stdout + limited.stderr).toBe(0);
    const qdiscs = async (): Promise<string[]> =>
      (
        JSON.parse(spawnSync('ip', ['netns', 'exec', host, 'tc', '-json', 'qdisc', 'show']).stdout.toString()) as {
          kind: string;
          dev: string;
        }[]
      )
        .filter((q) => q.kind === 'tbf' || q.kind === 'ingress')
        .map((q) => `${q.kind} ${q.dev}`);
    expect((await qdiscs()).sort()).toEqual(
      expect.arrayContaining([expect.stringMatching(/^tbf bwp/), expect.stringMatching(/^ingress veth/)]),
    );
    expect((await call('bandwidth', 'DEL', bw(added.json))).code).toBe(0);
    expect((await call('bridge', 'DEL', conf)).code).toBe(0);
    expect(await qdiscs()).toEqual([]);
    // No `tc` process in feltd's namespace: every host read and change went to the session.
    const spawned = d
      .log()
      .split('\n')
      .filter((l) => / \$ \[/.test(l));
    expect(spawned.filter((l) => /\$ \["tc",/.test(l))).toEqual([]);
    expect(d.log()).toMatch(/session tc: /);
    d.proc.kill('SIGTERM');
    expect(await d.exited).toBe(0);
  });

  it('honours nothing but CNI_* from the caller, and refuses a caller whose namespace is not the one it names', async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    await feltd(socket);
    const data = join(dir, 'data');
    // FELT_CNI_DAEMON_LOST would make an executable answer 11; PATH would hide ip; the first CNI_COMMAND wins.
    const r = parseReply(
      await raw(
        socket,
        requestFrame(hostLocalAdd(data, 'c1', ['FELT_CNI_DAEMON_LOST=1', 'PATH=/nowhere', 'NODE_OPTIONS=--bogus', 'CNI_COMMAND=DEL'])),
      ),
    );
    if (typeof r === 'string') throw new Error(r);
    expect(r.code, r.stdout).toBe(0);
    expect(JSON.parse(r.stdout).ips[0].address).toBe('198.51.100.2/24');
    const wrong = parseReply(await raw(socket, requestFrame({ ...hostLocalAdd(data, 'c2'), netns: { dev: 1n, ino: 2n } })));
    if (typeof wrong === 'string') throw new Error(wrong);
    expect(wrong.code).toBe(1);
    expect(JSON.parse(wrong.stdout)).toMatchObject({ code: 4, msg: expect.stringContaining(`/proc/${process.pid}/ns/net`) });
    expect((await feltAllocations(data)).map((a) => a.containerId)).toEqual(['c1']);
  });

  it('drops a client that sends garbage, an oversized frame, stalls or closes early, with one log line each, and keeps serving', async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    const d = await feltd(socket, ['--cni-client-timeout=0.3']);
    const data = join(dir, 'data');
    const good = requestFrame(hostLocalAdd(data, 'c1'));
    const oversized = Buffer.from(good);
    oversized.writeUInt32LE(MAX_BODY + 1, 8);
    const inner = Buffer.from(good);
    inner.writeUInt32LE(0xffffff, 12 + 20); // the plugin type's length runs past the body
    const cases: [string, Promise<Buffer>][] = [
      ['garbage', raw(socket, Buffer.from('GET / HTTP/1.0\r\n\r\n'))],
      ['oversized', raw(socket, oversized)],
      ['malformed', raw(socket, inner)],
      ['closes early', raw(socket, good.subarray(0, 30))],
      ['stalls', raw(socket, good.subarray(0, 30), false)],
      ['trailing bytes', raw(socket, Buffer.concat([good, Buffer.from('x')]))],
    ];
    for (const [what, p] of cases) expect((await p).length, what).toBe(0);
    const dropped = await eventually(() => lines(d, 'dropped a CNI client').length === cases.length && lines(d, 'dropped a CNI client'), {
      what: `${cases.length} drop lines in ${d.log()}`,
      timeoutMs: 10_000,
    });
    expect(dropped.map((l) => l['reason'])).toEqual(
      expect.arrayContaining([
        expect.stringContaining('wrong magic'),
        expect.stringContaining('more than'),
        expect.stringContaining('malformed'),
        expect.stringContaining('closed after'),
        expect.stringContaining('no whole request'),
        expect.stringContaining('after the request'),
      ]),
    );
    const r = parseReply(await raw(socket, requestFrame(hostLocalAdd(data, 'c9'))));
    expect(typeof r !== 'string' && r.code).toBe(0);
    expect(d.proc.exitCode).toBe(null);
  });

  it('answers 200 connections at once, each its own address', async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    await feltd(socket);
    const data = join(dir, 'data');
    const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => raw(socket, requestFrame(hostLocalAdd(data, `c${i}`)))));
    const ips = replies.map((b) => {
      const r = parseReply(b);
      if (typeof r === 'string' || r.code !== 0) throw new Error(`a call failed: ${typeof r === 'string' ? r : r.stdout}`);
      return JSON.parse(r.stdout).ips[0].address as string;
    });
    expect(new Set(ips).size).toBe(200);
    expect((await feltAllocations(data)).length).toBe(200);
  });
});

describe('what feltd shows of the calls it served', () => {
  it('the bridge attachments per network of the logs it served, and the calls of the last minute', async () => {
    const dir = sb.dir();
    const data = join(dir, 'data');
    const host = await sb.ns();
    const pod = await sb.ns();
    // An attachment made standalone, then a call feltd serves on the same log.
    const add = await via('', {
      type: 'bridge',
      command: 'ADD',
      hostNs: host,
      netns: nsPath(pod),
      containerId: 'a1',
      ifname: 'eth0',
      config: bridgeConf(data, 'brda0'),
    });
    expect(add.code, add.stdout).toBe(0);
    const metrics = new Metrics();
    const quiet = { info: () => undefined, debug: () => undefined, error: () => undefined };
    const service = cniService({ log: quiet, metrics });
    try {
      expect(service.attachments()).toEqual([]);
      const r = await service.handle(hostLocalAdd(data, 'h1'));
      expect(r.code, r.stdout).toBe(0);
      expect(service.attachments()).toEqual([{ network: 'dbr', count: 1 }]);
      expect(service.perMinute()).toBe(1);
      expect(metrics.value('felt_cni_requests_total', { plugin: 'host-local', command: 'ADD', code: '0' })).toBe(1);
    } finally {
      service.close();
    }
    const del = await via('', {
      type: 'bridge',
      command: 'DEL',
      hostNs: host,
      netns: nsPath(pod),
      containerId: 'a1',
      ifname: 'eth0',
      config: bridgeConf(data, 'brda0'),
    });
    expect(del.code, del.stdout).toBe(0);
  });

  it('--cni-only needs a socket', () => {
    expect(parseFlags(['--cni-only', '--cni-socket='])).toEqual({ error: expect.stringContaining('--cni-socket must not be empty') });
    expect(parseFlags(['--cni-only'])).toMatchObject({ flags: { cniOnly: true, cniSocket: '/run/felt/cni.sock', cniClientTimeout: 10 } });
  });
});

describe('the socket', () => {
  it('a socket a dead feltd left is replaced; a live one makes a second feltd refuse, naming it; a file that is not a socket is refused', async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    const first = await feltd(socket);
    first.proc.kill('SIGKILL');
    await first.exited;
    expect(lstatSync(socket).isSocket()).toBe(true);
    const second = await feltd(socket);
    expect(lines(second, 'replaced the CNI socket a stopped feltd left')).toHaveLength(1);
    const third = await feltd(socket, [], false);
    expect(await third.exited).toBe(1);
    expect(third.log()).toContain(`another feltd is serving CNI on ${socket}`);
    expect(await connects(socket)).toBe(true); // the second still serves
    const file = join(dir, 'plain');
    writeFileSync(file, 'mine\n');
    const fourth = await feltd(file, [], false);
    expect(await fourth.exited).toBe(1);
    expect(fourth.log()).toContain(`${file} exists and is not a socket`);
    expect(readFileSync(file, 'utf8')).toBe('mine\n');
  });
});

describe('a lost daemon', () => {
  /** A server that takes the request and then closes without answering, or never answers. */
  async function fake(socket: string, behaviour: 'close' | 'silent'): Promise<Server> {
    const s = createServer({ allowHalfOpen: true }, (c) => {
      c.on('error', () => undefined);
      c.on('end', () => (behaviour === 'close' ? c.destroy() : undefined));
    });
    await new Promise<void>((r) => s.listen(socket, r));
    return s;
  }

  it.each(['close', 'silent'] as const)(
    'that %s: ADD answers 11 and changes nothing; DEL and VERSION run in-process',
    async (behaviour) => {
      const dir = sb.dir();
      const socket = join(dir, 'cni.sock');
      const server = await fake(socket, behaviour);
      try {
        const host = await sb.ns();
        const pod = await sb.ns();
        const data = join(dir, 'data');
        const conf = bridgeConf(data, 'brdl0');
        const call = (command: 'ADD' | 'DEL' | 'VERSION') =>
          via(
            socket,
            { type: 'bridge', command, hostNs: host, netns: nsPath(pod), containerId: 'c1', ifname: 'eth0', config: conf },
            { FELT_CNI_TIMEOUT: '0.5' },
          );
        const add = await call('ADD');
        expect(add.code).toBe(1);
        expect(add.json).toMatchObject({ cniVersion: '1.1.0', code: 11, msg: expect.stringContaining('try again later') });
        expect(await veths(host)).toEqual([]);
        expect(existsSync(join(data, 'felt.db'))).toBe(false);
        const del = await call('DEL');
        expect(del.code, del.stdout).toBe(0);
        const version = await call('VERSION');
        expect(version.json.supportedVersions).toContain('1.1.0');
      } finally {
        server.close();
      }
    },
  );

  it('feltd SIGKILLed during ADDs at seeded random moments: each ADD succeeds or answers 11, and a DEL then leaves nothing; the log is sound', async () => {
    const random = rng(Number(process.env['FELT_CRASH_SEED'] ?? 20261207));
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    const data = join(dir, 'data');
    const host = await sb.ns();
    const conf = bridgeConf(data, 'brdk0');
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) {
      const pod = await sb.ns();
      const d = await feltd(socket);
      const add = via(socket, {
        type: 'bridge',
        command: 'ADD',
        hostNs: host,
        netns: nsPath(pod),
        containerId: `k${i}`,
        ifname: 'eth0',
        config: conf,
      });
      await new Promise((r) => setTimeout(r, 20 + random() * 250));
      d.proc.kill('SIGKILL');
      const r = await add;
      codes.push(r.code === 0 ? 0 : r.json?.code);
      expect([0, 11], r.stdout + r.stderr).toContain(codes.at(-1));
      // feltd's children (ip, iptables-restore) finish what they were doing before the DEL comes.
      await eventually(() => liveInGroup(d.proc.pid!).length === 0, { what: "feltd's process group gone", timeoutMs: 20_000 });
      // No daemon now: the DEL runs in-process.
      const del = await via(socket, {
        type: 'bridge',
        command: 'DEL',
        hostNs: host,
        netns: nsPath(pod),
        containerId: `k${i}`,
        ifname: 'eth0',
        config: conf,
      });
      expect(del.code, del.stdout).toBe(0);
      expect(await veths(host)).toEqual([]);
      expect(await veths(pod)).toEqual([]);
      expect(await cniChains(host)).toEqual([]);
      expect(await feltAllocations(data)).toEqual([]);
      expectSoundLog(data);
    }
    console.log(`feltd SIGKILLed during ADD: outcomes ${codes.join(' ')}`);
  });

  it('feltd restarted while calls are in flight: every call answers, and DELs then leave nothing', async () => {
    const dir = sb.dir();
    const socket = join(dir, 'cni.sock');
    const data = join(dir, 'data');
    const host = await sb.ns();
    const conf = bridgeConf(data, 'brdr0');
    const pods = await Promise.all(Array.from({ length: 6 }, () => sb.ns()));
    const first = await feltd(socket);
    const adds = pods.map((pod, i) =>
      via(socket, { type: 'bridge', command: 'ADD', hostNs: host, netns: nsPath(pod), containerId: `r${i}`, ifname: 'eth0', config: conf }),
    );
    // Restart once the first call has reached feltd: SIGTERM answers the calls in flight, then a new feltd.
    await eventually(() => /"serving CNI"/.test(first.log()) && existsSync(socket), { what: 'feltd serving', timeoutMs: 10_000 });
    first.proc.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    await feltd(socket);
    const results = await Promise.all(adds);
    for (const r of results) expect([0, 11], r.stdout + r.stderr).toContain(r.code === 0 ? 0 : r.json?.code);
    for (const [i, pod] of pods.entries()) {
      const del = await via(socket, {
        type: 'bridge',
        command: 'DEL',
        hostNs: host,
        netns: nsPath(pod),
        containerId: `r${i}`,
        ifname: 'eth0',
        config: conf,
      });
      expect(del.code, del.stdout).toBe(0);
    }
    expect(await veths(host)).toEqual([]);
    expect(await cniChains(host)).toEqual([]);
    expect(await feltAllocations(data)).toEqual([]);
    expectSoundLog(data);
  });
});
