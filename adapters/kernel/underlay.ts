// Which interface carries the overlay (flanneld's --iface / --iface-regex / default-route rule) and its
// address, prefix and MTU. One `ip -json -batch` read.

import { spawn } from 'node:child_process';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { formatCIDR, networkOf, parseCIDR } from '../../core/ip/ip.ts';
import type { KernelError } from './types.ts';

export interface Underlay {
  readonly dev: string;
  /** The interface's IPv4 address. */
  readonly ip: string;
  /** Its subnet (e.g. 198.51.100.0/24): nodes inside it share our L2 segment. */
  readonly cidr: string;
  readonly mtu: number;
  /** Address other nodes reach us at (--public-ip, else `ip`). */
  readonly publicIP: string;
}

export interface UnderlayRequest {
  readonly iface: readonly string[];
  readonly ifaceRegex: readonly string[];
  readonly publicIP?: string;
}

interface IpAddrLink {
  ifname: string;
  mtu: number;
  flags?: string[];
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

const read = (): Promise<string> =>
  new Promise((resolve, reject) => {
    const c = spawn('ip', ['-json', '-batch', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`ip exited with ${code}`))));
    c.stdin.on('error', () => undefined);
    c.stdin.end('addr show\nroute show default\n');
  });

/** Pure choice, given what `ip` printed. */
export function chooseUnderlay(links: readonly IpAddrLink[], defaultDev: string | undefined, req: UnderlayRequest): E.Either<string, Underlay> {
  const v4 = (l: IpAddrLink) => (l.addr_info ?? []).filter((a) => a.family === 'inet' && a.scope !== 'host');
  const pick = (l: IpAddrLink, addr?: string): E.Either<string, Underlay> => {
    const a = addr ? v4(l).find((x) => x.local === addr) : v4(l)[0];
    if (!a) return E.left(`interface ${l.ifname} has no IPv4 address`);
    const c = parseCIDR(`${a.local}/${a.prefixlen}`)!;
    return E.right({ dev: l.ifname, ip: a.local, cidr: formatCIDR(networkOf(c)), mtu: l.mtu, publicIP: req.publicIP ?? a.local });
  };
  for (const want of req.iface) {
    const byName = links.find((l) => l.ifname === want);
    if (byName) return pick(byName);
    const byAddr = links.find((l) => v4(l).some((a) => a.local === want));
    if (byAddr) return pick(byAddr, want);
  }
  if (req.iface.length) return E.left(`--iface: none of ${req.iface.join(', ')} is an interface name or address here`);
  for (const re of req.ifaceRegex) {
    let rx: RegExp;
    try {
      rx = new RegExp(re);
    } catch {
      return E.left(`--iface-regex: ${JSON.stringify(re)} is not a regular expression`);
    }
    for (const l of links) {
      if (rx.test(l.ifname) && v4(l).length) return pick(l);
      const a = v4(l).find((x) => rx.test(x.local));
      if (a) return pick(l, a.local);
    }
  }
  if (req.ifaceRegex.length) return E.left(`--iface-regex: no interface matches ${req.ifaceRegex.join(', ')}`);
  if (req.publicIP) {
    const l = links.find((x) => v4(x).some((a) => a.local === req.publicIP));
    if (l) return pick(l, req.publicIP);
  }
  const d = links.find((l) => l.ifname === defaultDev);
  if (!d) return E.left('no default route to pick the underlay interface from: give --iface');
  return pick(d);
}

export const findUnderlay =
  (req: UnderlayRequest): TE.TaskEither<KernelError, Underlay> =>
  async () => {
    try {
      const parts = (await read()).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as unknown[]);
      const links = (parts[0] ?? []) as IpAddrLink[];
      const routes = (parts[1] ?? []) as { dev?: string }[];
      return E.mapLeft((msg: string): KernelError => ({ kind: 'kernel', msg }))(chooseUnderlay(links, routes[0]?.dev, req));
    } catch (e) {
      return E.left({ kind: 'kernel', msg: `failed to read interfaces: ${(e as Error).message}` });
    }
  };
