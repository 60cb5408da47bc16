// Kernel end-to-end tests of felt's tuning plugin through the real executable (dist/cni/tuning), chained after
// felt's bridge + host-local as a runtime runs a conflist: values applied in the pod namespace, the result
// (prevResult with the new MAC), CHECK of the whole chain, drift, DEL restoring every original value (sysctls
// too), DEL again; and bad input refused with the right code and field and nothing changed. Every test builds
// its own host and pod namespaces and removes them. Needs root, iproute2 and a build (`npm run build`).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import type { StoredEvent } from '../../core/events.ts';
import { FELT_CNI } from '../support/cni.ts';
import { cni, link, nsPath, nsRun, ping, Sandbox, sysctl, type Call } from '../support/ns.ts';

const VERSIONS = ['0.4.0', '1.0.0', '1.1.0'] as const;
const SYSCTLS = { 'net.ipv4.conf.IFNAME.arp_filter': '1', 'net/core/somaxconn': '1024' } as const;
const NEW_MAC = 'c2:11:22:33:44:55';

type Conf = Record<string, unknown>;
const felt = (hostNs: string, pod: string, cid: string, more: Partial<Call> = {}): Call => ({ dir: FELT_CNI, hostNs, pod, cid, ...more });

const bridgeConf = (version: string, dataDir: string): Conf => ({
  cniVersion: version,
  name: 'tunenet',
  type: 'bridge',
  bridge: 'cnit0',
  isGateway: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.77.0.0/24' }]], dataDir },
});

const tuningConf = (version: string, dataDir: string, extra: Conf = {}): Conf => ({
  cniVersion: version,
  name: 'tunenet',
  type: 'tuning',
  dataDir,
  sysctl: SYSCTLS,
  mac: NEW_MAC,
  mtu: 1400,
  promisc: true,
  allmulti: true,
  txQLen: 500,
  ...extra,
});

/** What tuning manages on eth0 and in the pod namespace, as the kernel reports it. */
async function tunables(pod: string): Promise<Record<string, unknown>> {
  const l = (await link(pod, 'eth0')) as (Awaited<ReturnType<typeof link>> & { txqlen?: number }) | undefined;
  return {
    mac: l?.address,
    mtu: l?.mtu,
    promisc: l?.flags.includes('PROMISC'),
    allmulti: l?.flags.includes('ALLMULTI'),
    txqlen: l?.txqlen,
    arp_filter: await sysctl(pod, 'net.ipv4.conf.eth0.arp_filter'),
    somaxconn: await sysctl(pod, 'net.core.somaxconn'),
  };
}

function tuningEvents(dataDir: string): StoredEvent[] {
  if (!existsSync(join(dataDir, 'felt.db'))) return [];
  const s = openSqliteStore(dataDir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  try {
    const r = s.right.read({ streamPrefix: 'tuning/' });
    if (E.isLeft(r)) throw new Error(r.left.msg);
    return [...r.right];
  } finally {
    s.right.close();
  }
}

describe.each(VERSIONS)('bridge + host-local + tuning at cniVersion %s', (version) => {
  const sb = new Sandbox();
  let host = '';
  let pod = '';
  let dataDir = '';
  let bridgeResult: any;
  let result: any;
  let before: Record<string, unknown> = {};
  let conf: Conf = {};

  beforeAll(async () => {
    host = await sb.ns();
    pod = await sb.ns();
    dataDir = sb.dir();
    conf = tuningConf(version, dataDir);
    const b = await cni(felt(host, pod, 'ctr-t'), 'ADD', bridgeConf(version, dataDir));
    expect(b.code).toBe(0);
    bridgeResult = b.json;
    before = await tunables(pod);
  });
  afterAll(() => sb.cleanup());

  it('ADD sets the sysctls and the interface attributes and passes prevResult through with the new MAC', async () => {
    expect(before).toMatchObject({ mtu: 1500, promisc: false, allmulti: false, txqlen: 1000, arp_filter: '0' });
    const r = await cni(felt(host, pod, 'ctr-t'), 'ADD', { ...conf, prevResult: bridgeResult });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    result = r.json;
    const interfaces = bridgeResult.interfaces.map((i: { name: string }) => (i.name === 'eth0' ? { ...i, mac: NEW_MAC } : i));
    expect(result).toEqual({ ...bridgeResult, interfaces });
    expect(await tunables(pod)).toEqual({
      mac: NEW_MAC,
      mtu: 1400,
      promisc: true,
      allmulti: true,
      txqlen: 500,
      arp_filter: '1',
      somaxconn: '1024',
    });
    // The originals are in the event log, not in a file.
    expect(tuningEvents(dataDir).map((e) => [e.type, e.stream])).toEqual([['TuningApplied', 'tuning/tunenet']]);
    expect(await ping(pod, '10.77.0.1')).toBe(true);
  });

  it('CHECK of the whole chain passes with the final result', async () => {
    expect((await cni(felt(host, pod, 'ctr-t'), 'CHECK', { ...bridgeConf(version, dataDir), prevResult: result })).code).toBe(0);
    const c = await cni(felt(host, pod, 'ctr-t'), 'CHECK', { ...conf, prevResult: result });
    expect(c.stdout).toBe('');
    expect(c.code).toBe(0);
  });

  it('CHECK names what drifted (code 103)', async () => {
    await nsRun(pod, ['ip', 'link', 'set', 'dev', 'eth0', 'mtu', '1300', 'allmulticast', 'off']);
    await nsRun(pod, ['tee', '/proc/sys/net/core/somaxconn'], '99\n');
    const c = await cni(felt(host, pod, 'ctr-t'), 'CHECK', { ...conf, prevResult: result });
    expect(c.code).toBe(1);
    expect(c.json.code).toBe(103);
    expect(c.json.msg).toContain('wrong MTU on eth0: 1300, want 1400');
    expect(c.json.msg).toContain('wrong all-multicast mode on eth0: off, want on');
    expect(c.json.msg).toContain('sysctl net.core.somaxconn is 99, want 1024');
    // A second ADD (a retry) converges again and keeps the first originals.
    expect((await cni(felt(host, pod, 'ctr-t'), 'ADD', { ...conf, prevResult: bridgeResult })).code).toBe(0);
    expect((await cni(felt(host, pod, 'ctr-t'), 'CHECK', { ...conf, prevResult: result })).code).toBe(0);
  });

  it('DEL restores every original value, sysctls included; a second DEL changes nothing', async () => {
    const d = await cni(felt(host, pod, 'ctr-t'), 'DEL', { ...conf, prevResult: result });
    expect(d.stdout).toBe('');
    expect(d.code).toBe(0);
    expect(await tunables(pod)).toEqual(before);
    expect(tuningEvents(dataDir).map((e) => e.type)).toEqual(['TuningApplied', 'TuningReverted']);
    const again = await cni(felt(host, pod, 'ctr-t'), 'DEL', { ...conf, prevResult: result });
    expect(again.code).toBe(0);
    expect(await tunables(pod)).toEqual(before);
    expect(tuningEvents(dataDir)).toHaveLength(2);
    // The rest of the chain's DEL (in reverse order) still works.
    expect((await cni(felt(host, pod, 'ctr-t'), 'DEL', bridgeConf(version, dataDir))).code).toBe(0);
    expect(await link(pod, 'eth0')).toBeUndefined();
  });
});

describe('tuning edge cases', () => {
  const sb = new Sandbox();
  afterEach(() => sb.cleanup());

  /** A host and a pod namespace with felt's bridge attachment; returns the bridge result. */
  async function attached(version = '1.0.0'): Promise<{ host: string; pod: string; dataDir: string; prev: any }> {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const b = await cni(felt(host, pod, 'c1'), 'ADD', bridgeConf(version, dataDir));
    expect(b.code).toBe(0);
    return { host, pod, dataDir, prev: b.json };
  }

  it('bad input: the right code, a message naming the field, nothing changed', async () => {
    const { host, pod, dataDir, prev } = await attached();
    const before = await tunables(pod);
    const cases: [Conf, number, RegExp][] = [
      [{ sysctl: { 'kernel.pid_max': '4096' } }, 7, /^sysctl\["kernel\.pid_max"\]: invalid sysctl key: it is not under net/],
      [
        { sysctl: { 'net.ipv4.conf..all.forwarding': '1' } },
        7,
        /^sysctl\["net\.ipv4\.conf\.\.all\.forwarding"\]: invalid sysctl key: it contains '\.\.'/,
      ],
      [{ sysctl: { 'net/../kernel/pid_max': '1' } }, 7, /contains '\.\.'/],
      [{ sysctl: { 'net.core.no_such_sysctl': '1' } }, 7, /^sysctl\["net\.core\.no_such_sysctl"\]: no such sysctl in /],
      [{ mac: '02:00:00:00:00:zz' }, 7, /^mac: "02:00:00:00:00:zz" is not a MAC address/],
      [{ runtimeConfig: { mac: 'nope' } }, 7, /^runtimeConfig\.mac: "nope" is not a MAC address/],
      [{ mtu: 65536 }, 7, /^mtu: must be an integer between 68 and 65535, got 65536/],
      [{ mtu: 10 }, 7, /^mtu: must be an integer between 68 and 65535, got 10/],
      [{ txQLen: -5 }, 7, /^txQLen: must be an integer between 0 and/],
    ];
    for (const [extra, code, re] of cases) {
      const r = await cni(felt(host, pod, 'c1'), 'ADD', { ...tuningConf('1.0.0', dataDir, extra), prevResult: prev });
      expect([JSON.stringify(extra), r.code, r.json?.code]).toEqual([JSON.stringify(extra), 1, code]);
      expect(r.json.msg).toMatch(re);
    }
    // A duplicated key is only visible in the text.
    const text = JSON.stringify({ ...tuningConf('1.0.0', dataDir, { sysctl: {} }), prevResult: prev }).replace(
      '"sysctl":{}',
      '"sysctl":{"net.core.somaxconn":"1","net.core.somaxconn":"2"}',
    );
    const dup = await cni(felt(host, pod, 'c1', { type: 'tuning' }), 'ADD', text);
    expect(dup.json).toMatchObject({ code: 7, msg: 'sysctl["net.core.somaxconn"]: duplicated sysctl keys are not allowed' });
    const noPrev = await cni(felt(host, pod, 'c1'), 'ADD', tuningConf('1.0.0', dataDir));
    expect(noPrev.json).toMatchObject({ code: 7, msg: expect.stringMatching(/^prevResult: required/) });
    const badPrev = await cni(felt(host, pod, 'c1'), 'ADD', {
      ...tuningConf('1.0.0', dataDir),
      prevResult: { cniVersion: '1.0.0', ips: [{ address: 'x' }] },
    });
    expect(badPrev.json).toMatchObject({ code: 7, msg: expect.stringMatching(/^prevResult: ips\[0\]\.address: "x" is not an address/) });
    const noIf = await cni(felt(host, pod, 'c1', { ifname: 'eth9' }), 'ADD', { ...tuningConf('1.0.0', dataDir), prevResult: prev });
    expect(noIf.json).toMatchObject({ code: 4, msg: `CNI_IFNAME: no interface "eth9" in ${nsPath(pod)}` });
    expect(await tunables(pod)).toEqual(before);
    expect(tuningEvents(dataDir)).toEqual([]);
  });

  it('DEL after the pod namespace is gone succeeds and forgets the originals; DEL of a never-tuned attachment too', async () => {
    const { host, pod, dataDir, prev } = await attached();
    const conf = tuningConf('1.0.0', dataDir);
    expect((await cni(felt(host, pod, 'c1'), 'ADD', { ...conf, prevResult: prev })).code).toBe(0);
    await sb.delNs(pod);
    expect((await cni(felt(host, pod, 'c1'), 'DEL', conf)).code).toBe(0);
    expect((await cni(felt(host, '', 'c1'), 'DEL', conf)).code).toBe(0);
    expect((await cni(felt(host, '', 'never'), 'DEL', conf)).code).toBe(0);
    expect((await cni(felt(host, '', 'never'), 'DEL', tuningConf('1.0.0', sb.dir()))).code).toBe(0);
    expect(tuningEvents(dataDir).map((e) => [e.type, (e.data as { reason?: string }).reason])).toEqual([
      ['TuningApplied', undefined],
      ['TuningReverted', 'netns-gone'],
    ]);
  });

  it('CNI_ARGS MAC and args.cni as the reference reads them; only sysctls: the link is left alone', async () => {
    const { host, pod, dataDir, prev } = await attached('1.1.0');
    const before = await tunables(pod);
    const conf = {
      cniVersion: '1.1.0',
      name: 'tunenet',
      type: 'tuning',
      dataDir,
      sysctl: { 'net.core.somaxconn': '2000' },
      args: { cni: { sysctl: { 'net.core.somaxconn': '3000' }, txQLen: 42 } },
    };
    const r = await cni(felt(host, pod, 'c1', { args: 'IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:ee;K8S_POD_NAME=x' }), 'ADD', {
      ...conf,
      prevResult: prev,
    });
    expect(r.code).toBe(0);
    expect(r.json.interfaces[2]).toMatchObject({ name: 'eth0', mac: '02:aa:bb:cc:dd:ee' });
    expect(await tunables(pod)).toEqual({ ...before, mac: '02:aa:bb:cc:dd:ee', txqlen: 42, somaxconn: '3000' });
    const unknown = await cni(felt(host, pod, 'c1', { args: 'K8S_POD_NAME=x' }), 'ADD', { ...conf, prevResult: prev });
    expect(unknown.json).toMatchObject({ code: 4, msg: expect.stringContaining('K8S_POD_NAME=x') });
    expect((await cni(felt(host, pod, 'c1', { args: 'IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:ee' }), 'DEL', conf)).code).toBe(0);
    expect(await tunables(pod)).toEqual(before);
  });

  it('IFNAME in a key names a dotted interface as one directory (eth0.5 → net/ipv4/conf/eth0.5/...)', async () => {
    const [host, pod, dataDir] = [await sb.ns(), await sb.ns(), sb.dir()];
    const call = felt(host, pod, 'c1', { ifname: 'eth0.5' });
    const b = await cni(call, 'ADD', bridgeConf('1.0.0', dataDir));
    expect(b.code).toBe(0);
    const conf = { cniVersion: '1.0.0', name: 'tunenet', type: 'tuning', dataDir, sysctl: { 'net.ipv4.conf.IFNAME.arp_filter': '1' } };
    const read = () => nsRun(pod, ['cat', '/proc/sys/net/ipv4/conf/eth0.5/arp_filter']).then((x) => x.trim());
    expect(await read()).toBe('0');
    expect((await cni(call, 'ADD', { ...conf, prevResult: b.json })).code).toBe(0);
    expect(await read()).toBe('1');
    expect((await cni(call, 'CHECK', { ...conf, prevResult: b.json })).code).toBe(0);
    expect((await cni(call, 'DEL', conf)).code).toBe(0);
    expect(await read()).toBe('0');
  });
});
