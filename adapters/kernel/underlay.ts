// Which interface carries the overlay and its addresses, prefixes and MTU, for the families the network config
// enables: flanneld's LookupExtIface (flannel-io/flannel pkg/ipmatch/match.go, pkg/ip/iface.go), with
// --iface (a name or an address, repeatable), --iface-regex (repeatable), --public-ip and --public-ipv6, and
// the default-route rule. Two reads: `ip -json -batch` (addresses, IPv4 default route) and `ip -6 -json route
// show default`.
//
// As flanneld: the interface must have an address of every enabled family; with both families and no --iface,
// the IPv4 and IPv6 default routes must leave through the same interface; an interface's addresses are taken in
// flannel's preference order (permanent before dynamic, non-temporary before temporary, deprecated never).
// Where felt differs: only global IPv6 addresses qualify (flanneld falls back to a link-local one, which other
// nodes cannot route to), and an --iface/--iface-regex entry that names an interface lacking an enabled family
// is skipped with the reason in the error, rather than only logged.

import { spawn } from 'node:child_process';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { formatCIDR, formatIP, networkOf, parseCIDR, parseIP, type Family } from '../../core/ip/ip.ts';
import type { KernelError } from './types.ts';

export interface Underlay {
  readonly dev: string;
  readonly mtu: number;
  /** The interface's IPv4 address, its subnet (nodes inside it share our L2 segment) and the address other nodes reach us at (--public-ip, else `ip`). Absent when IPv4 is off. */
  readonly ip?: string;
  readonly cidr?: string;
  readonly publicIP?: string;
  /** The same for IPv6 (--public-ipv6, else the interface's global IPv6 address). Absent when IPv6 is off. */
  readonly ip6?: string;
  readonly cidr6?: string;
  readonly publicIPv6?: string;
}

/** The address that names this node (its event-log stream, the status page): the public IPv4, else IPv6. */
export const underlayIdentity = (u: Underlay): string => u.publicIP ?? u.publicIPv6 ?? '';

export interface UnderlayRequest {
  readonly iface: readonly string[];
  readonly ifaceRegex: readonly string[];
  readonly publicIP?: string;
  readonly publicIPv6?: string;
  /** The families the network config enables (EnableIPv4, EnableIPv6). */
  readonly ipv4: boolean;
  readonly ipv6: boolean;
}

interface AddrInfo {
  family: string;
  local: string;
  prefixlen: number;
  scope?: string;
  dynamic?: boolean;
  temporary?: boolean;
  deprecated?: boolean;
}

export interface IpAddrLink {
  ifname: string;
  mtu: number;
  flags?: string[];
  addr_info?: AddrInfo[];
}

/** The interfaces and the devices of the default routes, as `ip` printed them. */
export interface Interfaces {
  readonly links: readonly IpAddrLink[];
  readonly defaultDev?: string;
  readonly defaultDevV6?: string;
}

const run = (argv: readonly string[], input: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const c = spawn('ip', argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`ip exited with ${code}`))));
    c.stdin.on('error', () => undefined);
    c.stdin.end(input);
  });

/** Go's IsGlobalUnicast || IsLinkLocalUnicast for IPv4: not unspecified, loopback, multicast or broadcast. */
const usableV4 = (a: AddrInfo): boolean => {
  const ip = parseIP(a.local);
  if (!ip || ip.family !== 4) return false;
  const first = Number(ip.value >> 24n);
  return ip.value !== 0n && first !== 127 && first < 224 && a.scope !== 'host';
};

/** flannel's compareAddrs: permanent before dynamic, non-temporary before temporary (a stable sort). */
const preferred = (xs: readonly AddrInfo[]): AddrInfo[] =>
  xs
    .map((a, i) => ({ a, i }))
    .sort((x, y) => Number(!!x.a.dynamic) - Number(!!y.a.dynamic) || Number(!!x.a.temporary) - Number(!!y.a.temporary) || x.i - y.i)
    .map((x) => x.a);

/** The addresses of one family an underlay may use, in flannel's order of preference. */
function familyAddrs(l: IpAddrLink, family: Family): AddrInfo[] {
  const all = (l.addr_info ?? []).filter((a) => !a.deprecated);
  return preferred(
    family === 4 ? all.filter((a) => a.family === 'inet' && usableV4(a)) : all.filter((a) => a.family === 'inet6' && a.scope === 'global'),
  );
}

const famName = (f: Family): string => (f === 4 ? 'IPv4' : 'IPv6');

/**
 * Pure choice, given what `ip` printed and the families the config enables. `chosen` pins the address of one
 * family (an --iface or --iface-regex address); the other families take the interface's preferred one.
 */
export function chooseUnderlay(ifs: Interfaces, req: UnderlayRequest): E.Either<string, Underlay> {
  const families: Family[] = [...(req.ipv4 ? [4 as const] : []), ...(req.ipv6 ? [6 as const] : [])];
  if (families.length === 0) return E.left('neither IPv4 nor IPv6 is enabled');
  for (const [flag, value, family] of [
    ['--public-ip', req.publicIP, 4],
    ['--public-ipv6', req.publicIPv6, 6],
  ] as const) {
    if (value === undefined) continue;
    const a = parseIP(value);
    if (!a || a.family !== family) return E.left(`${flag}: ${JSON.stringify(value)} is not an ${famName(family)} address`);
  }
  const { links } = ifs;

  const pick = (l: IpAddrLink, chosen?: AddrInfo): E.Either<string, Underlay> => {
    const out: { -readonly [K in keyof Underlay]: Underlay[K] } = { dev: l.ifname, mtu: l.mtu };
    for (const f of families) {
      const a = chosen && (chosen.family === 'inet') === (f === 4) ? chosen : familyAddrs(l, f)[0];
      if (!a)
        return E.left(
          `interface ${l.ifname} has no ${f === 6 ? 'global ' : ''}${famName(f)} address (${f === 4 ? 'EnableIPv4' : 'EnableIPv6'} is true)`,
        );
      const cidr = formatCIDR(networkOf(parseCIDR(`${a.local}/${a.prefixlen}`)!));
      const local = formatIP(parseIP(a.local)!);
      if (f === 4) Object.assign(out, { ip: local, cidr, publicIP: req.publicIP ? formatIP(parseIP(req.publicIP)!) : local });
      else Object.assign(out, { ip6: local, cidr6: cidr, publicIPv6: req.publicIPv6 ? formatIP(parseIP(req.publicIPv6)!) : local });
    }
    if (!Number.isInteger(l.mtu) || l.mtu <= 0) return E.left(`interface ${l.ifname}: no MTU`);
    return E.right(out);
  };
  /** The address (of an enabled family) `text` names on some interface. */
  const holding = (text: string): { link: IpAddrLink; addr: AddrInfo } | undefined => {
    const want = parseIP(text);
    if (!want || !families.includes(want.family)) return undefined;
    for (const link of links) {
      const addr = familyAddrs(link, want.family).find((a) => parseIP(a.local)?.value === want.value);
      if (addr) return { link, addr };
    }
    return undefined;
  };

  if (req.iface.length) {
    const why: string[] = [];
    for (const want of req.iface) {
      const byName = links.find((l) => l.ifname === want);
      const byAddr = byName ? undefined : holding(want);
      if (!byName && !byAddr) {
        why.push(`${want}: no interface of that name or with that address`);
        continue;
      }
      const r = byName ? pick(byName) : pick(byAddr!.link, byAddr!.addr);
      if (E.isRight(r)) return r;
      why.push(`${want}: ${r.left}`);
    }
    return E.left(`--iface: none of ${req.iface.join(', ')} can be used here (${why.join('; ')})`);
  }
  if (req.ifaceRegex.length) {
    const why: string[] = [];
    for (const re of req.ifaceRegex) {
      let rx: RegExp;
      try {
        rx = new RegExp(re);
      } catch {
        return E.left(`--iface-regex: ${JSON.stringify(re)} is not a regular expression`);
      }
      // As flanneld: first an interface with a matching address (of an enabled family), then one whose name matches.
      for (const l of links) {
        for (const f of families) {
          const a = familyAddrs(l, f).find((x) => rx.test(x.local));
          if (!a) continue;
          const r = pick(l, a);
          if (E.isRight(r)) return r;
          why.push(r.left);
        }
      }
      for (const l of links) {
        if (!rx.test(l.ifname)) continue;
        const r = pick(l);
        if (E.isRight(r)) return r;
        why.push(r.left);
      }
    }
    return E.left(`--iface-regex: no usable interface matches ${req.ifaceRegex.join(', ')}${why.length ? ` (${why.join('; ')})` : ''}`);
  }
  // No --iface: the interface holding --public-ip (--public-ipv6 when IPv4 is off), as flanneld looks it up.
  const pub = req.ipv4 ? req.publicIP : req.publicIPv6;
  if (pub) {
    const h = holding(pub);
    if (h) return pick(h.link, h.addr);
  }
  const d4 = req.ipv4 ? ifs.defaultDev : undefined;
  const d6 = req.ipv6 ? ifs.defaultDevV6 : undefined;
  if (req.ipv4 && !d4) return E.left('no IPv4 default route to pick the underlay interface from: give --iface');
  if (req.ipv6 && !d6) return E.left('no IPv6 default route to pick the underlay interface from: give --iface');
  if (d4 && d6 && d4 !== d6)
    return E.left(`the IPv6 default route's interface ${d6} is not the IPv4 default route's interface ${d4}: give --iface`);
  const d = links.find((l) => l.ifname === (d4 ?? d6));
  if (!d) return E.left(`the default route's interface ${d4 ?? d6} is not listed: give --iface`);
  return pick(d);
}

/** What `ip` shows of the interfaces and default routes. */
export const readInterfaces = (): TE.TaskEither<KernelError, Interfaces> => async () => {
  try {
    const [both, v6] = await Promise.all([
      run(['-json', '-batch', '-'], 'addr show\nroute show default\n'),
      run(['-6', '-json', 'route', 'show', 'default'], ''),
    ]);
    const parts = both
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as unknown[]);
    const links = (parts[0] ?? []) as IpAddrLink[];
    const routes = (parts[1] ?? []) as { dev?: string }[];
    const routes6 = (v6.trim() ? JSON.parse(v6) : []) as { dev?: string }[];
    return E.right({
      links,
      ...(routes[0]?.dev ? { defaultDev: routes[0].dev } : {}),
      ...(routes6[0]?.dev ? { defaultDevV6: routes6[0].dev } : {}),
    });
  } catch (e) {
    return E.left({ kind: 'kernel', msg: `failed to read interfaces: ${(e as Error).message}` });
  }
};
