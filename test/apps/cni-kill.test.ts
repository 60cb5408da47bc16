// `felt cni add` of a bridge + firewall chain killed with SIGKILL at a random moment (issue 15, item 7), then
// `felt cni del`: nothing stays. The firewall records the addresses before it changes the filter table (as
// bridge records its veth), so a DEL without a cached result (the runtime died before writing it) still
// removes the CNI-FORWARD rules; iptables-save of the test's host namespace shows none left.
//
// A third plugin (a test fixture, `blocker`) never answers its ADD, so the chain never completes by itself:
// every kill lands somewhere inside it, before, in or after bridge and firewall. Kill times are seeded
// (FELT_KILL_SEED picks another) and spread over 0 to 1.5 times what the first two plugins take.

import { spawn } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { exec, feltAllocations, iptSave, nsPath, Sandbox, veths } from '../support/ns.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const KILLS = 10;
const sb = new Sandbox();
let conf = '';
let cache = '';
let data = '';
let blockerDir = '';

beforeAll(() => {
  conf = sb.dir();
  cache = sb.dir();
  data = sb.dir();
  blockerDir = sb.dir();
  // ADD: waits until killed. Anything else: done.
  writeFileSync(
    join(blockerDir, 'blocker'),
    `#!${process.execPath}\nif (process.env.CNI_COMMAND === 'ADD') setInterval(() => undefined, 1 << 30);\n`,
  );
  chmodSync(join(blockerDir, 'blocker'), 0o755);
  writeFileSync(
    join(conf, '10-killnet.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'killnet',
      plugins: [
        {
          type: 'bridge',
          bridge: 'brkill0',
          isGateway: true,
          ipMasq: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: '10.76.0.0/24' }]], dataDir: data },
        },
        { type: 'firewall', dataDir: data },
        { type: 'blocker' },
      ],
    }),
  );
});
afterAll(() => sb.cleanup());

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const argv = (verb: string, host: string, pod: string, cid: string): string[] => [
  'ip',
  'netns',
  'exec',
  host,
  'env',
  `CNI_PATH=${FELT_CNI}:${REF_CNI}:${blockerDir}`,
  FELT,
  'cni',
  verb,
  'killnet',
  nsPath(pod),
  '--container-id',
  cid,
  '--conf-dir',
  conf,
  '--cache-dir',
  cache,
  '--data-dir',
  data,
];

/** Live (not zombie) processes in process group `pgid`. */
function liveInGroup(pgid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) === pgid && f[0] !== 'Z' && f[0] !== 'X') out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * `felt cni add` as its own process group (its plugins' processes too), SIGKILLed after `delayMs`, or (delay
 * undefined) once the firewall's rules are in; resolves when the whole group is gone.
 */
async function addAndKill(host: string, pod: string, cid: string, delayMs: number | undefined): Promise<string> {
  const [cmd, ...rest] = argv('add', host, pod, cid);
  const child = spawn(cmd!, rest, { detached: true, stdio: ['ignore', 'ignore', 'ignore'] });
  const pid = child.pid!;
  const exited = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(signal === 'SIGKILL' ? 'killed' : `exited ${code}`));
  });
  if (delayMs === undefined)
    await eventually(async () => (await forwardRules(host)).length === 2, { what: `the firewall rules of ${cid}`, timeoutMs: 30_000 });
  else await new Promise((r) => setTimeout(r, delayMs));
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
  const outcome = await exited;
  await eventually(() => liveInGroup(pid).length === 0, { what: `the process group of ${cid}`, timeoutMs: 30_000 });
  return outcome;
}

const forwardRules = async (host: string): Promise<string[]> =>
  [...(await iptSave(host, 4, 'filter')), ...(await iptSave(host, 6, 'filter'))].filter(
    (l) => l.startsWith('-A CNI-FORWARD') && l.includes('-j ACCEPT') && !l.includes('CNI-ADMIN'),
  );

describe('felt cni add killed, then del', () => {
  it(`${KILLS} SIGKILLs at random moments: DEL leaves no CNI-FORWARD rule, veth, masquerade rule or address`, async () => {
    const seed = Number(process.env['FELT_KILL_SEED'] ?? 7);
    const rnd = prng(seed);
    const host = await sb.ns();
    const probePod = await sb.ns();
    // How long bridge and firewall take: until the firewall's rules are in (the blocker holds the chain).
    const t0 = performance.now();
    expect(await addAndKill(host, probePod, 'kill-probe', undefined)).toBe('killed');
    const span = performance.now() - t0;
    const probeDel = await exec(argv('del', host, probePod, 'kill-probe'));
    expect(probeDel.code, probeDel.stderr).toBe(0);
    expect(await forwardRules(host)).toEqual([]);

    const outcomes: string[] = [];
    for (let i = 0; i < KILLS; i++) {
      const pod = await sb.ns();
      const cid = `kill-${i}`;
      const delay = Math.floor(span * 1.5 * rnd());
      const outcome = await addAndKill(host, pod, cid, delay);
      const rulesAfterKill = (await forwardRules(host)).length;
      outcomes.push(`${delay} ms: ${outcome}, ${rulesAfterKill} rules`);
      const del = await exec(argv('del', host, pod, cid));
      const what = `kill ${i} (seed ${seed}) after ${delay} ms: ${outcome}, ${rulesAfterKill} rules; DEL ${del.code} ${del.stderr}`;
      expect(del.code, what).toBe(0);
      expect(await forwardRules(host), what).toEqual([]);
      expect(
        (await iptSave(host, 4, 'nat')).filter((l) => l.startsWith('-A') && l.includes('CNI-')),
        what,
      ).toEqual([]);
      expect(await veths(host), what).toEqual([]);
      expect(await feltAllocations(data), what).toEqual([]);
      await sb.delNs(pod);
    }
    console.log(`felt cni add killed (seed ${seed}): ${outcomes.join('; ')}`);
  });
});
