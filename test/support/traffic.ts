// TCP and UDP echo services and clients for port-forwarding tests, as tiny node programs run inside test
// namespaces (`ip netns exec`), so the machine needs nothing beyond node. The server answers every TCP
// connection and UDP datagram with "<proto> <port> <peer address>"; clients retry within a bounded time and
// report the answer or nothing (the bound is generous: on a loaded machine the first connection can take seconds).
//
// The server survives whatever a client does: an error on one connection (a client that gave up and closed,
// so that the answer meets a RST: ECONNRESET/EPIPE) is that connection's, never the server's. Without that, one
// client attempt that timed out under load killed the server (an unhandled 'error' event), and every later
// attempt was refused until the client's bound ran out: "no answer through the host port within 20 s". The
// client gives a silent connection twice as long each time instead of a second every time, so a slow
// (starved) server still gets to answer.

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exec } from './ns.ts';

const SERVER = `
const net = require('node:net'), dgram = require('node:dgram');
const [tcpPort, udpPort] = process.argv.slice(2).map(Number);
let up = 0;
const ready = () => { if (++up === 2) console.log('ready'); };
// A client's reset or early close is its connection's error, logged, never the server's end.
const log = (what) => (e) => console.error(what + ': ' + (e && e.code ? e.code : e));
const server = net.createServer((s) => {
  s.on('error', log('connection from ' + s.remoteAddress));
  s.end('tcp ' + tcpPort + ' ' + s.remoteAddress + '\\n');
});
server.on('error', log('tcp server'));
server.listen(tcpPort, '0.0.0.0', ready);
const u = dgram.createSocket('udp4');
u.on('error', log('udp socket'));
u.on('message', (m, r) => u.send('udp ' + udpPort + ' ' + r.address + '\\n', r.port, r.address, (e) => e && log('udp answer to ' + r.address)(e)));
u.bind(udpPort, '0.0.0.0', ready);
`;

const CLIENT = `
const net = require('node:net'), dgram = require('node:dgram');
const [proto, host, port, srcPort] = process.argv.slice(2);
const deadline = Date.now() + Number(process.env.WITHIN_MS || 20000);
const done = (text) => { process.stdout.write(text); process.exit(0); };
const fail = () => { process.exit(1); };
if (proto === 'tcp') {
  // A connection that stays silent is given up after 1 s, then 2, 4, 8 ... (a starved server still answers
  // one of them), each time on a new one (a new source port: a fresh conntrack entry); one refused or reset
  // is retried after 100 ms.
  let wait = 1000;
  const attempt = () => {
    if (Date.now() > deadline) fail();
    const s = net.connect({ host, port: Number(port) });
    let got = '';
    s.setTimeout(wait, () => s.destroy(new Error('timeout')));
    wait *= 2;
    s.on('data', (d) => (got += d));
    s.on('end', () => (got ? done(got) : setTimeout(attempt, 100)));
    s.on('error', () => setTimeout(attempt, 100));
  };
  attempt();
} else {
  const u = dgram.createSocket('udp4');
  u.on('message', (m) => done(String(m)));
  u.on('error', () => undefined);
  const send = () => {
    if (Date.now() > deadline) fail();
    u.send('ping', Number(port), host);
    setTimeout(send, 200);
  };
  u.bind(srcPort ? Number(srcPort) : 0, send);
}
`;

export interface Services {
  stop(): void;
  /** What the server printed (errors of single connections), and how it exited if it did: for failure messages. */
  log(): string;
}

/** Write the scripts into `dir` once; returns their paths. */
export function writeScripts(dir: string): { server: string; client: string } {
  const server = join(dir, 'echo-server.cjs');
  const client = join(dir, 'echo-client.cjs');
  writeFileSync(server, SERVER);
  writeFileSync(client, CLIENT);
  return { server, client };
}

/** Start the echo server in `ns` on a TCP and a UDP port; resolves when both listen (bounded). */
export function startServer(ns: string, script: string, tcpPort: number, udpPort: number): Promise<Services> {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, process.execPath, script, String(tcpPort), String(udpPort)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stop = (): void => {
    if (child.exitCode === null && child.pid) child.kill('SIGTERM');
  };
  let output = '';
  child.stderr!.on('data', (b: Buffer) => (output += String(b)));
  child.on('exit', (code, signal) => (output += `\n[echo server exited: ${signal ?? code}]`));
  const log = (): string => output;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`echo server in ${ns} did not start`));
    }, 10_000);
    child.stdout!.on('data', (b: Buffer) => {
      if (String(b).includes('ready')) {
        clearTimeout(timer);
        resolve({ stop, log });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`echo server in ${ns} exited (${code})`));
    });
  });
}

/** The server's answer through `host:port` from namespace `ns`, or undefined when none came in time. */
export async function ask(
  ns: string,
  script: string,
  proto: 'tcp' | 'udp',
  host: string,
  port: number,
  opts: { srcPort?: number; withinMs?: number } = {},
): Promise<string | undefined> {
  const r = await exec([
    'ip',
    'netns',
    'exec',
    ns,
    'env',
    `WITHIN_MS=${opts.withinMs ?? 20_000}`,
    process.execPath,
    script,
    proto,
    host,
    String(port),
    ...(opts.srcPort ? [String(opts.srcPort)] : []),
  ]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}
