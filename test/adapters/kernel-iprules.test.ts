// Policy rules and kernel-made routes through the Linux adapter, in a throwaway namespace: rules of both
// families converge (plan(d, observe()) = []), the kernel's own rules and foreign ones stay, deleting what is
// gone succeeds, and rules are read only when asked for.

import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linuxKernel } from '../../adapters/kernel/linux.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import type { Kernel, ObserveRequest } from '../../adapters/kernel/types.ts';
import { emptyKernelState, type IpRule, type KernelState, type Op, type OwnershipScope } from '../../core/kernel/model.ts';
import { describeOp, plan } from '../../core/kernel/plan.ts';
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
  pod = await createNetns('felt-iprule');
  spawns = [];
  // "HOST" is this test's namespace too: every read and write is entered with nsenter, never the root namespace.
  k = linuxKernel({ pid: process.pid, hostNetns: pod.path, onSpawn: (a) => void spawns.push([...a]) });
  await pod.run(['ip', 'link', 'add', 'name', 'e0', 'type', 'veth', 'peer', 'name', 'e1']);
  await pod.run(['ip', 'link', 'set', 'dev', 'e0', 'up']);
  await pod.run(['ip', 'link', 'set', 'dev', 'e1', 'up']);
  await pod.run(['ip', 'addr', 'add', '10.1.0.5/24', 'dev', 'e0']);
  await pod.run(['ip', 'rule', 'add', 'from', '192.168.99.1', 'table', '150']);
});

afterAll(async () => {
  await cleanupNetns();
});

const ns = (): string => pod.path;
const rules = (): IpRule[] => [
  { ns: ns(), family: 4, src: '10.1.0.5/32', table: 100 },
  { ns: ns(), family: 6, src: 'fd00::5/128', table: 101, priority: 1000 },
];

describe('policy rules through ip', () => {
  it('reads rules only when asked, both families, with the kernel defaults', async () => {
    spawns.length = 0;
    const plain = await observe(k, { namespaces: [ns()] });
    expect(plain.ipRules).toBeUndefined();
    expect(spawns.some((a) => a.includes('rule'))).toBe(false);
    const seen = await observe(k, { namespaces: [ns()], ipRules: true });
    const view = (seen.ipRules ?? []).map((r) => `${r.family} ${r.src} ${r.table} ${r.priority}`);
    expect(view).toEqual(
      expect.arrayContaining([
        '4 0.0.0.0/0 255 0',
        '4 0.0.0.0/0 254 32766',
        '4 0.0.0.0/0 253 32767',
        '4 192.168.99.1/32 150 32765',
        '6 ::/0 254 32766',
      ]),
    );
  });

  it('converges, leaves the defaults and the foreign rule, and removes its own again', async () => {
    const scope = sc({
      ruleSrcs: [
        { ns: ns(), src: '10.1.0.5/32' },
        { ns: ns(), src: 'fd00::5/128' },
      ],
    });
    const d = st({ routes: [{ ns: ns(), dst: '0.0.0.0/0', gw: '10.1.0.1', dev: 'e0', table: 100 }], ipRules: rules() });
    const req: ObserveRequest = { namespaces: [ns()], ipRules: true };
    const before = await observe(k, req);
    await apply(k, plan(d, before, scope));
    const after = await observe(k, req);
    expect(plan(d, after, scope).map(describeOp)).toEqual([]);
    expect(await pod.run(['ip', '-6', 'rule', 'show'])).toMatch(/^1000:\s+from fd00::5 lookup 101/m);
    expect(await pod.run(['ip', 'route', 'get', '8.8.8.8', 'from', '10.1.0.5'])).toMatch(/via 10\.1\.0\.1 dev e0 table 100/);

    // Gone by hand already, then removed: deleting what is not there succeeds.
    await pod.run(['ip', '-6', 'rule', 'del', 'from', 'fd00::5/128', 'table', '101']);
    await apply(k, plan(emptyKernelState(), after, scope));
    const end = await observe(k, req);
    expect(end.ipRules).toEqual(before.ipRules);
  });

  it('reports the prefix route of an address only with kernelRoutes', async () => {
    const without = await observe(k, { namespaces: [ns()] });
    const withK = await observe(k, { namespaces: [ns()], kernelRoutes: true });
    expect(without.routes.some((r) => r.dst === '10.1.0.0/24')).toBe(false);
    expect(withK.routes).toContainEqual({ ns: ns(), dst: '10.1.0.0/24', dev: 'e0', scope: 'link', src: '10.1.0.5' });
  });

  it('the twin agrees with the kernel: preferences it picks, a duplicate refused, deletion by preference', async () => {
    const fresh = await createNetns('felt-iprule');
    const real = linuxKernel({ pid: process.pid, hostNetns: fresh.path });
    const req: ObserveRequest = { namespaces: [fresh.path], ipRules: true };
    const twin = memoryKernel(st({ ipRules: (await observe(real, req)).ipRules ?? [] }));
    const r = (src: string, table: number, priority?: number): IpRule => ({
      ns: fresh.path,
      family: src.includes(':') ? 6 : 4,
      src,
      table,
      ...(priority !== undefined ? { priority } : {}),
    });
    const steps: Op[][] = [
      [
        { op: 'iprule.add', ipRule: r('10.1.0.5/32', 100) },
        { op: 'iprule.add', ipRule: r('10.1.0.6/32', 101) },
        { op: 'iprule.add', ipRule: r('fd00::5/128', 100) },
      ],
      [{ op: 'iprule.add', ipRule: r('10.1.0.7/32', 102, 200) }],
      [
        { op: 'iprule.del', ipRule: r('10.1.0.6/32', 101, 32764) },
        { op: 'iprule.del', ipRule: r('10.1.0.6/32', 101, 32764) },
      ],
    ];
    const view = (s: KernelState): string[] => (s.ipRules ?? []).map((x) => `${x.family} ${x.src} ${x.table} ${x.priority}`).sort();
    for (const ops of steps) {
      await apply(real, ops);
      expect(E.isRight(await twin.apply(ops)())).toBe(true);
      expect(view(await observe(twin, req))).toEqual(view(await observe(real, req)));
    }
    const dup: Op[] = [{ op: 'iprule.add', ipRule: r('10.1.0.7/32', 102, 200) }];
    const a = await real.apply(dup)();
    const b = await twin.apply(dup)();
    expect([E.isLeft(a) && /File exists/.test(a.left.msg), E.isLeft(b) && /File exists/.test(b.left.msg)]).toEqual([true, true]);
    await fresh.del();
  });
});
