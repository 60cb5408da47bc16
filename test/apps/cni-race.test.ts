// A concurrent ADD and DEL of one container (issue 15, item 5): calls for one network + container + ifname are
// serialized (apps/cni/call-lock.ts), so every round ends with the whole attachment and its allocation, or
// with nothing; never a pod holding an address host-local has released, and never an address handed out
// twice. The DEL starts at a seeded random moment within the ADD's duration (FELT_RACE_SEED picks another).

import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI } from '../support/cni.ts';
import { addrs, cni, feltAllocations, Sandbox, veths, type Call } from '../support/ns.ts';

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

const after = <T>(ms: number, f: () => Promise<T>): Promise<T> => new Promise((resolve, reject) => setTimeout(() => f().then(resolve, reject), ms));

describe('concurrent ADD and DEL of one container', () => {
  it(`${ROUNDS} rounds: a whole attachment with its allocation or nothing, and no address given twice`, async () => {
    const seed = Number(process.env['FELT_RACE_SEED'] ?? 15);
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
        expect(mine.map((a) => `${a.ip}/24`), what).toEqual(eth0);
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
