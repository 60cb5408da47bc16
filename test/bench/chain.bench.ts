// npm run bench:chain: N ADD+DEL cycles of the conflist bridge + portmap + bandwidth + tuning + firewall, side
// by side in one run (test/bench/sides.ts: felt with a feltd serving, started inside that side's host
// namespace; felt standalone; the reference 1.1.1 and 1.9.1), each side in its own host namespace, the sides
// rotated every cycle.
//
// The runtime is the same for every side and costs no process of its own: this process runs the conflist as
// libcni does (each plugin executed with `ip netns exec <host> <plugin>`, CNI_* in its environment, the config
// with the capabilities' runtimeConfig and the previous result on stdin; DEL in reverse order with the ADD's
// result as prevResult). So the time is the plugins' alone, as a runtime that is already running (containerd,
// CRI-O, podman's netavark-less path) sees it. Prints medians and the ratios felt/reference as a markdown
// table (pasted into docs/benchmarks.md).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCni } from '../support/cni.ts';
import { flavours, heading, load, median, ratioTable, rotated, sideEnv, startFeltd, type Feltd, type Flavour } from './sides.ts';

const N = Number(process.env['BENCH_N'] ?? 20);
const tag = `fc${process.pid}`;
const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });

interface Side {
  readonly f: Flavour;
  readonly host: string;
  readonly pod: string;
  readonly data: string;
  feltd?: Feltd;
  readonly add: number[];
  readonly del: number[];
}

type Raw = Record<string, unknown>;

const plugins = (data: string): Raw[] => [
  {
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ipMasq: true,
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.98.0.0/16' }]], dataDir: data },
  },
  { type: 'portmap', capabilities: { portMappings: true }, snat: true },
  { type: 'bandwidth', capabilities: { bandwidth: true } },
  { type: 'tuning', sysctl: { 'net.ipv4.conf.IFNAME.arp_notify': '1' }, dataDir: data },
  { type: 'firewall', dataDir: data },
];

const caps: Raw = {
  portMappings: [{ hostPort: 18081, containerPort: 80, protocol: 'tcp' }],
  bandwidth: { ingressRate: 100_000_000, ingressBurst: 1_000_000, egressRate: 100_000_000, egressBurst: 1_000_000 },
};

/** libcni's buildOneConfig: name and version from the list, the capabilities the plugin asks for as runtimeConfig. */
const oneConfig = (p: Raw, prevResult: unknown): Raw => {
  const wanted = Object.entries((p['capabilities'] as Record<string, boolean> | undefined) ?? {}).filter(([k, on]) => on && k in caps);
  return {
    cniVersion: '1.0.0',
    name: 'benchchain',
    ...p,
    ...(wanted.length ? { runtimeConfig: Object.fromEntries(wanted.map(([k]) => [k, caps[k]])) } : {}),
    ...(prevResult !== undefined ? { prevResult } : {}),
  };
};

async function runList(s: Side, command: 'ADD' | 'DEL', id: string, prev: unknown): Promise<{ ms: number; result: unknown }> {
  const list = plugins(s.data);
  const t0 = performance.now();
  let result = prev;
  for (const p of command === 'ADD' ? list : [...list].reverse()) {
    const o = await runCni({
      dir: s.f.dir,
      type: String(p['type']),
      command,
      hostNs: s.host,
      containerId: id,
      netns: `/var/run/netns/${s.pod}`,
      ifname: 'eth0',
      config: oneConfig(p, command === 'ADD' ? result : prev),
      env: sideEnv(s.f, s.feltd),
    });
    if (o.code !== 0) throw new Error(`${s.f.name} ${command} ${String(p['type'])}: ${o.stdout}${o.stderr}`);
    if (command === 'ADD') result = o.json;
  }
  return { ms: performance.now() - t0, result };
}

async function main(): Promise<void> {
  const before = load();
  const sides: Side[] = flavours().map((f, i) => ({
    f,
    host: `${tag}-h${i}`,
    pod: `${tag}-p${i}`,
    data: mkdtempSync(join(tmpdir(), `chain-bench-${f.name}-`)),
    add: [],
    del: [],
  }));
  try {
    for (const s of sides) {
      ip('netns', 'add', s.host);
      ip('netns', 'add', s.pod);
      // The reference's firewall plugin and portmap want these on in the host namespace, as on a real node.
      ip('netns', 'exec', s.host, 'ip', 'link', 'set', 'lo', 'up');
      if (s.f.daemon) s.feltd = await startFeltd(s.host, s.f.dir);
    }
    for (let i = -1; i < N; i++) {
      for (const s of rotated(sides, i)) {
        const a = await runList(s, 'ADD', `c${i + 1}`, undefined);
        const d = await runList(s, 'DEL', `c${i + 1}`, a.result);
        if (i >= 0) {
          s.add.push(a.ms);
          s.del.push(d.ms);
        }
      }
    }
  } finally {
    for (const s of sides) {
      await s.feltd?.stop();
      for (const n of [s.pod, s.host]) {
        try {
          ip('netns', 'del', n);
        } catch {
          // never made
        }
      }
      rmSync(s.data, { recursive: true, force: true });
    }
  }
  const by = (f: (s: Side) => number) => new Map(sides.map((s) => [s.f.name, f(s)] as const));
  console.log(
    heading(
      `bridge + portmap + bandwidth + tuning + firewall, a conflist run by the bench (one process per plugin), ${N} ADD+DEL cycles each, sides rotated`,
      before,
    ),
  );
  console.log(
    ratioTable('ms', [
      { what: 'ADD', bySide: by((s) => median(s.add)) },
      { what: 'DEL', bySide: by((s) => median(s.del)) },
      { what: 'ADD+DEL', bySide: by((s) => median(s.add.map((x, i) => x + s.del[i]!))) },
    ]),
  );
}

await main();
