import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { leaseObjects, opObject, overlayDelta, withLeases, withoutObjects } from '../../core/flannel/delta.ts';
import { plan } from '../../core/kernel/plan.ts';
import { desiredOverlay, type OverlayNode } from '../../core/flannel/desired.ts';
import { initialState, type NodeState, type RemoteLease } from '../../core/flannel/node.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { HOST, type KernelState } from '../../core/kernel/model.ts';
import { runs } from '../support/runs.ts';

const config = (() => {
  const c = parseNetConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  if (E.isLeft(c)) throw new Error(c.left);
  return c.right.config;
})();
const node: OverlayNode = { publicIP: '198.51.100.11', underlayDev: 'eth0', underlayCidr: '198.51.100.0/24', underlayMtu: 1500, vtepMac: '02:00:00:00:00:0b', ipMasq: true };
const T = '2030-01-01T00:00:00.000Z';

/** Remote n: subnet 10.244.n.0/24, public IP and VtepMAC derived from n and a version (a change of either). */
const remote = (n: number, v: number): RemoteLease => ({
  key: `10.244.${n}.0-24`,
  subnet: `10.244.${n}.0/24`,
  attrs: { PublicIP: `198.51.100.${20 + n}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: `02:00:00:00:${v.toString(16).padStart(2, '0')}:${n.toString(16).padStart(2, '0')}` } },
  expiration: T,
  since: T,
  changed: T,
});
const stateOf = (remotes: Map<number, number>): NodeState => ({
  ...initialState(),
  config,
  ownLease: { key: '10.244.1.0-24', subnet: '10.244.1.0/24', publicIP: node.publicIP, backendType: 'vxlan', vtepMac: node.vtepMac, expiration: T, since: T },
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
const world = fc.dictionary(fc.integer({ min: 2, max: 40 }).map(String), fc.integer({ min: 1, max: 3 }), { maxKeys: 12 }).map((d) => new Map(Object.entries(d).map(([k, v]) => [Number(k), v])));

describe('overlayDelta', () => {
  it('applied to the kernel as it was, gives the kernel a full pass would want', () => {
    fc.assert(
      fc.property(world, world, (a, b) => {
        const before = stateOf(a);
        const after = stateOf(b);
        const keys = [...new Set([...a.keys(), ...b.keys()])].filter((n) => a.get(n) !== b.get(n)).map((n) => remote(n, 1).key);
        const kernel = memoryKernel({ ...overlay(before), links: [...overlay(before).links, { ns: HOST, name: 'eth0', kind: 'device', up: true }] });
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
    const before = stateOf(new Map([[2, 1], [3, 1], [4, 1]]));
    const after = stateOf(new Map([[2, 1], [3, 2]]));
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
