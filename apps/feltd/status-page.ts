// feltd's read-only status page, next to /metrics on the health server's port: `/` (and `/status`) is one
// self-contained HTML document (inline CSS and JS, no external assets: the Content-Security-Policy allows
// nothing else), `/status.json` the same data, `/events` a server-sent-event stream of it that the page
// listens to (it falls back to polling /status.json). Lease values are untrusted (any node, or anyone with
// access to etcd, writes them): they travel as JSON and the page renders them with textContent only.

import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StoredEvent } from '../../core/events.ts';
import type { NodeState } from '../../core/flannel/node.ts';
import { summarize } from '../felt/summary.ts';
import { type ExtraRoutes, type Metrics, type PassStats } from './observability.ts';
import { STATUS_CSS, STATUS_JS, statusHtml } from './status-page-html.ts';

/** What the daemon shows of itself (Daemon.view()). */
export interface DaemonView {
  readonly publicIP: string;
  readonly backendType: string;
  readonly vtepMac?: string;
  readonly ready: boolean;
  readonly state: NodeState;
  /** The node's last lease events (its event log stream), oldest first. */
  readonly recent: readonly StoredEvent[];
}

interface StatusNode {
  readonly self: boolean;
  readonly key: string;
  readonly subnet: string | null;
  readonly ipv6Subnet: string | null;
  readonly publicIP: string | null;
  readonly vtepMac: string | null;
  readonly backendType: string | null;
  /** Event time of the lease's last change (this node: when it was leased). */
  readonly changed: string | null;
  readonly expiration: string | null;
}

export interface Status {
  readonly generatedAt: string;
  readonly node: {
    readonly publicIP: string;
    readonly backendType: string;
    readonly vtepMac: string | null;
    readonly ready: boolean;
    readonly subnet: string | null;
    readonly ipv6Subnet: string | null;
    readonly leaseExpiration: string | null;
    readonly leasedSince: string | null;
  };
  readonly network: string | null;
  readonly nodes: readonly StatusNode[];
  readonly events: readonly { readonly position: number; readonly time: string; readonly type: string; readonly summary: string }[];
  readonly reconcile: { readonly full: PassStats; readonly delta: PassStats };
  readonly opsApplied: Readonly<Record<string, number>>;
  readonly driftRepaired: Readonly<Record<string, number>>;
  readonly storeErrors: Readonly<Record<string, number>>;
  /** feltd serving CNI: its socket, calls answered in the last minute, bridge attachments per network; null: not serving. */
  readonly cni: CniStatus | null;
}

export interface CniStatus {
  readonly socket: string;
  readonly perMinute: number;
  readonly attachments: readonly { readonly network: string; readonly count: number }[];
}

const str = (v: unknown): string | null => (typeof v === 'string' ? v : v === undefined || v === null ? null : JSON.stringify(v));
const vtepOf = (data: unknown): string | null =>
  typeof data === 'object' && data !== null && 'VtepMAC' in data ? str((data as { VtepMAC: unknown }).VtepMAC) : null;

/** The page's data: this node, every node (this one first, then by subnet key), the last events, the counters. */
export function statusOf(view: DaemonView, metrics: Metrics, now: Date, cni?: CniStatus): Status {
  const own = view.state.ownLease;
  const self: StatusNode[] = own
    ? [
        {
          self: true,
          key: own.key,
          subnet: own.subnet ?? null,
          ipv6Subnet: own.ipv6Subnet ?? null,
          publicIP: own.publicIP,
          vtepMac: own.vtepMac ?? null,
          backendType: own.backendType,
          changed: own.since,
          expiration: own.expiration,
        },
      ]
    : [];
  const remotes = Object.values(view.state.remotes)
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map((r): StatusNode => ({
      self: false,
      key: r.key,
      subnet: r.subnet ?? null,
      ipv6Subnet: r.ipv6Subnet ?? null,
      publicIP: str(r.attrs.PublicIP),
      vtepMac: vtepOf(r.attrs.BackendData),
      backendType: str(r.attrs.BackendType),
      changed: r.changed,
      expiration: r.expiration,
    }));
  const cfg = view.state.config;
  return {
    generatedAt: now.toISOString(),
    node: {
      publicIP: view.publicIP,
      backendType: view.backendType,
      vtepMac: view.vtepMac ?? null,
      ready: view.ready,
      subnet: own?.subnet ?? null,
      ipv6Subnet: own?.ipv6Subnet ?? null,
      leaseExpiration: own?.expiration ?? null,
      leasedSince: own?.since ?? null,
    },
    network: cfg ? [cfg.network, cfg.ipv6Network].filter(Boolean).join(' + ') || null : null,
    nodes: [...self, ...remotes],
    events: [...view.recent].reverse().map((e) => ({ position: e.position, time: e.time, type: e.type, summary: summarize(e) })),
    reconcile: { full: metrics.passStats('full'), delta: metrics.passStats('delta') },
    opsApplied: metrics.byLabel('felt_ops_applied_total', 'kind'),
    driftRepaired: metrics.byLabel('felt_drift_repaired_total', 'kind'),
    storeErrors: metrics.byLabel('felt_store_errors_total', 'store'),
    cni: cni ?? null,
  };
}

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;
/** Only the page's own inline style and script, and requests to this server. */
const CSP = [
  "default-src 'none'",
  `style-src ${sha256(STATUS_CSS)}`,
  `script-src ${sha256(STATUS_JS)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Live pages at once (each costs a socket and a write per change). */
const MAX_LISTENERS = 64;

export interface StatusRoutes {
  readonly routes: ExtraRoutes;
  /** End the live streams (before the server closes). */
  close(): void;
}

/**
 * The page's routes. `/events` sends the status when a client connects and then whenever it changes (checked
 * every `intervalMs` while anyone listens), with a comment line as a keep-alive.
 */
export function statusRoutes(
  status: () => Status,
  opts: {
    readonly intervalMs?: number;
    /** Cheap to compute: while its elements are the same (===), the status is not rebuilt to look for changes. */
    readonly version?: () => readonly unknown[];
  } = {},
): StatusRoutes {
  const intervalMs = opts.intervalMs ?? 1000;
  let seen: readonly unknown[] | undefined;
  const sameVersion = (): boolean => {
    if (!opts.version) return false;
    const v = opts.version();
    const same = seen !== undefined && v.length === seen.length && v.every((x, i) => x === seen![i]);
    seen = v;
    return same;
  };
  const clients = new Set<ServerResponse>();
  let timer: NodeJS.Timeout | undefined;
  let last = '';
  let quiet = 0;
  const body = (s: Status): string => JSON.stringify({ ...s, generatedAt: '' });
  const send = (res: ServerResponse, s: Status): void => void res.write(`event: status\ndata: ${JSON.stringify(s)}\n\n`);
  const tick = (): void => {
    const s = sameVersion() ? undefined : status();
    const b = s && body(s);
    if (s && b !== last) {
      last = b!;
      quiet = 0;
      for (const c of clients) send(c, s);
    } else if (++quiet * intervalMs >= 15_000) {
      quiet = 0;
      for (const c of clients) c.write(': keep-alive\n\n');
    }
  };
  const headers = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };
  const routes: ExtraRoutes = (path: string, req: IncomingMessage, res: ServerResponse) => {
    if (path === '/' || path === '/status') {
      res
        .writeHead(200, {
          ...headers,
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': CSP,
          'referrer-policy': 'no-referrer',
        })
        .end(statusHtml());
      return true;
    }
    if (path === '/status.json') {
      res.writeHead(200, { ...headers, 'content-type': 'application/json' }).end(JSON.stringify(status()) + '\n');
      return true;
    }
    if (path === '/events') {
      if (clients.size >= MAX_LISTENERS) {
        res
          .writeHead(503, { ...headers, 'content-type': 'text/plain', 'retry-after': '10' })
          .end(`${MAX_LISTENERS} pages are listening already; poll /status.json\n`);
        return true;
      }
      res.writeHead(200, { ...headers, 'content-type': 'text/event-stream', connection: 'keep-alive' });
      res.write(`retry: 1000\n\n`);
      if (req.method === 'HEAD') return (res.end(), true);
      const s = status();
      send(res, s);
      clients.add(res);
      if (!timer) {
        last = body(s);
        seen = undefined;
        timer = setInterval(tick, intervalMs);
        timer.unref();
      }
      req.on('close', () => {
        clients.delete(res);
        if (clients.size === 0 && timer) {
          clearInterval(timer);
          timer = undefined;
        }
      });
      return true;
    }
    return false;
  };
  return {
    routes,
    close: () => {
      if (timer) clearInterval(timer);
      timer = undefined;
      for (const c of clients) c.end();
      clients.clear();
    },
  };
}
