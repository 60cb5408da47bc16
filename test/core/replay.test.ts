// Replay is deterministic, for every stream kind felt records (core/projections.ts): for event sequences made
// by the real deciders from generated commands, folding any prefix in any chunking equals folding it one event
// at a time; the stores (the memory twin and SQLite in a temp dir) loaded after each decision equal the fold;
// and the paged replay of the log (adapters/store/replay.ts, `felt replay`) at any position, at any time and
// with any page size equals the fold of that prefix.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decideAttachments, type AttachmentCommand } from '../../core/bridge/attachments.ts';
import type { RuntimeEvent } from '../../core/cni/attachments.ts';
import type { Event, Stored } from '../../core/events.ts';
import { decide as decideNode, type NodeCommand } from '../../core/flannel/node.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import type { Lease } from '../../core/flannel/types.ts';
import { decide as decideHostDevice, type HostDeviceCommand } from '../../core/hostdevice/decider.ts';
import { parseIpamConf } from '../../core/ipam/config.ts';
import { decide as decideIpam, type IpamCommand } from '../../core/ipam/decider.ts';
import { STREAM_KINDS, type StreamKind } from '../../core/projections.ts';
import { decide as decideTuning, type TuningCommand } from '../../core/tuning/decider.ts';
import { decide as decideFirewall, type FirewallCommand } from '../../core/firewall/records.ts';
import { memoryStore } from '../../adapters/memory/store.ts';
import { replayCount, replayStreams } from '../../adapters/store/replay.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import type { EventStore } from '../../adapters/store/types.ts';

const DEEP = process.env['FELT_DEEP'] === '1';
const RUNS = DEEP ? 500 : 60;
const STORE_RUNS = DEEP ? 100 : 15;

/** A decider over one stream: a command generator and decide. */
interface Gen {
  readonly stream: string;
  readonly command: fc.Arbitrary<unknown>;
  readonly decide: (command: unknown, state: unknown) => E.Either<unknown, readonly Event[]>;
}

const containers = fc.constantFrom('c1', 'c2', 'c3', 'c4');
const ifnames = fc.constantFrom('eth0', 'net1');

const ipamConf = (() => {
  const c = parseIpamConf(
    {
      cniVersion: '1.0.0',
      name: 'prop',
      type: 'bridge',
      raw: { ipam: { ranges: [[{ subnet: '10.9.0.0/29' }], [{ subnet: 'fd09::/125' }]] } },
    },
    {},
  );
  if (E.isLeft(c)) throw new Error(c.left.msg);
  return c.right;
})();

const netConfig = (() => {
  const c = parseNetConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  if (E.isLeft(c)) throw new Error(c.left);
  return c.right.config;
})();
const lease = (n: number, gen: number): Lease => ({
  subnet: `10.244.${n}.0/24`,
  attrs: {
    PublicIP: `198.51.100.${n}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: `3e:9c:0f:11:${gen.toString(16).padStart(2, '0')}:${n.toString(16).padStart(2, '0')}` },
  },
  expiration: '2030-01-02T00:00:00.000Z',
});
const leaseArb = fc.tuple(fc.integer({ min: 2, max: 6 }), fc.integer({ min: 0, max: 2 })).map(([n, g]) => lease(n, g));

const record = (network: string) =>
  fc
    .record({ containerId: containers, ifname: ifnames, netns: fc.constantFrom('/var/run/netns/a', '/var/run/netns/b') })
    .map((r) => ({ network, ...r }));

const GENS: Readonly<Record<string, Gen>> = {
  'ipam/': {
    stream: 'ipam/prop',
    command: fc.oneof(
      fc
        .record({ containerId: containers, ifname: ifnames })
        .map((d): IpamCommand => ({ type: 'AllocateAddresses', data: { conf: ipamConf, ...d } })),
      fc
        .record({ containerId: containers, ifname: ifnames })
        .map((d): IpamCommand => ({ type: 'ReleaseAddresses', data: { network: 'prop', ...d } })),
      fc
        .array(fc.record({ containerId: containers, ifname: ifnames }), { maxLength: 3 })
        .map((v): IpamCommand => ({ type: 'CollectGarbage', data: { network: 'prop', validAttachments: v } })),
    ),
    decide: (c, s) => decideIpam(c as IpamCommand, s as never),
  },
  'node/': {
    stream: 'node/198.51.100.1',
    command: fc.oneof(
      fc.constant<NodeCommand>({ type: 'LoadConfig', data: { config: netConfig } }),
      fc.integer({ min: 0, max: 2 }).map((g): NodeCommand => ({
        type: 'RecordOwnLease',
        data: { lease: { ...lease(1, g), attrs: { ...lease(1, g).attrs, PublicIP: '198.51.100.1' } } },
      })),
      fc.constant<NodeCommand>({ type: 'LoseOwnLease', data: { reason: 'revoked' } }),
      fc
        .array(leaseArb, { maxLength: 4 })
        .map((leases): NodeCommand => ({ type: 'ObserveLeases', data: { snapshot: { leases, revision: 1 }, own: '198.51.100.1' } })),
      fc.array(fc.tuple(fc.constantFrom('added' as const, 'removed' as const), leaseArb), { maxLength: 4 }).map((evs): NodeCommand => ({
        type: 'ApplyLeaseEvents',
        data: { events: evs.map(([type, l]) => ({ type, lease: l })), own: '198.51.100.1' },
      })),
    ),
    decide: (c, s) => decideNode(c as NodeCommand, s as never),
  },
  'bridge/': {
    stream: 'bridge/prop',
    command: fc.oneof(
      fc
        .tuple(record('prop'), fc.constantFrom('veth1', 'veth2', 'veth3'))
        .map(([r, hostVeth]): AttachmentCommand => ({ type: 'RecordAttachment', data: { ...r, hostVeth, dataDir: '/var/lib/felt' } })),
      fc
        .record({ containerId: containers, ifname: ifnames, reason: fc.constantFrom('del' as const, 'rollback' as const) })
        .map((d): AttachmentCommand => ({ type: 'RemoveAttachments', data: { network: 'prop', ...d } })),
      fc
        .record({
          containerId: containers,
          ifname: ifnames,
          hostVeth: fc.constantFrom('veth1', 'veth2', 'veth3'),
          durationMs: fc.nat(5000),
        })
        .map((d): AttachmentCommand => ({ type: 'RecordAttachmentReady', data: { network: 'prop', ...d } })),
      fc.array(fc.tuple(record('prop'), fc.constantFrom('veth1', 'veth2')), { maxLength: 2 }).map((rs): AttachmentCommand => ({
        type: 'CollectAttachments',
        data: { records: rs.map(([r, hostVeth]) => ({ ...r, hostVeth, dataDir: '/var/lib/felt' })) },
      })),
    ),
    decide: (c, s) => decideAttachments(c as AttachmentCommand, s as never),
  },
  'ptp/': {
    stream: 'ptp/prop',
    command: fc.oneof(
      fc
        .tuple(record('prop'), fc.constantFrom('veth1', 'veth2', 'veth3'))
        .map(([r, hostVeth]): AttachmentCommand => ({ type: 'RecordAttachment', data: { ...r, hostVeth, dataDir: '/var/lib/felt' } })),
      fc
        .record({ containerId: containers, ifname: ifnames, reason: fc.constantFrom('del' as const, 'rollback' as const) })
        .map((d): AttachmentCommand => ({ type: 'RemoveAttachments', data: { network: 'prop', ...d } })),
      fc.array(fc.tuple(record('prop'), fc.constantFrom('veth1', 'veth2')), { maxLength: 2 }).map((rs): AttachmentCommand => ({
        type: 'CollectAttachments',
        data: { records: rs.map(([r, hostVeth]) => ({ ...r, hostVeth, dataDir: '/var/lib/felt' })) },
      })),
    ),
    decide: (c, s) => decideAttachments(c as AttachmentCommand, s as never),
  },
  'host-device/': {
    stream: 'host-device/prop',
    command: fc.oneof(
      fc.tuple(record('prop'), fc.constantFrom('ens4', 'ens5'), fc.boolean()).map(([r, name, up]): HostDeviceCommand => ({
        type: 'RecordAttachment',
        data: { ...r, original: { name, mtu: 1500, up, alias: '' } },
      })),
      fc
        .record({
          containerId: containers,
          ifname: ifnames,
          reason: fc.constantFrom('del' as const, 'add-failed' as const, 'netns-gone' as const),
        })
        .map((d): HostDeviceCommand => ({ type: 'ForgetAttachment', data: { network: 'prop', ...d } })),
    ),
    decide: (c, s) => decideHostDevice(c as HostDeviceCommand, s as never),
  },
  'tuning/': {
    stream: 'tuning/prop',
    command: fc.oneof(
      fc.tuple(record('prop'), fc.constantFrom(1400, 1500), fc.constantFrom('0', '1')).map(([r, mtu, v]): TuningCommand => ({
        type: 'RecordOriginals',
        data: { ...r, original: { link: { mtu }, sysctls: [{ key: 'net.ipv4.conf.eth0.arp_notify', value: v }] } },
      })),
      fc
        .record({ containerId: containers, ifname: ifnames, reason: fc.constantFrom('del' as const, 'add-failed' as const) })
        .map((d): TuningCommand => ({ type: 'ForgetOriginals', data: { network: 'prop', ...d } })),
    ),
    decide: (c, s) => decideTuning(c as TuningCommand, s as never),
  },
  'firewall/': {
    stream: 'firewall/prop',
    command: fc.oneof(
      fc.tuple(record('prop'), fc.subarray(['10.9.0.2/32', '10.9.0.3/32', 'fd00::2/128'])).map(([r, prefixes]): FirewallCommand => ({
        type: 'RecordRules',
        data: { network: r.network, containerId: r.containerId, ifname: r.ifname, prefixes },
      })),
      fc
        .record({ containerId: containers, ifname: ifnames, reason: fc.constantFrom('del' as const, 'add-failed' as const) })
        .map((d): FirewallCommand => ({ type: 'ForgetRules', data: { network: 'prop', ...d } })),
    ),
    decide: (c, s) => decideFirewall(c as FirewallCommand, s as never),
  },
  // felt cni has no decider: it records what the runtime did (apps/felt/commands/cni.ts), any of these events.
  'cni/': {
    stream: 'cni/prop',
    command: fc.oneof(
      fc
        .tuple(record('prop'), fc.constantFrom(['bridge'], ['bridge', 'portmap']), fc.constantFrom([], ['10.9.0.2/24']))
        .map(([r, plugins, ips]): RuntimeEvent => ({ type: 'AttachmentAdded', data: { ...r, plugins, ips } })),
      record('prop').map((r): RuntimeEvent => ({
        type: 'AttachmentAddFailed',
        data: { ...r, plugin: 'bridge', error: 'boom', tornDown: ['bridge'] },
      })),
      fc
        .record({ containerId: containers, ifname: ifnames, reason: fc.constantFrom('del' as const, 'gc' as const) })
        .map((d): RuntimeEvent => ({ type: 'AttachmentDeleted', data: { network: 'prop', ...d, errors: [] } })),
    ),
    decide: (c) => E.right([c as Event]),
  },
};

const json = (v: unknown): unknown => JSON.parse(JSON.stringify(v)) as unknown;
const timeOf = (i: number): string => new Date(Date.parse('2030-01-01T00:00:00.000Z') + i * 1000).toISOString();

/** Run the commands through decide and evolve, as a store does: the decisions (one per command that emitted). */
function decisions(kind: StreamKind, gen: Gen, commands: readonly unknown[]): Stored<Event>[][] {
  let state = kind.projection.initialState();
  let position = 0;
  const out: Stored<Event>[][] = [];
  commands.forEach((c, i) => {
    const r = gen.decide(c, state);
    if (E.isLeft(r) || r.right.length === 0) return;
    // Each decision at its own time, a second apart; the events of one decision share it.
    const batch = r.right.map(
      (e) => ({ position: ++position, stream: gen.stream, type: e.type, data: json(e.data), time: timeOf(i) }) as Stored<Event>,
    );
    state = batch.reduce((s, e) => kind.projection.evolve(s, e), state);
    out.push(batch);
  });
  return out;
}

const oneByOne = (kind: StreamKind, events: readonly Stored<Event>[]): unknown =>
  json(events.reduce((s, e) => kind.projection.evolve(s, e), kind.projection.initialState()));

/** Fold in chunks of the given sizes (cycled), through fold (evolveAll where the projection has it). */
function chunked(kind: StreamKind, events: readonly Stored<Event>[], sizes: readonly number[]): unknown {
  let state = kind.projection.initialState();
  let i = 0;
  let k = 0;
  while (i < events.length) {
    const n = sizes[k++ % sizes.length]!;
    const chunk = events.slice(i, i + n);
    state = kind.projection.evolveAll
      ? kind.projection.evolveAll(state, chunk)
      : chunk.reduce((s, e) => kind.projection.evolve(s, e), state);
    i += n;
  }
  return json(state);
}

const sqliteStore = (dir: string): EventStore => {
  const s = openSqliteStore(dir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  return s.right;
};

describe('replay determinism', () => {
  it('the table covers every stream kind felt writes', () => {
    expect(STREAM_KINDS.map((k) => k.prefix).sort()).toEqual(Object.keys(GENS).sort());
    for (const k of STREAM_KINDS) expect(new Set(k.types).size).toBe(k.types.length);
  });

  describe.each(STREAM_KINDS.map((k) => [k.prefix, k] as const))('%s', (prefix, kind) => {
    const gen = GENS[prefix]!;
    const commands = fc.array(gen.command, { maxLength: 25 });

    it('the generated commands make every event type of the stream', () => {
      const seen = new Set<string>();
      for (const cmds of fc.sample(commands, { numRuns: 200, seed: 42 }))
        for (const e of decisions(kind, gen, cmds).flat()) seen.add(e.type);
      expect([...seen].sort()).toEqual([...kind.types].sort());
    });

    it("every event the decider makes passes its type's data check (what felt import accepts)", () => {
      const name = gen.stream.slice(prefix.length);
      let checked = 0;
      fc.assert(
        fc.property(commands, (cmds) => {
          for (const e of decisions(kind, gen, cmds).flat()) {
            expect(kind.checks[e.type]!(e.data, { stream: gen.stream, name }), JSON.stringify(e)).toEqual(E.right(e.data));
            checked++;
          }
        }),
        { numRuns: RUNS },
      );
      expect(checked).toBeGreaterThan(0);
    });

    it('folding any prefix in any chunking equals folding it one by one', () => {
      fc.assert(
        fc.property(commands, fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 5 }), fc.nat(), (cmds, sizes, cut) => {
          const events = decisions(kind, gen, cmds).flat();
          // Only known types ever reach the fold.
          for (const e of events) expect(kind.types).toContain(e.type);
          const prefixEvents = events.slice(0, events.length ? cut % (events.length + 1) : 0);
          expect(chunked(kind, prefixEvents, sizes)).toEqual(oneByOne(kind, prefixEvents));
        }),
        { numRuns: RUNS },
      );
    });

    it('the stores (memory twin, SQLite) loaded after each decision, and the paged replay at any point, equal the fold', () => {
      fc.assert(
        fc.property(commands, fc.integer({ min: 1, max: 6 }), fc.nat(), (cmds, pageSize, cut) => {
          const batches = decisions(kind, gen, cmds);
          const events = batches.flat();
          const dir = mkdtempSync(join(tmpdir(), 'felt-replay-prop-'));
          const stores: [string, EventStore][] = [
            ['memory', memoryStore()],
            ['sqlite', sqliteStore(dir)],
          ];
          try {
            for (const [name, store] of stores) {
              let done = 0;
              for (const batch of batches) {
                const r = store.transact(gen.stream, kind.projection, () => E.right(batch.map((e) => ({ type: e.type, data: e.data }))), {
                  time: batch[0]!.time,
                });
                expect(E.isRight(r), name).toBe(true);
                done += batch.length;
                const loaded = store.load(gen.stream, kind.projection);
                expect(E.isRight(loaded) && json(loaded.right.state), name).toEqual(oneByOne(kind, events.slice(0, done)));
              }
              // Any prefix: by position, and by time (the state as of the time of event `k`).
              const k = events.length ? cut % (events.length + 1) : 0;
              const want = oneByOne(kind, events.slice(0, k));
              const byPosition = replayCount(store, gen.stream, kind.projection, { chunk: pageSize, toPosition: k });
              expect(
                E.isRight(byPosition) && {
                  state: json(byPosition.right.state),
                  position: byPosition.right.position,
                  events: byPosition.right.events,
                },
                name,
              ).toEqual({
                state: want,
                position: k,
                events: k,
              });
              if (k > 0 && (k === events.length || events[k]!.time !== events[k - 1]!.time)) {
                const byTime = replayStreams(
                  store,
                  {},
                  (s) => (s === gen.stream ? { projection: kind.projection, types: new Set(kind.types) } : undefined),
                  { chunk: pageSize, at: events[k - 1]!.time },
                );
                expect(E.isRight(byTime) && json(byTime.right.streams.get(gen.stream)?.state), name).toEqual(want);
              }
            }
          } finally {
            for (const [, s] of stores) s.close();
            rmSync(dir, { recursive: true, force: true });
          }
        }),
        { numRuns: STORE_RUNS },
      );
    });
  });
});

describe('read and scan: the SQLite store and its memory twin agree on every filter', () => {
  const streams = ['ipam/a', 'ipam/b', 'node/198.51.100.1', 'bridge/a'];
  const types = ['AddressAllocated', 'AddressReleased', 'RemoteLeaseSeen', 'AttachmentRecorded'];
  const recorded = fc.array(
    fc.record({
      stream: fc.constantFrom(...streams),
      type: fc.constantFrom(...types),
      data: fc.record({ n: fc.nat(9) }),
      time: fc.integer({ min: 0, max: 20 }).map(timeOf),
    }),
    { maxLength: 30 },
  );
  const query = fc.record(
    {
      stream: fc.constantFrom(...streams),
      streamPrefix: fc.constantFrom('ipam/', 'node/', 'x/'),
      fromPosition: fc.nat(32),
      toPosition: fc.nat(32),
      since: fc.integer({ min: 0, max: 20 }).map(timeOf),
      until: fc.integer({ min: 0, max: 20 }).map(timeOf),
      types: fc.subarray(types),
      limit: fc.nat(32),
    },
    { requiredKeys: [] },
  );

  it('read(q) is the filter of the log; scan(q) pages it; append keeps streams, types, data and times', () => {
    fc.assert(
      fc.property(recorded, query, fc.integer({ min: 1, max: 8 }), (events, q, pageSize) => {
        const dir = mkdtempSync(join(tmpdir(), 'felt-read-prop-'));
        const stores: EventStore[] = [memoryStore(), sqliteStore(dir)];
        try {
          const want = events
            .map((e, i) => ({ position: i + 1, ...e }))
            .filter(
              (e) =>
                e.position > (q.fromPosition ?? 0) &&
                (q.toPosition === undefined || e.position <= q.toPosition) &&
                (q.stream === undefined || e.stream === q.stream) &&
                (q.streamPrefix === undefined || e.stream.startsWith(q.streamPrefix)) &&
                (q.since === undefined || e.time >= q.since) &&
                (q.until === undefined || e.time <= q.until) &&
                (q.types === undefined || q.types.includes(e.type)),
            )
            .slice(0, q.limit ?? Infinity);
          for (const s of stores) {
            expect(s.append(events)).toEqual(E.right(events.length ? { first: 1, last: events.length } : { first: 0, last: 0 }));
            expect(s.lastPosition()).toEqual(E.right(events.length));
            expect(s.read(q)).toEqual(E.right(want));
            const pages: (readonly unknown[])[] = [];
            expect(E.isRight(s.scan(q, (p) => void pages.push(p), { pageSize }))).toBe(true);
            expect(pages.flat()).toEqual(want);
            for (const p of pages) expect(p.length).toBeLessThanOrEqual(pageSize);
            // Stopping early: onPage returning false ends the scan.
            let calls = 0;
            s.scan(q, () => (calls++, false), { pageSize });
            expect(calls).toBe(want.length ? 1 : 0);
          }
        } finally {
          for (const s of stores) s.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: STORE_RUNS * 4 },
    );
  });
});
