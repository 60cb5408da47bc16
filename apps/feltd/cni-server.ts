// The CNI socket: the unix socket felt's plugin forwarders (apps/cni/forwarder/forwarder.c) send their calls
// to. This module is the edge only: it owns the socket file, reads one request frame per connection with hard
// limits, parses it into a typed `CniRequest`, hands it to a handler and writes the reply frame. What a call
// means (which plugin, which namespace, the dispatch) is the handler's (apps/feltd/cni-service.ts); a layer
// that batches calls (group commit) can sit between the two, as a handler wrapping another.
//
// Frames (integers little-endian; `str` is a u32 length and that many bytes):
//
//   request:  "FELTCNI1" u32 body-length | u32 pid, u64 st_dev, u64 st_ino (of the client's /proc/self/ns/net),
//             str plugin type, u32 n, n × str "NAME=VALUE" (the client's CNI_* and CNI_PATH), str stdin
//   reply:    "FELTCNI1" u32 body-length | u32 exit code, str stdout, str stderr
//
// A client that sends anything else (a wrong magic, a body over MAX_BODY, fields that do not add up to the
// body, more bytes after it), or stalls before its request is whole (IDLE_MS), or closes early, is dropped with
// one log line; the server keeps serving everyone else.

import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from './observability.ts';

const MAGIC = Buffer.from('FELTCNI1', 'latin1');
const HEADER = MAGIC.length + 4;
/** The largest request body: a network config with a prevResult and runtime config is a few KiB. */
export const MAX_BODY = 4 << 20;
/** At most this many environment entries, each at most MAX_ENTRY bytes. */
const MAX_ENV = 128;
const MAX_ENTRY = 64 << 10;
/** A client must have sent its whole request this long after connecting. */
const IDLE_MS = 10_000;

export interface CniRequest {
  /** The client's PID (the forwarder's, in its PID namespace). */
  readonly pid: number;
  /** The device and inode of the client's network namespace, as it saw them. */
  readonly netns: { readonly dev: bigint; readonly ino: bigint };
  readonly type: string;
  /** The client's environment entries as sent (the handler keeps only CNI_* and CNI_PATH). */
  readonly env: readonly string[];
  readonly stdin: string;
}

export interface CniReply {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export type CniHandler = (req: CniRequest) => Promise<CniReply>;

/** Parse a request body; a string names what is wrong. */
function parseRequest(body: Buffer): CniRequest | string {
  let at = 0;
  const need = (n: number, what: string): string | undefined => (at + n > body.length ? `${what}: the frame ends early` : undefined);
  const u32 = (what: string): number | string => need(4, what) ?? ((at += 4), body.readUInt32LE(at - 4));
  const u64 = (what: string): bigint | string => need(8, what) ?? ((at += 8), body.readBigUInt64LE(at - 8));
  const str = (what: string, max: number): string | { s: string } => {
    const n = u32(what);
    if (typeof n === 'string') return n;
    if (n > max) return `${what}: ${n} bytes, more than ${max}`;
    const short = need(n, what);
    if (short) return short;
    at += n;
    return { s: body.toString('utf8', at - n, at) };
  };
  const pid = u32('pid');
  if (typeof pid === 'string') return pid;
  if (pid < 1) return 'pid: 0';
  const dev = u64('netns device');
  if (typeof dev === 'string') return dev;
  const ino = u64('netns inode');
  if (typeof ino === 'string') return ino;
  const type = str('plugin type', 64);
  if (typeof type === 'string') return type;
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(type.s)) return `plugin type: ${JSON.stringify(type.s)} is not a plugin name`;
  const n = u32('environment count');
  if (typeof n === 'string') return n;
  if (n > MAX_ENV) return `environment: ${n} entries, more than ${MAX_ENV}`;
  const env: string[] = [];
  for (let i = 0; i < n; i++) {
    const e = str(`environment entry ${i}`, MAX_ENTRY);
    if (typeof e === 'string') return e;
    env.push(e.s);
  }
  const stdin = str('stdin', MAX_BODY);
  if (typeof stdin === 'string') return stdin;
  if (at !== body.length) return `${body.length - at} bytes after the request`;
  return { pid, netns: { dev, ino }, type: type.s, env, stdin: stdin.s };
}

/** A frame: the magic, the body length, the body. */
function frame(body: Buffer): Buffer {
  const h = Buffer.alloc(HEADER);
  MAGIC.copy(h);
  h.writeUInt32LE(body.length, MAGIC.length);
  return Buffer.concat([h, body]);
}

const strBuf = (s: string): Buffer => {
  const b = Buffer.from(s, 'utf8');
  const n = Buffer.alloc(4);
  n.writeUInt32LE(b.length);
  return Buffer.concat([n, b]);
};

function replyFrame(r: CniReply): Buffer {
  const code = Buffer.alloc(4);
  code.writeUInt32LE(r.code >>> 0);
  return frame(Buffer.concat([code, strBuf(r.stdout), strBuf(r.stderr)]));
}

/** A request frame as the forwarder writes it (tests, and anything speaking the protocol from TypeScript). */
export function requestFrame(r: CniRequest): Buffer {
  const head = Buffer.alloc(20);
  head.writeUInt32LE(r.pid);
  head.writeBigUInt64LE(r.netns.dev, 4);
  head.writeBigUInt64LE(r.netns.ino, 12);
  const n = Buffer.alloc(4);
  n.writeUInt32LE(r.env.length);
  return frame(Buffer.concat([head, strBuf(r.type), n, ...r.env.map(strBuf), strBuf(r.stdin)]));
}

/** Parse a reply frame (tests). */
export function parseReply(buf: Buffer): CniReply | string {
  if (buf.length < HEADER || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return 'not a reply frame';
  const body = buf.subarray(HEADER);
  if (body.length !== buf.readUInt32LE(MAGIC.length) || body.length < 12) return 'a reply frame of the wrong length';
  const code = body.readUInt32LE(0);
  const ol = body.readUInt32LE(4);
  const stdout = body.toString('utf8', 8, 8 + ol);
  const el = body.readUInt32LE(8 + ol);
  return { code, stdout, stderr: body.toString('utf8', 12 + ol, 12 + ol + el) };
}

export interface CniServer {
  readonly path: string;
  /** Connections open now. */
  readonly connections: () => number;
  /** Stop accepting, wait for the calls in flight, remove the socket file. */
  readonly close: () => Promise<void>;
}

/**
 * Whether something listens on the unix socket at `path`: 'live' (a connect succeeded), 'dead' (a socket file
 * nobody listens on), 'absent', or 'other' (a file that is not a socket: not ours to remove).
 */
function probeSocket(path: string): Promise<'live' | 'dead' | 'absent' | 'other'> {
  try {
    if (!lstatSync(path).isSocket()) return Promise.resolve('other');
  } catch {
    return Promise.resolve('absent');
  }
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => (s.destroy(), resolve('live')));
    s.once('error', () => resolve('dead'));
  });
}

/**
 * Listen on `path` (mode 0600). A socket file left by a dead daemon is replaced; a live one, or a file that is
 * not a socket, is an error naming it.
 */
export async function startCniServer(path: string, handler: CniHandler, log: Logger, idleMs = IDLE_MS): Promise<CniServer | string> {
  const found = await probeSocket(path);
  if (found === 'live') return `another feltd is serving CNI on ${path} (connect succeeded); stop it or choose another --cni-socket`;
  if (found === 'other') return `${path} exists and is not a socket; remove it or choose another --cni-socket`;
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (found === 'dead') {
    unlinkSync(path);
    log.info('replaced the CNI socket a stopped feltd left', { socket: path });
  }
  const sockets = new Set<Socket>();
  const inFlight = new Set<Promise<unknown>>();
  const server: Server = createServer({ allowHalfOpen: true }, (sock) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    serve(sock, handler, log, idleMs, inFlight);
  });
  // The file is made 0600 by the umask while it is created, so there is no moment it is reachable by others.
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => (server.off('error', reject), resolve()));
    });
  } catch (e) {
    return `cannot listen on ${path}: ${(e as Error).message}`;
  } finally {
    process.umask(umask);
  }
  chmodSync(path, 0o600);
  server.on('error', (e) => log.error('CNI socket error', { socket: path, error: e.message }));
  return {
    path,
    connections: () => sockets.size,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Clients still sending are dropped; calls already dispatched finish and answer.
        for (const s of sockets) if (!(s as Socket & { felt?: boolean }).felt) s.destroy();
      });
      await Promise.allSettled([...inFlight]);
    },
  };
}

function serve(sock: Socket, handler: CniHandler, log: Logger, idleMs: number, inFlight: Set<Promise<unknown>>): void {
  const chunks: Buffer[] = [];
  let have = 0;
  let want = -1; // body length once the header is in
  let done = false; // the request is whole and handed over
  let dropped = false;
  const drop = (reason: string): void => {
    if (dropped) return;
    dropped = true;
    log.error('dropped a CNI client', { reason });
    sock.destroy();
  };
  sock.setTimeout(idleMs, () => drop(`no whole request within ${idleMs} ms`));
  sock.on('error', () => undefined); // a client gone while we write: its answer has nowhere to go
  sock.on('data', (b: Buffer) => {
    if (dropped) return;
    if (done) return drop('bytes after the request');
    chunks.push(b);
    have += b.length;
    if (want < 0 && have >= HEADER) {
      const head = Buffer.concat(chunks);
      chunks.splice(0, chunks.length, head);
      if (!head.subarray(0, MAGIC.length).equals(MAGIC)) return drop('not a felt CNI request (wrong magic)');
      want = head.readUInt32LE(MAGIC.length);
      if (want > MAX_BODY) return drop(`a request of ${want} bytes, more than ${MAX_BODY}`);
    }
    if (want < 0 && have >= MAGIC.length && !Buffer.concat(chunks).subarray(0, MAGIC.length).equals(MAGIC))
      return drop('not a felt CNI request (wrong magic)');
    if (want >= 0 && have > HEADER + want) return drop('bytes after the request');
    if (want < 0 || have < HEADER + want) return;
    const req = parseRequest(Buffer.concat(chunks).subarray(HEADER));
    if (typeof req === 'string') return drop(`a malformed request: ${req}`);
    done = true;
    (sock as Socket & { felt?: boolean }).felt = true;
    sock.setTimeout(0);
    const call = handler(req).then(
      (r) => sock.end(replyFrame(r)),
      (e: unknown) => {
        log.error('CNI call failed', { error: String((e as Error)?.stack ?? e) });
        sock.destroy();
      },
    );
    inFlight.add(call);
    void call.finally(() => inFlight.delete(call));
  });
  sock.on('end', () => {
    // Connected and closed having sent nothing: a probe (another feltd starting, a health check), not a client.
    if (have === 0 && !dropped) {
      dropped = true;
      log.debug('a CNI socket probe', {});
      sock.destroy();
    } else if (!done && !dropped) drop(`the client closed after ${have} of ${want < 0 ? 'a header' : `${HEADER + want} bytes`}`);
  });
}
