// The kernel model's moved links (`Link.from`, op `link.move`) and the `alias` attribute, without a kernel:
// plan moves a device into the pod under a new name and back, configures it where it lands, leaves what it
// had in the old namespace behind (the kernel flushes it), converges on the memory twin (a second plan is
// []), and renders one `ip link set dev X netns NS name Y` line in the source namespace.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { steps, unsafe } from '../../adapters/kernel/render.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type OwnershipScope } from '../../core/kernel/model.ts';
import { describeOp, drift, plan } from '../../core/kernel/plan.ts';

const POD = '/run/netns/pod1';
const st = (p: Partial<KernelState>): KernelState => ({ ...emptyKernelState(), ...p });
const scope: OwnershipScope = { links: [{ ns: POD, name: 'eth0' }], devices: [{ ns: POD, dev: 'eth0' }], chains: [], ruleMarkers: [] };

const hostDev: Link = {
  ns: HOST,
  name: 'ens5',
  kind: 'device',
  mtu: 9000,
  mac: '02:00:00:00:00:05',
  up: true,
  master: null,
  promisc: false,
  allmulti: false,
  txqlen: 1000,
  hairpin: false,
};
const world = (): KernelState =>
  st({
    links: [hostDev, { ns: POD, name: 'lo', kind: 'loopback', up: true }],
    addresses: [{ ns: HOST, dev: 'ens5', cidr: '192.0.2.5/24' }],
    routes: [{ ns: HOST, dst: '198.51.100.0/24', gw: '192.0.2.1', dev: 'ens5' }],
  });
const inPod: KernelState = st({
  links: [{ ns: POD, name: 'eth0', kind: 'device', up: true, alias: 'ens5', from: { ns: HOST, name: 'ens5' } }],
  addresses: [{ ns: POD, dev: 'eth0', cidr: '10.9.0.2/24' }],
  routes: [{ ns: POD, dst: '0.0.0.0/0', gw: '10.9.0.1', dev: 'eth0' }],
});
const backHome: KernelState = st({
  links: [{ ns: HOST, name: 'ens5', kind: 'device', up: true, mtu: 9000, alias: '', from: { ns: POD, name: 'eth0' } }],
});

describe('link.move', () => {
  it('moves the device into the pod first, then names, raises and addresses it there', () => {
    const ops = plan(inPod, world(), scope);
    expect(ops.map(describeOp)).toEqual([
      'move link ens5 from the host namespace to /run/netns/pod1 as eth0',
      'set up alias ens5 on eth0 in /run/netns/pod1',
      'add address 10.9.0.2/24 to eth0 in /run/netns/pod1',
      'add route 0.0.0.0/0 via 10.9.0.1 dev eth0 in /run/netns/pod1',
    ]);
    expect(steps(ops, { pid: 42 }).map((s) => [s.ns, s.tool, s.lines.map((l) => l.text)])).toEqual([
      [HOST, 'ip', ['link set dev ens5 netns pod1 name eth0']],
      [
        POD,
        'ip',
        [
          'link set dev eth0 alias ens5',
          'link set dev eth0 up',
          'addr replace 10.9.0.2/24 brd + dev eth0',
          'route replace 0.0.0.0/0 via 10.9.0.1 dev eth0',
        ],
      ],
    ]);
  });

  it('converges on the twin, the host keeps nothing of it, and a resync plans nothing; DEL brings it back, MTU and up state', () => {
    const k = memoryKernel(world());
    expect(k.applySync(plan(inPod, k.state(), scope))).toEqual(E.right(undefined));
    const s = k.state();
    expect(s.links.map((l) => [l.ns, l.name])).toEqual([
      [POD, 'lo'],
      [POD, 'eth0'],
    ]);
    expect(s.links.find((l) => l.name === 'eth0')).toMatchObject({ mtu: 9000, mac: '02:00:00:00:00:05', up: true, alias: 'ens5' });
    expect(s.addresses).toEqual(inPod.addresses);
    expect(s.routes).toEqual(inPod.routes);
    expect(plan(inPod, s, scope)).toEqual([]);
    expect(drift(inPod, s, scope)).toEqual([]);

    // The pod lowers the MTU and takes it down; DEL puts the original back, in the host.
    k.applySync([{ op: 'link.set', link: inPod.links[0]!, changes: { mtu: 1400, up: false } }]);
    const del = plan(backHome, k.state(), scope);
    expect(del.map(describeOp)).toEqual([
      'move link eth0 from /run/netns/pod1 to the host namespace as ens5',
      'set mtu 9000 up no alias on ens5 in the host namespace',
    ]);
    expect(steps(del, { pid: 42 }).map((x) => x.lines.map((l) => l.text))).toEqual([
      ['link set dev eth0 netns 42 name ens5'],
      ['link set dev ens5 mtu 9000 alias ""', 'link set dev ens5 up'],
    ]);
    expect(k.applySync(del)).toEqual(E.right(undefined));
    expect(k.state().links.find((l) => l.name === 'ens5')).toMatchObject({ ns: HOST, mtu: 9000, up: true });
    expect(k.state().links.find((l) => l.name === 'ens5')!.alias).toBeUndefined();
    expect(k.state().addresses).toEqual([]);
    expect(plan(backHome, k.state(), scope)).toEqual([]);
  });

  it('drift names a device that is not in the pod, and where it is', () => {
    expect(drift(inPod, world(), scope)).toEqual([
      'missing eth0 in /run/netns/pod1 (it is ens5 in the host namespace)',
      'missing address 10.9.0.2/24 on eth0 in /run/netns/pod1',
      'missing route 0.0.0.0/0 via 10.9.0.1 dev eth0 in /run/netns/pod1',
    ]);
  });

  it('a wrong alias is drift, and is set back', () => {
    const k = memoryKernel(world());
    k.applySync(plan(inPod, k.state(), scope));
    k.applySync([{ op: 'link.set', link: inPod.links[0]!, changes: { alias: 'other' } }]);
    expect(drift(inPod, k.state(), scope)).toEqual(['wrong alias on eth0: other, want ens5 (in /run/netns/pod1)']);
  });

  it('a source that is not there fails in the kernel by name; a name taken in the target too', () => {
    const k = memoryKernel(st({ links: [{ ns: POD, name: 'lo', kind: 'loopback', up: true }] }));
    const r = k.applySync(plan(inPod, k.state(), scope));
    expect(E.isLeft(r) && r.left.msg).toBe(
      'failed to move link ens5 from the host namespace to /run/netns/pod1 as eth0: Cannot find device "ens5"',
    );
    const taken = memoryKernel(st({ links: [hostDev, { ns: POD, name: 'eth9', kind: 'device' }] }));
    const r2 = taken.applySync([{ op: 'link.move', ns: HOST, name: 'ens5', toNs: POD, newName: 'eth9' }]);
    expect(E.isLeft(r2) && r2.left.msg).toMatch(/File exists/);
  });

  it('the renderer refuses a new name or alias that could add a word to the batch', () => {
    expect(unsafe({ op: 'link.move', ns: HOST, name: 'ens5', toNs: POD, newName: 'a b' })).toMatch(/interface name "a b"/);
    expect(unsafe({ op: 'link.set', link: inPod.links[0]!, changes: { alias: 'x\nlink del dev y' } })).toMatch(/alias/);
    expect(unsafe({ op: 'link.set', link: inPod.links[0]!, changes: { alias: '' } })).toBeUndefined();
  });
});
