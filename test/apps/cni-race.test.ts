// A concurrent ADD and DEL of one container (issue 15, item 5): calls for one network + container + ifname are
// serialized (apps/cni/call-lock.ts), so every round ends with the whole attachment and its allocation, or
// with nothing; never a pod holding an address host-local has released, and never an address handed out
// twice. The DEL starts at a seeded random moment within the ADD's duration (FELT_RACE_SEED picks another).

import { spawn } from 'node:child_process';
import { chmodSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { addrs, cni, feltAllocations, iptSave, nsPath, Sandbox, veths, type Call } from '../support/ns.ts';

const sb = new Sandbox();
afterAll(() => sb.cleanup());

const ROUNDS = 12;

/** mulberry32: small and seeded. */
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

const confOf = (dataDir: string) => ({
  cniVersion: '1.0.0',
  name: 'racenet',
  type: 'bridge',
  bridge: 'brrace0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.79.0.0/24' }]], dataDir },
});

const after = <T>(ms: number, f: () => Promise<T>): Promise<T> =>
  new Promise((resolve, reject) => setTimeout(() => f().then(resolve, reject), ms));

describe('concurrent ADD and DEL of one container', () => {
  it(`${ROUNDS} rounds: a whole attachment with its allocation or nothing, and no address given twice`, async () => {
    const seed = Number(process.env['FELT_RACE_SEED'] ?? 1);
    const rnd = prng(seed);
    const host = await sb.ns();
    const pod = await sb.ns();
    const other = await sb.ns();
    const dataDir = sb.dir();
    const conf = confOf(dataDir);
    const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-race' };
    const o: Call = { dir: FELT_CNI, hostNs: host, pod: other, cid: 'ctr-other' };
    // One ADD alone, for the spread of the DEL's start.
    const probe = await cni(c, 'ADD', conf);
    expect(probe.code, probe.stdout).toBe(0);
    expect((await cni(c, 'DEL', conf)).code).toBe(0);
    const span = Math.max(20, probe.ms);

    const outcomes: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const delay = Math.floor(rnd() * span);
      const [add, del] = await Promise.all([cni(c, 'ADD', conf), after(delay, () => cni(c, 'DEL', conf))]);
      const what = `round ${round} (seed ${seed}, DEL after ${delay} ms): ADD ${add.code} ${add.stdout.trim()}, DEL ${del.code} ${del.stdout.trim()}`;
      expect(del.code, what).toBe(0);
      const eth0 = (await addrs(pod))['eth0'] ?? [];
      const mine = (await feltAllocations(dataDir)).filter((a) => a.containerId === 'ctr-race');
      const hostVeths = await veths(host);
      if (eth0.length === 0) {
        // Nothing: no allocation, no host veth.
        expect({ mine, hostVeths }, what).toEqual({ mine: [], hostVeths: [] });
        outcomes.push('none');
      } else {
        // The whole attachment: the pod's address is the one allocated to it, one host veth.
        expect(
          mine.map((a) => `${a.ip}/24`),
          what,
        ).toEqual(eth0);
        expect(hostVeths, what).toHaveLength(1);
        outcomes.push('attached');
      }
      // Another pod never gets an address a pod still has.
      const next = await cni(o, 'ADD', conf);
      expect(next.code, next.stdout).toBe(0);
      expect(eth0, what).not.toContain(next.json.ips[0].address);
      expect((await cni(o, 'DEL', conf)).code).toBe(0);
      expect((await cni(c, 'DEL', conf)).code).toBe(0);
      expect(await feltAllocations(dataDir)).toEqual([]);
      expect(await veths(host)).toEqual([]);
    }
    // Both outcomes are fine; the log says which each round had.
    console.log(`concurrent ADD+DEL outcomes (seed ${seed}): ${outcomes.join(' ')}`);
  });
});

describe('concurrent felt cni add and del of one container', () => {
  // A fixture plugin between bridge and firewall holds the ADD (after bridge, before firewall) until the test
  // opens its gate; the DEL starts meanwhile. felt cni holds the attachment's lock for the whole chain, so the
  // DEL waits (FELT_TRACE shows it) and then removes the whole attachment. Without that lock the DEL would run
  // in the gap and the ADD would add firewall rules for a released address and cache an attachment that is gone.
  it('10 rounds, DEL inside the chain of the ADD: the whole attachment (cache, interface, address, firewall rules) or nothing', async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const [conf, cache, data, gate] = [sb.dir(), sb.dir(), sb.dir(), sb.dir()];
    writeFileSync(
      join(gate, 'gate'),
      `#!${process.execPath}\n` +
        `const fs = require('fs');\n` +
        `if (process.env.CNI_COMMAND !== 'ADD') process.exit(0);\n` +
        `const conf = JSON.parse(fs.readFileSync(0, 'utf8'));\n` +
        `const t = setInterval(() => { if (fs.existsSync(${JSON.stringify(join(gate, 'open'))})) { clearInterval(t); process.stdout.write(JSON.stringify({ ...conf.prevResult, cniVersion: conf.cniVersion })); } }, 10);\n`,
    );
    chmodSync(join(gate, 'gate'), 0o755);
    writeFileSync(
      join(conf, '10-racechain.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'racechain',
        plugins: [
          {
            type: 'bridge',
            bridge: 'brrace1',
            isGateway: true,
            ipMasq: true,
            ipam: { type: 'host-local', ranges: [[{ subnet: '10.69.0.0/24' }]], dataDir: data },
          },
          { type: 'gate' },
          { type: 'firewall', dataDir: data },
        ],
      }),
    );
    const argv = (verb: string, trace = false): string[] => [
      'ip',
      'netns',
      'exec',
      host,
      'env',
      `CNI_PATH=${FELT_CNI}:${REF_CNI}:${gate}`,
      ...(trace ? ['FELT_TRACE=1'] : []),
      join(ROOT, 'dist', 'bin', 'felt'),
      'cni',
      verb,
      'racechain',
      nsPath(pod),
      '--container-id',
      'ctr-chain',
      '--conf-dir',
      conf,
      '--cache-dir',
      cache,
      '--data-dir',
      data,
    ];
    const start = (verb: string, trace = false) => {
      const [cmd, ...rest] = argv(verb, trace);
      const child = spawn(cmd!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
      const out = { code: undefined as number | undefined, stderr: '' };
      child.stderr.on('data', (b: Buffer) => (out.stderr += b.toString()));
      child.stdout.resume();
      const done = new Promise<typeof out>((resolve) => child.on('close', (code) => resolve(((out.code = code ?? -1), out))));
      return { out, done };
    };
    const forwardRules = async (): Promise<string[]> =>
      (await iptSave(host, 4, 'filter')).filter(
        (l) => l.startsWith('-A CNI-FORWARD') && l.includes('-j ACCEPT') && !l.includes('CNI-ADMIN'),
      );
    const cacheFile = join(cache, 'results', 'racechain-ctr-chain-eth0');
    for (let round = 0; round < 10; round++) {
      rmSync(join(gate, 'open'), { force: true });
      const add = start('add');
      await eventually(async () => ((await addrs(pod))['eth0'] ?? []).length > 0, {
        what: 'bridge has attached the pod (the gate holds the rest of the ADD)',
      });
      const del = start('del', true);
      // The DEL has had its chance: it finished, or it waits for the lock.
      await eventually(() => del.out.code !== undefined || del.out.stderr.includes('waiting for the call lock'), {
        what: 'the DEL finishes or waits for the lock',
      });
      writeFileSync(join(gate, 'open'), '');
      const [a, d] = await Promise.all([add.done, del.done]);
      const what = `round ${round}: add ${a.code} ${a.stderr.trim()}, del ${d.code} ${d.code === 0 ? '' : d.stderr.trim()}`;
      expect(a.code, what).toBe(0);
      expect(d.code, what).toBe(0);
      // The DEL came after the whole ADD: nothing left.
      const state = {
        cached: existsSync(cacheFile),
        eth0: (await addrs(pod))['eth0'] ?? [],
        allocations: await feltAllocations(data),
        rules: await forwardRules(),
        veths: await veths(host),
      };
      expect(state, what).toEqual({ cached: false, eth0: [], allocations: [], rules: [], veths: [] });
      expect(d.stderr, what).toContain('waiting for the call lock of racechain ctr-chain eth0');
    }
  });
});
