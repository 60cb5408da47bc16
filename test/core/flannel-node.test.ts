import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fold, stamp, type Stored } from '../../core/events.ts';
import {
  decide,
  initialState,
  nodeProjection,
  remoteLeases,
  type NodeCommand,
  type NodeEvent,
  type NodeState,
} from '../../core/flannel/node.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import type { Lease } from '../../core/flannel/types.ts';

const T0 = '2030-01-01T00:00:00.000Z';
const T1 = '2030-01-01T01:00:00.000Z';
const EXP = '2030-01-02T00:00:00.000Z';
const EXP2 = '2030-01-02T05:00:00.000Z';
const PAST = '2029-12-01T00:00:00.000Z';

const mac = (n: number) => `3e:9c:0f:11:22:${n.toString(16).padStart(2, '0')}`;
const lease = (n: number, o: { ip?: string; mac?: string; exp?: string } = {}): Lease => ({
  subnet: `10.244.${n}.0/24`,
  attrs: { PublicIP: o.ip ?? `198.51.100.${n}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: o.mac ?? mac(n) } },
  expiration: o.exp ?? EXP,
});

/** given(events).when(command): decide, stamp, evolve. */
function run(state: NodeState, command: NodeCommand, position = 1): { events: NodeEvent[]; state: NodeState; stored: Stored<NodeEvent>[] } {
  const r = decide(command, state);
  if (E.isLeft(r)) throw new Error(r.left);
  const stored = stamp('node/198.51.100.1', r.right, command.metadata?.time ?? T0, position);
  return { events: r.right, state: fold(nodeProjection, stored, state), stored };
}
const meta = (time = T0) => ({ time });
const observe = (leases: Lease[], time = T0): NodeCommand => ({
  type: 'ObserveLeases',
  data: { snapshot: { leases, revision: 1 } },
  metadata: meta(time),
});
const own = (l: Lease, time = T0): NodeCommand => ({ type: 'RecordOwnLease', data: { lease: l }, metadata: meta(time) });

describe('node decider: given / when / then', () => {
  it('records the config once', () => {
    const parsed = parseNetConfig('{"Network":"10.244.0.0/16"}');
    if (E.isLeft(parsed)) throw new Error(parsed.left);
    const config = parsed.right.config;
    const a = run(initialState(), { type: 'LoadConfig', data: { config } });
    expect(a.events.map((e) => e.type)).toEqual(['ConfigLoaded']);
    expect(run(a.state, { type: 'LoadConfig', data: { config } }).events).toEqual([]);
  });

  it('own lease: acquired, renewed, unchanged, lost', () => {
    const mine = lease(1);
    const a = run(initialState(), own(mine));
    expect(a.events).toEqual([
      {
        type: 'SubnetLeased',
        data: {
          key: '10.244.1.0-24',
          subnet: '10.244.1.0/24',
          publicIP: '198.51.100.1',
          backendType: 'vxlan',
          vtepMac: mac(1),
          expiration: EXP,
          renewal: false,
        },
      },
    ]);
    expect(a.state.ownLease?.since).toBe(T0);
    expect(run(a.state, own(mine)).events).toEqual([]);
    const b = run(a.state, own({ ...mine, expiration: EXP2 }, T1));
    expect(b.events).toMatchObject([{ type: 'SubnetLeased', data: { renewal: true, expiration: EXP2 } }]);
    expect(b.state.ownLease).toMatchObject({ since: T0, expiration: EXP2 });
    const c = run(b.state, { type: 'LoseOwnLease', data: { reason: 'renewal failed past expiry' } });
    expect(c.events).toEqual([
      { type: 'SubnetLeaseLost', data: { key: '10.244.1.0-24', subnet: '10.244.1.0/24', reason: 'renewal failed past expiry' } },
    ]);
    expect(c.state.ownLease).toBeNull();
    expect(run(c.state, { type: 'LoseOwnLease', data: {} }).events).toEqual([]);
  });

  it('a vtepMac given with the lease is recorded; a bad one is refused', () => {
    const l: Lease = { subnet: '10.244.1.0/24', attrs: { PublicIP: '198.51.100.1', BackendType: 'vxlan' }, expiration: EXP };
    expect(run(initialState(), { type: 'RecordOwnLease', data: { lease: l, vtepMac: '3E:9C:0F:11:22:33' } }).state.ownLease?.vtepMac).toBe(
      '3e:9c:0f:11:22:33',
    );
    expect(decide({ type: 'RecordOwnLease', data: { lease: l, vtepMac: 'zz' } }, initialState())).toEqual(
      E.left('RecordOwnLease: vtepMac "zz" is not a MAC address'),
    );
    expect(decide({ type: 'RecordOwnLease', data: { lease: { ...l, subnet: undefined } as unknown as Lease } }, initialState())).toEqual(
      E.left('lease of 198.51.100.1: neither subnet nor ipv6Subnet is set'),
    );
  });

  it('observe: remote leases appear, change, leave; renewals and own lease emit nothing', () => {
    const s0 = run(initialState(), own(lease(1))).state;
    const a = run(s0, observe([lease(1), lease(2), lease(3)]));
    expect(a.events.map((e) => [e.type, (e.data as { key: string }).key])).toEqual([
      ['RemoteLeaseSeen', '10.244.2.0-24'],
      ['RemoteLeaseSeen', '10.244.3.0-24'],
    ]);
    expect(Object.keys(a.state.remotes).sort()).toEqual(['10.244.2.0-24', '10.244.3.0-24']);
    // The same leases, renewed: nothing.
    expect(run(a.state, observe([lease(1, { exp: EXP2 }), lease(2, { exp: EXP2 }), lease(3, { exp: EXP2 })], T1)).events).toEqual([]);
    // Node 2 changed its VtepMAC, node 3 left, node 4 came.
    const b = run(a.state, observe([lease(1), lease(2, { mac: mac(0x22) }), lease(4)], T1));
    expect(b.events).toEqual([
      { type: 'RemoteLeaseRemoved', data: { key: '10.244.3.0-24', subnet: '10.244.3.0/24', publicIP: '198.51.100.3', reason: 'gone' } },
      {
        type: 'RemoteLeaseSeen',
        data: {
          key: '10.244.2.0-24',
          subnet: '10.244.2.0/24',
          attrs: lease(2, { mac: mac(0x22) }).attrs,
          expiration: EXP,
          change: 'changed',
          changes: [`VtepMAC ${mac(2)} -> ${mac(0x22)}`],
        },
      },
      {
        type: 'RemoteLeaseSeen',
        data: { key: '10.244.4.0-24', subnet: '10.244.4.0/24', attrs: lease(4).attrs, expiration: EXP, change: 'appeared' },
      },
    ]);
    expect(b.state.remotes['10.244.2.0-24']).toMatchObject({ since: T0, changed: T1 });
    // A public IP change is a change too.
    const c = run(b.state, observe([lease(1), lease(2, { mac: mac(0x22), ip: '198.51.100.99' }), lease(4)], T1));
    expect(c.events).toMatchObject([
      { type: 'RemoteLeaseSeen', data: { change: 'changed', changes: ['PublicIP 198.51.100.2 -> 198.51.100.99'] } },
    ]);
  });

  it('observe: an expired lease in the listing is gone; leases holding our own IP are not remotes', () => {
    const s0 = run(initialState(), observe([lease(2), lease(3)])).state;
    const a = run(s0, observe([lease(2, { exp: PAST }), lease(3)], T1));
    expect(a.events).toMatchObject([{ type: 'RemoteLeaseRemoved', data: { key: '10.244.2.0-24', reason: 'expired' } }]);
    const b = run(initialState(), {
      type: 'ObserveLeases',
      data: { snapshot: { leases: [lease(5, { ip: '198.51.100.1' }), lease(3)], revision: 2 }, own: '198.51.100.1' },
    });
    expect(Object.keys(b.state.remotes)).toEqual(['10.244.3.0-24']);
  });

  it('watch events: added, changed, removed; removal of our own lease is a revocation', () => {
    const s0 = run(initialState(), own(lease(1))).state;
    const apply = (state: NodeState, events: NodeCommand & { type: 'ApplyLeaseEvents' }) => run(state, events);
    const ev = (events: { type: 'added' | 'removed'; lease: Lease }[], time = T0) => ({
      type: 'ApplyLeaseEvents' as const,
      data: { events },
      metadata: meta(time),
    });
    const a = apply(
      s0,
      ev([
        { type: 'added', lease: lease(2) },
        { type: 'added', lease: lease(2, { exp: EXP2 }) },
        { type: 'added', lease: lease(3) },
      ]),
    );
    expect(a.events.map((e) => e.type)).toEqual(['RemoteLeaseSeen', 'RemoteLeaseSeen']);
    // Renewal of our own lease via the watch: nothing (RecordOwnLease records it).
    expect(apply(a.state, ev([{ type: 'added', lease: lease(1, { exp: EXP2 }) }])).events).toEqual([]);
    // Add then remove in one batch: no trace (the net effect); removing an unknown lease: nothing.
    const b = apply(
      a.state,
      ev([
        { type: 'added', lease: lease(4) },
        { type: 'removed', lease: lease(4) },
        { type: 'removed', lease: lease(9) },
      ]),
    );
    expect(b.events).toEqual([]);
    const b2 = apply(
      a.state,
      ev([
        { type: 'removed', lease: lease(3) },
        { type: 'added', lease: lease(2, { mac: mac(0x40) }) },
      ]),
    );
    expect(b2.events.map((e) => e.type)).toEqual(['RemoteLeaseRemoved', 'RemoteLeaseSeen']);
    expect(b2.events[0]).toMatchObject({ data: { reason: 'removed' } });
    expect(Object.keys(b.state.remotes).sort()).toEqual(['10.244.2.0-24', '10.244.3.0-24']);
    const c = apply(
      b.state,
      ev([
        { type: 'removed', lease: lease(1) },
        { type: 'removed', lease: lease(1) },
      ]),
    );
    expect(c.events).toEqual([
      { type: 'SubnetLeaseLost', data: { key: '10.244.1.0-24', subnet: '10.244.1.0/24', reason: 'revoked: removed from the lease store' } },
    ]);
    expect(c.state.ownLease).toBeNull();
  });

  it('taking over a subnet last seen as remote removes the remote first', () => {
    const s0 = run(initialState(), observe([lease(2)])).state;
    const a = run(s0, own(lease(2, { ip: '198.51.100.1', mac: mac(1) })));
    expect(a.events.map((e) => e.type)).toEqual(['RemoteLeaseRemoved', 'SubnetLeased']);
    expect(a.state.remotes).toEqual({});
    // A different subnet for this node: the old one is lost first.
    const b = run(a.state, own(lease(7, { ip: '198.51.100.1' })));
    expect(b.events.map((e) => e.type)).toEqual(['SubnetLeaseLost', 'SubnetLeased']);
  });
});

// ---- properties ---------------------------------------------------------------------------------------

const leaseArb: fc.Arbitrary<Lease> = fc
  .record({
    n: fc.integer({ min: 1, max: 12 }),
    ip: fc.integer({ min: 1, max: 4 }),
    m: fc.integer({ min: 1, max: 3 }),
    exp: fc.constantFrom(EXP, EXP2, PAST),
  })
  .map(({ n, ip, m, exp }) => lease(n, { ip: `198.51.100.${n * 10 + ip}`, mac: mac(n * 16 + m), exp }));

const commandArb: fc.Arbitrary<NodeCommand> = fc.oneof(
  fc.array(leaseArb, { maxLength: 8 }).map((leases) => observe(leases, T1)),
  fc
    .array(fc.record({ type: fc.constantFrom('added' as const, 'removed' as const), lease: leaseArb }), { maxLength: 6 })
    .map((events) => ({ type: 'ApplyLeaseEvents' as const, data: { events }, metadata: meta(T1) })),
  leaseArb.map((l) => own(l, T1)),
  fc.constant<NodeCommand>({ type: 'LoseOwnLease', data: {}, metadata: meta(T1) }),
);

function runAll(commands: readonly NodeCommand[]): { state: NodeState; stored: Stored<NodeEvent>[] } {
  let state = initialState();
  const stored: Stored<NodeEvent>[] = [];
  for (const c of commands) {
    const r = run(state, c, stored.length + 1);
    state = r.state;
    stored.push(...r.stored);
  }
  return { state, stored };
}

describe('node decider properties', () => {
  it('decide is idempotent: the same command again emits nothing', () => {
    fc.assert(
      fc.property(fc.array(commandArb, { maxLength: 8 }), commandArb, (history, cmd) => {
        const { state } = runAll(history);
        const once = run(state, cmd).state;
        expect(run(once, cmd).events).toEqual([]);
      }),
    );
  });

  it('after an observation, the remotes are exactly the live leases that are not ours', () => {
    fc.assert(
      fc.property(fc.array(commandArb, { maxLength: 8 }), fc.array(leaseArb, { maxLength: 8 }), (history, leases) => {
        const { state } = runAll(history);
        const after = run(state, observe(leases, T1)).state;
        const want = new Map<string, Lease>();
        for (const l of leases) {
          const key = `10.244.${l.subnet!.split('.')[2]}.0-24`;
          if (key === after.ownLease?.key) continue;
          if (l.expiration === PAST) want.delete(key);
          else want.set(key, l);
        }
        expect(remoteLeases(after).map((r) => [r.key, r.attrs])).toEqual(
          [...want].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, l]) => [k, l.attrs]),
        );
      }),
    );
  });

  it('replaying the log in any chunking gives the same state, and the state is plain JSON', () => {
    fc.assert(
      fc.property(fc.array(commandArb, { maxLength: 10 }), fc.array(fc.nat(), { maxLength: 6 }), (commands, cuts) => {
        const { state, stored } = runAll(commands);
        expect(fold(nodeProjection, stored)).toEqual(state);
        const points = [...new Set(cuts.map((c) => (stored.length ? c % (stored.length + 1) : 0)))].sort((a, b) => a - b);
        let s = nodeProjection.initialState();
        let from = 0;
        for (const p of [...points, stored.length]) {
          s = fold(nodeProjection, stored.slice(from, p), s);
          from = p;
        }
        expect(s).toEqual(state);
        expect(JSON.parse(JSON.stringify(state))).toEqual(state);
        // The batch fold (one draft per batch) equals evolving event by event.
        expect(stored.reduce((x, e) => nodeProjection.evolve(x, e), nodeProjection.initialState())).toEqual(state);
      }),
    );
  });
});
