// adapters/kernel/waves.ts on the memory twin: bridge attachments made and removed by calls running at once
// through one wave kernel end as the same calls made one by one do (same results, same kernel), with fewer
// reads and applies; a call whose read or apply fails gets its own error and the others do not notice.

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import type { Kernel, KernelError } from '../../adapters/kernel/types.ts';
import { unionRequest, waveKernel } from '../../adapters/kernel/waves.ts';
import { parseBridgeConf } from '../../core/bridge/config.ts';
import { attachmentPlan, attachmentScope } from '../../core/bridge/desired.ts';
import { parseNetConf } from '../../core/cni/env.ts';
import { PLUGIN_VERSIONS } from '../../core/cni/result.ts';
import { emptyKernelState, HOST, opNs, type KernelState, type Op, type OwnershipScope } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';

const conf = E.getOrElseW((e) => {
  throw new Error(JSON.stringify(e));
})(
  E.chain((nc: Parameters<typeof parseBridgeConf>[0]) => parseBridgeConf(nc, {}))(
    parseNetConf(
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'wavenet',
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipMasq: true,
        ipam: { type: 'host-local' },
      }),
      PLUGIN_VERSIONS,
      'ADD',
    ),
  ),
);

const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

interface Pod {
  readonly i: number;
  readonly netns: string;
  readonly cid: string;
  readonly hostVeth: string;
  readonly scope: OwnershipScope;
}

const pod = (i: number, netns = `/var/run/netns/wave-pod${i}`): Pod => {
  const cid = `c${i}`;
  const hostVeth = `veth${hex2(i)}wave`;
  return { i, netns, cid, hostVeth, scope: attachmentScope(conf, cid, 'eth0', netns, hostVeth) };
};

/** As bridge.ts observes: the attachment's scope plus the bridge. */
const observeScope = (p: Pod): OwnershipScope => ({
  ...p.scope,
  links: [...p.scope.links, { ns: HOST, name: 'cni0' }],
  devices: [...p.scope.devices, { ns: HOST, dev: 'cni0' }],
});

const observe = (k: Kernel, p: Pod) => k.observe({ namespaces: [HOST, p.netns], scope: observeScope(p), iptables: [4] })();

const desired = (p: Pod, bridgeMac: string): KernelState => {
  const d = attachmentPlan({
    conf,
    containerId: p.cid,
    ifname: 'eth0',
    netns: p.netns,
    hostVeth: p.hostVeth,
    hostVethMac: `02:00:00:00:01:${hex2(p.i)}`,
    containerMac: `02:00:00:00:02:${hex2(p.i)}`,
    bridgeMac,
    ipam: { ips: [{ address: `10.1.0.${p.i + 2}/24` }], routes: [] },
  });
  if (E.isLeft(d)) throw new Error(d.left.msg);
  return d.right.kernel;
};

/** bridge.ts's ADD against `k`: observe, plan, apply; observe again after "File exists" (a racing ADD made the bridge). */
/** `extra` (a host op) before the call's first link op: after its iptables ops, among its host ip ops. */
const withExtra = (ops: readonly Op[], extra: readonly Op[]): Op[] => {
  const at = ops.findIndex((o) => o.op.startsWith('link.') || opNs(o) !== HOST);
  return at < 0 ? [...ops, ...extra] : [...ops.slice(0, at), ...extra, ...ops.slice(at)];
};

async function add(k: Kernel, p: Pod, extra: readonly Op[] = []): Promise<E.Either<KernelError, void>> {
  for (let attempt = 1; ; attempt++) {
    const seen = await observe(k, p);
    if (E.isLeft(seen)) return seen;
    const br = seen.right.links.find((l) => l.ns === HOST && l.name === 'cni0');
    const ops = withExtra(plan(desired(p, br?.mac ?? '02:00:00:00:00:01'), seen.right, p.scope), extra);
    const r = await k.apply(ops)();
    if (E.isRight(r) || attempt >= 4 || !/File exists/.test(r.left.msg)) return r;
  }
}

async function del(k: Kernel, p: Pod, extra: readonly Op[] = []): Promise<E.Either<KernelError, void>> {
  const seen = await observe(k, p);
  if (E.isLeft(seen)) return seen;
  return k.apply(withExtra(plan(emptyKernelState(), seen.right, p.scope), extra))();
}

/** A kernel state, order aside. */
const norm = (s: KernelState): Record<string, string[]> =>
  Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Array.isArray(v) ? v.map((x) => JSON.stringify(x)).sort() : []]));

/** `n` attachments made at once then removed at once through a wave kernel, and one by one on a twin of its own. */
async function both(n: number, fresh: boolean, ghost: ReadonlySet<number> = new Set()) {
  // A host link that does not exist: an op on it (first among the call's host ops) fails, as the call's alone would.
  const broken = (i: number): Op[] =>
    ghost.has(i) ? [{ op: 'link.set', link: { ns: HOST, name: `ghost${i}`, kind: 'veth' }, changes: { up: true } }] : [];
  const pods = Array.from({ length: n }, (_, i) => pod(i));
  const seed = memoryKernel();
  // A node that serves pods already: the bridge is there with its gateway address.
  if (!fresh) {
    const seeded = seed.applySync([
      { op: 'link.add', link: { ns: HOST, name: 'cni0', kind: 'bridge', up: true, mac: '02:00:00:00:00:01' } },
      { op: 'addr.add', addr: { ns: HOST, dev: 'cni0', cidr: '10.1.0.1/24' } },
    ]);
    if (E.isLeft(seeded)) throw new Error(seeded.left.msg);
  }
  const one = memoryKernel(seed.state());
  const alone = { add: [] as E.Either<KernelError, void>[], del: [] as E.Either<KernelError, void>[] };
  for (const p of pods) alone.add.push(await add(one, p, broken(p.i)));
  const afterAdd = norm(one.state());
  for (const p of pods) alone.del.push(await del(one, p, broken(p.i)));
  const inner = memoryKernel(seed.state());
  const wave = waveKernel(inner);
  const together = { add: await Promise.all(pods.map((p) => add(wave, p, broken(p.i)))) };
  const afterAddTogether = norm(inner.state());
  const dels = await Promise.all(pods.map((p) => del(wave, p, broken(p.i))));
  return {
    alone,
    together: { ...together, del: dels },
    afterAdd,
    afterAddTogether,
    end: norm(one.state()),
    endTogether: norm(inner.state()),
    stats: wave.stats(),
  };
}

const ok = (r: E.Either<KernelError, void>): boolean | string => (E.isRight(r) ? true : r.left.msg);

describe('waves: calls at once through one wave kernel', () => {
  it('make and remove the same attachments as the calls one by one, with one read and a few applies per wave', async () => {
    const r = await both(20, false);
    expect(r.together.add.map(ok)).toEqual(r.alone.add.map(ok));
    expect(r.together.del.map(ok)).toEqual(r.alone.del.map(ok));
    expect(r.afterAddTogether).toEqual(r.afterAdd);
    expect(r.endTogether).toEqual(r.end);
    expect(r.together.add.every(E.isRight)).toBe(true);
    // 40 reads asked for (20 ADDs, 20 DELs): the ADDs' in one turn, the DELs' in another.
    expect(r.stats.observeRequests).toBe(40);
    expect(r.stats.observations).toBe(2);
    // Per ADD: its host ops (the veth pair made into the pod, with its bridge port) and its masquerade chain
    // and rule shared, its pod's ops on its own. Per DEL: its host veth's deletion (which takes the pod's end)
    // and its masquerade chain and rule shared.
    expect(r.stats.applyRequests).toBe(40);
    expect(r.stats.sharedParts).toBe(4 * 20);
    expect(r.stats.sharedApplies).toBe(4);
    expect(r.stats.applies).toBe(20 + 4);
    expect(r.stats.fallbacks).toBe(0);
  });

  it('on a fresh node (no bridge yet), racing ADDs converge to the same kernel', async () => {
    const r = await both(8, true);
    expect(r.together.add.every(E.isRight)).toBe(true);
    expect(r.afterAddTogether).toEqual(r.afterAdd);
    expect(r.endTogether).toEqual(r.end);
  });

  it('property: any number of calls, some of them failing: each gets the result it gets alone, the kernel ends the same', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc
          .integer({ min: 1, max: 10 })
          .chain((n) => fc.tuple(fc.constant(n), fc.uniqueArray(fc.integer({ min: 0, max: n - 1 }), { maxLength: n }), fc.boolean())),
        async ([n, failing, fresh]) => {
          const r = await both(n, fresh, new Set(failing));
          expect(r.together.add.map(ok)).toEqual(r.alone.add.map(ok));
          expect(r.together.del.map(ok)).toEqual(r.alone.del.map(ok));
          expect(r.afterAddTogether).toEqual(r.afterAdd);
          expect(r.endTogether).toEqual(r.end);
          // A failing call among others (its ghost op in the shared host apply): judged by its own part of the
          // shared apply, no call done again.
          expect(r.stats.fallbacks).toBe(0);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('a read that fails for one call (its namespace cannot be read) is read again call by call: only that call fails', async () => {
    const twin = memoryKernel();
    const failing: Kernel = {
      observe: (req) =>
        req.namespaces.some((n) => n.includes('unreadable'))
          ? async () => E.left({ kind: 'kernel', msg: 'failed to read /var/run/netns/unreadable' })
          : twin.observe(req),
      apply: (ops) => twin.apply(ops),
    };
    const wave = waveKernel(failing);
    const pods = [pod(1), pod(2, '/var/run/netns/unreadable'), pod(3)];
    const rs = await Promise.all(pods.map((p) => observe(wave, p)));
    expect(rs.map(E.isRight)).toEqual([true, false, true]);
    expect(wave.stats()).toMatchObject({ observeRequests: 3, observations: 4, fallbacks: 1 });
  });

  it('a shared read returns more than a call asked for; its plan is the one it makes from its own read', async () => {
    const twin = memoryKernel();
    const pods = [pod(1), pod(2), pod(3)];
    for (const p of pods) expect(E.isRight(await add(twin, p))).toBe(true);
    const union = unionRequest(pods.map((p) => ({ namespaces: [HOST, p.netns], scope: observeScope(p), iptables: [4 as const] })));
    const shared = await twin.observe(union)();
    if (E.isLeft(shared)) throw new Error(shared.left.msg);
    for (const p of pods) {
      const own = await observe(twin, p);
      if (E.isLeft(own)) throw new Error(own.left.msg);
      // Removing, keeping and changing: the same ops from either read.
      expect(plan(emptyKernelState(), shared.right, p.scope)).toEqual(plan(emptyKernelState(), own.right, p.scope));
      expect(plan(desired(p, '02:00:00:00:00:01'), shared.right, p.scope)).toEqual(
        plan(desired(p, '02:00:00:00:00:01'), own.right, p.scope),
      );
      const moved = desired({ ...p, i: p.i + 100 }, '02:00:00:00:00:01');
      expect(plan(moved, shared.right, p.scope)).toEqual(plan(moved, own.right, p.scope));
    }
  });
});
