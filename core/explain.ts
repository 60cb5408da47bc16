// Why does this kernel object (an address, a route, a neighbour, an fdb entry) exist? The answer is a fold of
// the event log: which allocation or which lease put it there, and since when. Pure: states and events in,
// sentences out.

import type { StoredEvent } from './events.ts';
import type { IpamState } from './ipam/decider.ts';
import type { NodeState } from './flannel/node.ts';
import { contains, formatIP, networkOf, parseCIDR, parseIP, type CIDR } from './ip/ip.ts';
import { parseMac } from './ip/mac.ts';

export interface Views {
  readonly ipam: readonly { readonly network: string; readonly state: IpamState }[];
  readonly nodes: readonly { readonly stream: string; readonly state: NodeState }[];
}

const vtepOf = (data: unknown): string | undefined => {
  const m = (data as { VtepMAC?: unknown } | undefined)?.VtepMAC;
  return typeof m === 'string' ? parseMac(m) : undefined;
};

/** What the object is, in the terms the log speaks: an address, a prefix, or a MAC. */
function target(object: string): { ip?: CIDR; mac?: string } | undefined {
  const mac = parseMac(object);
  if (mac) return { mac };
  const c = parseCIDR(object);
  if (c) return { ip: c };
  const ip = parseIP(object);
  if (ip) return { ip: { ip, prefix: ip.family === 4 ? 32 : 128 } };
  return undefined;
}

export function explain(object: string, views: Views, history: readonly StoredEvent[]): string[] {
  const t = target(object);
  if (!t) return [`"${object}" is not an IP address, prefix or MAC address`];
  const out: string[] = [];
  const covers = (cidr: string | undefined): boolean => {
    const c = cidr ? parseCIDR(cidr) : undefined;
    return !!c && !!t.ip && contains(networkOf(c), t.ip.ip) && t.ip.prefix >= c.prefix;
  };

  for (const { network, state } of views.ipam) {
    for (const a of Object.values(state.allocations)) {
      if (t.ip && parseIP(a.ip) && formatIP(parseIP(a.ip)!) === formatIP(t.ip.ip)) {
        out.push(`${a.ip} is allocated to container ${a.containerId} interface ${a.ifname} on network "${network}" since ${a.since} (event #${a.position}): the bridge plugin put it on the container interface, with its routes and masquerade chain`);
      }
    }
  }

  for (const { stream, state } of views.nodes) {
    const own = state.ownLease;
    const node = stream.replace(/^node\//, '');
    if (own && (covers(own.subnet) || covers(own.ipv6Subnet))) {
      out.push(`${own.subnet ?? own.ipv6Subnet} is this node's (${node}) pod subnet, leased since ${own.since} until ${own.expiration}: pods here get addresses from it; its .0 address sits on the vxlan device`);
    }
    if (own && t.mac && own.vtepMac && parseMac(own.vtepMac) === t.mac) {
      out.push(`${t.mac} is the VtepMAC of this node's (${node}) vxlan device, announced in its lease`);
    }
    for (const r of Object.values(state.remotes)) {
      const mac = vtepOf(r.attrs.BackendData);
      const sub = r.subnet ?? r.ipv6Subnet ?? '';
      const by = `node ${r.attrs.PublicIP} (lease ${r.key}, seen since ${r.since}, last changed ${r.changed})`;
      if (covers(r.subnet) || covers(r.ipv6Subnet)) {
        out.push(`on ${node}: the route to ${sub}${mac ? `, the neighbour ${sub.split('/')[0]} -> ${mac} and the fdb entry ${mac} -> ${r.attrs.PublicIP}` : ` via ${r.attrs.PublicIP}`} exist because ${by} holds ${sub}`);
      } else if (t.mac && mac === t.mac) {
        out.push(`on ${node}: the fdb entry ${mac} -> ${r.attrs.PublicIP} and the neighbour ${sub.split('/')[0]} -> ${mac} exist because ${by} announces this VtepMAC`);
      } else if (t.ip && t.ip.prefix >= 32 && formatIP(t.ip.ip) === r.attrs.PublicIP) {
        out.push(`on ${node}: ${r.attrs.PublicIP} is the public address of ${by}; fdb entries and routes for ${sub} point at it`);
      }
    }
  }
  if (out.length === 0) out.push(`nothing in the log accounts for ${object}: felt did not make it (or it was removed)`);

  const needle = t.mac ?? (t.ip ? formatIP(t.ip.ip) : object);
  const mentions = history.filter((e) => JSON.stringify(e.data).toLowerCase().includes(needle.toLowerCase()));
  if (mentions.length) {
    out.push('history:');
    for (const e of mentions) out.push(`  #${e.position} ${e.time} ${e.stream} ${e.type}`);
  }
  return out;
}
