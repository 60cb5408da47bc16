// feltd's status page in a real browser: a three-node cluster in namespaces (test/support/cluster.ts), node 1
// serving its health port on 127.0.0.1 inside its namespace, and Debian's headless Chromium started inside
// that namespace too (through a wrapper that `ip netns exec`s it), driven by playwright-core. The page must
// show every node's subnet, public IP and VtepMAC, follow a node leaving without a reload, and show untrusted
// lease text as text. With --status-page=false the page and its endpoints are 404 and /metrics stays.
//
// Chromium is /usr/bin/chromium (`apt-get install chromium`; scripts/setup.sh installs it). Without it the
// browser tests fail, saying so, unless FELT_SKIP_BROWSER=1 (FELT_CHROMIUM names another binary).
// FELT_STATUS_SCREENSHOT=PATH also writes the screenshot there (docs/status-page.png is made that way).

import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFlags } from '../../apps/feltd/flags.ts';
import { Cluster, type Node } from '../support/cluster.ts';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';

/** FELT_CHROMIUM: another Chromium binary (default Debian's). */
const CHROMIUM = process.env['FELT_CHROMIUM'] ?? '/usr/bin/chromium';
const SKIP_BROWSER = process.env['FELT_SKIP_BROWSER'] === '1';
const PORT = 9472;
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** GET inside a namespace: the status code, the content type and the body. */
function get(ns: string, path: string): { status: number; type: string; body: string } {
  const out = execFileSync(
    'ip',
    [
      'netns',
      'exec',
      ns,
      'node',
      '-e',
      `fetch('http://127.0.0.1:${PORT}${path}').then(async r=>{process.stdout.write(JSON.stringify({status:r.status,type:r.headers.get('content-type')||'',body:await r.text()}))},e=>{process.stderr.write(String(e));process.exit(1)})`,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  ).toString();
  return JSON.parse(out) as { status: number; type: string; body: string };
}

const revoke = (c: Cluster, subnet: string): void => {
  execFileSync(
    'node',
    [
      '--import',
      'tsx',
      '-e',
      `import('${ROOT}/adapters/lease/sqlite.ts').then(async (m) => { const s = m.sqliteLeaseStore({ path: ${JSON.stringify(`${c.dir}/leases.db`)} }); await s.revoke(${JSON.stringify(subnet)})(); await s.close(); })`,
    ],
    { cwd: ROOT },
  );
};

describe('--status-page and --cni-data-dir', () => {
  it('default to on and to the state dir; a value that is not true or false is refused by name', () => {
    expect(parseFlags([])).toMatchObject({ flags: { statusPage: true, cniDataDir: '/var/lib/felt' } });
    expect(parseFlags(['--state-dir', '/srv/felt'])).toMatchObject({ flags: { cniDataDir: '/srv/felt' } });
    expect(parseFlags(['--state-dir', '/srv/felt', '--cni-data-dir=/var/lib/cni-felt'])).toMatchObject({
      flags: { stateDir: '/srv/felt', cniDataDir: '/var/lib/cni-felt' },
    });
    expect(parseFlags(['--status-page=false'])).toMatchObject({ flags: { statusPage: false } });
    expect(parseFlags(['--status-page=0'])).toMatchObject({ flags: { statusPage: false } });
    expect(parseFlags(['--status-page'])).toMatchObject({ flags: { statusPage: true } });
    expect(parseFlags(['--status-page=off'])).toEqual({ error: '--status-page: "off" is not true or false' });
  });
});

describe('feltd status page', () => {
  const c = new Cluster({ nodes: 3, store: 'embedded', backend: 'vxlan' });
  const tmp = mkdtempSync(join(tmpdir(), 'felt-status-page-'));
  let n1: Node;
  let n2: Node;
  let ctx: BrowserContext | undefined;
  let page: Page;

  const start = (n: Node, extra: string[]): void => {
    const out = openSync(n.logFile, 'a');
    n.proc = spawn('ip', ['netns', 'exec', n.ns, join(ROOT, 'dist/bin/feltd'), ...c.feltdArgs(n), ...extra], {
      stdio: ['ignore', out, out],
    });
  };
  const subnet = (n: Node): string => c.subnetOf(n).replace(/\.1\//, '.0/');
  const vtepMac = (n: Node): string => readFileSync(join(n.dir, 'state', 'vtep-mac.1'), 'utf8').trim();
  const rows = (): Promise<string[][]> =>
    page.$$eval('#nodes-body tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')));

  beforeAll(async () => {
    await c.create();
    [n1, n2] = [c.nodes[0]!, c.nodes[1]!];
    start(n1, ['--healthz-ip', '127.0.0.1', '--healthz-port', String(PORT)]);
    start(n2, ['--healthz-ip', '127.0.0.1', '--healthz-port', String(PORT), '--status-page=false']);
    c.startFeltd(c.nodes[2]!);
    await c.waitReady();
  }, 60_000);

  afterAll(async () => {
    await ctx?.close();
    for (const n of c.nodes) await c.stopFeltd(n);
    c.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('serves /status.json with every node, and the page as one self-contained document', async () => {
    const s = await eventually(
      () => {
        const r = get(n1.ns, '/status.json');
        const j = JSON.parse(r.body) as { nodes: { subnet: string; publicIP: string; vtepMac: string; self: boolean }[]; cni: unknown };
        return r.status === 200 && j.nodes.length === 3 ? j : false;
      },
      { what: 'node 1 knows all three nodes', timeoutMs: 20_000, intervalMs: 200 },
    );
    expect(s.nodes.map((x) => [x.subnet, x.publicIP, x.vtepMac, x.self]).sort()).toEqual(
      c.nodes.map((n, i) => [subnet(n), n.ip, vtepMac(n), i === 0]).sort(),
    );
    // feltd serves CNI on the node's socket (test/support/cluster.ts): no call yet.
    expect(s.cni).toEqual({ socket: join(n1.dir, 'cni.sock'), perMinute: 0, attachments: [] });
    for (const path of ['/', '/status']) {
      const r = get(n1.ns, path);
      expect(r.status).toBe(200);
      expect(r.type).toMatch(/^text\/html/);
      // No external assets: nothing loaded from elsewhere, no src/href to another origin.
      expect(r.body).not.toMatch(/\b(src|href)\s*=|@import|url\(/i);
      expect(r.body).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    }
  });

  it('is off with --status-page=false: the page and its endpoints are 404, /metrics stays', () => {
    for (const path of ['/', '/status', '/status.json', '/events']) expect(get(n2.ns, path).status, path).toBe(404);
    const m = get(n2.ns, '/metrics');
    expect(m.status).toBe(200);
    expect(m.body).toContain('# TYPE felt_leases gauge');
  });

  describe.skipIf(SKIP_BROWSER)('in headless Chromium', () => {
    beforeAll(async () => {
      if (!existsSync(CHROMIUM))
        throw new Error(
          `${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium, as scripts/setup.sh does), or set FELT_SKIP_BROWSER=1 to skip the browser tests`,
        );
      // Chromium runs inside node 1's namespace, where feltd listens on 127.0.0.1.
      const wrapper = join(tmp, 'chromium-in-ns');
      writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${n1.ns} ${CHROMIUM} "$@"\n`);
      chmodSync(wrapper, 0o755);
      ctx = await chromium.launchPersistentContext(join(tmp, 'profile'), {
        executablePath: wrapper,
        headless: true,
        args: ARGS,
        viewport: { width: 1280, height: 860 },
      });
      page = ctx.pages()[0] ?? (await ctx.newPage());
    }, 60_000);

    it('shows every node: subnets, public IPs and VtepMACs, live', async () => {
      const failed: string[] = [];
      page.on('requestfailed', (r) => failed.push(r.url()));
      const external: string[] = [];
      page.on('request', (r) => {
        if (!r.url().startsWith(`http://127.0.0.1:${PORT}/`)) external.push(r.url());
      });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      await page.goto(`http://127.0.0.1:${PORT}/`);
      await eventually(async () => (await rows()).length === 3, {
        what: 'three rows in the nodes table',
        timeoutMs: 15_000,
        intervalMs: 100,
      });
      const shown = await rows();
      for (const n of c.nodes) {
        const row = shown.find((r) => r[0] === subnet(n));
        expect(row, `${n.name}'s row (${subnet(n)}) in ${JSON.stringify(shown)}`).toBeDefined();
        expect(row![1]).toBe(n.ip);
        expect(row![2]).toBe(vtepMac(n));
        expect(row![3]).toBe('vxlan');
      }
      expect(await page.textContent('#live')).toBe('live');
      expect(await page.textContent('#n-ip')).toBe(n1.ip);
      expect(await page.textContent('#n-subnet')).toBe(subnet(n1));
      expect(await page.textContent('#n-vtep')).toBe(vtepMac(n1));
      expect(await page.textContent('#n-expiry')).toMatch(/^\d{4}-\d\d-\d\d .*\(in /);
      expect(await page.textContent('#events')).toContain('RemoteLeaseSeen');
      await eventually(
        async () => Number((await page.$$eval('#reconcile-body tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent)))[0]) >= 1,
        {
          what: 'the reconcile table counts full passes',
          timeoutMs: 10_000,
        },
      );
      expect(await page.textContent('#ops-body')).toContain('route');
      const shot = join(tmp, 'status-page.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(10_000);
      const keep = process.env['FELT_STATUS_SCREENSHOT'];
      if (keep) copyFileSync(shot, keep);
      expect(errors).toEqual([]);
      expect(external).toEqual([]);
      expect(failed).toEqual([]);
    }, 60_000);

    it('renders untrusted lease text as text', async () => {
      // A lease whose VtepMAC is markup: the page must show the characters, not make an element.
      execFileSync(
        'node',
        [
          '--import',
          'tsx',
          '-e',
          `import('${ROOT}/adapters/lease/sqlite.ts').then(async (m) => { const s = m.sqliteLeaseStore({ path: ${JSON.stringify(`${c.dir}/leases.db`)} }); const r = await s.acquire({ subnet: '10.244.250.0/24', attrs: { PublicIP: '198.51.100.99', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '<img id=pwn src=x>' } } }, 600)(); if (r._tag !== 'Right' || r.right === 'taken') process.exit(3); await s.close(); })`,
        ],
        { cwd: ROOT },
      );
      await eventually(async () => (await rows()).some((r) => r[2] === '<img id=pwn src=x>'), {
        what: 'the markup lease shown as text',
        timeoutMs: 15_000,
        intervalMs: 100,
      });
      expect(await page.$('#pwn')).toBeNull();
      revoke(c, '10.244.250.0/24');
      await eventually(async () => (await rows()).length === 3, {
        what: 'the markup lease gone again',
        timeoutMs: 15_000,
        intervalMs: 100,
      });
    }, 60_000);

    it('updates without a reload when a node leaves', async () => {
      const gone = c.nodes[2]!;
      const dst = subnet(gone);
      const loads: string[] = [];
      page.on('load', () => loads.push('load'));
      await c.stopFeltd(gone);
      revoke(c, dst);
      await eventually(async () => (await rows()).length === 2 && !(await rows()).some((r) => r[0] === dst), {
        what: `${dst} leaves the page`,
        timeoutMs: 15_000,
        intervalMs: 100,
      });
      expect((await rows()).map((r) => r[0]).sort()).toEqual([subnet(n1), subnet(n2)].sort());
      expect(await page.textContent('#events')).toContain('RemoteLeaseRemoved');
      expect(await page.textContent('#live')).toBe('live');
      expect(loads).toEqual([]);
    }, 60_000);
  });
});
