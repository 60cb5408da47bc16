// `felt status`: this node at a glance, from the log and feltd's reconcile.json. The lease (subnet, expiry,
// when renewal is due), the peers (how many, the newest and oldest change), the last reconcile pass, and per
// network the allocations and the free addresses (host-local's range sets minus gateways minus allocations).
// Pure: the time comes in with the input.

import type { IpamConf } from '../ipam/config.ts';
import type { IpamState } from '../ipam/decider.ts';
import { rangeSetContains, rangeSetSize, rangeSetString } from '../ipam/range.ts';
import { formatIP, parseIP } from '../ip/ip.ts';
import type { NodeState } from '../flannel/node.ts';
import type { CniRecord } from './cni.ts';
import type { ReconcileRecord } from './reconcile.ts';

const DEFAULT_RENEW_MARGIN_MINUTES = 60;

export interface StatusInput {
  /** ISO time "now" (the app's clock). */
  readonly now: string;
  readonly nodes: readonly { readonly stream: string; readonly state: NodeState }[];
  /** reconcile.json: the record, absent, or why it cannot be read. */
  readonly reconcile: ReconcileRecord | undefined | string;
  /** --renew-margin, when given. */
  readonly renewMarginMinutes?: number;
  readonly ipam: readonly { readonly network: string; readonly state: IpamState; readonly conf?: IpamConf }[];
  /** feltd's cni.json: the record, absent, or why it cannot be read. */
  readonly cni?: CniRecord | string;
  /** Bridge attachments recorded per network. */
  readonly attachments?: readonly AttachmentCount[];
}

export interface AttachmentCount {
  readonly network: string;
  readonly count: number;
}

interface PeerChange {
  readonly key: string;
  readonly publicIP: string;
  readonly time: string;
}

interface NodeStatus {
  readonly node: string;
  readonly backend: string | null;
  readonly network: string | null;
  readonly lease: {
    readonly subnet: string | null;
    readonly ipv6Subnet: string | null;
    readonly since: string;
    readonly expiration: string;
    readonly expiresInSeconds: number;
    readonly renewalDue: string;
    readonly renewalDueInSeconds: number;
    readonly renewMarginMinutes: number;
    /** Where the margin came from: --renew-margin, feltd's reconcile.json, or feltd's default. */
    readonly renewMarginFrom: 'flag' | 'reconcile.json' | 'default';
  } | null;
  readonly peers: { readonly count: number; readonly newestChange: PeerChange | null; readonly oldestChange: PeerChange | null };
}

interface NetworkStatus {
  readonly network: string;
  readonly allocations: number;
  /** Addresses host-local can still hand out; null when the ranges are not in the log. Strings beyond 2^53. */
  readonly free: number | string | null;
  readonly size: number | string | null;
  readonly ranges: string | null;
  readonly note?: string;
}

export interface Status {
  readonly now: string;
  readonly nodes: readonly NodeStatus[];
  readonly lastReconcile: Omit<ReconcileRecord, 'node'> | null;
  /** "no reconcile recorded" and the like, when lastReconcile is null. */
  readonly reconcileNote?: string;
  readonly networks: readonly NetworkStatus[];
  /** feltd serving CNI, as its cni.json last said; null with `cniNote` saying why. */
  readonly cni: CniRecord | null;
  readonly cniNote?: string;
  readonly attachments: readonly AttachmentCount[];
}

const num = (n: bigint): number | string => (n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n.toString());
const seconds = (from: string, to: string): number => Math.round((Date.parse(to) - Date.parse(from)) / 1000);

function nodeStatus(stream: string, s: NodeState, input: StatusInput, rec: ReconcileRecord | undefined): NodeStatus {
  const margin =
    input.renewMarginMinutes !== undefined
      ? { m: input.renewMarginMinutes, from: 'flag' as const }
      : rec
        ? { m: rec.renewMarginMinutes, from: 'reconcile.json' as const }
        : { m: DEFAULT_RENEW_MARGIN_MINUTES, from: 'default' as const };
  const own = s.ownLease;
  const due = own ? new Date(Date.parse(own.expiration) - margin.m * 60_000).toISOString() : '';
  const remotes = Object.values(s.remotes);
  const change = (pick: (a: number, b: number) => boolean): PeerChange | null => {
    let best: (typeof remotes)[number] | undefined;
    for (const r of remotes) if (!best || pick(Date.parse(r.changed), Date.parse(best.changed))) best = r;
    return best ? { key: best.key, publicIP: best.attrs.PublicIP, time: best.changed } : null;
  };
  return {
    node: stream.slice('node/'.length),
    backend: s.config?.backend.type ?? null,
    network: [s.config?.network, s.config?.ipv6Network].filter(Boolean).join(' + ') || null,
    lease: own
      ? {
          subnet: own.subnet ?? null,
          ipv6Subnet: own.ipv6Subnet ?? null,
          since: own.since,
          expiration: own.expiration,
          expiresInSeconds: seconds(input.now, own.expiration),
          renewalDue: due,
          renewalDueInSeconds: seconds(input.now, due),
          renewMarginMinutes: margin.m,
          renewMarginFrom: margin.from,
        }
      : null,
    peers: { count: remotes.length, newestChange: change((a, b) => a > b), oldestChange: change((a, b) => a < b) },
  };
}

function networkStatus(n: StatusInput['ipam'][number]): NetworkStatus {
  const allocs = Object.values(n.state.allocations);
  if (!n.conf) {
    return {
      network: n.network,
      allocations: allocs.length,
      free: null,
      size: null,
      ranges: null,
      note: 'its ranges are not in the log (no current bridge attachment recorded its config)',
    };
  }
  let size = 0n;
  let free = 0n;
  for (const set of n.conf.rangeSets) {
    const gateways = new Set(set.ranges.map((r) => formatIP(r.gateway)).filter((g) => rangeSetContains(set, parseIP(g)!)));
    const taken = allocs.filter((a) => {
      const ip = parseIP(a.ip);
      return ip !== undefined && rangeSetContains(set, ip) && !gateways.has(formatIP(ip));
    }).length;
    const s = rangeSetSize(set);
    size += s;
    const f = s - BigInt(gateways.size) - BigInt(taken);
    free += f > 0n ? f : 0n;
  }
  return {
    network: n.network,
    allocations: allocs.length,
    free: num(free),
    size: num(size),
    ranges: n.conf.rangeSets.map(rangeSetString).join('; '),
  };
}

export function status(input: StatusInput): Status {
  const rec = typeof input.reconcile === 'object' ? input.reconcile : undefined;
  const last = rec ? (({ node: _node, ...rest }) => rest)(rec) : null;
  return {
    now: input.now,
    nodes: input.nodes.map((n) => nodeStatus(n.stream, n.state, input, rec)),
    lastReconcile: last,
    ...(last ? {} : { reconcileNote: typeof input.reconcile === 'string' ? input.reconcile : 'no reconcile recorded' }),
    networks: input.ipam.map(networkStatus),
    cni: typeof input.cni === 'object' ? input.cni : null,
    ...(typeof input.cni === 'object' ? {} : { cniNote: typeof input.cni === 'string' ? input.cni : 'no feltd serving CNI recorded' }),
    attachments: input.attachments ?? [],
  };
}

/** "1d 2h", "3h 4m", "5m 6s", "7s"; negative durations are "… ago". */
export function duration(secs: number): string {
  const s = Math.abs(secs);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const x = s % 60;
  const text = d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${x}s` : `${x}s`;
  return secs < 0 ? `${text} ago` : `in ${text}`;
}

export function renderStatus(st: Status): string {
  const lines: string[] = [];
  if (st.nodes.length === 0) lines.push('no feltd node in this log');
  for (const n of st.nodes) {
    lines.push(`node ${n.node}${n.backend ? ` (${n.backend}, network ${n.network ?? '?'})` : ''}`);
    const l = n.lease;
    lines.push(
      l
        ? `  lease: ${[l.subnet, l.ipv6Subnet].filter(Boolean).join(' + ')} since ${l.since}, expires ${l.expiration} (${duration(l.expiresInSeconds)}), renewal due ${l.renewalDue} (${duration(l.renewalDueInSeconds)}, ${l.renewMarginMinutes} min before expiry${l.renewMarginFrom === 'default' ? ", feltd's default" : ''})`
        : '  lease: none held',
    );
    const p = n.peers;
    lines.push(
      p.count === 0
        ? '  peers: none'
        : `  peers: ${p.count}, newest change ${p.newestChange!.time} (${p.newestChange!.key} at ${p.newestChange!.publicIP}), oldest change ${p.oldestChange!.time} (${p.oldestChange!.key} at ${p.oldestChange!.publicIP})`,
    );
  }
  const r = st.lastReconcile;
  lines.push(
    r
      ? `last reconcile: ${r.kind} pass at ${r.time} (${duration(seconds(st.now, r.time))}), took ${r.durationMs} ms, ${r.ops} op${r.ops === 1 ? '' : 's'}, drift repaired ${r.driftRepaired}; ${r.passes} pass${r.passes === 1 ? '' : 'es'} since feltd started, drift repaired ${r.totalDriftRepaired} in all`
      : `last reconcile: ${st.reconcileNote ?? 'no reconcile recorded'}`,
  );
  const c = st.cni;
  lines.push(
    c
      ? `cni: feltd serving ${c.socket} since ${c.since}, ${c.requestsLastMinute} request${c.requestsLastMinute === 1 ? '' : 's'} in the minute before ${c.time} (${duration(seconds(st.now, c.time))}), ${c.requestsTotal} in all`
      : `cni: ${st.cniNote ?? 'no feltd serving CNI recorded'} (the plugins run in-process)`,
  );
  if (st.attachments.length) lines.push(`attachments: ${st.attachments.map((a) => `${a.network} ${a.count}`).join(', ')}`);
  if (st.networks.length === 0) lines.push('networks: no allocations recorded');
  else {
    lines.push('networks:');
    const rows = [
      ['NETWORK', 'ALLOCATED', 'FREE', 'RANGES'],
      ...st.networks.map((n) => [n.network, String(n.allocations), n.free === null ? '?' : String(n.free), n.ranges ?? `? (${n.note})`]),
    ];
    const w = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
    for (const row of rows) lines.push('  ' + row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(w[i]!))).join('  '));
  }
  return lines.join('\n') + '\n';
}
