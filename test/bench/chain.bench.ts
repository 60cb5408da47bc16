// npm run bench:chain: N ADD+DEL cycles of the conflist bridge + portmap + bandwidth + tuning + firewall, run by
// the same runtime (`felt cni`) once with felt's plugins and once with the reference plugins in /usr/lib/cni,
// alternately in one run, each side in its own host namespace. Prints medians and the ratio felt/reference
// as a markdown table (pasted into docs/benchmarks.md).

import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FELT_CNI, REF_CNI, ROOT } from '../support/cni.ts';

const N = Number(process.env['BENCH_N'] ?? 20);
const FELT = join(ROOT, 'dist', 'bin', 'felt');
const tag = `fc${process.pid}`;
const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Side {
  readonly name: string;
  readonly path: string;
  readonly host: string;
  readonly dir: string;
  readonly add: number[];
  readonly del: number[];
}

const conflist = (data: string) => ({
  cniVersion: '1.0.0',
  name: 'benchchain',
  plugins: [
    { type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: true, ipam: { type: 'host-local', ranges: [[{ subnet: '10.98.0.0/16' }]], dataDir: data } },
    { type: 'portmap', capabilities: { portMappings: true }, snat: true },
    { type: 'bandwidth', capabilities: { bandwidth: true } },
    { type: 'tuning', sysctl: { 'net.ipv4.conf.IFNAME.arp_notify': '1' }, dataDir: data },
    { type: 'firewall', dataDir: data },
  ],
});

const capArgs = JSON.stringify({
  portMappings: [{ hostPort: 18081, containerPort: 80, protocol: 'tcp' }],
  bandwidth: { ingressRate: 100_000_000, ingressBurst: 1_000_000, egressRate: 100_000_000, egressBurst: 1_000_000 },
});

function timed(argv: string[]): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (b: Buffer) => (err += b.toString()));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`${argv.slice(-8).join(' ')}: ${err}`))));
  });
}

async function main(): Promise<void> {
  const sides: Side[] = ['felt', 'reference'].map((name) => {
    const dir = mkdtempSync(join(tmpdir(), `chain-bench-${name}-`));
    mkdirSync(join(dir, 'net.d'));
    writeFileSync(join(dir, 'net.d', '10-bench.conflist'), JSON.stringify(conflist(join(dir, 'data'))));
    return { name, path: name === 'felt' ? FELT_CNI : REF_CNI, host: `${tag}-${name}`, dir, add: [], del: [] };
  });
  for (const s of sides) ip('netns', 'add', s.host);
  try {
    for (let i = -1; i < N; i++) {
      for (const s of i % 2 === 0 ? sides : [...sides].reverse()) {
        const pod = `${tag}-pod`;
        ip('netns', 'add', pod);
        try {
          const run = (verb: string) =>
            timed([
              'ip', 'netns', 'exec', s.host, 'env', `CNI_PATH=${s.path}`, FELT, 'cni', verb, 'benchchain', `/var/run/netns/${pod}`,
              '--container-id', `c${i + 1}`, '--conf-dir', join(s.dir, 'net.d'), '--cache-dir', join(s.dir, 'cache'), '--data-dir', join(s.dir, 'data'),
              '--cap-args', capArgs,
            ]);
          const a = await run('add');
          const d = await run('del');
          if (i >= 0) {
            s.add.push(a);
            s.del.push(d);
          }
        } finally {
          ip('netns', 'del', pod);
        }
      }
    }
  } finally {
    for (const s of sides) {
      ip('netns', 'del', s.host);
      rmSync(s.dir, { recursive: true, force: true });
    }
  }
  const [f, r] = sides as [Side, Side];
  const row = (what: string, a: number[], b: number[]) => `| ${what} | ${median(a).toFixed(1)} | ${median(b).toFixed(1)} | ${(median(a) / median(b)).toFixed(2)} |`;
  console.log(`bridge + portmap + bandwidth + tuning + firewall through felt cni, ${N} ADD+DEL cycles each, alternating, ${new Date().toISOString().slice(0, 10)}, node ${process.version}`);
  console.log('| command | felt median ms | reference median ms | ratio felt/ref |');
  console.log('|---|---|---|---|');
  console.log(row('ADD', f.add, r.add));
  console.log(row('DEL', f.del, r.del));
  console.log(row('ADD+DEL', f.add.map((x, i) => x + f.del[i]!), r.add.map((x, i) => x + r.del[i]!)));
}

await main();
