import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { leaseObjects, opObject, overlayDelta, planInSteps, withLeases, withoutObjects } from '../../core/flannel/delta.ts';
import { plan } from '../../core/kernel/plan.ts';
import { desiredOverlay, type OverlayNode } from '../../core/flannel/desired.ts';
import { initialState, type NodeState, type RemoteLease } from '../../core/flannel/node.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { HOST, type KernelState, type Op } from '../../core/kernel/model.ts';
import { runs } from '../support/runs.ts';

const config = (() => {
  const c = parseNetConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  if (E.isLeft(c)) throw new Error(c.left);
  return c.right.config;
})();
const node: OverlayNode = {
  publicIP: '198.51.100.11',
  underlayDev: 'eth0',
  underlayCidr: '198.51.100.0/24',
  underlayMtu: 1500,
  vtepMac: '02:00:00:00:00:0b',
  ipMasq: true,
};
const T = '2030-01-01T00:00:00.000Z';

/** Remote n: subnet 10.244.n.0/24, public IP and VtepMAC derived from n and a version (a change of either). */
const remote = (n: number, v: number): RemoteLease => ({
  key: `10.244.${n}.0-24`,
  subnet: `10.244.${n}.0/24`,
  attrs: {
    PublicIP: `198.51.100.${20 + n}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: `02:00:00:00:${v.toString(16).padStart(2, '0')}:${n.toString(16).padStart(2, '0')}` },
  },
  expiration: T,
  since: T,
  changed: T,
});
const stateOf = (remotes: Map<number, number>): NodeState => ({
  ...initialState(),
  config,
  ownLease: {
    key: '10.244.1.0-24',
    subnet: '10.244.1.0/24',
    publicIP: node.publicIP,
    backendType: 'vxlan',
    vtepMac: node.vtepMac,
    expiration: T,
    since: T,
  },
  remotes: Object.fromEntries([...remotes].map(([n, v]) => [remote(n, v).key, remote(n, v)])),
});
const overlay = (s: NodeState): KernelState => {
  const d = desiredOverlay(s, node);
  if (E.isLeft(d)) throw new Error(d.left);
  return d.right.kernel;
};
const sorted = (k: KernelState) => ({
  routes: k.routes.map((r) => JSON.stringify(r)).sort(),
  neighbours: k.neighbours.map((n) => JSON.stringify(n)).sort(),
  fdb: k.fdb.map((f) => JSON.stringify(f)).sort(),
});
// Remote ids 2..40 (1 is this node); a version per remote.
const world = fc
  .dictionary(fc.integer({ min: 2, max: 40 }).map(String), fc.integer({ min: 1, max: 3 }), { maxKeys: 12 })
  .map((d) => new Map(Object.entries(d).map(([k, v]) => [Number(k), v])));

describe('overlayDelta', () => {
  it('applied to the kernel as it was, gives the kernel a full pass would want', () => {
    fc.assert(
      fc.property(world, world, (a, b) => {
        const before = stateOf(a);
        const after = stateOf(b);
        const keys = [...new Set([...a.keys(), ...b.keys()])].filter((n) => a.get(n) !== b.get(n)).map((n) => remote(n, 1).key);
        const kernel = memoryKernel({
          ...overlay(before),
          links: [...overlay(before).links, { ns: HOST, name: 'eth0', kind: 'device', up: true }],
        });
        const ops = overlayDelta(before, after, keys, node);
        if (E.isLeft(ops) || ops.right === 'full') throw new Error('unexpected');
        expect(E.isRight(kernel.applySync(ops.right))).toBe(true);
        expect(sorted(kernel.state())).toEqual(sorted(overlay(after)));
        // The bookkeeping agrees: the state "as applied" now is `after`.
        expect(withLeases(before, after, keys).remotes).toEqual(after.remotes);
      }),
      { numRuns: runs(200) },
    );
  });

  it('touches only the changed leases, and asks for a full pass when the own lease changes', () => {
    const before = stateOf(
      new Map([
        [2, 1],
        [3, 1],
        [4, 1],
      ]),
    );
    const after = stateOf(
      new Map([
        [2, 1],
        [3, 2],
      ]),
    );
    const ops = overlayDelta(before, after, [remote(3, 1).key, remote(4, 1).key], node);
    expect(E.isRight(ops) && ops.right !== 'full' && ops.right.map((o) => o.op).sort()).toEqual(
      // lease 3 moved its VtepMAC (route unchanged); lease 4 left.
      ['fdb.del', 'fdb.del', 'fdb.replace', 'neigh.del', 'neigh.replace', 'route.del'].sort(),
    );
    const moved = { ...after, ownLease: { ...after.ownLease!, key: '10.244.9.0-24', subnet: '10.244.9.0/24' } };
    expect(overlayDelta(before, moved, [], node)).toEqual(E.right('full'));
  });
});

describe('a full plan overtaken by a delta', () => {
  it('leaves what the delta applied alone: the kernel ends as the newer state wants (delta = full pass)', () => {
    fc.assert(
      fc.property(world, world, fc.boolean(), (a, b, readAfter) => {
        // The full pass read state `a`; a delta then moved the changed leases to `b`; the full pass's kernel read
        // came before or after the delta's apply.
        const before = stateOf(a);
        const after = stateOf(b);
        const keys = [...new Set([...a.keys(), ...b.keys()])].filter((n) => a.get(n) !== b.get(n)).map((n) => remote(n, 1).key);
        const eth0 = { ns: HOST, name: 'eth0', kind: 'device' as const, up: true };
        const kernel = memoryKernel({ ...overlay(before), links: [...overlay(before).links, eth0] });
        const full = desiredOverlay(before, node);
        if (E.isLeft(full)) throw new Error(full.left);
        const observedEarly = kernel.state();
        const delta = overlayDelta(before, after, keys, node);
        if (E.isLeft(delta) || delta.right === 'full') throw new Error('unexpected');
        expect(E.isRight(kernel.applySync(delta.right))).toBe(true);
        const observed = readAfter ? kernel.state() : observedEarly;
        const skip = new Set([...leaseObjects(before, keys, node), ...delta.right.flatMap((o) => opObject(o) ?? [])]);
        const ops = withoutObjects(plan(full.right.kernel, observed, full.right.scope), skip);
        expect(E.isRight(kernel.applySync(ops))).toBe(true);
        expect(sorted(kernel.state())).toEqual(sorted(overlay(after)));
      }),
      { numRuns: runs(200) },
    );
  });
});

describe('planInSteps', () => {
  const run = (g: Generator<void, Op[], void>): { ops: Op[]; steps: number } => {
    let steps = 0;
    for (let r = g.next(); ; r = g.next(), steps++) if (r.done) return { ops: r.value, steps };
  };
  const eth0 = { ns: HOST, name: 'eth0', kind: 'device' as const, up: true };
  it('makes the ops plan makes, in slices (drift of routes, neighbours and fdb entries; a missing device)', () => {
    fc.assert(
      fc.property(
        world,
        world,
        fc.array(fc.nat(), { maxLength: 6 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 20 }),
        (a, b, holes, noDevice, perStep) => {
          const want = desiredOverlay(stateOf(b), node);
          if (E.isLeft(want)) throw new Error(want.left);
          const was = overlay(stateOf(a));
          // The kernel as `a` left it, with some objects gone (drift) and maybe the vxlan device too.
          const drop = <T>(xs: readonly T[]) => xs.filter((_, i) => !holes.includes(i));
          const seen: KernelState = {
            ...was,
            links: noDevice ? [eth0] : [...was.links, eth0],
            routes: drop(was.routes),
            neighbours: drop(was.neighbours),
            fdb: drop(was.fdb),
          };
          const whole = plan(want.right.kernel, seen, want.right.scope);
          const stepped = run(planInSteps(want.right.kernel, seen, want.right.scope, perStep));
          expect(stepped.ops.map((o) => JSON.stringify(o)).sort()).toEqual(whole.map((o) => JSON.stringify(o)).sort());
          // Applied, both end at the same kernel.
          const k1 = memoryKernel(seen);
          const k2 = memoryKernel(seen);
          expect(E.isRight(k1.applySync(whole))).toBe(true);
          expect(E.isRight(k2.applySync(stepped.ops))).toBe(true);
          expect(sorted(k2.state())).toEqual(sorted(k1.state()));
        },
      ),
      { numRuns: runs(200) },
    );
  });

  it('yields between slices of a large plan', () => {
    const many = new Map(Array.from({ length: 39 }, (_, i) => [i + 2, 1] as const));
    const want = desiredOverlay(stateOf(many), node);
    if (E.isLeft(want)) throw new Error(want.left);
    const seen = { ...want.right.kernel, links: [...want.right.kernel.links, eth0] };
    const stepped = run(planInSteps(want.right.kernel, seen, want.right.scope, 20));
    expect(stepped.ops).toEqual([]);
    expect(stepped.steps).toBeGreaterThan(5);
  });
});

describe('desiredOverlay, computed again for the same lease objects', () => {
  it('follows a change of context (own subnet, DirectRouting, underlay) instead of reusing what it made before', () => {
    const s = stateOf(
      new Map([
        [2, 1],
        [3, 1],
      ]),
    );
    const first = overlay(s);
    expect(first.routes.map((r) => r.dst)).toEqual(['10.244.2.0/24', '10.244.3.0/24']);
    // Our own subnet now covers remote 2: it is left out, from the same RemoteLease objects.
    const moved = { ...s, ownLease: { ...s.ownLease!, key: '10.244.2.0-24', subnet: '10.244.2.0/24' } };
    expect(overlay(moved).routes.map((r) => r.dst)).toEqual(['10.244.3.0/24']);
    // DirectRouting: the remotes are on our segment, so plain routes via their public IPs.
    const direct = parseNetConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}');
    if (E.isLeft(direct)) throw new Error(direct.left);
    const dr = overlay({ ...s, config: direct.right.config });
    expect(dr.routes.map((r) => r.gw)).toEqual(['198.51.100.22', '198.51.100.23']);
    expect(dr.neighbours).toEqual([]);
    // Another underlay segment: not on it any more, vxlan again.
    const off = desiredOverlay({ ...s, config: direct.right.config }, { ...node, underlayCidr: '192.0.2.0/24' });
    expect(E.isRight(off) && off.right.kernel.routes.map((r) => r.gw)).toEqual(['10.244.2.0', '10.244.3.0']);
    expect(overlay(s)).toEqual(first);
  });
});
