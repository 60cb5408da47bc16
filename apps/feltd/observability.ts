// Structured JSON-line logs, Prometheus metrics and the /healthz, /readyz, /metrics server.

import { createServer, type Server } from 'node:http';

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

/** Counters, gauges and a summary of reconcile durations, rendered in the Prometheus text format. */
export class Metrics {
  private readonly counters = new Map<string, { help: string; value: number }>();
  private readonly gauges = new Map<string, { help: string; value: number }>();
  private readonly durations = { full: [] as number[], delta: [] as number[] };

  counter(name: string, help: string, by = 1): void {
    const c = this.counters.get(name) ?? { help, value: 0 };
    c.value += by;
    this.counters.set(name, c);
  }

  gauge(name: string, help: string, value: number): void {
    this.gauges.set(name, { help, value });
  }

  /** A reconcile pass: `full` (observe + plan everything) or `delta` (only changed leases, no kernel read). */
  observeReconcile(kind: 'full' | 'delta', seconds: number): void {
    const d = this.durations[kind];
    d.push(seconds);
    if (d.length > 1000) d.shift();
  }

  render(): string {
    const out: string[] = [];
    for (const [n, c] of this.counters) out.push(`# HELP ${n} ${c.help}`, `# TYPE ${n} counter`, `${n} ${c.value}`);
    for (const [n, g] of this.gauges) out.push(`# HELP ${n} ${g.help}`, `# TYPE ${n} gauge`, `${n} ${g.value}`);
    out.push('# HELP feltd_reconcile_duration_seconds Time of a reconcile pass (full: observe, plan, apply; delta: changed leases only)', '# TYPE feltd_reconcile_duration_seconds summary');
    for (const kind of ['full', 'delta'] as const) {
      const d = [...this.durations[kind]].sort((a, b) => a - b);
      const q = (p: number): number => (d.length ? d[Math.min(d.length - 1, Math.floor(p * d.length))]! : 0);
      for (const p of [0.5, 0.9, 0.99]) out.push(`feltd_reconcile_duration_seconds{kind="${kind}",quantile="${p}"} ${q(p)}`);
      out.push(`feltd_reconcile_duration_seconds_sum{kind="${kind}"} ${d.reduce((a, b) => a + b, 0)}`, `feltd_reconcile_duration_seconds_count{kind="${kind}"} ${d.length}`);
    }
    return out.join('\n') + '\n';
  }
}

export function healthServer(ip: string, port: number, ready: () => boolean, metrics: Metrics): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      if (ready()) res.writeHead(200, { 'content-type': 'text/plain' }).end('ready\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end('subnet lease not written yet\n');
    } else if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render());
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve(server));
  });
}
