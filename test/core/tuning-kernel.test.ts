// The link attributes the tuning plugin manages besides mtu/mac/promisc: all-multicast mode and the transmit
// queue length, through every layer (parse, plan, drift words, render, the memory twin).

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { parseIpBatch, type IpState } from '../../adapters/kernel/parse.ts';
import { linkAddLines, steps } from '../../adapters/kernel/render.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { emptyKernelState, type KernelState, type Link } from '../../core/kernel/model.ts';
import { describeOp, drift, plan } from '../../core/kernel/plan.ts';
import { emptyScope } from '../../core/kernel/scope.ts';

const POD = '/var/run/netns/pod1';
const st = (links: Link[]): KernelState => ({ ...emptyKernelState(), links });

describe('allmulti and txqlen', () => {
  it('are read from ip -json -d link show (flag ALLMULTI, field txqlen)', () => {
    const links = [
      {
        ifindex: 2,
        ifname: 'eth0',
        flags: ['BROADCAST', 'MULTICAST', 'ALLMULTI', 'UP'],
        mtu: 1500,
        txqlen: 77,
        address: '02:00:00:00:00:01',
        linkinfo: { info_kind: 'veth' },
      },
      {
        ifindex: 3,
        ifname: 'eth1',
        flags: ['BROADCAST', 'MULTICAST'],
        mtu: 1500,
        txqlen: 1000,
        address: '02:00:00:00:00:02',
        linkinfo: { info_kind: 'veth' },
      },
    ];
    const out = [links, [], [], [], []].map((x) => JSON.stringify(x)).join('\n') + '\n';
    const s = parseIpBatch(POD, out) as IpState;
    expect(s.links.map((l) => [l.name, l.allmulti, l.txqlen])).toEqual([
      ['eth0', true, 77],
      ['eth1', false, 1000],
    ]);
  });

  it('are planned like mtu and promisc: only when desired and different, in words', () => {
    const seen: Link = { ns: POD, name: 'eth0', kind: 'veth', mtu: 1500, allmulti: false, txqlen: 1000 };
    const want: Link = { ns: POD, name: 'eth0', kind: 'device', allmulti: true, txqlen: 500 };
    const ops = plan(st([want]), st([seen]), emptyScope());
    expect(ops).toEqual([{ op: 'link.set', link: want, changes: { allmulti: true, txqlen: 500 } }]);
    expect(ops.map(describeOp)).toEqual([`set allmulti on txqlen 500 on eth0 in ${POD}`]);
    expect(drift(st([want]), st([seen]), emptyScope())).toEqual([
      `wrong all-multicast mode on eth0: off, want on (in ${POD})`,
      `wrong transmit queue length on eth0: 1000, want 500 (in ${POD})`,
    ]);
    // Not desired: never touched.
    expect(plan(st([{ ns: POD, name: 'eth0', kind: 'device' }]), st([{ ...seen, allmulti: true, txqlen: 5 }]), emptyScope())).toEqual([]);
    // An unset allmulti reads as off.
    expect(plan(st([{ ...want, allmulti: false, txqlen: 1000 }]), st([{ ...seen, allmulti: undefined }]), emptyScope())).toEqual([]);
  });

  it('render as allmulticast on|off and txqueuelen N', () => {
    const ro = { pid: 1 };
    const link: Link = { ns: POD, name: 'eth0', kind: 'device' };
    const s = steps([{ op: 'link.set', link, changes: { mtu: 1400, allmulti: false, txqlen: 0 } }], ro);
    expect(s.map((x) => x.lines.map((l) => l.text))).toEqual([['link set dev eth0 mtu 1400 allmulticast off txqueuelen 0']]);
    expect(linkAddLines({ ns: POD, name: 'v', kind: 'veth', allmulti: true, txqlen: 64, veth: { peer: 'p', peerNs: POD } }, ro)).toEqual([
      'link add name v type veth peer name p',
      'link set dev v allmulticast on txqueuelen 64',
    ]);
  });

  it('the twin applies them and reads them back; plan is then empty', () => {
    const k = memoryKernel(st([{ ns: POD, name: 'eth0', kind: 'veth', mtu: 1500, up: true, allmulti: false, txqlen: 1000 }]));
    const want: Link = { ns: POD, name: 'eth0', kind: 'device', allmulti: true, txqlen: 42 };
    expect(E.isRight(k.applySync(plan(st([want]), k.state(), emptyScope())))).toBe(true);
    expect(k.state().links[0]).toMatchObject({ allmulti: true, txqlen: 42, mtu: 1500, up: true });
    expect(plan(st([want]), k.state(), emptyScope())).toEqual([]);
    // A new veth starts with allmulti off and Linux's default queue length.
    expect(E.isRight(k.applySync([{ op: 'link.add', link: { ns: POD, name: 'v', kind: 'veth', veth: { peer: 'p', peerNs: POD } } }]))).toBe(
      true,
    );
    expect(
      k
        .state()
        .links.filter((l) => l.name !== 'eth0')
        .map((l) => [l.name, l.allmulti, l.txqlen]),
    ).toEqual([
      ['v', false, 1000],
      ['p', false, 1000],
    ]);
  });
});
