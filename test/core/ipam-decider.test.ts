// The IPAM Decider: given(events).when(command).then(events), and fast-check properties over random
// configs and random sequences of ADD/DEL/GC run through the in-memory store (over the whole state and
// over the table view) and the SQLite store.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../../core/cni/env.ts';
import type { CniError } from '../../core/cni/errors.ts';
import { fold, stamp, type Stored } from '../../core/events.ts';
import { parseIpamConf, type IpamConf } from '../../core/ipam/config.ts';
import {
  checkAllocation,
  decide,
  decideIpam,
  evolve,
  initialState,
  ipamProjection,
  ipamResult,
  ipamStream,
  type IpamCommand,
  type IpamEvent,
  type IpamState,
  type IpamView,
  ipamView,
} from '../../core/ipam/decider.ts';
import { rangeFor, rangeSetContains } from '../../core/ipam/range.ts';
import { eqIP, firstIP, formatIP, lastIP, parseIP, type IP } from '../../core/ip/ip.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryStore } from '../../adapters/memory/store.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { runs } from '../support/runs.ts';

const T = '2024-01-01T00:00:00.000Z';

const conf = (ipam: unknown, extra: Record<string, unknown> = {}, args: Record<string, string> = {}): IpamConf => {
  const n: NetConf = {
    cniVersion: '1.1.0',
    name: 'net',
    type: 'bridge',
    raw: { cniVersion: '1.1.0', name: 'net', type: 'bridge', ipam, ...extra },
  };
  const r = parseIpamConf(n, args);
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
};

const add = (c: IpamConf, containerId: string, ifname = 'eth0'): IpamCommand => ({
  type: 'AllocateAddresses',
  data: { conf: c, containerId, ifname },
});
const del = (containerId: string, ifname = 'eth0'): IpamCommand => ({
  type: 'ReleaseAddresses',
  data: { network: 'net', containerId, ifname },
});

/** given(events).when(command) -> Either of new events */
const given = (events: readonly IpamEvent[]) => ({
  when: (cmd: IpamCommand) => decide(cmd, fold(ipamProjection, stamp(ipamStream('net'), events, T, 1) as Stored<IpamEvent>[])),
});

const allocated = (containerId: string, ip: string, rangeSet = 0, ifname = 'eth0'): IpamEvent => ({
  type: 'AddressAllocated',
  data: { network: 'net', containerId, ifname, rangeSet, ip },
});

const ips = (r: E.Either<CniError, IpamEvent[]>): string[] =>
  E.isRight(r) ? r.right.map((e) => e.data.ip) : [`error ${r.left.code}: ${r.left.msg}`];

describe('AllocateAddresses', () => {
  const c = conf({ ranges: [[{ subnet: '10.0.0.0/29' }]] });
  it('starts after the gateway', () => expect(ips(given([]).when(add(c, 'a')))).toEqual(['10.0.0.2']));
  it('continues after the last reserved address, even when earlier ones are free again (round robin)', () => {
    const history = [
      allocated('a', '10.0.0.2'),
      allocated('b', '10.0.0.3'),
      { type: 'AddressReleased', data: { ...allocated('a', '10.0.0.2').data, reason: 'del' } } as IpamEvent,
    ];
    expect(ips(given(history).when(add(c, 'c')))).toEqual(['10.0.0.4']);
  });
  it('wraps around to the start, skipping the gateway and held addresses', () => {
    // The last reserved address is the end of the range (10.0.0.6, the last event): the walk wraps to the
    // start, passes the gateway (.1) and the held .2 and .3, and takes .4.
    const history = [allocated('a', '10.0.0.2'), allocated('b', '10.0.0.3'), allocated('x', '10.0.0.6')];
    expect(ips(given(history).when(add(c, 'c')))).toEqual(['10.0.0.4']);
    // Only the addresses before the last reserved one are free: found only by wrapping.
    const late = [allocated('a', '10.0.0.4'), allocated('b', '10.0.0.5'), allocated('x', '10.0.0.6'), allocated('y', '10.0.0.3')];
    expect(ips(given(late).when(add(c, 'c')))).toEqual(['10.0.0.2']);
    const full = [
      allocated('a', '10.0.0.2'),
      allocated('b', '10.0.0.3'),
      allocated('c', '10.0.0.4'),
      allocated('d', '10.0.0.5'),
      allocated('e', '10.0.0.6'),
    ];
    expect(given(full).when(add(c, 'f'))).toEqual(
      E.left({ code: 100, msg: 'ipam.ranges[0]: no IP addresses available in range set: 10.0.0.1-10.0.0.6' }),
    );
  });
  it('moves to the next range of the set at the end of one', () => {
    const c2 = conf({ ranges: [[{ subnet: '10.0.0.0/30' }, { subnet: '10.1.0.0/30' }]] });
    expect(ips(given([allocated('a', '10.0.0.2')]).when(add(c2, 'b')))).toEqual(['10.1.0.2']);
  });
  it('one address per range set, in set order', () => {
    const c2 = conf({ ranges: [[{ subnet: 'fd00::/120' }], [{ subnet: '10.0.0.0/24' }]] });
    expect(ips(given([]).when(add(c2, 'a')))).toEqual(['fd00::2', '10.0.0.2']);
  });
  it('refuses a second ADD of the same attachment (as the reference), and allows another ifname', () => {
    const r = given([allocated('a', '10.0.0.2')]).when(add(c, 'a'));
    expect(r).toEqual(
      E.left({ code: 101, msg: 'ipam.ranges[0]: 10.0.0.2 has been allocated to a/eth0, duplicate allocation is not allowed' }),
    );
    expect(ips(given([allocated('a', '10.0.0.2')]).when(add(c, 'a', 'eth1')))).toEqual(['10.0.0.3']);
  });
  it('honours requested addresses, refusing held ones (101), gateways and strays (7)', () => {
    const want = (ip: string) => conf({ ranges: [[{ subnet: '10.0.0.0/29' }]] }, {}, { IP: ip });
    expect(ips(given([]).when(add(want('10.0.0.5'), 'a')))).toEqual(['10.0.0.5']);
    expect(given([allocated('b', '10.0.0.5')]).when(add(want('10.0.0.5'), 'a'))).toEqual(
      E.left({ code: 101, msg: 'CNI_ARGS IP: requested address 10.0.0.5 is already allocated to b/eth0' }),
    );
    expect(given([]).when(add(want('10.0.0.1'), 'a'))).toEqual(
      E.left({ code: 7, msg: 'CNI_ARGS IP: requested address 10.0.0.1 is the gateway of ipam.ranges[0][0]' }),
    );
    expect(given([]).when(add(want('10.0.0.9'), 'a'))).toMatchObject(
      E.left({ code: 7, msg: expect.stringContaining('requested address 10.0.0.9 is not in any range set') }),
    );
    expect(given([]).when(add(want('10.0.0.3,10.0.0.4'), 'a'))).toMatchObject(
      E.left({ code: 7, msg: expect.stringContaining('are both in range set ipam.ranges[0]') }),
    );
  });
  it('a failure in a later range set emits nothing at all', () => {
    const c2 = conf({ ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.1.0.0/30' }]] });
    const r = given([allocated('x', '10.1.0.2', 1)]).when(add(c2, 'a'));
    expect(r).toEqual(E.left({ code: 100, msg: 'ipam.ranges[1]: no IP addresses available in range set: 10.1.0.1-10.1.0.2' }));
  });
});

describe('AllocateAddresses over the table view', () => {
  /** A view over a folded state that counts what the decider reads. */
  const counting = (state: IpamState) => {
    const v = ipamView(state);
    const reads = { get: 0, find: 0, all: 0 };
    const view: IpamView = {
      header: v.header,
      get: (k) => (reads.get++, v.get(k)),
      find: (x) => (reads.find++, v.find(x)),
      count: () => v.count(),
      all: () => (reads.all++, v.all()),
    };
    return { view, reads };
  };
  const held = (c: IpamConf, n: number): IpamState => {
    const store = memoryStore();
    for (let i = 0; i < n; i++) store.transact(ipamStream('net'), ipamProjection, (s) => decide(add(c, `h${i}`), s), { time: T });
    const l = store.load(ipamStream('net'), ipamProjection);
    if (E.isLeft(l)) throw new Error(l.left.msg);
    return l.right.state;
  };

  it('an ADD reads its own allocations and the addresses it walks past, not every row', () => {
    const c = conf({ ranges: [[{ subnet: '10.0.0.0/24' }]] });
    const { view, reads } = counting(held(c, 100));
    expect(ips(decideIpam(add(c, 'new'), view))).toEqual(['10.0.0.102']);
    expect(reads).toEqual({ get: 1, find: 1, all: 0 });
  });

  it('only a nearly full range set reads every row, and still answers exhausted or the last free address', () => {
    const c = conf({ ranges: [[{ subnet: '10.0.0.0/29' }]] }); // .2-.6 allocatable, .1 the gateway
    const four = counting(held(c, 4));
    expect(ips(decideIpam(add(c, 'new'), four.view))).toEqual(['10.0.0.6']);
    expect(four.reads.all).toBe(0);
    // Rows of another range set count too: 3 attachments hold 6 rows, as many as the /29 has addresses.
    const two = conf({ ranges: [[{ subnet: '10.0.0.0/29' }], [{ subnet: 'fd00::/125' }]] });
    const near = counting(held(two, 3));
    expect(ips(decideIpam(add(two, 'new'), near.view))).toEqual(['10.0.0.5', 'fd00::5']);
    expect(near.reads.all).toBe(2);
    const full = counting(held(c, 5));
    expect(E.isLeft(decideIpam(add(c, 'new'), full.view)) && (decideIpam(add(c, 'new'), full.view) as E.Left<CniError>).left.code).toBe(
      100,
    );
  });
});

describe('ReleaseAddresses, CollectGarbage, CHECK, result', () => {
  const c = conf({ ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: 'fd00::/64' }]], routes: [{ dst: '0.0.0.0/0' }] });
  const history = [
    allocated('a', '10.0.0.2'),
    allocated('a', 'fd00::2', 1),
    allocated('b', '10.0.0.3'),
    allocated('a', '10.0.0.4', 0, 'eth1'),
  ];
  it('releases by (container, ifname) only', () => {
    expect(given(history).when(del('a'))).toEqual(
      E.right([
        { type: 'AddressReleased', data: { network: 'net', containerId: 'a', ifname: 'eth0', rangeSet: 0, ip: '10.0.0.2', reason: 'del' } },
        { type: 'AddressReleased', data: { network: 'net', containerId: 'a', ifname: 'eth0', rangeSet: 1, ip: 'fd00::2', reason: 'del' } },
      ]),
    );
    expect(given(history).when(del('zzz'))).toEqual(E.right([]));
  });
  it('GC releases what is not a valid attachment', () => {
    const r = given(history).when({
      type: 'CollectGarbage',
      data: { network: 'net', validAttachments: [{ containerId: 'a', ifname: 'eth0' }] },
    });
    expect(ips(r)).toEqual(['10.0.0.3', '10.0.0.4']);
  });
  it('CHECK finds the allocation, and names what is missing', () => {
    const s = fold(ipamProjection, stamp('ipam/net', history, T, 1) as Stored<IpamEvent>[]);
    expect(checkAllocation(s, c, 'a', 'eth0', ['10.0.0.2/24', 'fd00::2/64', '192.168.0.1/24'])).toEqual(E.right(undefined));
    expect(checkAllocation(s, c, 'z', 'eth0')).toEqual(
      E.left({ code: 103, msg: 'host-local: no address is allocated to z/eth0 in network "net"' }),
    );
    expect(checkAllocation(s, c, 'a', 'eth0', ['10.0.0.3/24'])).toEqual(
      E.left({ code: 103, msg: 'host-local: prevResult address 10.0.0.3/24 of a/eth0 is allocated to b/eth0' }),
    );
    expect(checkAllocation(s, c, 'a', 'eth0', ['10.0.0.9/24'])).toEqual(
      E.left({ code: 103, msg: 'host-local: prevResult address 10.0.0.9/24 of a/eth0 is not allocated' }),
    );
  });
  it('builds the result with prefix, gateway, routes and dns', () => {
    const r = ipamResult(c, [allocated('a', '10.0.0.2').data, allocated('a', 'fd00::2', 1).data], { nameservers: ['1.1.1.1'] });
    expect(r).toEqual({
      cniVersion: '1.1.0',
      ips: [
        { address: '10.0.0.2/24', gateway: '10.0.0.1' },
        { address: 'fd00::2/64', gateway: 'fd00::1' },
      ],
      routes: [{ dst: '0.0.0.0/0' }],
      dns: { nameservers: ['1.1.1.1'] },
    });
  });
  it('evolve keeps the time and position of the allocation', () => {
    const s = evolve(initialState(), { position: 7, stream: 'ipam/net', time: T, ...allocated('a', '10.0.0.2') } as Stored<IpamEvent>);
    expect(s.allocations['10.0.0.2']).toEqual({ ip: '10.0.0.2', containerId: 'a', ifname: 'eth0', rangeSet: 0, since: T, position: 7 });
    expect(s.lastReserved).toEqual({ '0': '10.0.0.2' });
  });
});

// ---- properties ---------------------------------------------------------------------------------------

/** A random valid config: 1-3 range sets of 1-2 small ranges each, every range in its own subnet. */
const rangeArb = (fam: 4 | 6, slot: number) =>
  fc
    .record({ prefixLen: fc.integer({ min: 2, max: 4 }), a: fc.nat(), b: fc.nat(), g: fc.option(fc.nat(), { nil: undefined }) })
    .map(({ prefixLen, a, b, g }) => {
      const hostBits = prefixLen; // 4..16 addresses
      const size = 1 << hostBits;
      const base = fam === 4 ? `10.${slot}.0.` : `fd00:${slot}::`;
      const fmt = (n: number) => (fam === 4 ? `${base}${n}` : `${base}${n.toString(16)}`);
      const lo = 1;
      const hi = fam === 4 ? size - 2 : size - 1;
      const x = lo + (a % (hi - lo + 1));
      const y = lo + (b % (hi - lo + 1));
      const r: Record<string, string> = { subnet: `${fam === 4 ? `${base}0` : base}/${(fam === 4 ? 32 : 128) - hostBits}` };
      if (a % 3) r['rangeStart'] = fmt(Math.min(x, y));
      if (b % 3) r['rangeEnd'] = fmt(Math.max(x, y));
      if (g !== undefined) r['gateway'] = fmt(g % size);
      return r;
    });

const configArb = fc
  .array(fc.record({ fam: fc.constantFrom<4 | 6>(4, 6), n: fc.integer({ min: 1, max: 2 }) }), { minLength: 1, maxLength: 3 })
  .chain((sets) => {
    let slot = 0;
    return fc.tuple(...sets.map((s) => fc.tuple(...Array.from({ length: s.n }, () => rangeArb(s.fam, ++slot)))));
  })
  .map((ranges) => conf({ ranges }));

type Op = { op: 'add'; c: number; i: number; req?: number } | { op: 'del'; c: number; i: number } | { op: 'gc'; keep: number[] };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ op: fc.constant('add' as const), c: fc.nat(7), i: fc.nat(1), req: fc.option(fc.nat(40), { nil: undefined }) }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('del' as const), c: fc.nat(7), i: fc.nat(1) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('gc' as const), keep: fc.array(fc.nat(15), { maxLength: 8 }) }) },
);

const owner = (c: number, i: number) => ({ containerId: `c${c}`, ifname: `eth${i}` });
const key = (o: { containerId: string; ifname: string }) => `${o.containerId}/${o.ifname}`;

/** Every address a set can hand out: its intervals minus every gateway of the config. */
const allocatable = (c: IpamConf, setIndex: number): IP[] => {
  const gws = c.rangeSets.flatMap((s) => s.ranges.map((r) => r.gateway));
  const out: IP[] = [];
  for (const r of c.rangeSets[setIndex]!.ranges) {
    for (let v = r.rangeStart.value; v <= r.rangeEnd.value; v++) {
      const a = { family: r.rangeStart.family, value: v };
      if (!gws.some((g) => eqIP(g, a))) out.push(a);
    }
  }
  return out;
};

/** The stores the allocation property runs against: deciding over the whole state or over the table's view. */
type Mode = 'memory, whole state' | 'memory, view' | 'sqlite, view';
interface PropStore {
  readonly run: (cmd: IpamCommand) => E.Either<CniError, readonly { data: { ip: string; rangeSet: number } }[]>;
  readonly log: () => Stored<IpamEvent>[];
  readonly state: () => IpamState;
  /** The stored table (or snapshot), assembled, when there is one. */
  readonly stored: () => unknown;
  readonly close: () => void;
}
const stream = ipamStream('net');
function propStore(mode: Mode): PropStore {
  if (mode === 'sqlite, view') {
    const dir = mkdtempSync(join(tmpdir(), 'felt-ipam-prop-'));
    const s = openSqliteStore(dir);
    if (E.isLeft(s)) throw new Error(s.left.msg);
    const store = s.right;
    const log = () => {
      const r = store.read({ stream });
      if (E.isLeft(r)) throw new Error(r.left.msg);
      return r.right as Stored<IpamEvent>[];
    };
    return {
      run: (cmd) =>
        E.map((t: { events: readonly Stored<IpamEvent>[] }) => t.events)(
          store.transactRows(stream, ipamProjection, (v) => decideIpam(cmd, v), { time: T }),
        ),
      log,
      state: () => {
        const l = store.load(stream, ipamProjection);
        return E.isRight(l) ? l.right.state : initialState();
      },
      stored: () => {
        // A second connection reads the table as another process would.
        const other = openSqliteStore(dir, { readonly: true });
        if (E.isLeft(other)) throw new Error(other.left.msg);
        const l = other.right.load(stream, ipamProjection);
        other.right.close();
        return E.isRight(l) && l.right.position > 0 ? l.right.state : undefined;
      },
      close: () => {
        store.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const store = memoryStore();
  return {
    run: (cmd) =>
      mode === 'memory, view'
        ? E.map((t: { events: readonly Stored<IpamEvent>[] }) => t.events)(
            store.transactRows(stream, ipamProjection, (v) => decideIpam(cmd, v), { time: T }),
          )
        : E.map((t: { events: readonly Stored<IpamEvent>[] }) => t.events)(
            store.transact(stream, ipamProjection, (st) => decide(cmd, st), { time: T }),
          ),
    log: () => store.events as Stored<IpamEvent>[],
    state: () => {
      const l = store.load(stream, ipamProjection);
      return E.isRight(l) ? l.right.state : initialState();
    },
    stored: () => store.snapshot(ipamProjection.name, stream)?.state,
    close: () => {},
  };
}

describe('properties', () => {
  it.each<[Mode, number]>([
    ['memory, whole state', 300],
    ['memory, view', 300],
    ['sqlite, view', 40],
  ])(
    'never hands out an address twice, the gateway, the network or broadcast address, or one outside its range; exhausted only when full (%s)',
    (mode, n) => {
      const seen = new Set<number | string>();
      fc.assert(
        fc.property(configArb, fc.array(opArb, { maxLength: 60 }), (c, ops) => {
          const store = propStore(mode);
          try {
            const model = new Map<string, string>(); // ip -> owner
            for (const o of ops) {
              const before = store.log().length;
              if (o.op === 'add') {
                const who = owner(o.c, o.i);
                let cc = c;
                if (o.req !== undefined) {
                  // Ask for some address of some set (maybe held, maybe a gateway).
                  const set = c.rangeSets[o.req % c.rangeSets.length]!;
                  const r = set.ranges[o.req % set.ranges.length]!;
                  const span = r.rangeEnd.value - r.rangeStart.value + 1n;
                  cc = {
                    ...c,
                    requested: [{ ip: { family: set.family, value: r.rangeStart.value + (BigInt(o.req) % span) }, source: 'test' }],
                  };
                }
                const res = store.run(add(cc, who.containerId, who.ifname));
                if (E.isLeft(res)) {
                  seen.add(res.left.code);
                  expect(store.log().length).toBe(before);
                  expect([7, 100, 101]).toContain(res.left.code);
                  if (res.left.code === 100) {
                    const label = res.left.msg.slice(0, res.left.msg.indexOf(':'));
                    const idx = c.rangeSets.findIndex((s) => s.label === label);
                    expect(allocatable(c, idx).every((a) => model.has(formatIP(a)))).toBe(true);
                  }
                  if (res.left.code === 101 && o.req === undefined) {
                    expect([...model.values()]).toContain(key(who));
                  }
                  continue;
                }
                const got = res.right;
                seen.add('ok');
                expect(got).toHaveLength(c.rangeSets.length);
                got.forEach((e, i) => {
                  const set = c.rangeSets[i]!;
                  const a = parseIP(e.data.ip)!;
                  expect(e.data.rangeSet).toBe(set.index);
                  expect(model.has(e.data.ip)).toBe(false);
                  const r = rangeFor(set, a);
                  expect(r).toBeDefined();
                  expect(c.rangeSets.flatMap((s) => s.ranges).some((x) => eqIP(x.gateway, a))).toBe(false);
                  expect(eqIP(a, firstIP(r!.subnet))).toBe(false);
                  if (a.family === 4) expect(eqIP(a, lastIP(r!.subnet))).toBe(false);
                  model.set(e.data.ip, key(who));
                });
              } else if (o.op === 'del') {
                const who = owner(o.c, o.i);
                const res = store.run(del(who.containerId, who.ifname));
                expect(E.isRight(res)).toBe(true);
                for (const [ip, w] of [...model]) if (w === key(who)) model.delete(ip);
              } else {
                const valid = o.keep.map((n) => owner(n % 8, n >> 3));
                const res = store.run({ type: 'CollectGarbage', data: { network: 'net', validAttachments: valid } });
                expect(E.isRight(res)).toBe(true);
                const keep = new Set(valid.map(key));
                for (const [ip, w] of [...model]) if (!keep.has(w)) model.delete(ip);
              }
              // The state agrees with the model, and the stored table with the fold of the whole log.
              const state = store.state();
              expect(Object.fromEntries(Object.values(state.allocations).map((a) => [a.ip, key(a)]))).toEqual(Object.fromEntries(model));
              const stored = store.stored();
              if (stored) expect(stored).toEqual(JSON.parse(JSON.stringify(fold(ipamProjection, store.log()))));
            }
            // Every allocation's address lies in the set it was allocated from.
            for (const a of Object.values(store.state().allocations))
              expect(rangeSetContains(c.rangeSets[a.rangeSet]!, parseIP(a.ip)!)).toBe(true);
          } finally {
            store.close();
          }
        }),
        { numRuns: runs(n) },
      );
      // The generators reach every outcome: success, exhaustion, held/duplicate, bad request.
      if (n >= 300) expect([...seen].sort()).toEqual([100, 101, 7, 'ok']);
    },
  );

  it('replaying the log in any chunking, from any snapshot, gives the same state', () => {
    const c = conf({ ranges: [[{ subnet: '10.0.0.0/28' }], [{ subnet: 'fd00::/124' }]] });
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 40 }), fc.array(fc.nat(50), { maxLength: 6 }), (ops, cuts) => {
        const store = memoryStore();
        for (const o of ops) {
          const cmd: IpamCommand =
            o.op === 'add'
              ? add(c, `c${o.c}`, `eth${o.i}`)
              : o.op === 'del'
                ? del(`c${o.c}`, `eth${o.i}`)
                : { type: 'CollectGarbage', data: { network: 'net', validAttachments: o.keep.map((n) => owner(n % 8, n >> 3)) } };
          store.transact('ipam/net', ipamProjection, (s) => decide(cmd, s), { time: T });
        }
        const log = store.events as Stored<IpamEvent>[];
        const whole = fold(ipamProjection, log);
        // Cut the log at arbitrary points; fold chunk by chunk, passing the state through JSON (a snapshot).
        const points = [...new Set(cuts.map((n) => n % (log.length + 1)))].sort((a, b) => a - b);
        let s: IpamState = initialState();
        let at = 0;
        for (const p of [...points, log.length]) {
          s = JSON.parse(JSON.stringify(fold(ipamProjection, log.slice(at, p), s))) as IpamState;
          at = p;
        }
        expect(s).toEqual(JSON.parse(JSON.stringify(whole)));
        const loaded = store.load('ipam/net', ipamProjection);
        expect(E.isRight(loaded) && loaded.right.state).toEqual(JSON.parse(JSON.stringify(whole)));
      }),
      { numRuns: runs(200) },
    );
  });
});
