// felt dhcp-client (hidden): one attachment's DHCP client, started by `felt dhcp-daemon` inside the pod's
// network namespace (`nsenter --net=PATH -- node felt dhcp-client`). It reads a ClientConfig line on stdin,
// reports ClientEvent lines on stdout (core/dhcp/protocol.ts), keeps the lease with the core lease machine
// (T1 renew, T2 rebind, release on `{"type":"stop"}`) and exits. When stdin closes (the daemon went away) it
// exits without releasing, as the reference's leases end with its daemon.
//
// Sockets: node has no packet sockets, so the client uses one UDP socket on 0.0.0.0:68 and asks for
// broadcast replies (the broadcast flag) while it has no address. Linux routes no 255.255.255.255 without a
// route, so for each broadcast exchange the client adds `255.255.255.255/32 dev IFNAME` to the pod's main
// table (unless one is there) and removes it afterwards. Every process it runs (`ip`) is an argument vector.

import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import * as E from 'fp-ts/lib/Either.js';
import { createActor, fromPromise } from 'xstate';
import { ErrCode } from '../../../core/cni/errors.ts';
import { parseMac } from '../../../core/ip/mac.ts';
import { dhcpMachine, type ExtendInput } from '../../../core/dhcp/client-machine.ts';
import {
  discover,
  isOffer,
  leaseOf,
  release,
  replyTo,
  requestExtend,
  requestSelecting,
  type ClientIdentity,
  type Lease,
  type Reply,
} from '../../../core/dhcp/lease.ts';
import { decode, encode, type Outgoing, type Packet } from '../../../core/dhcp/packet.ts';
import { parseClientCommand, parseClientConfig, type ClientConfig, type ClientEvent } from '../../../core/dhcp/protocol.ts';
import type { Subcommand } from '../common.ts';

class ClientError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

const emit = (e: ClientEvent): void => void process.stdout.write(JSON.stringify(e) + '\n');
const log = (s: string): void => void process.stderr.write(`dhcp-client: ${s}\n`);

function run(argv: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    c.stdout.on('data', (b: Buffer) => out.push(b));
    c.stderr.on('data', (b: Buffer) => err.push(b));
    c.on('error', (e) => resolve({ code: 127, stdout: '', stderr: e.message }));
    c.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  });
}

/** The interface's MAC (brought up if it is down, as the reference does). */
async function prepareLink(ifname: string): Promise<string> {
  const r = await run(['ip', '-j', 'link', 'show', 'dev', ifname]);
  if (r.code !== 0) throw new ClientError(ErrCode.InvalidEnvironment, `CNI_IFNAME: no interface "${ifname}" in the container's namespace`);
  let link: { address?: unknown; flags?: unknown } | undefined;
  try {
    link = (JSON.parse(r.stdout) as { address?: unknown; flags?: unknown }[])[0];
  } catch {
    link = undefined;
  }
  const mac = typeof link?.address === 'string' ? parseMac(link.address) : undefined;
  if (!mac) throw new ClientError(ErrCode.InvalidEnvironment, `CNI_IFNAME: interface "${ifname}" has no Ethernet address`);
  if (!(Array.isArray(link?.flags) && link.flags.includes('UP'))) {
    const up = await run(['ip', 'link', 'set', 'dev', ifname, 'up']);
    if (up.code !== 0) throw new ClientError(ErrCode.Kernel, `cannot bring ${ifname} up: ${up.stderr.trim()}`);
  }
  return mac;
}

/** Run `f` with a route for 255.255.255.255 via `ifname`; removes it afterwards when this call added it. */
async function withBroadcastRoute<T>(ifname: string, f: () => Promise<T>): Promise<T> {
  const added = (await run(['ip', '-4', 'route', 'add', '255.255.255.255/32', 'dev', ifname])).code === 0;
  try {
    return await f();
  } finally {
    if (added) await run(['ip', '-4', 'route', 'del', '255.255.255.255/32', 'dev', ifname]);
  }
}

const BROADCAST = '255.255.255.255';

/** One UDP socket on :68; each exchange sends a message (resent 1 s, 2 s, 4 s ... apart) until `accept` takes a reply. */
class Transport {
  private waiter: ((p: Packet) => boolean) | undefined;
  private cancelCurrent: (() => void) | undefined;
  private constructor(private readonly sock: dgram.Socket) {
    sock.on('message', (msg: Buffer) => {
      const p = decode(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength));
      if (p && this.waiter) this.waiter(p);
    });
  }

  static open(): Promise<Transport> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
      s.once('error', reject);
      s.bind(68, '0.0.0.0', () => {
        s.setBroadcast(true);
        resolve(new Transport(s));
      });
    });
  }

  send(m: Outgoing, to: string): Promise<void> {
    const e = encode(m);
    if (!e.ok) return Promise.reject(new ClientError(ErrCode.InvalidNetworkConfig, e.error));
    return new Promise((resolve, reject) => this.sock.send(e.bytes, 67, to, (err) => (err ? reject(err) : resolve())));
  }

  exchange<T>(
    build: (secs: number) => Outgoing,
    to: string,
    accept: (p: Packet) => T | undefined,
    timeoutMs: number,
    what: string,
  ): Promise<T> {
    const start = Date.now();
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let delay = 1000;
      const done = (f: () => void) => {
        clearTimeout(timer);
        this.waiter = undefined;
        this.cancelCurrent = undefined;
        f();
      };
      this.cancelCurrent = () => done(() => reject(new ClientError(ErrCode.IO, `${what}: cancelled`)));
      this.waiter = (p) => {
        const v = accept(p);
        if (v === undefined) return false;
        done(() => resolve(v));
        return true;
      };
      const attempt = () => {
        const elapsed = Date.now() - start;
        if (elapsed >= timeoutMs)
          return done(() =>
            reject(new ClientError(ErrCode.TryAgainLater, `no ${what} from a DHCP server within ${Math.round(timeoutMs / 1000)} s`)),
          );
        this.send(build(Math.floor(elapsed / 1000)), to).catch((e: Error) => done(() => reject(e)));
        timer = setTimeout(attempt, Math.min(delay, timeoutMs - elapsed));
        delay *= 2;
      };
      attempt();
    });
  }

  /** End the exchange in flight (a renewal when DEL comes), so that it sends nothing after the release. */
  cancel(): void {
    this.cancelCurrent?.();
  }

  close(): void {
    this.sock.close();
  }
}

const xid = (): number => randomInt(0, 2 ** 32);

function lease(ack: Packet, previous?: Lease): Lease {
  const l = leaseOf(ack, Date.now(), previous);
  if (E.isLeft(l)) throw new ClientError(ErrCode.IO, `the DHCP server's answer is unusable: ${l.left}`);
  return l.right;
}

async function acquire(t: Transport, cfg: ClientConfig, id: ClientIdentity): Promise<Lease> {
  const deadline = Date.now() + cfg.timeoutMs;
  return withBroadcastRoute(cfg.ifname, async () => {
    for (;;) {
      const x = xid();
      const offer = await t.exchange(
        (s) => discover(id, x, s),
        BROADCAST,
        (p) => (isOffer(p, x, id.mac) ? p : undefined),
        Math.max(0, deadline - Date.now()),
        'DHCPOFFER',
      );
      const reply = await t.exchange(
        (s) => requestSelecting(id, x, offer, s),
        BROADCAST,
        (p) => replyTo(p, x, id.mac),
        Math.max(0, deadline - Date.now()),
        'DHCPACK',
      );
      if (reply.kind === 'ack') return lease(reply.packet);
      log(`${id.clientId}: DHCPNAK for ${offer.yiaddr}; discovering again`);
      if (Date.now() >= deadline) throw new ClientError(ErrCode.TryAgainLater, 'the DHCP server refused every offer (DHCPNAK)');
    }
  });
}

async function extend(t: Transport, cfg: ClientConfig, id: ClientIdentity, l: Lease, rebinding: boolean): Promise<Lease | 'nak'> {
  const x = xid();
  const go = (): Promise<Reply> =>
    t.exchange(
      (s) => requestExtend(id, x, l, false, s),
      rebinding ? BROADCAST : l.server,
      (p) => replyTo(p, x, id.mac),
      cfg.timeoutMs,
      'DHCPACK',
    );
  const r = rebinding ? await withBroadcastRoute(cfg.ifname, go) : await go();
  return r.kind === 'nak' ? 'nak' : lease(r.packet, l);
}

async function releaseLease(t: Transport, cfg: ClientConfig, id: ClientIdentity, l: Lease): Promise<void> {
  t.cancel();
  const m = release(id, xid(), l);
  try {
    await t.send(m, l.server);
  } catch (e) {
    // The address may be gone from the interface already (the main plugin's DEL ran first): broadcast it.
    log(`${id.clientId}: unicast DHCPRELEASE failed (${(e as Error).message}); broadcasting it`);
    await withBroadcastRoute(cfg.ifname, () => t.send(m, BROADCAST));
  }
}

async function main(): Promise<number> {
  const lines = createInterface({ input: process.stdin });
  const it = lines[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) return 1;
  const cfg = parseClientConfig(first.value);
  if (E.isLeft(cfg)) {
    emit({ type: 'failed', code: ErrCode.InvalidNetworkConfig, error: `client config: ${cfg.left}` });
    return 1;
  }
  const c = cfg.right;
  let transport: Transport;
  let id: ClientIdentity;
  try {
    const mac = await prepareLink(c.ifname);
    id = { clientId: c.clientId, mac, options: c.options };
    transport = await Transport.open();
  } catch (e) {
    emit({ type: 'failed', code: e instanceof ClientError ? e.code : ErrCode.IO, error: (e as Error).message });
    return 1;
  }
  const t = transport;
  let failure: ClientError | undefined;
  const finished = new Promise<number>((resolve) => {
    const actor = createActor(
      dhcpMachine.provide({
        actors: {
          acquire: fromPromise(() =>
            acquire(t, c, id).catch((e: unknown) => {
              failure = e instanceof ClientError ? e : new ClientError(ErrCode.IO, (e as Error).message);
              throw failure;
            }),
          ),
          renew: fromPromise(({ input }: { input: ExtendInput }) => extend(t, c, id, input.lease, false)),
          rebind: fromPromise(({ input }: { input: ExtendInput }) => extend(t, c, id, input.lease, true)),
          release: fromPromise<void, ExtendInput>(({ input }) => releaseLease(t, c, id, input.lease)),
        },
        actions: {
          leaseBound: ({ context }) => context.lease && emit({ type: 'bound', lease: context.lease }),
          leaseRenewed: ({ context }) => context.lease && emit({ type: 'renewed', lease: context.lease }),
          leaseExpired: ({ context }) => {
            emit({ type: 'expired', ...(context.lastError ? { error: context.lastError } : {}) });
            // As the reference: an interface whose lease ended is brought down.
            void run(['ip', 'link', 'set', 'dev', c.ifname, 'down']);
          },
        },
      }),
      { input: { now: Date.now, retryMinMs: c.retryMinMs } },
    );
    actor.subscribe((snap) => {
      if (snap.status !== 'done') return;
      if (snap.value === 'failed')
        emit({ type: 'failed', code: failure?.code ?? ErrCode.IO, error: failure?.message ?? snap.context.lastError ?? 'failed' });
      if (snap.value === 'released') emit({ type: 'released', ...(snap.context.lastError ? { error: snap.context.lastError } : {}) });
      resolve(snap.value === 'failed' ? 1 : 0);
    });
    actor.start();
    void (async () => {
      for (;;) {
        const next = await it.next();
        if (next.done) return resolve(0); // the daemon is gone: exit, keep the lease
        const cmd = parseClientCommand(next.value);
        if (E.isLeft(cmd)) log(`ignoring a command: ${cmd.left}`);
        else actor.send({ type: 'STOP' });
      }
    })();
  });
  const code = await finished;
  t.close();
  return code;
}

export const dhcpClientCommand: Subcommand = {
  name: 'dhcp-client',
  summary: "one attachment's DHCP client (started by felt dhcp-daemon inside the pod's namespace)",
  hidden: true,
  options: [],
  run: async () => {
    const code = await main();
    // stdin may still be open; the answer is given.
    process.exit(code);
  },
};
