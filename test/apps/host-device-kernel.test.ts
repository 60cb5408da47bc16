// The kernel model's moved link (Link.from → link.move) and alias through the Linux adapter, in throwaway
// namespaces ("HOST" is a namespace of the test's own), against the memory twin: the same plan from the same
// start gives the same links, addresses and routes on both, a resync plans nothing on both, and moving back
// restores the MTU, up state and alias. What the kernel flushes on a move (addresses, routes) the twin does too.

import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import { linuxKernel } from '../../adapters/kernel/linux.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type OwnershipScope } from '../../core/kernel/model.ts';
import { describeOp, plan } from '../../core/kernel/plan.ts';
import { cleanupNetns, createNetns } from '../support/netns.ts';

afterAll(async () => {
  await cleanupNetns();
});

const st = (p: Partial<KernelState>): KernelState => ({ ...emptyKernelState(), ...p });

async function observe(k: Kernel, namespaces: string[]): Promise<KernelState> {
  const r = await k.observe({ namespaces })();
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
}
async function step(k: Kernel, want: KernelState, scope: OwnershipScope, namespaces: string[]): Promise<string[]> {
  const ops = plan(want, await observe(k, namespaces), scope);
  const r = await k.apply(ops)();
  if (E.isLeft(r)) throw new Error(`${r.left.msg}\n${ops.map(describeOp).join('\n')}`);
  expect(plan(want, await observe(k, namespaces), scope).map(describeOp)).toEqual([]);
  return ops.map(describeOp);
}

/** What both sides are compared on: the moved device (wherever it is), the addresses and routes on it. */
const view = (s: KernelState, pod: string) => {
  const mine = (ns: string, dev: string | undefined) => (ns === HOST && dev === 'hdk0') || (ns === pod && dev === 'eth0');
  const l = s.links.find((x) => mine(x.ns, x.name));
  return {
    link: l && { ns: l.ns === HOST ? 'host' : 'pod', name: l.name, mtu: l.mtu, mac: l.mac, up: l.up, alias: l.alias ?? '' },
    addresses: s.addresses
      .filter((a) => mine(a.ns, a.dev))
      .map((a) => a.cidr)
      .sort(),
    routes: s.routes
      .filter((r) => mine(r.ns, r.dev))
      .map((r) => `${r.dst} ${r.gw ?? ''}`)
      .sort(),
  };
};

describe('link.move: Linux and the twin agree', () => {
  it('into the pod with a new name and an alias (the host keeps nothing of it), and back with its MTU and up state', async () => {
    const host = await createNetns();
    const pod = await createNetns();
    await host.run(['ip', 'link', 'add', 'name', 'hdk0', 'mtu', '1400', 'type', 'veth', 'peer', 'name', 'hdk0p']);
    await host.run(['ip', 'link', 'set', 'dev', 'hdk0', 'up']);
    await host.run(['ip', 'addr', 'add', '192.0.2.5/24', 'dev', 'hdk0']);
    const linux = linuxKernel({ pid: process.pid, hostNetns: host.path });
    const start = await observe(linux, [HOST, pod.path]);
    // The twin starts from what Linux shows (the pod's loopback, the pair and the host address).
    const twin = memoryKernel(start);
    const ns = [HOST, pod.path];
    const scope: OwnershipScope = {
      links: [{ ns: pod.path, name: 'eth0' }],
      devices: [{ ns: pod.path, dev: 'eth0' }],
      chains: [],
      ruleMarkers: [],
    };
    const inPod = st({
      links: [{ ns: pod.path, name: 'eth0', kind: 'device', up: true, alias: 'hdk0', from: { ns: HOST, name: 'hdk0' } } satisfies Link],
      addresses: [{ ns: pod.path, dev: 'eth0', cidr: '10.70.0.2/24' }],
      routes: [{ ns: pod.path, dst: '10.71.0.0/16', gw: '10.70.0.1', dev: 'eth0' }],
    });
    const back = st({
      links: [{ ns: HOST, name: 'hdk0', kind: 'device', up: true, mtu: 1400, alias: '', from: { ns: pod.path, name: 'eth0' } }],
    });

    const opsL = await step(linux, inPod, scope, ns);
    const opsT = await step(twin, inPod, scope, ns);
    expect(opsT).toEqual(opsL);
    expect(view(await observe(linux, ns), pod.path)).toEqual(view(twin.state(), pod.path));
    expect(view(twin.state(), pod.path)).toMatchObject({
      link: { ns: 'pod', name: 'eth0', mtu: 1400, up: true, alias: 'hdk0' },
      addresses: ['10.70.0.2/24'],
    });

    // The pod changes it; both bring it back the same way.
    await pod.run(['ip', 'link', 'set', 'dev', 'eth0', 'mtu', '1300', 'down']);
    twin.applySync([{ op: 'link.set', link: inPod.links[0]!, changes: { mtu: 1300, up: false } }]);
    expect(await step(linux, back, scope, ns)).toEqual(await step(twin, back, scope, ns));
    expect(view(await observe(linux, ns), pod.path)).toEqual(view(twin.state(), pod.path));
    expect(view(twin.state(), pod.path)).toEqual({
      link: expect.objectContaining({ ns: 'host', name: 'hdk0', mtu: 1400, up: true, alias: '' }),
      addresses: [],
      routes: [],
    });
    await host.del();
    await pod.del();
  });
});
