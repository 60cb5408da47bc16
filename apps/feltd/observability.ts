// Structured JSON-line logs, Prometheus metrics and the health server: /healthz, /readyz, /metrics, and (unless
// --status-page=false) the status page with /status.json and its live feed /events (apps/feltd/status-page.ts).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import * as E from 'fp-ts/lib/Either.js';
import type { EventStore } from '../../adapters/store/types.ts';
import type { AttachmentReady } from '../../core/bridge/attachments.ts';
import type { CniError } from '../../core/cni/errors.ts';
import type { Op } from '../../core/kernel/model.ts';

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function jsonLogger(verbosity: number, out: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const emit = (level: string, msg: string, fields?: Record<string, unknown>): void =>
    out(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
  return {
    info: (m, f) => emit('info', m, f),
    debug: (m, f) => {
      if (verbosity >= 1) emit('debug', m, f);
    },
    error: (m, f) => emit('error', m, f),
  };
}

// ---------------------------------------------------------------- op kinds

/** The kind of kernel object an op changes: the `kind` label of felt_ops_applied_total and felt_drift_repaired_total. */
const OP_KIND: Readonly<Record<Op['op'], string>> = {
  'link.add': 'link',
  'link.set': 'link',
  'link.del': 'link',
  'link.move': 'link',
  'addr.add': 'address',
  'addr.del': 'address',
  'route.replace': 'route',
  'route.del': 'route',
  'neigh.replace': 'neigh',
  'neigh.del': 'neigh',
  'fdb.replace': 'fdb',
  'fdb.del': 'fdb',
  'chain.sync': 'iptables',
  'chain.del': 'iptables',
  'chain.add': 'iptables',
  'rule.add': 'iptables',
  'rule.del': 'iptables',
  'sysctl.set': 'sysctl',
  'qdisc.replace': 'qdisc',
  'qdisc.del': 'qdisc',
  'iprule.add': 'iprule',
  'iprule.del': 'iprule',
  'nft.table.add': 'nftables',
  'nft.table.del': 'nftables',
  'nft.chain.add': 'nftables',
  'nft.chain.sync': 'nftables',
  'nft.chain.del': 'nftables',
  'nft.rule.add': 'nftables',
  'nft.rule.del': 'nftables',
  'nft.set.add': 'nftables',
  'nft.set.elements': 'nftables',
};
export const OP_KINDS: readonly string[] = [...new Set(Object.values(OP_KIND))].sort();
const opKind = (o: Op): string => OP_KIND[o.op];

/** Ops counted by kind (only the kinds present). */
export const countByKind = (ops: readonly Op[]): Map<string, number> => {
  const m = new Map<string, number>();
  for (const o of ops) m.set(opKind(o), (m.get(opKind(o)) ?? 0) + 1);
  return m;
};

// ---------------------------------------------------------------- metrics

export type Labels = Readonly<Record<string, string>>;

/** A label value in the text format: backslash, double quote and newline escaped. */
export const escapeLabelValue = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const escapeHelp = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const labelText = (l: Labels, extra?: [string, string]): string => {
  const pairs = Object.entries(l).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (extra) pairs.push(extra);
  return pairs.length ? `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}` : '';
};
const num = (n: number): string => (n === Infinity ? '+Inf' : n === -Infinity ? '-Inf' : Number.isNaN(n) ? 'NaN' : String(n));

interface Scalar {
  labels: Labels;
  value: number;
}
interface Hist {
  labels: Labels;
  /** Per bucket, not cumulative; one more for +Inf. */
  counts: number[];
  sum: number;
  count: number;
}
interface ScalarFamily {
  type: 'counter' | 'gauge';
  help: string;
  series: Map<string, Scalar>;
}
interface HistFamily {
  type: 'histogram';
  help: string;
  buckets: readonly number[];
  series: Map<string, Hist>;
}
type Family = ScalarFamily | HistFamily;

/** Seconds: from a fraction of a millisecond (a delta pass) to ten seconds (a full pass on a loaded node). */
const DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const RECONCILE_HISTOGRAM = 'felt_reconcile_duration_seconds';
const RECONCILE_HELP = 'Time of a reconcile pass (full: observe, plan, apply; delta: changed leases only)';

export interface PassStats {
  readonly count: number;
  /** Seconds of the last pass, and the median and 99th percentile of the last 1000. */
  readonly last: number | null;
  readonly p50: number | null;
  readonly p99: number | null;
}

/** Counters, gauges and histograms with labels, rendered in the Prometheus text format (version 0.0.4). */
export class Metrics {
  private readonly families = new Map<string, Family>();
  private readonly recent = { full: [] as number[], delta: [] as number[] };
  private readonly counts = { full: 0, delta: 0 };
  /** Grows with every change of a value: a cheap "has anything changed" for the status page. */
  generation = 0;

  constructor() {
    for (const kind of ['full', 'delta']) this.declareHistogram(RECONCILE_HISTOGRAM, RECONCILE_HELP, DURATION_BUCKETS, { kind });
  }

  private family<T extends Family['type']>(
    name: string,
    type: T,
    help: string,
    buckets: readonly number[] = [],
  ): T extends 'histogram' ? HistFamily : ScalarFamily {
    let f = this.families.get(name);
    if (!f) {
      f =
        type === 'histogram'
          ? { type: 'histogram', help, buckets, series: new Map() }
          : { type: type as 'counter' | 'gauge', help, series: new Map() };
      this.families.set(name, f);
    }
    if (f.type !== type) throw new Error(`metric ${name} is a ${f.type}, not a ${type}`);
    return f as T extends 'histogram' ? HistFamily : ScalarFamily;
  }

  /** Add `by` (0 declares the series, so that it is scraped before anything happened). */
  counter(name: string, help: string, by = 1, labels: Labels = {}): void {
    const f = this.family(name, 'counter', help);
    const key = labelText(labels);
    const s = f.series.get(key) ?? { labels, value: 0 };
    s.value += by;
    f.series.set(key, s);
    if (by !== 0) this.generation++;
  }

  gauge(name: string, help: string, value: number, labels: Labels = {}): void {
    const f = this.family(name, 'gauge', help);
    const key = labelText(labels);
    if (f.series.get(key)?.value !== value) this.generation++;
    f.series.set(key, { labels, value });
  }

  /**
   * Declare a histogram without observing anything: with `labels`, that series (its buckets scrape as 0);
   * without, only the family (HELP and TYPE, no samples until its first labelled observation).
   */
  declareHistogram(name: string, help: string, buckets: readonly number[], labels?: Labels): void {
    const f = this.family(name, 'histogram', help, buckets);
    if (!labels) return;
    const key = labelText(labels);
    if (!f.series.has(key)) f.series.set(key, { labels, counts: new Array<number>(f.buckets.length + 1).fill(0), sum: 0, count: 0 });
  }

  observe(name: string, help: string, buckets: readonly number[], value: number, labels: Labels = {}): void {
    this.declareHistogram(name, help, buckets, labels);
    const f = this.family(name, 'histogram', help, buckets);
    const s = f.series.get(labelText(labels))!;
    let i = f.buckets.findIndex((b) => value <= b);
    if (i < 0) i = f.buckets.length;
    s.counts[i]!++;
    s.sum += value;
    s.count++;
    this.generation++;
  }

  /** A reconcile pass: `full` (observe + plan everything) or `delta` (only changed leases, no kernel read). */
  observeReconcile(kind: 'full' | 'delta', seconds: number): void {
    this.observe(RECONCILE_HISTOGRAM, RECONCILE_HELP, DURATION_BUCKETS, seconds, { kind });
    const d = this.recent[kind];
    d.push(seconds);
    if (d.length > 1000) d.shift();
    this.counts[kind]++;
  }

  /** For the status page: the last pass and the quantiles of the recent ones. */
  passStats(kind: 'full' | 'delta'): PassStats {
    const d = this.recent[kind];
    const sorted = [...d].sort((a, b) => a - b);
    const q = (p: number): number | null => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : null);
    return { count: this.counts[kind], last: d.length ? d[d.length - 1]! : null, p50: q(0.5), p99: q(0.99) };
  }

  /** A counter's or gauge's series by one label's value (the status page's ops and drift tables). */
  byLabel(name: string, label: string): Record<string, number> {
    const f = this.families.get(name);
    const out: Record<string, number> = {};
    if (!f || f.type === 'histogram') return out;
    for (const s of f.series.values()) out[s.labels[label] ?? ''] = s.value;
    return out;
  }

  value(name: string, labels: Labels = {}): number | undefined {
    const f = this.families.get(name);
    return f && f.type !== 'histogram' ? f.series.get(labelText(labels))?.value : undefined;
  }

  render(): string {
    const out: string[] = [];
    for (const [n, f] of this.families) {
      out.push(`# HELP ${n} ${escapeHelp(f.help)}`, `# TYPE ${n} ${f.type}`);
      if (f.type === 'histogram') {
        for (const s of f.series.values()) {
          let acc = 0;
          f.buckets.forEach((b, i) => {
            acc += s.counts[i]!;
            out.push(`${n}_bucket${labelText(s.labels, ['le', num(b)])} ${acc}`);
          });
          out.push(
            `${n}_bucket${labelText(s.labels, ['le', '+Inf'])} ${s.count}`,
            `${n}_sum${labelText(s.labels)} ${num(s.sum)}`,
            `${n}_count${labelText(s.labels)} ${s.count}`,
          );
        }
      } else {
        for (const s of f.series.values()) out.push(`${n}${labelText(s.labels)} ${num(s.value)}`);
      }
    }
    return out.join('\n') + '\n';
  }
}

// ---------------------------------------------------------------- CNI ADD durations from the event log

const CNI_ADD_HISTOGRAM = 'felt_cni_add_duration_seconds';
const CNI_ADD_HELP = 'Time of a bridge (or flannel) CNI ADD, from its AttachmentReady event in the CNI event log, by network';
/** A CNI ADD: tens of milliseconds on an idle node, seconds on a loaded one. */
const CNI_ADD_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * Follow the CNI plugins' event log: every AttachmentReady (streams `bridge/<network>`) after the last one
 * seen goes into felt_cni_add_duration_seconds. `open` gives the log, or undefined while it does not exist
 * (no ADD yet); it is asked again on the next poll. Reads in chunks, so a long history costs a few polls.
 */
export function followCniAdds(deps: {
  readonly open: () => E.Either<CniError, EventStore> | undefined;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly where: string;
  /** Whether close() closes the store (false when it is feltd's own event log). */
  readonly owned: boolean;
}): { poll(): void; close(): void } {
  const { metrics, log } = deps;
  metrics.declareHistogram(CNI_ADD_HISTOGRAM, CNI_ADD_HELP, CNI_ADD_BUCKETS);
  let store: EventStore | undefined;
  let position = 0;
  let failing = false;
  const fail = (msg: string): void => {
    metrics.counter(
      'felt_store_errors_total',
      'Failed reads and writes of the event log (store="events") and the lease store (store="leases")',
      1,
      { store: 'events' },
    );
    if (!failing) log.error('cannot read the CNI event log', { where: deps.where, error: msg });
    failing = true;
  };
  return {
    poll: () => {
      if (!store) {
        const opened = deps.open();
        if (!opened) return;
        if (E.isLeft(opened)) return fail(opened.left.msg);
        store = opened.right;
      }
      for (let chunk = 0; chunk < 20; chunk++) {
        // Every stream, so that the position moves past other plugins' events too (filtered below).
        const r = store.read({ fromPosition: position, limit: 1000 });
        if (E.isLeft(r)) return fail(r.left.msg);
        failing = false;
        if (deps.owned && position === 0 && r.right.length === 0) {
          // A log opened read-only while its first writer was still creating it reads as empty for good:
          // open it again next time until it has any event.
          store.close();
          store = undefined;
          return;
        }
        for (const e of r.right) {
          position = e.position;
          if (e.type !== 'AttachmentReady' || !e.stream.startsWith('bridge/')) continue;
          const d = e.data as Partial<AttachmentReady['data']>;
          if (typeof d.durationMs !== 'number' || !Number.isFinite(d.durationMs) || d.durationMs < 0) continue;
          metrics.observe(CNI_ADD_HISTOGRAM, CNI_ADD_HELP, CNI_ADD_BUCKETS, d.durationMs / 1000, {
            network: typeof d.network === 'string' ? d.network : '',
          });
        }
        if (r.right.length < 1000) return;
      }
    },
    close: () => {
      if (deps.owned) store?.close();
      store = undefined;
    },
  };
}

// ---------------------------------------------------------------- the server

/** The status page's routes (apps/feltd/status-page.ts): answered when given, 404 otherwise. */
export type ExtraRoutes = (path: string, req: IncomingMessage, res: ServerResponse) => boolean;

export function healthServer(ip: string, port: number, ready: () => boolean, metrics: Metrics, extra?: ExtraRoutes): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('read-only: GET only\n');
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      if (ready()) res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end('subnet lease not written yet\n');
    } else if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render());
    } else if (!extra?.(path, req, res)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve(server));
  });
}
