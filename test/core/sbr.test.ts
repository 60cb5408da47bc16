// The sbr plugin's core without a kernel: config and prevResult validation, and the desired state computed
// from a seeded pod namespace, applied to the memory twin: ADD converges (a second plan is []), ADD again and
// CHECK see no drift, DEL puts back what moved, DEL again does nothing.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import type { NetConf } from '../../core/cni/env.ts';
import type { Result } from '../../core/cni/result.ts';
import { emptyKernelState, type IpRule, type KernelState, type Route } from '../../core/kernel/model.ts';
import { describeOp, drift, plan } from '../../core/kernel/plan.ts';
import { addressesOf, parseSbrConf, prevResultOf, requireAddresses, type SbrAddress, type SbrConf } from '../../core/sbr/config.ts';
import { sbrAdd, sbrDel } from '../../core/sbr/desired.ts';

const POD = '/var/run/netns/pod';
const netconf = (raw: Record<string, unknown>): NetConf => ({
  cniVersion: '1.0.0',
  name: 'n',
  type: 'sbr',
  raw: { cniVersion: '1.0.0', name: 'n', type: 'sbr', ...raw },
});
const conf = (raw: Record<string, unknown> = {}): SbrConf => {
  const c = parseSbrConf(netconf(raw));
  if (E.isLeft(c)) throw new Error(c.left.msg);
  return c.right;
};
const msg = (raw: Record<string, unknown>): string => {
  const c = parseSbrConf(netconf(raw));
  return E.isLeft(c) ? `${c.left.code} ${c.left.msg}` : 'ok';
};

describe('config', () => {
  it('accepts the reference options and refuses bad ones, naming the field', () => {
    expect(conf({ table: 200, gateways: ['10.0.0.1', 'FD00::1'], addSourceHints: true })).toEqual({
      table: 200,
      gateways: { 4: '10.0.0.1', 6: 'fd00::1' },
      addSourceHints: true,
    });
    expect(conf()).toEqual({ gateways: {}, addSourceHints: false });
    expect(msg({ table: '100' })).toMatch(/^7 table: must be an integer/);
    expect(msg({ table: 254 })).toMatch(/^7 table: /);
    expect(msg({ table: -1 })).toMatch(/^7 table: /);
    expect(msg({ gateways: '10.0.0.1' })).toMatch(/^7 gateways: must be a list/);
    expect(msg({ gateways: ['10.0.0.1', '10.0.0.2'] })).toMatch(/^7 gateways\[1\]: a second IPv4 gateway/);
    expect(msg({ gateways: ['a', 'b', 'c'] })).toMatch(/^7 gateways: at most 2/);
    expect(msg({ addSourceHints: 1 })).toMatch(/^7 addSourceHints: /);
    expect(msg({ table: 'x', addSourceHints: 1 })).toMatch(/table: .*; addSourceHints: /);
  });

  it('prevResult is required and parsed at the edge', () => {
    const p = (raw: Record<string, unknown>) => {
      const r = prevResultOf(netconf(raw));
      return E.isLeft(r) ? `${r.left.code} ${r.left.msg}` : 'ok';
    };
    expect(p({})).toMatch(/^7 prevResult: required/);
    expect(p({ prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.0.0.5/24 table 9' }] } })).toMatch(
      /^7 prevResult: ips\[0\]\.address/,
    );
    expect(p({ prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.0.0.5/24' }] } })).toBe('ok');
  });

  it("picks the interface's addresses as the reference does: by interface index, or all without one", () => {
    const prev: Result = {
      cniVersion: '1.1.0',
      interfaces: [{ name: 'br0' }, { name: 'veth1' }, { name: 'eth0', sandbox: POD }],
      ips: [
        { address: '10.0.0.5/24', gateway: '10.0.0.1', interface: 2 },
        { address: '10.9.0.5/24', interface: 0 },
        { address: 'fd00::5/64' },
        { address: '10.8.0.5/24', interface: 7 },
      ],
    };
    expect(addressesOf(prev, 'eth0').map((a) => a.cidr)).toEqual(['10.0.0.5/24', 'fd00::5/64', '10.8.0.5/24']);
    const none = requireAddresses(
      { cniVersion: '1.1.0', interfaces: [{ name: 'x' }], ips: [{ address: '10.0.0.5/24', interface: 0 }] },
      'eth0',
    );
    expect(E.isLeft(none) && none.left).toEqual({ code: 7, msg: 'prevResult.ips: no address on interface "eth0"' });
  });
});

// --------------------------------------------------------------------------------------------- desired

const DEFAULT_RULES: IpRule[] = [
  { ns: POD, family: 4, src: '0.0.0.0/0', table: 255, priority: 0 },
  { ns: POD, family: 4, src: '0.0.0.0/0', table: 254, priority: 32766 },
  { ns: POD, family: 4, src: '0.0.0.0/0', table: 253, priority: 32767 },
  { ns: POD, family: 6, src: '::/0', table: 255, priority: 0 },
  { ns: POD, family: 6, src: '::/0', table: 254, priority: 32766 },
];
const A4: SbrAddress = { family: 4, ip: '10.0.0.5', cidr: '10.0.0.5/24', gateway: '10.0.0.1' };
const A6: SbrAddress = { family: 6, ip: 'fd00::5', cidr: 'fd00::5/64', gateway: 'fd00::1' };
const kernelPrefix4: Route = { ns: POD, dst: '10.0.0.0/24', dev: 'eth0', scope: 'link', src: '10.0.0.5' };
const kernelPrefix6: Route = { ns: POD, dst: 'fd00::/64', dev: 'eth0', metric: 256 };
const linkLocal: Route = { ns: POD, dst: 'fe80::/64', dev: 'eth0', metric: 256 };

/** A pod as bridge leaves it: eth0 up with its addresses, the kernel's routes, a default route, the default rules. */
const pod = (extra: Partial<KernelState> = {}): KernelState => ({
  ...emptyKernelState(),
  links: [
    { ns: POD, name: 'eth0', kind: 'veth', up: true },
    { ns: POD, name: 'lo', kind: 'loopback', up: true },
  ],
  addresses: [
    { ns: POD, dev: 'eth0', cidr: '10.0.0.5/24' },
    { ns: POD, dev: 'eth0', cidr: 'fd00::5/64' },
  ],
  routes: [kernelPrefix4, kernelPrefix6, linkLocal, { ns: POD, dst: '0.0.0.0/0', gw: '10.0.0.1', dev: 'eth0' }, ...(extra.routes ?? [])],
  ipRules: [...DEFAULT_RULES, ...(extra.ipRules ?? [])],
});

function add(k: ReturnType<typeof memoryKernel>, c: SbrConf, addresses: SbrAddress[]) {
  const seen = k.state();
  const d = sbrAdd({ conf: c, netns: POD, ifname: 'eth0', addresses, observed: seen });
  if (E.isLeft(d)) throw new Error(d.left.msg);
  const ops = plan(d.right.kernel, seen, d.right.scope);
  const r = k.applySync(ops);
  if (E.isLeft(r)) throw new Error(`${r.left.msg}\n${ops.map(describeOp).join('\n')}`);
  return { ...d.right, ops };
}

function del(k: ReturnType<typeof memoryKernel>, c: SbrConf, addresses: SbrAddress[], prevRoutes?: Result['routes']) {
  const seen = k.state();
  const d = sbrDel({ conf: c, netns: POD, ifname: 'eth0', addresses, ...(prevRoutes ? { prevRoutes } : {}), observed: seen });
  const ops = plan(d.kernel, seen, d.scope);
  const r = k.applySync(ops);
  if (E.isLeft(r)) throw new Error(`${r.left.msg}\n${ops.map(describeOp).join('\n')}`);
  return ops;
}

const routesIn = (s: KernelState, table: number): string[] =>
  s.routes
    .filter((r) => (r.table ?? 254) === table)
    .map((r) => `${r.dst}${r.gw ? ` via ${r.gw}` : ''}${r.src ? ` src ${r.src}` : ''}${r.metric ? ` metric ${r.metric}` : ''}`)
    .sort();
const mine = (s: KernelState): string[] =>
  (s.ipRules ?? []).filter((r) => r.table < 253 || r.table > 255).map((r) => `${r.src} ${r.table}`);

describe('sbr ADD, CHECK and DEL against the twin', () => {
  it('dual stack: one table per address, the routes that belong to it moved, link-local left alone; CHECK sees no drift', () => {
    const k = memoryKernel(pod());
    const a = add(k, conf(), [A4, A6]);
    expect(a.tables).toEqual([
      { ip: '10.0.0.5', table: 100 },
      { ip: 'fd00::5', table: 101 },
    ]);
    const s = k.state();
    expect(mine(s)).toEqual(['10.0.0.5/32 100', 'fd00::5/128 101']);
    expect(routesIn(s, 100)).toEqual(['0.0.0.0/0 via 10.0.0.1', '10.0.0.0/24 src 10.0.0.5']);
    expect(routesIn(s, 101)).toEqual(['::/0 via fd00::1', 'fd00::/64 metric 256']);
    expect(routesIn(s, 254)).toEqual(['fe80::/64 metric 256']);
    // Converged; ADD again and CHECK plan nothing.
    const again = sbrAdd({ conf: conf(), netns: POD, ifname: 'eth0', addresses: [A4, A6], observed: s });
    expect(E.isRight(again) && again.right.tables).toEqual(a.tables);
    expect(E.isRight(again) && drift(again.right.kernel, s, again.right.scope)).toEqual([]);
    expect(add(k, conf(), [A4, A6]).ops).toEqual([]);

    // DEL puts back what moved (the default route: prevResult lists it), DEL again does nothing.
    del(k, conf(), [A4, A6], [{ dst: '0.0.0.0/0', gw: '10.0.0.1' }]);
    const after = k.state();
    expect(mine(after)).toEqual([]);
    expect(routesIn(after, 100)).toEqual([]);
    expect(routesIn(after, 254)).toEqual([
      '0.0.0.0/0 via 10.0.0.1',
      '10.0.0.0/24 src 10.0.0.5',
      'fd00::/64 metric 256',
      'fe80::/64 metric 256',
    ]);
    expect(del(k, conf(), [A4, A6])).toEqual([]);
  });

  it('a default route made from the gateway only goes back to main when prevResult lists one', () => {
    const k = memoryKernel(pod());
    add(k, conf(), [A6]);
    expect(routesIn(k.state(), 100)).toEqual(['::/0 via fd00::1', 'fd00::/64 metric 256']);
    del(k, conf(), [A6], []);
    expect(routesIn(k.state(), 254)).toEqual([
      '0.0.0.0/0 via 10.0.0.1',
      '10.0.0.0/24 src 10.0.0.5',
      'fd00::/64 metric 256',
      'fe80::/64 metric 256',
    ]);
  });

  it('skips tables that rules or routes use; two addresses in one subnet each get a table with the subnet’s routes', () => {
    const b: SbrAddress = { family: 4, ip: '10.0.0.6', cidr: '10.0.0.6/24', gateway: '10.0.0.1' };
    const k = memoryKernel(
      pod({
        ipRules: [
          { ns: POD, family: 4, src: '192.0.2.1/32', table: 100, priority: 100 },
          { ns: POD, family: 4, src: '0.0.0.0/0', table: 102, priority: 101, other: true },
        ],
        routes: [{ ns: POD, dst: '192.0.2.0/24', dev: 'eth0', table: 101 }],
      }),
    );
    expect(add(k, conf(), [A4, b]).tables).toEqual([
      { ip: '10.0.0.5', table: 103 },
      { ip: '10.0.0.6', table: 104 },
    ]);
    expect(routesIn(k.state(), 104)).toEqual(['0.0.0.0/0 via 10.0.0.1', '10.0.0.0/24 src 10.0.0.5']);
    expect(mine(k.state())).toContain('192.0.2.1/32 100');
  });

  it('a main-table route whose gateway lies outside the address’s subnet stays', () => {
    const odd: Route = { ns: POD, dst: '198.51.100.0/24', gw: '192.0.2.1', dev: 'eth0', onlink: true };
    const k = memoryKernel(pod({ routes: [odd] }));
    add(k, conf(), [A4]);
    expect(routesIn(k.state(), 254)).toContain('198.51.100.0/24 via 192.0.2.1');
    expect(routesIn(k.state(), 100)).not.toContain('198.51.100.0/24 via 192.0.2.1');
  });

  it('gateways overrides the default route’s gateway; addSourceHints keeps the prefix routes in main', () => {
    const k = memoryKernel(pod());
    add(k, conf({ gateways: ['10.0.0.254'], addSourceHints: true }), [A4, A6]);
    const s = k.state();
    expect(routesIn(s, 100)).toEqual(['0.0.0.0/0 via 10.0.0.254', '10.0.0.0/24 src 10.0.0.5']);
    expect(routesIn(s, 254)).toEqual(['10.0.0.0/24 src 10.0.0.5', 'fd00::/64 src fd00::5', 'fe80::/64 metric 256']);
    expect(add(k, conf({ gateways: ['10.0.0.254'], addSourceHints: true }), [A4, A6]).ops.map(describeOp)).toEqual([]);
  });

  it('`table`: only the rules; DEL removes only the rules to that table', () => {
    const k = memoryKernel(pod({ ipRules: [{ ns: POD, family: 4, src: '10.0.0.5/32', table: 7, priority: 5 }] }));
    const before = routesIn(k.state(), 254);
    add(k, conf({ table: 300 }), [A4, A6]);
    expect(mine(k.state())).toEqual(['10.0.0.5/32 7', '10.0.0.5/32 300', 'fd00::5/128 300']);
    expect(routesIn(k.state(), 254)).toEqual(before);
    del(k, conf({ table: 300 }), [A4, A6]);
    expect(mine(k.state())).toEqual(['10.0.0.5/32 7']);
  });

  it('DEL finds the rules from the interface’s addresses without prevResult, and from prevResult once the interface is gone', () => {
    const k = memoryKernel(pod());
    add(k, conf(), [A4]);
    del(k, conf(), []);
    expect(mine(k.state())).toEqual([]);
    add(k, conf(), [A4]);
    k.applySync([{ op: 'link.del', ns: POD, name: 'eth0' }]);
    del(k, conf(), [A4]);
    expect(mine(k.state())).toEqual([]);
  });

  it('undo (a failed ADD) converges back to the namespace as it was, whatever ADD changed', () => {
    for (const c of [conf(), conf({ gateways: ['10.0.0.254', 'fd00::fe'], addSourceHints: true })]) {
      const k = memoryKernel(pod());
      const before = k.state();
      const a = add(k, c, [A4, A6]);
      const now = k.state();
      const r = k.applySync(plan(a.undo!.kernel, now, a.undo!.scope));
      expect(E.isRight(r)).toBe(true);
      const back = k.state();
      expect([...routesIn(back, 254), ...routesIn(back, 100), ...routesIn(back, 101)]).toEqual(routesIn(before, 254));
      expect(mine(back)).toEqual([]);
    }
  });

  it('with `gateways`, DEL puts the default route back via the gateway prevResult names', () => {
    const k = memoryKernel(pod());
    add(k, conf({ gateways: ['10.0.0.254'] }), [A4]);
    expect(routesIn(k.state(), 100)).toContain('0.0.0.0/0 via 10.0.0.254');
    del(k, conf({ gateways: ['10.0.0.254'] }), [A4], [{ dst: '0.0.0.0/0', gw: '10.0.0.1' }]);
    expect(routesIn(k.state(), 254)).toContain('0.0.0.0/0 via 10.0.0.1');
  });

  it('ADD of an interface that is not there names it and plans nothing', () => {
    const d = sbrAdd({ conf: conf(), netns: POD, ifname: 'net1', addresses: [A4], observed: pod() });
    expect(E.isLeft(d) && d.left).toEqual({ code: 4, msg: `CNI_IFNAME: no interface "net1" in ${POD}` });
  });
});
