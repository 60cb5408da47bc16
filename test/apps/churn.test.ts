// Pod churn through felt's bridge + host-local, as a runtime starting and stopping many pods at once does:
// 20 ADDs spawned at once on one bridge network (the first wave on a fresh host namespace, so they also race
// to create the bridge and its gateway address), then 20 DELs at once, and the same again on the now
// existing bridge. Every call succeeds, no error mentioning EEXIST reaches the runtime, no address is handed
// out twice, and after the DELs nothing is left: no allocation, no attachment record, no host veth, no CNI-
// chain or rule. No timing is asserted (that is test/bench/churn.bench.ts).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as E from 'fp-ts/lib/Either.js';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { attachmentsProjection, attachmentStream } from '../../core/bridge/attachments.ts';
import { FELT_CNI, type CniOutcome } from '../support/cni.ts';
import { addrs, cni, cniChains, cniRules, feltAllocations, Sandbox, veths } from '../support/ns.ts';

const N = 20;
const NETWORK = 'churnnet';

const conf = (dataDir: string) => ({
  cniVersion: '1.0.0',
  name: NETWORK,
  type: 'bridge',
  bridge: 'cni0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.89.0.0/24' }]], dataDir },
});

/** The bridge's attachment records in the log (none when there is no log). */
function records(dataDir: string): number {
  const s = openSqliteStore(dataDir, { readonly: true });
  if (E.isLeft(s)) return 0;
  try {
    const l = s.right.load(attachmentStream(NETWORK), attachmentsProjection);
    if (E.isLeft(l)) throw new Error(l.left.msg);
    return Object.keys(l.right.state.attachments).length;
  } finally {
    s.right.close();
  }
}

const failures = (outs: readonly CniOutcome[]): string[] =>
  outs.filter((o) => o.code !== 0).map((o) => `${o.code}: ${o.stdout}${o.stderr}`);
const eexist = (outs: readonly CniOutcome[]): string[] => outs.map((o) => o.stdout + o.stderr).filter((t) => /EEXIST|File exists/i.test(t));

describe(`pod churn: ${N} ADDs at once, then ${N} DELs at once, twice`, () => {
  const sb = new Sandbox();
  let host = '';
  let dataDir = '';
  const pods: string[] = [];
  beforeAll(async () => {
    host = await sb.ns();
    dataDir = sb.dir();
    for (let i = 0; i < N; i++) pods.push(await sb.ns());
  });
  afterAll(() => sb.cleanup());

  for (const round of [1, 2]) {
    it(
      `round ${round}${round === 1 ? ' (fresh host: the ADDs race to create the bridge)' : ' (bridge exists)'}`,
      { timeout: 240_000 },
      async () => {
        const call = (pod: string, i: number) => ({ dir: FELT_CNI, hostNs: host, pod, cid: `r${round}-c${i}` });
        const added = await Promise.all(pods.map((pod, i) => cni(call(pod, i), 'ADD', conf(dataDir))));
        expect(failures(added)).toEqual([]);
        expect(eexist(added)).toEqual([]);

        const ips = added.map((o) => (o.json as { ips: { address: string }[] }).ips[0]!.address);
        expect(new Set(ips).size).toBe(N);
        // What the results say is what the pods have and what the log holds.
        const inPods = await Promise.all(pods.map(async (pod) => (await addrs(pod))['eth0']?.[0]));
        expect(inPods.sort()).toEqual([...ips].sort());
        const held = await feltAllocations(dataDir);
        expect(held.map((a) => a.containerId).sort()).toEqual(pods.map((_, i) => `r${round}-c${i}`).sort());
        expect(new Set(held.map((a) => a.ip)).size).toBe(N);
        expect((await veths(host)).length).toBe(N);
        expect(records(dataDir)).toBe(N);
        // One masquerade chain and one POSTROUTING jump per pod.
        expect((await cniChains(host)).length).toBe(N);
        expect((await cniRules(host)).filter((r) => r.startsWith('-A POSTROUTING')).length).toBe(N);

        const deleted = await Promise.all(pods.map((pod, i) => cni(call(pod, i), 'DEL', conf(dataDir))));
        expect(failures(deleted)).toEqual([]);
        expect(eexist(deleted)).toEqual([]);
        expect(await feltAllocations(dataDir)).toEqual([]);
        expect(records(dataDir)).toBe(0);
        expect(await veths(host)).toEqual([]);
        expect(await cniChains(host)).toEqual([]);
        expect(await cniRules(host)).toEqual([]);
        for (const pod of pods) expect((await addrs(pod))['eth0']).toBeUndefined();
      },
    );
  }
});
