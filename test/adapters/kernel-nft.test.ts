// nftables through the Linux adapter and the memory twin, in a throwaway namespace: tables, owned and shared
// chains and marked rules converge (plan(d, observe()) = []) in both; foreign rules stay; hostile strings in a
// comment and in expression values stay values (one rule, the comment read back as written); a rule deleted
// meanwhile does not fail the batch; nothing is read when nothing names nftables.

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linuxKernel } from '../../adapters/kernel/linux.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { invocations, steps } from '../../adapters/kernel/render.ts';
import type { Kernel, ObserveRequest } from '../../adapters/kernel/types.ts';
import {
  emptyKernelState,
  type KernelState,
  type NftChain,
  type NftJson,
  type NftRule,
  type Op,
  type OwnershipScope,
} from '../../core/kernel/model.ts';
import { describeOp, plan } from '../../core/kernel/plan.ts';
import { renderMasquerade } from '../../core/netfilter/masquerade.ts';
import { masqFor } from '../../core/cni/masq.ts';
import { flannelNftables, flannelNftScope, flannelNftTables } from '../../core/netfilter/flannel.ts';
import { cleanupNetns, createNetns, type Netns } from '../support/netns.ts';

const st = (p: Partial<KernelState>): KernelState => ({ ...emptyKernelState(), ...p });
const sc = (p: Partial<OwnershipScope>): OwnershipScope => ({ links: [], devices: [], chains: [], ruleMarkers: [], ...p });

async function observe(k: Kernel, req: ObserveRequest): Promise<KernelState> {
  const r = await k.observe(req)();
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
}
async function apply(k: Kernel, ops: readonly Op[]): Promise<void> {
  const r = await k.apply(ops)();
  if (E.isLeft(r)) throw new Error(`${r.left.msg}\n${ops.map(describeOp).join('\n')}`);
}

let pod: Netns;
let spawns: string[][];
let k: Kernel;
beforeAll(async () => {
  pod = await createNetns('felt-nft');
  spawns = [];
  k = linuxKernel({ pid: process.pid, hostNetns: pod.path, onSpawn: (a) => void spawns.push([...a]) });
});
afterAll(async () => {
  await cleanupNetns();
});

const T = 'felt_test';
const base = (ns: string) => ({ ns, family: 'inet' as const, table: T });
const HOSTILE = 'x" ; } delete table inet felt_test ; chain y { \n drop';
function desired(ns: string, comments: readonly string[]): KernelState {
  const shared: NftChain = { ...base(ns), name: 'pods', rules: [], shared: true };
  const owned: NftChain = {
    ...base(ns),
    name: 'post',
    base: { type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' },
    rules: [{ expr: [{ goto: { target: 'pods' } }] }],
  };
  const rules: NftRule[] = comments.map((comment, i) => ({
    ...base(ns),
    chain: 'pods',
    comment,
    expr: [
      { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: `10.9.0.${i + 2}` } },
      { masquerade: null },
    ] as NftJson[],
  }));
  return st({ nftTables: [{ ns, family: 'inet', name: T }], nftChains: [shared, owned], nftRules: rules });
}
const scope = (ns: string): OwnershipScope =>
  sc({ nftChains: [{ ...base(ns), chain: 'post' }], nftRuleMarkers: [{ ...base(ns), chain: 'pods', comment: 'felt:' }] });

describe('nftables through the Linux adapter', () => {
  it('converges: tables, an owned base chain, a shared chain and marked rules; plan(d, observe) = []', async () => {
    const d = desired('', ['felt: a', 'felt: b']);
    await apply(k, plan(d, await observe(k, { namespaces: [''], ip: false, desired: d, scope: scope('') }), scope('')));
    const seen = await observe(k, { namespaces: [''], ip: false, desired: d, scope: scope('') });
    expect(plan(d, seen, scope(''))).toEqual([]);
    expect(seen.nftRules!.filter((r) => r.chain === 'pods').map((r) => r.comment)).toEqual(['felt: a', 'felt: b']);
  });

  it('removes a marked rule that is no longer desired, leaves a foreign one, and survives a rule gone meanwhile', async () => {
    await pod.run(['nft', 'add', 'rule', 'inet', T, 'pods', 'ip', 'saddr', '10.9.9.9', 'counter', 'comment', '"someone else"']);
    const d = desired('', ['felt: a']);
    const seen = await observe(k, { namespaces: [''], ip: false, desired: d, scope: scope('') });
    const ops = plan(d, seen, scope(''));
    expect(ops.map((o) => o.op)).toEqual(['nft.rule.del']);
    // Delete it behind plan's back: the batch must still succeed.
    const h = (ops[0] as Extract<Op, { op: 'nft.rule.del' }>).rule.handle;
    await pod.run(['nft', 'delete', 'rule', 'inet', T, 'pods', 'handle', String(h)]);
    await apply(k, ops);
    const after = await observe(k, { namespaces: [''], ip: false, desired: d, scope: scope('') });
    expect(plan(d, after, scope(''))).toEqual([]);
    expect(after.nftRules!.filter((r) => r.chain === 'pods').map((r) => r.comment)).toEqual(['felt: a', 'someone else']);
  });

  it('a hostile comment is one value: one rule, read back as written', async () => {
    const d = desired('', ['felt: a', `felt: ${HOSTILE}`]);
    await apply(k, plan(d, await observe(k, { namespaces: [''], ip: false, desired: d, scope: scope('') }), scope('')));
    const seen = await observe(k, { namespaces: [''], ip: false, desired: d, scope: scope('') });
    expect(plan(d, seen, scope(''))).toEqual([]);
    expect(seen.nftTables!.map((t) => t.name)).toEqual([T]);
    expect(seen.nftRules!.filter((r) => r.comment?.startsWith('felt:')).map((r) => r.comment)).toEqual(['felt: a', `felt: ${HOSTILE}`]);
  });

  it('the memory twin agrees: same ops from the same start, and converges', () => {
    const m = memoryKernel();
    const d = desired('/run/netns/x', ['felt: a', 'felt: b']);
    const ops = plan(d, m.state(), scope('/run/netns/x'));
    expect(E.isRight(m.applySync(ops))).toBe(true);
    expect(plan(d, m.state(), scope('/run/netns/x'))).toEqual([]);
    // DEL: nothing desired; the marked rules go, the shared chain and table stay, the owned chain goes.
    const gone = plan(emptyKernelState(), m.state(), scope('/run/netns/x'));
    expect(gone.map((o) => o.op).sort()).toEqual(['nft.chain.del', 'nft.rule.del', 'nft.rule.del']);
    expect(E.isRight(m.applySync(gone))).toBe(true);
  });

  it("feltd's flannel tables converge: postrtg (mark, fully-random), forward, the remote-subnets set; an element changes alone", async () => {
    const parts = (remotes: string[]) => {
      const x = flannelNftables('', {
        family: 4,
        cluster: '10.244.0.0/16',
        pod: '10.244.1.0/24',
        remotes,
        ipMasq: true,
        forwardRules: true,
        randomFully: true,
      });
      return st({ nftTables: flannelNftTables(''), ...x });
    };
    const sc6 = sc(flannelNftScope(''));
    const d = parts(['10.244.2.0/24', '10.244.3.0/24']);
    await apply(k, plan(d, await observe(k, { namespaces: [''], ip: false, desired: d, scope: sc6 }), sc6));
    expect(plan(d, await observe(k, { namespaces: [''], ip: false, desired: d, scope: sc6 }), sc6)).toEqual([]);
    const rs = await pod.run(['nft', 'list', 'table', 'ip', 'flannel-ipv4']);
    expect(rs).toContain('meta mark 0x00004000 return');
    expect(rs).toContain('ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random');
    const d2 = parts(['10.244.2.0/24', '10.244.4.0/24']);
    const ops = plan(d2, await observe(k, { namespaces: [''], ip: false, desired: d2, scope: sc6 }), sc6);
    expect(ops).toEqual([{ op: 'nft.set.elements', set: d2.nftSets![0], add: ['10.244.4.0/24'], del: ['10.244.3.0/24'] }]);
    await apply(k, ops);
    expect(plan(d2, await observe(k, { namespaces: [''], ip: false, desired: d2, scope: sc6 }), sc6)).toEqual([]);
    // 3,000 elements at once: more than one nft argument holds, still converges.
    const many = parts(Array.from({ length: 3000 }, (_, i) => `10.${100 + Math.floor(i / 256)}.${i % 256}.0/24`));
    await apply(k, plan(many, await observe(k, { namespaces: [''], ip: false, desired: many, scope: sc6 }), sc6));
    expect(plan(many, await observe(k, { namespaces: [''], ip: false, desired: many, scope: sc6 }), sc6)).toEqual([]);
    // Owned tables go whole when nothing wants them.
    await apply(k, plan(st({}), await observe(k, { namespaces: [''], ip: false, scope: sc6 }), sc6));
    expect((await observe(k, { namespaces: [''], ip: false, scope: sc6 })).nftTables).toEqual([]);
  });

  it('reads no nftables when nothing names them', async () => {
    spawns.length = 0;
    await observe(k, { namespaces: [pod.path] });
    expect(spawns.filter((a) => a.includes('nft'))).toEqual([]);
  });
});

describe('nftables rendering', () => {
  it('any string in any value field: one JSON document with exactly the intended commands, values intact (property)', () => {
    const text = fc.oneof(
      fc.constantFrom(HOSTILE, '"', '\\', '\n', '}', ']}', '\u0000', "';", '$(x)'),
      fc.string({ maxLength: 24 }),
      fc.string({ unit: 'binary', maxLength: 24 }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(text, text), { minLength: 1, maxLength: 6 }), (pairs) => {
        const ops: Op[] = pairs.map(([comment, value]) => ({
          op: 'nft.rule.add',
          rule: {
            ...base(''),
            chain: 'pods',
            comment,
            expr: [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: value } }, { accept: null }] as NftJson[],
          },
        }));
        const invs = steps(ops, { pid: 1 }).flatMap((s) => invocations(s, { pid: 1 }));
        expect(invs).toHaveLength(1);
        const argv = (invs[0] as { argv: readonly string[] }).argv;
        expect(argv.slice(0, 2)).toEqual(['nft', '-j']);
        expect(argv).toHaveLength(3);
        const doc = JSON.parse(argv[2]!);
        expect(doc.nftables).toHaveLength(pairs.length);
        doc.nftables.forEach((c: any, i: number) => {
          expect(Object.keys(c)).toEqual(['add']);
          expect(c.add.rule.comment).toBe(pairs[i]![0]);
          expect(c.add.rule.expr[0].match.right).toBe(pairs[i]![1]);
        });
      }),
    );
  });

  it('refuses a table or chain name that is not one word, and a table comment that is not plain text', () => {
    const bad: Op[] = [
      { op: 'nft.chain.add', chain: { ...base(''), name: 'a b', rules: [] } },
      { op: 'nft.rule.add', rule: { ...base(''), table: 'x;y', chain: 'c', expr: [] } },
      { op: 'nft.table.add', table: { ns: '', family: 'inet', name: 't', comment: 'a" ; flush ruleset ; "' } },
    ];
    for (const o of bad) expect(() => steps([o], { pid: 1 }), describeOp(o)).toThrow(/^refusing to /);
  });

  it('masquerade as iptables is byte-identical to the iptables chains felt always wrote', () => {
    const addrs = ['10.22.0.5/16', 'fd00::5/64'];
    const r = renderMasquerade({ ns: '', network: 'net', ifname: 'eth0', containerId: 'c1', addresses: addrs }, 'iptables');
    expect(r).toEqual(masqFor('', 'net', 'c1', addrs));
  });
});
