// The DHCP core: packets, config, the lease of an ACK and its CNI result, and the lease machine stepped with
// xstate's SimulatedClock (T1 renewal, T2 rebinding, expiry, release) with no real time passing.

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { clientId, parseDhcpConf } from '../../core/dhcp/config.ts';
import { dhcpMachine, type ExtendInput } from '../../core/dhcp/client-machine.ts';
import {
  discover,
  isOffer,
  leaseOf,
  leaseResult,
  release,
  replyTo,
  requestExtend,
  requestSelecting,
  type ClientIdentity,
  type Lease,
} from '../../core/dhcp/lease.ts';
import {
  parseClientCommand,
  parseClientConfig,
  parseClientEvent,
  parseDaemonRequest,
  parseDaemonResponse,
} from '../../core/dhcp/protocol.ts';
import {
  classlessRoutes,
  decode,
  encode,
  encodeClasslessRoutes,
  ipv4Bytes,
  maskPrefix,
  MessageType,
  Opt,
  type Packet,
} from '../../core/dhcp/packet.ts';

const MAC = '02:42:c6:33:64:0a';
const id: ClientIdentity = {
  clientId: 'ctr1/dnet/eth0',
  mac: MAC,
  options: { provide: [{ code: Opt.HostName, value: 'pod-a' }], request: [Opt.Router, Opt.SubnetMask, 121] },
};

/** A server reply as bytes (what dnsmasq would send). */
function reply(type: number, xid: number, yiaddr: string, options: [number, Uint8Array][]): Uint8Array {
  const b = new Uint8Array(300);
  b[0] = 2;
  b[1] = 1;
  b[2] = 6;
  new DataView(b.buffer).setUint32(4, xid);
  b.set(ipv4Bytes(yiaddr)!, 16);
  b.set(
    MAC.split(':').map((x) => parseInt(x, 16)),
    28,
  );
  b.set([99, 130, 83, 99], 236);
  const opts = [53, 1, type, ...options.flatMap(([c, v]) => [c, v.length, ...v]), 255];
  b.set(opts, 240);
  return b;
}
const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};
const ack = (xid: number, extra: [number, Uint8Array][] = [], lease = 120): Packet =>
  decode(
    reply(MessageType.ACK, xid, '10.77.0.50', [
      [Opt.ServerIdentifier, ipv4Bytes('10.77.0.1')!],
      [Opt.SubnetMask, ipv4Bytes('255.255.255.0')!],
      [Opt.Router, ipv4Bytes('10.77.0.1')!],
      [Opt.LeaseTime, u32(lease)],
      ...extra,
    ]),
  )!;

const netconf = (ipam: unknown) => ({ cniVersion: '1.0.0', name: 'dnet', type: 'macvlan', raw: { ipam } });

describe('dhcp packets', () => {
  it('a DISCOVER carries the broadcast flag, client id 61 (type 0), provided options and the request list', () => {
    const e = encode(discover(id, 0xdeadbeef));
    expect(e.ok).toBe(true);
    const p = decode((e as { bytes: Uint8Array }).bytes)!;
    expect(p).toMatchObject({ op: 1, xid: 0xdeadbeef, flags: 0x8000, chaddr: MAC, ciaddr: '0.0.0.0' });
    expect(Array.from(p.options.get(53)!)).toEqual([1]);
    expect(new TextDecoder().decode(p.options.get(61)!)).toBe('\0ctr1/dnet/eth0');
    expect(new TextDecoder().decode(p.options.get(12)!)).toBe('pod-a');
    expect(Array.from(p.options.get(55)!)).toEqual([3, 1, 121]);
  });

  it('REQUEST (selecting) names the offer and the server; renewing is unicast with ciaddr; RELEASE names the server', () => {
    const offer = decode(reply(MessageType.OFFER, 7, '10.77.0.50', [[Opt.ServerIdentifier, ipv4Bytes('10.77.0.1')!]]))!;
    expect(isOffer(offer, 7, MAC)).toBe(true);
    expect(isOffer(offer, 8, MAC)).toBe(false);
    const rq = decode((encode(requestSelecting(id, 7, offer)) as { bytes: Uint8Array }).bytes)!;
    expect(Array.from(rq.options.get(50)!)).toEqual([10, 77, 0, 50]);
    expect(Array.from(rq.options.get(54)!)).toEqual([10, 77, 0, 1]);
    const lease = E.getOrElseW(() => undefined)(leaseOf(ack(7), 0))!;
    const rn = decode((encode(requestExtend(id, 9, lease, false)) as { bytes: Uint8Array }).bytes)!;
    expect(rn).toMatchObject({ flags: 0, ciaddr: '10.77.0.50' });
    expect(rn.options.has(54)).toBe(false);
    const rl = decode((encode(release(id, 10, lease)) as { bytes: Uint8Array }).bytes)!;
    expect(Array.from(rl.options.get(53)!)).toEqual([MessageType.RELEASE]);
    expect(Array.from(rl.options.get(54)!)).toEqual([10, 77, 0, 1]);
  });

  it('replies are matched by xid and MAC; NAK is told apart', () => {
    expect(replyTo(ack(5), 5, MAC)?.kind).toBe('ack');
    expect(replyTo(ack(5), 6, MAC)).toBeUndefined();
    expect(replyTo(decode(reply(MessageType.NAK, 5, '0.0.0.0', []))!, 5, MAC)?.kind).toBe('nak');
  });

  it('decode never throws on arbitrary bytes, and truncated options are refused', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (b) => void decode(b)));
    const bad = reply(MessageType.ACK, 1, '10.0.0.2', []);
    bad.set([Opt.Router, 200], 243); // a length running past the end
    expect(decode(bad.slice(0, 260))).toBeUndefined();
  });

  it('masks and classless routes', () => {
    expect(maskPrefix('255.255.240.0')).toBe(20);
    expect(maskPrefix('255.0.255.0')).toBeUndefined();
    const routes = [
      { dst: '0.0.0.0/0', gw: '10.77.0.254' },
      { dst: '192.0.2.0/24', gw: '10.77.0.1' },
      { dst: '203.0.113.128/25', gw: '0.0.0.0' },
    ];
    expect(classlessRoutes(encodeClasslessRoutes(routes))).toEqual(routes);
    expect(classlessRoutes(Uint8Array.from([33, 1, 2, 3, 4, 5, 6, 7, 8]))).toBeUndefined();
    expect(classlessRoutes(Uint8Array.from([24, 10, 0]))).toBeUndefined();
  });
});

describe('dhcp lease', () => {
  it('T1/T2 default to 50% / 87.5% of the lease; given ones are kept when in order', () => {
    const l = E.getOrElseW(() => undefined)(leaseOf(ack(1), 1000))!;
    expect(l).toMatchObject({
      address: '10.77.0.50',
      prefix: 24,
      server: '10.77.0.1',
      router: '10.77.0.1',
      leaseSeconds: 120,
      renewSeconds: 60,
      rebindSeconds: 105,
    });
    expect([l.renewAt, l.rebindAt, l.expiresAt]).toEqual([61_000, 106_000, 121_000]);
    const given = E.getOrElseW(() => undefined)(
      leaseOf(
        ack(1, [
          [Opt.RenewalTime, u32(10)],
          [Opt.RebindingTime, u32(20)],
        ]),
        0,
      ),
    )!;
    expect([given.renewSeconds, given.rebindSeconds]).toEqual([10, 20]);
    const wrong = E.getOrElseW(() => undefined)(
      leaseOf(
        ack(1, [
          [Opt.RenewalTime, u32(110)],
          [Opt.RebindingTime, u32(500)],
        ]),
        0,
      ),
    )!;
    expect([wrong.renewSeconds, wrong.rebindSeconds]).toEqual([60, 105]);
  });

  it('an ACK without mask or lease time is refused, naming the option', () => {
    const noMask = decode(reply(MessageType.ACK, 1, '10.0.0.2', [[Opt.LeaseTime, u32(60)]]))!;
    expect(leaseOf(noMask, 0)).toEqual(E.left('option 1 (subnet mask): missing in DHCPACK'));
    const noTime = decode(reply(MessageType.ACK, 1, '10.0.0.2', [[Opt.SubnetMask, ipv4Bytes('255.255.255.0')!]]))!;
    expect(leaseOf(noTime, 0)).toEqual(E.left('option 51 (lease time): missing in DHCPACK'));
  });

  it('the CNI result: address/prefix, gateway, default route; option 121 replaces router and option 33', () => {
    const l = E.getOrElseW(() => undefined)(leaseOf(ack(1, [[Opt.StaticRoute, Uint8Array.from([192, 0, 2, 0, 10, 77, 0, 9])]]), 0))!;
    expect(leaseResult(l, '1.0.0')).toEqual({
      cniVersion: '1.0.0',
      ips: [{ address: '10.77.0.50/24', gateway: '10.77.0.1' }],
      routes: [
        { dst: '192.0.2.0/24', gw: '10.77.0.9' },
        { dst: '0.0.0.0/0', gw: '10.77.0.1' },
      ],
    });
    const c = E.getOrElseW(() => undefined)(
      leaseOf(
        ack(1, [
          [
            121,
            encodeClasslessRoutes([
              { dst: '198.51.100.0/24', gw: '10.77.0.7' },
              { dst: '10.99.0.0/16', gw: '0.0.0.0' },
            ]),
          ],
        ]),
        0,
      ),
    )!;
    expect(leaseResult(c, '1.0.0').routes).toEqual([{ dst: '198.51.100.0/24', gw: '10.77.0.7' }, { dst: '10.99.0.0/16' }]);
  });
});

describe('dhcp config', () => {
  it('defaults: the reference socket, routers and subnet-mask requested', () => {
    const c = parseDhcpConf(netconf({ type: 'dhcp' }), {});
    expect(c).toEqual(E.right({ network: 'dnet', socketPath: '/run/cni/dhcp.sock', options: { provide: [], request: [3, 1] } }));
  });

  it('provide (value, fromArg from CNI_ARGS wins), request with skipDefault, names and numbers', () => {
    const c = parseDhcpConf(
      netconf({
        type: 'dhcp',
        daemonSocketPath: '/tmp/x.sock',
        provide: [
          { option: 'host-name', value: 'default', fromArg: 'K8S_POD_NAME' },
          { option: '77', value: 'felt' },
        ],
        request: [{ skipDefault: true, option: '121' }, { option: 'subnet-mask' }],
      }),
      { K8S_POD_NAME: 'web-1' },
    );
    expect(c).toEqual(
      E.right({
        network: 'dnet',
        socketPath: '/tmp/x.sock',
        options: {
          provide: [
            { code: 12, value: 'web-1' },
            { code: 77, value: 'felt' },
          ],
          request: [121, 1],
        },
      }),
    );
  });

  it('bad options: code 7, every field named', () => {
    const c = parseDhcpConf(
      netconf({
        type: 'dhcp',
        daemonSocketPath: 'rel.sock',
        provide: [{ option: 'nope' }, { option: '53', value: 'x' }, { option: '12', value: 'x'.repeat(256) }],
        request: [{ option: 300 }],
      }),
      {},
    );
    expect(E.isLeft(c)).toBe(true);
    const msg = (c as E.Left<{ code: number; msg: string }>).left;
    expect(msg.code).toBe(7);
    for (const f of [
      'ipam.daemonSocketPath',
      'ipam.provide[0].option',
      'ipam.provide[1].option',
      'ipam.provide[2]: the value for option 12 is longer than 255 bytes',
      'ipam.request[0].option',
    ]) {
      expect(msg.msg).toContain(f);
    }
  });

  it('client id as the reference: containerID/network/ifname, at most 254 bytes', () => {
    expect(clientId('c', 'n', 'eth0')).toBe('c/n/eth0');
    expect(clientId('x'.repeat(300), 'n', 'eth0')).toHaveLength(254);
  });
});

describe('dhcp lease machine (simulated clock)', () => {
  const T0 = Date.parse('2030-01-01T00:00:00.000Z');
  const settle = () => new Promise<void>((r) => setImmediate(r));
  type Answer = Lease | 'nak' | Error;

  function harness(scripts: { renew?: ((now: number) => Answer)[]; rebind?: ((now: number) => Answer)[] }, leaseSeconds = 120) {
    const clock = new SimulatedClock();
    clock.set(T0);
    const calls: string[] = [];
    const hooks: string[] = [];
    const mk = (now: number): Lease => E.getOrElseW(() => undefined)(leaseOf(ack(1, [], leaseSeconds), now))!;
    const answer = (kind: string, script: ((now: number) => Answer)[] | undefined): Promise<Lease | 'nak'> => {
      calls.push(`${kind}@${(clock.now() - T0) / 1000}s`);
      const f = script?.shift();
      if (!f) return Promise.reject(new Error('no answer'));
      const r = f(clock.now());
      return r instanceof Error ? Promise.reject(r) : Promise.resolve(r);
    };
    const actor = createActor(
      dhcpMachine.provide({
        actors: {
          acquire: fromPromise(async () => (calls.push('acquire'), mk(clock.now()))),
          renew: fromPromise(() => answer('renew', scripts.renew)),
          rebind: fromPromise(() => answer('rebind', scripts.rebind)),
          release: fromPromise<void, ExtendInput>(async ({ input }) => {
            calls.push(`release ${input.lease.address}`);
          }),
        },
        actions: {
          leaseExpired: () => void hooks.push('expired'),
          leaseRenewed: () => void hooks.push('renewed'),
          leaseBound: () => void hooks.push('bound'),
        },
      }),
      { clock, input: { now: () => clock.now(), retryMinMs: 5_000 } },
    );
    const at = async (ms: number) => {
      clock.increment(ms);
      await settle();
      await settle();
    };
    return { actor, calls, hooks, mk, at, state: () => actor.getSnapshot().value };
  }

  it('binds, renews at T1 and starts the lease over from the ACK', async () => {
    const h = harness({ renew: [(now) => h.mk(now), (now) => h.mk(now)] });
    h.actor.start();
    await settle();
    expect(h.state()).toEqual({ held: 'bound' });
    await h.at(60_000 - 1);
    expect(h.calls).toEqual(['acquire']);
    await h.at(1);
    expect(h.calls).toEqual(['acquire', 'renew@60s']);
    expect(h.state()).toEqual({ held: 'bound' });
    expect(h.actor.getSnapshot().context.lease?.expiresAt).toBe(T0 + 180_000);
    await h.at(60_000);
    expect(h.calls).toEqual(['acquire', 'renew@60s', 'renew@120s']);
    expect(h.hooks).toEqual(['bound', 'renewed', 'renewed']);
  });

  it('renewal without answer retries (half the time to T2, at least retryMin), rebinds after T2, expires at the end', async () => {
    const h = harness({});
    h.actor.start();
    await settle();
    await h.at(60_000); // T1: renew fails; T2 is at 105 s: wait 22.5 s
    await h.at(22_500); // 82.5 s: renew fails; wait 11.25 s
    await h.at(11_250); // 93.75 s: renew fails; wait 5.625 s
    await h.at(5_625); // 99.375 s: renew fails; 5.625 s left, retryMin 5 s: wait 5 s
    await h.at(5_000); // 104.375 s: renew fails; 0.625 s left: wait 0.625 s
    await h.at(625); // 105 s: past T2: rebind
    expect(h.calls).toEqual(['acquire', 'renew@60s', 'renew@82.5s', 'renew@93.75s', 'renew@99.375s', 'renew@104.375s', 'rebind@105s']);
    expect(h.state()).toEqual({ held: 'rebindWait' });
    await h.at(120_000 - 105_000);
    expect(h.state()).toBe('expired');
    expect(h.hooks).toEqual(['bound', 'expired']);
  });

  it('rebinding gets the lease back; a NAK ends it', async () => {
    const h = harness({
      rebind: [(now) => h.mk(now)],
      renew: [
        () => new Error('timeout'),
        () => new Error('timeout'),
        () => new Error('timeout'),
        () => new Error('timeout'),
        () => new Error('timeout'),
        () => 'nak',
      ],
    });
    h.actor.start();
    await settle();
    for (const ms of [60_000, 22_500, 11_250, 5_625, 5_000, 625]) await h.at(ms);
    expect(h.state()).toEqual({ held: 'bound' });
    expect(h.actor.getSnapshot().context.lease?.expiresAt).toBe(T0 + 105_000 + 120_000);
    await h.at(60_000);
    expect(h.state()).toBe('expired');
    expect(h.actor.getSnapshot().context.lastError).toContain('NAK');
  });

  it('STOP releases the lease held; STOP while selecting releases nothing', async () => {
    const h = harness({});
    h.actor.start();
    await settle();
    h.actor.send({ type: 'STOP' });
    await settle();
    expect(h.state()).toBe('released');
    expect(h.calls).toEqual(['acquire', 'release 10.77.0.50']);
    const never = createActor(dhcpMachine.provide({ actors: { acquire: fromPromise(() => new Promise<Lease>(() => undefined)) } }), {
      input: { now: () => 0 },
    });
    never.start();
    never.send({ type: 'STOP' });
    expect(never.getSnapshot().value).toBe('released');
  });
});

describe('dhcp protocol lines (plugin ↔ daemon ↔ client)', () => {
  const req = {
    v: 1,
    command: 'ADD',
    containerId: 'c1',
    netns: '/run/netns/p1',
    ifname: 'eth0',
    args: { K8S_POD_NAME: 'web' },
    config: { name: 'dnet' },
  };

  it('a request parses into typed values; every bad field is named', () => {
    expect(parseDaemonRequest(JSON.stringify(req))).toEqual(E.right(req));
    const bad = parseDaemonRequest(
      JSON.stringify({ ...req, command: 'GC', containerId: 'a b', netns: 'rel', ifname: 'eth0\nx', args: { X: 1 } }),
    );
    expect(E.isLeft(bad)).toBe(true);
    const msg = (bad as E.Left<string>).left;
    for (const f of ['command:', 'containerId:', 'netns:', 'ifname:', 'args.X:']) expect(msg).toContain(f);
    expect(parseDaemonRequest('{"v":2}')).toEqual(E.left('v: protocol version 2, this daemon speaks 1'));
    expect(E.isLeft(parseDaemonRequest('not json'))).toBe(true);
    // DEL may come without a namespace.
    expect(E.isRight(parseDaemonRequest(JSON.stringify({ ...req, command: 'DEL', netns: '' })))).toBe(true);
  });

  it('a lease reported by the client is re-checked: addresses, prefixes, numbers', () => {
    const l = E.getOrElseW(() => undefined)(
      leaseOf(ack(3, [[121, encodeClasslessRoutes([{ dst: '192.0.2.0/24', gw: '10.77.0.9' }])]]), 1000),
    )!;
    expect(parseClientEvent(JSON.stringify({ type: 'bound', lease: l }))).toEqual(E.right({ type: 'bound', lease: l }));
    const bad = parseClientEvent(
      JSON.stringify({
        type: 'renewed',
        lease: { ...l, address: '10.0.0.1; rm', prefix: 40, classless: [{ dst: '1.2.3.4/99', gw: 'x' }] },
      }),
    );
    const msg = (bad as E.Left<string>).left;
    for (const f of ['lease.address', 'lease.prefix', 'lease.classless[0].dst', 'lease.classless[0].gw']) expect(msg).toContain(f);
    expect(parseDaemonResponse(JSON.stringify({ ok: false, code: 11, msg: 'x' }))).toEqual(E.right({ ok: false, code: 11, msg: 'x' }));
    expect(E.isLeft(parseDaemonResponse(JSON.stringify({ ok: 'yes' })))).toBe(true);
  });

  it('client config and commands', () => {
    const cfg = {
      ifname: 'eth0',
      clientId: 'c/n/eth0',
      options: { provide: [{ code: 12, value: 'h' }], request: [3, 1] },
      timeoutMs: 4000,
      retryMinMs: 1000,
    };
    expect(parseClientConfig(JSON.stringify(cfg))).toEqual(E.right(cfg));
    expect(E.isLeft(parseClientConfig(JSON.stringify({ ...cfg, ifname: '../x' })))).toBe(true);
    expect(parseClientCommand('{"type":"stop"}')).toEqual(E.right({ type: 'stop' }));
    expect(E.isLeft(parseClientCommand('{"type":"exec"}'))).toBe(true);
  });
});
