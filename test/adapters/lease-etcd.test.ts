// The etcd lease store against a real etcd 3.4 started by the test (127.0.0.1, random ports, temp data dir;
// one case runs etcd and the store inside a network namespace, as the cluster test does). The same contract
// as the embedded store, plus flannel interoperability at the data level (leases put with etcdctl in
// flanneld's format are honoured; felt's values are flanneld's LeaseAttrs JSON bound to an etcd lease),
// resync after compaction, TTL expiry, and an etcd outage.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LeaseAttrs, LeaseEvent } from '../../core/flannel/types.ts';
import { etcdLeaseStore, type EtcdLeaseStoreOptions } from '../../adapters/lease/etcd.ts';
import type { LeaseStore, StoreError } from '../../adapters/lease/types.ts';
import { ROOT } from '../support/cni.ts';
import { startEtcd, type Etcd } from '../support/etcd.ts';
import { exec } from '../support/ns.ts';

let etcd: Etcd;
beforeAll(async () => {
  etcd = await startEtcd();
}, 60_000);
afterAll(async () => {
  await etcd?.stop();
});

const opened: LeaseStore[] = [];
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
});

let n = 0;
/** A fresh prefix per test, so tests do not see each other's leases. */
const freshPrefix = (): string => `/felt-test-${process.pid}-${++n}/network`;
const store = (prefix: string, o: Partial<EtcdLeaseStoreOptions> = {}): LeaseStore => {
  const s = etcdLeaseStore({ endpoints: [etcd.endpoint], prefix, timeoutMs: 3000, ...o });
  opened.push(s);
  return s;
};

const attrs = (i: number, mac = `aa:bb:cc:dd:ee:${i.toString(16).padStart(2, '0')}`): LeaseAttrs => ({
  PublicIP: `198.51.100.${i}`,
  PublicIPv6: null,
  BackendType: 'vxlan',
  BackendData: { VNI: 1, VtepMAC: mac },
});

async function ok<A>(te: () => Promise<E.Either<StoreError, A>>): Promise<A> {
  const r = await te();
  if (E.isLeft(r)) throw new Error(`store error: ${r.left.msg}`);
  return r.right;
}

async function ctl(args: readonly string[]): Promise<string> {
  const r = await etcd.etcdctl(args);
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

interface CtlKv {
  key: string;
  value: string;
  /** The etcd lease id, decimal (int64: kept as a string, beyond a JS number's precision). */
  lease?: string;
  mod_revision: number;
}
/** etcdctl get -w json, keys and values decoded. */
async function ctlGet(key: string, prefix = false): Promise<{ revision: number; kvs: CtlKv[] }> {
  const text = (await ctl(['get', key, ...(prefix ? ['--prefix'] : []), '-w', 'json'])).replace(/"lease":(\d+)/g, '"lease":"$1"');
  const j = JSON.parse(text) as {
    header: { revision: number };
    kvs?: { key: string; value: string; lease?: string; mod_revision: number }[];
  };
  const b64 = (s: string) => Buffer.from(s, 'base64').toString();
  return { revision: j.header.revision, kvs: (j.kvs ?? []).map((kv) => ({ ...kv, key: b64(kv.key), value: b64(kv.value) })) };
}

/** Remaining TTL (seconds) of an etcd lease, by etcdctl. */
async function ctlTtl(leaseId: string): Promise<number> {
  const out = await ctl(['lease', 'timetolive', BigInt(leaseId).toString(16), '-w', 'json']);
  return Number(/"ttl":(-?\d+)/.exec(out)?.[1]);
}

function recorder(s: LeaseStore, from: number) {
  const events: { type: string; subnet?: string; publicIP: string; mac?: string; revision: number; expiration: string }[] = [];
  const resets: string[] = [];
  let last = from;
  const w = s.watch(
    from,
    (evs: readonly LeaseEvent[], revision: number) => {
      if (revision <= last) throw new Error(`revision went back: ${revision} after ${last}`);
      last = revision;
      for (const e of evs) {
        const mac = (e.lease.attrs.BackendData as { VtepMAC?: string } | undefined)?.VtepMAC;
        events.push({
          type: e.type,
          ...(e.lease.subnet ? { subnet: e.lease.subnet } : {}),
          publicIP: e.lease.attrs.PublicIP,
          ...(mac ? { mac } : {}),
          revision,
          expiration: e.lease.expiration,
        });
      }
    },
    (why) => resets.push(why),
  );
  const until = async (pred: () => boolean, ms = 10_000): Promise<void> => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`watch: timed out; events ${JSON.stringify(events)}; resets ${JSON.stringify(resets)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return {
    events,
    resets,
    until,
    stop: () => w.stop(),
    get revision() {
      return last;
    },
  };
}

describe('etcd lease store: the contract', () => {
  it('stores the network config at <prefix>/config', async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    expect(await ok(a.getNetworkConfig())).toBeUndefined();
    await ok(a.putNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'));
    expect((await ctlGet(`${prefix}/config`)).kvs[0]?.value).toBe('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
    await ctl(['put', `${prefix}/config`, '{"Network":"10.5.0.0/16"}']);
    expect(await ok(store(prefix).getNetworkConfig())).toBe('{"Network":"10.5.0.0/16"}');
  });

  it('acquire: one node gets the subnet, bound to an etcd lease of the TTL; the other is told taken', async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    const b = store(prefix);
    const before = Date.now();
    const l = await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 600));
    expect(l).not.toBe('taken');
    if (l === 'taken') return;
    expect(l.subnet).toBe('10.244.1.0/24');
    expect(Date.parse(l.expiration) - before).toBeGreaterThanOrEqual(599_000);
    expect(Date.parse(l.expiration) - Date.now()).toBeLessThanOrEqual(600_000);
    expect(await ok(b.acquire({ subnet: '10.244.1.0/24', attrs: attrs(2) }, 600))).toBe('taken');
    expect(await ok(b.acquire({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 600))).not.toBe('taken');

    const got = await ctlGet(`${prefix}/subnets/`, true);
    expect(got.kvs.map((kv) => kv.key)).toEqual([`${prefix}/subnets/10.244.1.0-24`, `${prefix}/subnets/10.244.2.0-24`]);
    // flanneld's exact bytes: Go's field order, PublicIPv6 null, BackendData as the vxlan backend writes it.
    expect(got.kvs[0]!.value).toBe(
      '{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}',
    );
    expect(BigInt(got.kvs[0]!.lease ?? '0')).toBeGreaterThan(0n);
    const ttl = await ctlTtl(got.kvs[0]!.lease!);
    // etcd counts down from 600 s: what is left is 600 minus the seconds since the acquire (whatever the load).
    expect(ttl).toBeGreaterThanOrEqual(600 - Math.ceil((Date.now() - before) / 1000) - 1);
    expect(ttl).toBeLessThanOrEqual(600);

    const snap = await ok(b.list());
    expect(snap.revision).toBe(got.revision);
    expect(snap.leases.map((x) => [x.subnet, x.attrs.PublicIP])).toEqual([
      ['10.244.1.0/24', '198.51.100.1'],
      ['10.244.2.0/24', '198.51.100.2'],
    ]);
    const { expiration, ...rest } = snap.leases[0]!;
    expect(rest).toEqual({ subnet: l.subnet, attrs: l.attrs });
    // etcd reports the remaining TTL in whole seconds.
    expect(Math.abs(Date.parse(expiration) - Date.parse(l.expiration))).toBeLessThan(2000);
  });

  it("dual stack keys are flannel's a.b.c.d-len&ipv6-len", async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    const at = { ...attrs(3), PublicIPv6: '2001:db8::3', BackendV6Data: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:33' } };
    await ok(a.acquire({ subnet: '10.244.3.0/24', ipv6Subnet: 'fd00:10:244:3::/64', attrs: at }, 600));
    const got = await ctlGet(`${prefix}/subnets/`, true);
    expect(got.kvs.map((kv) => kv.key)).toEqual([`${prefix}/subnets/10.244.3.0-24&fd00:10:244:3::-64`]);
    expect(JSON.parse(got.kvs[0]!.value)).toEqual(at);
    const snap = await ok(a.list());
    expect(snap.leases.map((l) => [l.subnet, l.ipv6Subnet])).toEqual([['10.244.3.0/24', 'fd00:10:244:3::/64']]);
    await ok(a.revoke('fd00:10:244:3::/64'));
    expect((await ok(a.list())).leases).toEqual([]);
  });

  it('renew extends the lease with a new TTL and updates the value; another node cannot; after revoke it is lost', async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    const b = store(prefix);
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 30));
    const r = await ok(a.renew({ subnet: '10.244.1.0/24', attrs: attrs(1, '02:00:00:00:00:01') }, 900));
    expect(r).not.toBe('lost');
    const kv = (await ctlGet(`${prefix}/subnets/10.244.1.0-24`)).kvs[0]!;
    expect(JSON.parse(kv.value).BackendData.VtepMAC).toBe('02:00:00:00:00:01');
    expect(await ctlTtl(kv.lease!)).toBeGreaterThan(890);
    expect(await ok(b.renew({ subnet: '10.244.1.0/24', attrs: attrs(2) }, 900))).toBe('lost');
    expect((await ctlGet(`${prefix}/subnets/10.244.1.0-24`)).kvs[0]!.value).toBe(kv.value);
    await ok(b.revoke('10.244.1.0/24'));
    expect((await ctlGet(`${prefix}/subnets/`, true)).kvs).toEqual([]);
    expect(await ok(a.renew({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 900))).toBe('lost');
    await ok(b.revoke('10.244.1.0/24')); // absent: no error
  });

  it('watch reports every change after the revision, in order; a delete carries the removed lease', async () => {
    const began = Date.now();
    const prefix = freshPrefix();
    const a = store(prefix);
    const b = store(prefix);
    await ok(a.acquire({ subnet: '10.244.9.0/24', attrs: attrs(9) }, 600));
    const snap = await ok(b.list());
    const w = recorder(b, snap.revision);
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 600));
    await ok(b.acquire({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 600));
    await ok(b.renew({ subnet: '10.244.2.0/24', attrs: attrs(2, '02:00:00:00:00:02') }, 600));
    await ok(a.revoke('10.244.2.0/24'));
    await ok(a.revoke('10.244.1.0/24'));
    await w.until(() => w.events.length >= 5);
    expect(w.events.map((e) => [e.type, e.subnet, e.publicIP, e.mac])).toEqual([
      ['added', '10.244.1.0/24', '198.51.100.1', 'aa:bb:cc:dd:ee:01'],
      ['added', '10.244.2.0/24', '198.51.100.2', 'aa:bb:cc:dd:ee:02'],
      ['added', '10.244.2.0/24', '198.51.100.2', '02:00:00:00:00:02'],
      ['removed', '10.244.2.0/24', '198.51.100.2', '02:00:00:00:00:02'],
      ['removed', '10.244.1.0/24', '198.51.100.1', 'aa:bb:cc:dd:ee:01'],
    ]);
    const added = w.events[0]!;
    // A 600 s lease seen by the watch: it expires 600 s after some moment since the test began.
    expect(Date.parse(added.expiration)).toBeGreaterThan(began + 599_000);
    expect(Date.parse(added.expiration)).toBeLessThanOrEqual(Date.now() + 600_000);
    expect(w.revision).toBe((await ok(a.list())).revision);
    w.stop();

    // From a revision in the middle: only what came after it.
    const mid = recorder(a, snap.revision + 3);
    await mid.until(() => mid.events.length >= 2);
    expect(mid.events.map((e) => [e.type, e.subnet])).toEqual([
      ['removed', '10.244.2.0/24'],
      ['removed', '10.244.1.0/24'],
    ]);
    mid.stop();
  });

  it('TTL expiry removes the key, the watch reports it, and the subnet is free again', async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    const b = store(prefix);
    const w = recorder(b, (await ok(b.list())).revision);
    const t0 = Date.now();
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 2));
    await w.until(() => w.events.length >= 2, 15_000);
    const took = Date.now() - t0;
    expect(w.events.map((e) => [e.type, e.subnet, e.publicIP])).toEqual([
      ['added', '10.244.1.0/24', '198.51.100.1'],
      ['removed', '10.244.1.0/24', '198.51.100.1'],
    ]);
    expect(took).toBeGreaterThanOrEqual(1500);
    expect((await ok(b.list())).leases).toEqual([]);
    expect(await ok(b.acquire({ subnet: '10.244.1.0/24', attrs: attrs(2) }, 60))).not.toBe('taken');
    expect(await ok(a.renew({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60))).toBe('lost');
    w.stop();
  });
});

describe('etcd lease store: flannel interoperability at the data level', () => {
  it('honours leases flanneld wrote (put with an etcd lease, as registry.go createSubnet does)', async () => {
    const began = Date.now();
    const prefix = '/coreos.com/network';
    await ctl(['del', `${prefix}/`, '--prefix']);
    const skipped: string[] = [];
    const a = store(prefix, { onSkip: (key) => skipped.push(key) });
    const w = recorder(a, (await ok(a.list())).revision);
    const grant = await ctl(['lease', 'grant', '600']);
    const id = /lease ([0-9a-f]+) granted/.exec(grant)?.[1];
    expect(id).toBeDefined();
    // Byte for byte what flanneld v0.2x puts (pkg/lease LeaseAttrs marshalled by encoding/json).
    const flannelValue =
      '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';
    await ctl(['put', `--lease=${id!}`, `${prefix}/subnets/10.5.52.0-24`, flannelValue]);
    // An older flanneld (no PublicIPv6 field, no VNI), and a dual-stack one.
    await ctl([
      'put',
      `--lease=${id!}`,
      `${prefix}/subnets/10.5.53.0-24`,
      '{"PublicIP":"192.168.64.4","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:45"}}',
    ]);
    await ctl([
      'put',
      `--lease=${id!}`,
      `${prefix}/subnets/10.5.54.0-24&fd00:10:5:54::-64`,
      '{"PublicIP":"192.168.64.5","PublicIPv6":"2001:db8::5","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:47"}}',
    ]);
    // Not a lease key: skipped as flanneld skips it. A lease key with a value that is not a lease: listed as
    // invalid (its subnet is held, nothing else trusted), so feltd refuses it rather than ignoring it silently.
    await ctl(['put', `${prefix}/subnets/not-a-subnet`, '{}']);
    await ctl(['put', `${prefix}/subnets/10.5.55.0-24`, 'not json']);

    const snap = await ok(a.list());
    expect(
      snap.leases.map((l) => [
        l.subnet,
        l.ipv6Subnet,
        l.attrs.PublicIP,
        l.attrs.PublicIPv6,
        (l.attrs.BackendData as { VtepMAC: string } | undefined)?.VtepMAC,
        l.invalid,
      ]),
    ).toEqual([
      ['10.5.52.0/24', undefined, '192.168.64.3', null, 'c6:d2:32:6f:8f:44', undefined],
      ['10.5.53.0/24', undefined, '192.168.64.4', null, 'c6:d2:32:6f:8f:45', undefined],
      ['10.5.54.0/24', 'fd00:10:5:54::/64', '192.168.64.5', '2001:db8::5', 'c6:d2:32:6f:8f:46', undefined],
      ['10.5.55.0/24', undefined, '0.0.0.0', null, undefined, expect.stringMatching(/^lease: invalid JSON/)],
    ]);
    for (const l of snap.leases.filter((x) => !x.invalid)) {
      // Written with a 600 s TTL since `began`: it expires between then + 600 s and now + 600 s.
      expect(Date.parse(l.expiration)).toBeGreaterThan(began + 599_000);
      expect(Date.parse(l.expiration)).toBeLessThanOrEqual(Date.now() + 600_000);
    }
    expect([...new Set(skipped)].sort()).toEqual([`${prefix}/subnets/not-a-subnet`]);
    expect(await ok(a.acquire({ subnet: '10.5.52.0/24', attrs: attrs(1) }, 600))).toBe('taken');
    // A flannel node's lease is not ours to renew.
    expect(await ok(a.renew({ subnet: '10.5.52.0/24', attrs: attrs(1) }, 600))).toBe('lost');
    // ... but the node with that public IP (a feltd replacing flanneld on the same host) may renew it.
    const again = await ok(
      a.renew(
        {
          subnet: '10.5.52.0/24',
          attrs: { PublicIP: '192.168.64.3', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' } },
        },
        600,
      ),
    );
    expect(again).not.toBe('lost');
    expect((await ctlGet(`${prefix}/subnets/10.5.52.0-24`)).kvs[0]!.value).toBe(flannelValue);
    await w.until(() => w.events.length >= 5);
    expect(w.events.map((e) => [e.type, e.subnet])).toEqual([
      ['added', '10.5.52.0/24'],
      ['added', '10.5.53.0/24'],
      ['added', '10.5.54.0/24'],
      ['added', '10.5.55.0/24'],
      ['added', '10.5.52.0/24'],
    ]);
    w.stop();
    await ctl(['del', `${prefix}/`, '--prefix']);
  });

  it("felt's values parse as flannel's LeaseAttrs (Go field names and types, omitempty as encoding/json)", async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: { PublicIP: '198.51.100.1', BackendType: 'host-gw' } }, 600));
    await ok(a.acquire({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 600));
    const kvs = (await ctlGet(`${prefix}/subnets/`, true)).kvs;
    // host-gw has no BackendData: omitted (json.RawMessage with omitempty), PublicIPv6 a null *ip.IP6.
    expect(kvs[0]!.value).toBe('{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"host-gw"}');
    const v = JSON.parse(kvs[1]!.value) as Record<string, unknown>;
    expect(Object.keys(v)).toEqual(['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData']);
    expect(typeof v['PublicIP']).toBe('string');
    expect(v['PublicIPv6']).toBeNull();
    expect(v['BackendData']).toEqual({ VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:02' });
  });
});

describe('etcd lease store: compaction and outages', () => {
  it('a watch from a compacted revision is reset; list + watch from the new revision resumes', async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    const start = (await ok(a.list())).revision;
    for (let i = 1; i <= 3; i++) await ok(a.acquire({ subnet: `10.244.${i}.0/24`, attrs: attrs(i) }, 600));
    const now = (await ok(a.list())).revision;
    await ctl(['compact', String(now)]);
    const old = recorder(a, start);
    await old.until(() => old.resets.length === 1);
    expect(old.resets[0]).toMatch(new RegExp(`revision ${start + 1} has been compacted`));
    const snap = await ok(a.list());
    expect(snap.leases).toHaveLength(3);
    const fresh = recorder(a, snap.revision);
    await ok(a.revoke('10.244.2.0/24'));
    await fresh.until(() => fresh.events.length === 1);
    expect(fresh.events.map((e) => [e.type, e.subnet])).toEqual([['removed', '10.244.2.0/24']]);
    expect(fresh.resets).toEqual([]);
    // The reset watch stays stopped.
    expect(old.events).toEqual([]);
    fresh.stop();
  });

  it('etcd down: calls fail with a retryable StoreError, not a hang; back up: calls and the watch resume', async () => {
    const prefix = freshPrefix();
    const a = store(prefix, { timeoutMs: 2000 });
    const b = store(prefix, { timeoutMs: 2000 });
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 600));
    const w = recorder(b, (await ok(b.list())).revision);
    await etcd.kill();
    try {
      for (const call of [
        () => a.list(),
        () => a.acquire({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 600),
        () => a.renew({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 600),
        () => a.getNetworkConfig(),
      ]) {
        // A call that hung instead of failing would end the test at its timeout.
        const r = await call()();
        expect(E.isLeft(r)).toBe(true);
        if (E.isLeft(r)) expect(r.left).toMatchObject({ kind: 'store', retryable: true });
      }
    } finally {
      await etcd.restart();
    }
    // The client's circuit breaker may hold calls back for a few seconds after failures.
    const deadline = Date.now() + 20_000;
    let snap;
    for (;;) {
      const r = await a.list()();
      if (E.isRight(r)) {
        snap = r.right;
        break;
      }
      if (Date.now() > deadline) throw new Error(`etcd back, but list still fails: ${r.left.msg}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(snap.leases.map((l) => l.subnet)).toEqual(['10.244.1.0/24']);
    await ok(a.acquire({ subnet: '10.244.2.0/24', attrs: attrs(2) }, 600));
    await w.until(() => w.events.length >= 1, 20_000);
    expect(w.events.map((e) => [e.type, e.subnet])).toEqual([['added', '10.244.2.0/24']]);
    expect(w.resets).toEqual([]);
    w.stop();
  }, 60_000);

  it('etcd hung (stopped, connections open): the call times out as a retryable StoreError', async () => {
    const a = store(freshPrefix(), { timeoutMs: 1500 });
    await ok(a.list());
    const pid = etcd.pid!;
    process.kill(pid, 'SIGSTOP');
    let took = 0;
    let r;
    try {
      const t0 = Date.now();
      r = await a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60)();
      took = Date.now() - t0;
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(E.isLeft(r) && r.left).toMatchObject({ kind: 'store', retryable: true });
    // It waited for its timeout rather than failing at once (a lower bound: load only makes it longer); a call
    // that hung would end the test at its own timeout.
    expect(took).toBeGreaterThanOrEqual(1400);
  });

  it('a closed store answers with a non-retryable StoreError', async () => {
    const a = etcdLeaseStore({ endpoints: [etcd.endpoint], prefix: freshPrefix() });
    await ok(a.list());
    await a.close();
    const r = await a.list()();
    expect(E.isLeft(r) && r.left).toMatchObject({ kind: 'store', retryable: false });
  });

  it('no etcd at the endpoint: a retryable StoreError, not a hang', async () => {
    const a = store('/x', { endpoints: ['http://127.0.0.1:1'], timeoutMs: 1500 });
    const r = await a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 60)();
    expect(E.isLeft(r) && r.left).toMatchObject({ kind: 'store', retryable: true });
  });
});

describe('etcd lease store: a wiped or tampered etcd', () => {
  it('etcd wiped and restarted empty: the watch is reset (revision below the one watched), not left waiting', async () => {
    const own = await startEtcd();
    try {
      const s = etcdLeaseStore({ endpoints: [own.endpoint], timeoutMs: 3000, watchRetryMaxMs: 500 });
      opened.push(s);
      for (let i = 1; i <= 5; i++) await ok(s.acquire({ subnet: `10.244.${i}.0/24`, attrs: attrs(i) }, 600));
      const w = recorder(s, (await ok(s.list())).revision);
      await own.kill();
      rmSync(own.dataDir, { recursive: true, force: true });
      await own.restart();
      const put = await own.etcdctl(['put', '/coreos.com/network/config', '{"Network":"10.244.0.0/16"}']);
      expect(put.code).toBe(0);
      await w.until(() => w.resets.length === 1, 30_000);
      expect(w.resets[0]).toMatch(/is at revision \d+, below revision \d+ already seen: its data was wiped or restored/);
      expect((await ok(s.list())).leases).toEqual([]);
    } finally {
      await own.stop();
    }
  }, 90_000);

  it('watchNetworkConfig: told the config at start and at each change', async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    await ok(a.putNetworkConfig('{"a":1}'));
    const seen: (string | undefined)[] = [];
    const w = a.watchNetworkConfig((j) => seen.push(j));
    const until = async (n: number) => {
      for (const end = Date.now() + 10_000; seen.length < n; await new Promise((r) => setTimeout(r, 20)))
        if (Date.now() > end) throw new Error(`config watch: ${JSON.stringify(seen)}`);
    };
    await until(1);
    await ctl(['put', `${prefix}/config`, '{"a":2}']);
    await until(2);
    await ctl(['del', `${prefix}/config`]);
    await until(3);
    w.stop();
    expect(seen).toEqual(['{"a":1}', '{"a":2}', undefined]);
  });

  it('a lease key holding a value that is not a lease: listed and watched as invalid; repair puts the lease back', async () => {
    const prefix = freshPrefix();
    const a = store(prefix);
    await ok(a.acquire({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 600));
    const w = recorder(a, (await ok(a.list())).revision);
    await ctl(['put', `${prefix}/subnets/10.244.1.0-24`, 'garbage']);
    const [l] = (await ok(a.list())).leases;
    expect(l).toMatchObject({ subnet: '10.244.1.0/24', attrs: { PublicIP: '0.0.0.0' }, invalid: expect.stringMatching(/invalid JSON/) });
    await w.until(() => w.events.length === 1);
    expect(w.events[0]).toMatchObject({ type: 'added', subnet: '10.244.1.0/24', publicIP: '0.0.0.0' });
    expect(await ok(a.renew({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 600))).toBe('lost');
    expect(await ok(a.repair({ subnet: '10.244.1.0/24', attrs: attrs(1) }, 600))).toMatchObject({ subnet: '10.244.1.0/24' });
    const kv = (await ctlGet(`${prefix}/subnets/10.244.1.0-24`)).kvs[0]!;
    expect(JSON.parse(kv.value)).toEqual(attrs(1));
    expect(await ctlTtl(kv.lease!)).toBeGreaterThan(500);
    expect(await ok(a.repair({ subnet: '10.244.9.0/24', attrs: attrs(1) }, 600))).toBe('absent');
    w.stop();
  });
});

describe('etcd in a network namespace (as the cluster test runs it)', () => {
  it('starts on the namespace address; a store running inside the namespace uses it', async () => {
    const ns = `felt-etcd-${process.pid}-${randomBytes(3).toString('hex')}`;
    const dir = mkdtempSync(join(tmpdir(), 'felt-etcd-ns-'));
    let inner: Etcd | undefined;
    expect((await exec(['ip', 'netns', 'add', ns])).code).toBe(0);
    try {
      expect((await exec(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])).code).toBe(0);
      inner = await startEtcd({ netns: ns, listenIP: '127.0.0.1' });
      const script = join(dir, 'inner.mts');
      writeFileSync(
        script,
        `import { etcdLeaseStore } from ${JSON.stringify(join(ROOT, 'adapters', 'lease', 'etcd.ts'))};
const s = etcdLeaseStore({ endpoints: [process.argv[2]!] });
const r = await s.acquire({ subnet: '10.244.1.0/24', attrs: { PublicIP: '198.51.100.1', BackendType: 'vxlan' } }, 60)();
const l = await s.list()();
process.stdout.write(JSON.stringify({ r, l }));
await s.close();
process.exit(0);
`,
      );
      const out = await new Promise<{ code: number; out: string; err: string }>((resolve) => {
        const c = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', script, inner!.endpoint], { cwd: ROOT });
        let o = '';
        let e = '';
        c.stdout.on('data', (b: Buffer) => (o += b.toString()));
        c.stderr.on('data', (b: Buffer) => (e += b.toString()));
        c.on('close', (code) => resolve({ code: code ?? -1, out: o, err: e }));
      });
      expect(out.code, out.err).toBe(0);
      const { r, l } = JSON.parse(out.out) as {
        r: E.Either<StoreError, unknown>;
        l: E.Either<StoreError, { leases: { subnet: string }[] }>;
      };
      expect(E.isRight(r) && r.right !== 'taken').toBe(true);
      expect(E.isRight(l) && l.right.leases.map((x) => x.subnet)).toEqual(['10.244.1.0/24']);
      const got = await inner.etcdctl(['get', '/coreos.com/network/subnets/10.244.1.0-24', '--print-value-only']);
      expect(got.stdout.trim()).toBe('{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan"}');
      // Not reachable from the test's own namespace.
      const outside = await exec([
        'etcdctl',
        `--endpoints=${inner.endpoint}`,
        '--dial-timeout=1s',
        '--command-timeout=1s',
        'endpoint',
        'health',
      ]);
      expect(outside.code).not.toBe(0);
    } finally {
      await inner?.stop();
      await exec(['ip', 'netns', 'del', ns]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
