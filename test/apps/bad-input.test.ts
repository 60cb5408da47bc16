// Bad input to felt's bridge, host-local, loopback and sbr executables: every call must fail with the right CNI
// error code, exit 1, print exactly one error object `{cniVersion, code, msg[, details]}` on stdout (no stack
// trace anywhere), and change nothing: no link, no iptables rule, no allocation. The plugins run inside a host
// namespace made here; a pod namespace made here is the CNI_NETNS.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { FELT_CNI } from '../support/cni.ts';
import { cni, exec, feltAllocations, iptSave, links, nsPath, Sandbox, veths, type Run } from '../support/ns.ts';

const sb = new Sandbox();
let host = '';
let pod = '';
let dataDir = '';

beforeAll(async () => {
  host = await sb.ns();
  pod = await sb.ns();
  dataDir = sb.dir();
});
afterAll(() => sb.cleanup());

type Env = Record<string, string | undefined>;
type Type = 'bridge' | 'host-local' | 'loopback' | 'sbr';

const bridgeConf = (extra: Record<string, unknown> = {}) => ({
  cniVersion: '1.0.0',
  name: 'badnet',
  type: 'bridge',
  bridge: 'cnib0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.94.0.0/24' }]], dataDir },
  ...extra,
});
const hostLocalConf = (extra: Record<string, unknown> = {}) => ({
  cniVersion: '1.0.0',
  name: 'badnet',
  type: 'host-local',
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.94.0.0/24' }]], dataDir },
  ...extra,
});
const loopbackConf = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.0.0', name: 'badnet', type: 'loopback', ...extra });
// sbr with a prevResult naming an interface the pod does not have: only the fault under test is wrong.
const sbrConf = (extra: Record<string, unknown> = {}) => ({
  cniVersion: '1.0.0',
  name: 'badnet',
  type: 'sbr',
  prevResult: {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0' }],
    ips: [{ address: '10.94.0.9/24', gateway: '10.94.0.1', interface: 0 }],
  },
  ...extra,
});
const CONF: Record<Type, (extra?: Record<string, unknown>) => Record<string, unknown>> = {
  bridge: bridgeConf,
  'host-local': hostLocalConf,
  loopback: loopbackConf,
  sbr: sbrConf,
};

const goodEnv = (command = 'ADD'): Env => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'bad-ctr',
  CNI_NETNS: nsPath(pod),
  CNI_IFNAME: 'eth0',
  CNI_PATH: FELT_CNI,
});

/** Run a plugin in the host namespace with exactly `env` (plus PATH) and `stdin`. */
async function call(type: Type, env: Env, stdin: string): Promise<Run & { json: any }> {
  const pairs = Object.entries({ PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env })
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  const r = await exec(['ip', 'netns', 'exec', host, 'env', '-i', ...pairs, join(FELT_CNI, type)], stdin);
  let json: any;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { ...r, json };
}

/** Everything a plugin could have changed: host links, nat rules of both families, pod links, allocations. */
async function state(): Promise<unknown> {
  return {
    host: (await links(host)).map((l) => `${l.ifname}:${l.linkinfo?.info_kind ?? ''}:${l.flags.includes('UP')}`),
    pod: (await links(pod)).map((l) => `${l.ifname}:${l.linkinfo?.info_kind ?? ''}:${l.flags.includes('UP')}`),
    nat4: await iptSave(host, 4),
    nat6: await iptSave(host, 6),
    allocations: await feltAllocations(dataDir),
  };
}

/** The call failed the CNI way, with `code`, and a message that contains every one of `names`. */
function expectCniError(r: Run & { json: any }, code: number, ...names: string[]): void {
  expect(r.code, r.stdout + r.stderr).toBe(1);
  // Exactly one JSON object on stdout: JSON.parse of the whole output succeeded and gave an object.
  expect(r.json, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBeTypeOf('object');
  expect(Object.keys(r.json).sort()).toEqual(expect.arrayContaining(['cniVersion', 'code', 'msg']));
  for (const k of Object.keys(r.json)) expect(['cniVersion', 'code', 'msg', 'details']).toContain(k);
  expect(r.json.cniVersion).toBeTypeOf('string');
  expect(r.json.code).toBe(code);
  expect(r.json.msg).toBeTypeOf('string');
  for (const n of names) expect(`${r.json.msg} ${r.json.details ?? ''}`).toContain(n);
  // No stack trace, on stdout or stderr.
  for (const out of [r.stdout, r.stderr]) expect(out).not.toMatch(/\n\s+at .+[(:]\d+|Error: .*\n\s+at /);
}

/** Run a bad call and check that it changed nothing. */
async function bad(type: Type, env: Env, stdin: string, code: number, ...names: string[]): Promise<void> {
  const before = await state();
  const r = await call(type, env, stdin);
  expectCniError(r, code, ...names);
  expect(await state()).toEqual(before);
}

const TYPES: readonly Type[] = ['bridge', 'host-local', 'loopback', 'sbr'];
const cfg = (t: Type, extra?: Record<string, unknown>) => JSON.stringify(CONF[t](extra));

describe.each(TYPES)('%s: the environment', (type) => {
  it.each(['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'])('ADD without %s: code 4 naming it', async (v) => {
    await bad(type, { ...goodEnv(), [v]: undefined }, cfg(type), 4, v);
  });

  it.each(['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'])('DEL without %s: code 4 naming it', async (v) => {
    await bad(type, { ...goodEnv('DEL'), [v]: undefined }, cfg(type), 4, v);
  });

  it('CHECK without CNI_NETNS: code 4 naming it', async () => {
    await bad(type, { ...goodEnv('CHECK'), CNI_NETNS: undefined }, cfg(type), 4, 'CNI_NETNS');
  });

  it('an unknown CNI_COMMAND: code 4 naming it', async () => {
    await bad(type, goodEnv('FROB'), cfg(type), 4, 'FROB');
  });

  it.each(['../x', 'a/b', '/etc', '.hidden', 'a b', '-x'])('a container id %j: code 4', async (id) => {
    await bad(type, { ...goodEnv(), CNI_CONTAINERID: id }, cfg(type), 4, 'containerID');
    await bad(type, { ...goodEnv('DEL'), CNI_CONTAINERID: id }, cfg(type), 4, 'containerID');
  });

  it.each(['a'.repeat(16), 'e/0', 'eth:0', '..'])('an interface name %j: code 4', async (ifname) => {
    await bad(type, { ...goodEnv(), CNI_IFNAME: ifname }, cfg(type), 4, 'interface name');
  });

  it('malformed CNI_ARGS: code 4 naming CNI_ARGS', async () => {
    await bad(type, { ...goodEnv(), CNI_ARGS: 'novalue' }, cfg(type), 4, 'CNI_ARGS');
  });
});

describe.each(TYPES)('%s: the network configuration', (type) => {
  it.each(['{', '', 'not json', '{"cniVersion":"1.0.0",}'])('config %j is not JSON: code 6', async (stdin) => {
    await bad(type, goodEnv(), stdin, 6);
  });

  it('a JSON array: code 6', async () => {
    await bad(type, goodEnv(), '[]', 6);
  });

  it.each(['9.9.9', '0.5.0', '2.0.0'])('cniVersion %s: code 1 naming it', async (v) => {
    await bad(type, goodEnv(), cfg(type, { cniVersion: v }), 1, v);
  });

  it.each(['0.3.0', '0.3.1'])('CHECK at %s: code 1', async (v) => {
    await bad(type, goodEnv('CHECK'), cfg(type, { cniVersion: v }), 1, v, 'CHECK');
  });

  it('GC below 1.1.0: code 1', async () => {
    await bad(type, goodEnv('GC'), cfg(type), 1, 'GC');
  });

  it('no network name: code 7 naming it', async () => {
    await bad(type, goodEnv(), cfg(type, { name: undefined }), 7, 'name');
  });
});

describe('bridge: bad options (code 7, naming the field, nothing changed)', () => {
  it.each([
    [{ hairpinMode: true, promiscMode: true }, ['hairpinMode', 'promiscMode']],
    [{ bridge: 'br/0' }, ['bridge', 'br/0']],
    [{ bridge: 'b'.repeat(16) }, ['bridge']],
    [{ runtimeConfig: { mac: 'zz' } }, ['runtimeConfig.mac', 'zz']],
    [{ args: { cni: { mac: '00:11:22:33:44' } } }, ['args.cni.mac']],
    [{ mtu: '1500' }, ['mtu']],
    [{ mtu: -1 }, ['mtu']],
    [{ isGateway: 'yes' }, ['isGateway']],
    [{ ipMasq: 1 }, ['ipMasq']],
    [{ ipam: 'host-local' }, ['ipam']],
    [{ vlan: 5000 }, ['vlan']],
    [{ dns: ['8.8.8.8'] }, ['dns']],
    [{ disableContainerInterface: true }, ['disableContainerInterface', 'ipam']],
  ] as const)('%j', async (extra, names) => {
    await bad('bridge', goodEnv(), cfg('bridge', extra), 7, ...names);
  });

  it('CNI_ARGS MAC=zz: code 7 naming it', async () => {
    await bad('bridge', { ...goodEnv(), CNI_ARGS: 'IgnoreUnknown=1;MAC=zz' }, cfg('bridge'), 7, 'CNI_ARGS MAC');
  });

  it('an unknown ipam type: an error naming it (the delegate code), and no interface', async () => {
    await bad('bridge', goodEnv(), cfg('bridge', { ipam: { type: 'no-such-ipam', dataDir } }), 105, 'no-such-ipam');
  });

  it.each(['../../bin/sh', '/bin/sh', '..'])(
    'ipam.type %j (a path, not a plugin name): code 7 naming it, nothing run or recorded',
    async (type) => {
      const d = sb.dir();
      await bad('bridge', goodEnv(), cfg('bridge', { ipam: { type, dataDir: d } }), 7, 'ipam.type', JSON.stringify(type));
      expect(readdirSync(d)).toEqual([]);
    },
  );

  it('a bad ipam range: the IPAM error, naming the range', async () => {
    await bad(
      'bridge',
      goodEnv(),
      cfg('bridge', { ipam: { type: 'host-local', ranges: [[{ subnet: '10.94.0.1/24' }]], dataDir } }),
      7,
      'ipam.ranges[0][0].subnet',
    );
    await bad(
      'bridge',
      goodEnv(),
      cfg('bridge', { ipam: { type: 'host-local', ranges: [[{ subnet: '10.94.0.0/31' }]], dataDir } }),
      7,
      'ipam.ranges[0][0]',
    );
  });

  it('CNI_NETNS that does not exist: an error naming it', async () => {
    await bad('bridge', { ...goodEnv(), CNI_NETNS: '/run/netns/felt-no-such-ns' }, cfg('bridge'), 4, '/run/netns/felt-no-such-ns');
  });

  it('CHECK without prevResult: code 7 naming it', async () => {
    await bad('bridge', goodEnv('CHECK'), cfg('bridge', { ipam: undefined }), 7, 'prevResult');
  });
});

describe('a relative or dotted dataDir: code 7 naming the field, before anything is written', () => {
  // Every plugin run here starts in a directory of its own (`env -C`), so a relative dataDir that were used
  // would land in it; `<d>/inner/..` would write `<d>/felt.db`. Both directories must stay as they were.
  const sb3 = new Sandbox();
  afterAll(() => sb3.cleanup());

  const cases: readonly [Type | 'flannel', (dd: string) => Record<string, unknown>, string][] = [
    ['bridge', (dd) => bridgeConf({ ipam: { type: 'host-local', ranges: [[{ subnet: '10.94.0.0/24' }]], dataDir: dd } }), 'ipam.dataDir'],
    ['bridge', (dd) => bridgeConf({ ipam: { dataDir: dd } }), 'ipam.dataDir'],
    [
      'host-local',
      (dd) => hostLocalConf({ ipam: { type: 'host-local', ranges: [[{ subnet: '10.94.0.0/24' }]], dataDir: dd } }),
      'ipam.dataDir',
    ],
    ['flannel', (dd) => ({ cniVersion: '1.0.0', name: 'badnet', type: 'flannel', dataDir: dd }), 'dataDir'],
  ];
  it.each(cases.flatMap(([t, c, field]) => [['rel/data', t, c, field] as const, ['<d>/inner/..', t, c, field] as const]))(
    '%s for %s',
    async (form, type, conf, field) => {
      const cwd = sb3.dir();
      const d = sb3.dir();
      mkdirSync(join(d, 'inner'));
      const dd = form === 'rel/data' ? 'rel/data' : `${d}/inner/..`;
      for (const command of ['ADD', 'DEL']) {
        const env = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...goodEnv(command) };
        const pairs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
        const before = await state();
        const r = await exec(
          ['ip', 'netns', 'exec', host, 'env', '-i', '-C', cwd, ...pairs, join(FELT_CNI, type)],
          JSON.stringify(conf(dd)),
        );
        let json: any;
        try {
          json = JSON.parse(r.stdout);
        } catch {
          json = undefined;
        }
        expectCniError({ ...r, json }, 7, field, JSON.stringify(dd));
        expect(readdirSync(cwd), `${command}: the working directory`).toEqual([]);
        expect(readdirSync(d).sort(), `${command}: the parent of ${dd}`).toEqual(['inner']);
        expect(readdirSync(join(d, 'inner'))).toEqual([]);
        expect(existsSync(join(d, 'felt.db'))).toBe(false);
        expect(await state()).toEqual(before);
      }
    },
  );
});

describe('a felt.db this felt cannot use: code 5 naming the file', () => {
  const sb4 = new Sandbox();
  afterAll(() => sb4.cleanup());

  it.each([
    ['a newer schema version', 'PRAGMA user_version = 7', (f: string) => [`${f} has schema version 7, newer than the version 2`]],
    ['a corrupt snapshot', "UPDATE snapshots SET state = 'nope'", (f: string) => [f, 'corrupt snapshot of ipam/badnet']],
  ] as const)('%s (ADD, bridge and host-local; the file stays as it was)', async (_what, sql, names) => {
    const d = sb4.dir();
    const conf = (type: Type) => ({ ...CONF[type](), ipam: { type: 'host-local', ranges: [[{ subnet: '10.94.0.0/24' }]], dataDir: d } });
    const first = await call('host-local', goodEnv(), JSON.stringify(conf('host-local')));
    expect(first.code, first.stdout).toBe(0);
    const file = join(d, 'felt.db');
    const raw = new Database(file);
    raw.exec(sql);
    const version = raw.pragma('user_version', { simple: true });
    raw.close();
    for (const type of ['host-local', 'bridge'] as const) {
      const before = await state();
      const r = await call(type, { ...goodEnv(), CNI_CONTAINERID: `second-${type}` }, JSON.stringify(conf(type)));
      expectCniError(r, 5, ...names(file));
      expect(await state()).toEqual(before);
    }
    const after = new Database(file, { readonly: true });
    expect(after.pragma('user_version', { simple: true })).toBe(version);
    after.close();
  });
});

describe('host-local: bad input', () => {
  it('unknown CNI_ARGS without IgnoreUnknown: refused, naming the key', async () => {
    const r = await call('host-local', { ...goodEnv(), CNI_ARGS: 'FOO=bar' }, cfg('host-local'));
    expect(r.code).toBe(1);
    expect(r.json.msg).toContain('FOO');
    expect(await feltAllocations(dataDir)).toEqual([]);
  });

  it('a requested address outside every range: refused, naming it', async () => {
    const r = await call('host-local', { ...goodEnv(), CNI_ARGS: 'IP=192.0.2.7' }, cfg('host-local'));
    expect(r.code).toBe(1);
    expect(r.json.msg).toContain('192.0.2.7');
    expect(await feltAllocations(dataDir)).toEqual([]);
  });
});

describe('an exhausted range', () => {
  const sb2 = new Sandbox();
  afterAll(() => sb2.cleanup());

  it('bridge: the second ADD on a /30 gets code 100 naming the range, and leaves nothing behind', async () => {
    const [h, p1, p2, d] = [await sb2.ns(), await sb2.ns(), await sb2.ns(), sb2.dir()];
    const conf = { ...bridgeConf(), ipam: { type: 'host-local', ranges: [[{ subnet: '10.95.0.0/30' }]], dataDir: d } };
    const first = await cni({ dir: FELT_CNI, hostNs: h, pod: p1, cid: 'first' }, 'ADD', conf);
    expect(first.code, first.stdout).toBe(0);
    expect(first.json.ips[0].address).toBe('10.95.0.2/30');
    const hostBefore = await veths(h);
    const nat = await iptSave(h, 4);
    const second = await cni({ dir: FELT_CNI, hostNs: h, pod: p2, cid: 'second' }, 'ADD', conf);
    expectCniError({ ...second, json: second.json }, 100, 'ipam.ranges[0]', '10.95.0.2');
    expect(await veths(h)).toEqual(hostBefore);
    expect(await iptSave(h, 4)).toEqual(nat);
    expect((await links(p2)).map((l) => l.ifname)).toEqual(['lo']);
    expect((await feltAllocations(d)).map((a) => [a.containerId, a.ip])).toEqual([['first', '10.95.0.2']]);
    expect((await cni({ dir: FELT_CNI, hostNs: h, pod: p1, cid: 'first' }, 'DEL', conf)).code).toBe(0);
    expect(await feltAllocations(d)).toEqual([]);
  });

  it('host-local: the same, called directly', async () => {
    const [h, d] = [await sb2.ns(), sb2.dir()];
    const conf = { ...hostLocalConf(), ipam: { type: 'host-local', ranges: [[{ subnet: '10.95.0.0/30' }]], dataDir: d } };
    const c = (cid: string) => ({ dir: FELT_CNI, hostNs: h, pod: '/run/netns/unused', cid });
    expect((await cni(c('first'), 'ADD', conf)).code).toBe(0);
    const second = await cni(c('second'), 'ADD', conf);
    expectCniError({ ...second, json: second.json }, 100, 'ipam.ranges[0]');
    expect((await feltAllocations(d)).map((a) => a.containerId)).toEqual(['first']);
  });
});
