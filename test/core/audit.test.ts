// The pure parts of felt plan / status / why (core/audit, core/explain.ts): a recorded attachment's desired
// state from the log alone, findings in words (empty exactly when the plan is), the report and its exit
// code, what cannot be checked, the status summary (lease, peers, reconcile, free addresses) and reconcile.json.

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { attachmentDesired, recordIpamConf, union } from '../../core/audit/attachment.ts';
import { describe as describeOps, findings } from '../../core/audit/diff.ts';
import { overlayCheck, overlayNodeOf } from '../../core/audit/overlay.ts';
import { nextReconcile, parseReconcile } from '../../core/audit/reconcile.ts';
import { group, planExit, renderPlan, report, uncheckedOf } from '../../core/audit/report.ts';
import { duration, renderStatus, status } from '../../core/audit/status.ts';
import { parseCniRecord } from '../../core/audit/cni.ts';
import type { AttachmentRecord } from '../../core/bridge/attachments.ts';
import { explain, matchObjects, presence } from '../../core/explain.ts';
import { initialState as nodeInitial, type NodeState } from '../../core/flannel/node.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { initialState as ipamInitial, type IpamState } from '../../core/ipam/decider.ts';
import { emptyKernelState, HOST, type KernelState } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';
import { runs } from '../support/runs.ts';

const POD = '/var/run/netns/p1';
const conf = {
  cniVersion: '1.0.0',
  name: 'mynet',
  type: 'bridge',
  bridge: 'cni0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', dataDir: '/tmp/x', ranges: [[{ subnet: '10.22.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }] },
};
const rec: AttachmentRecord = {
  network: 'mynet',
  containerId: 'c1',
  ifname: 'eth0',
  netns: POD,
  hostVeth: 'veth0a1b2c3d',
  dataDir: '/tmp/x',
  conf,
  cniArgs: {},
  hostVethMac: '02:00:00:00:00:01',
  hostNs: 'net:[4026531840]',
};
const ipam: IpamState = {
  ...ipamInitial(),
  allocations: {
    '10.22.0.2': { ip: '10.22.0.2', containerId: 'c1', ifname: 'eth0', rangeSet: 0, since: '2026-01-01T00:00:00.000Z', position: 2 },
  },
};

const desiredOf = (r: AttachmentRecord = rec, s: IpamState | undefined = ipam) => {
  const d = attachmentDesired(r, s);
  if (E.isLeft(d)) throw new Error(d.left);
  return d.right;
};

describe('attachmentDesired: a recorded attachment from the log alone', () => {
  it('gives the veth pair, the address, the routes and the masquerade chain; the bridge and gateway are shared', () => {
    const d = desiredOf();
    expect(d.bridge).toBe('cni0');
    expect(d.own.addresses).toEqual([{ ns: POD, dev: 'eth0', cidr: '10.22.0.2/24' }]);
    expect(d.own.routes).toEqual([{ ns: POD, dst: '0.0.0.0/0', dev: 'eth0', gw: '10.22.0.1' }]);
    expect(d.own.chains.map((c) => c.chain)).toEqual([expect.stringMatching(/^CNI-[0-9a-f]{24}$/)]);
    expect(d.own.rules[0]!.rule).toMatch(/^-s 10\.22\.0\.2\/32 .* -j CNI-/);
    expect(d.shared.links.map((l) => [l.kind, l.name, l.mac])).toEqual([['bridge', 'cni0', undefined]]);
    expect(d.shared.addresses).toEqual([{ ns: HOST, dev: 'cni0', cidr: '10.22.0.1/24' }]);
    // The MACs the log knows: the host veth's; the container's is random per ADD and not managed.
    const host = d.own.links.find((l) => l.ns === HOST)!;
    const pod = d.own.links.find((l) => l.ns === POD)!;
    expect(host.mac).toBe('02:00:00:00:00:01');
    expect(pod.mac).toBeUndefined();
    expect(pod.veth).toEqual({ peer: 'veth0a1b2c3d', peerNs: HOST, peerMac: '02:00:00:00:00:01' });
    expect(d.notes).toEqual([]);
  });
  it('says why it cannot: no config in the record, no address held, a config that does not parse', () => {
    const { conf: _c, ...old } = rec;
    expect(attachmentDesired(old, ipam)).toEqual(E.left(expect.stringContaining('recorded without its network config')));
    expect(attachmentDesired(rec, ipamInitial())).toEqual(
      E.left(expect.stringContaining('host-local holds no address for c1/eth0 in network "mynet"')),
    );
    expect(attachmentDesired({ ...rec, conf: { ...conf, mtu: 'big' } }, ipam)).toEqual(
      E.left(expect.stringContaining('mtu: must be an integer')),
    );
  });
  it('checks only the layer-2 part when the addresses come from a plugin that keeps nothing in the log', () => {
    const d = desiredOf({ ...rec, conf: { ...conf, ipam: { type: 'dhcp' } } }, undefined);
    expect(d.own.addresses).toEqual([]);
    expect(d.own.chains).toEqual([]);
    expect(d.own.links).toHaveLength(2);
    expect(d.notes[0]).toContain('the dhcp IPAM plugin, which keeps nothing');
  });
  it('static IPAM: the configured address', () => {
    const d = desiredOf(
      { ...rec, conf: { ...conf, ipMasq: false, ipam: { type: 'static', addresses: [{ address: '10.9.0.5/24' }] } } },
      undefined,
    );
    expect(d.own.addresses).toEqual([{ ns: POD, dev: 'eth0', cidr: '10.9.0.5/24' }]);
  });
  it("the record's host-local config (for free addresses); union keeps each object once", () => {
    expect(recordIpamConf(rec)?.rangeSets).toHaveLength(1);
    expect(recordIpamConf({ ...rec, conf: { ...conf, ipam: { type: 'dhcp' } } })).toBeUndefined();
    const d = desiredOf();
    expect(union([d.shared, d.shared]).links).toHaveLength(1);
  });
});

describe('findings: the plan in words', () => {
  const d = desiredOf();
  const all = union([d.own, d.shared]);
  it('is empty when the kernel has what is desired (plan(d, d) = [])', () => {
    expect(findings(all, all, d.scope)).toEqual([]);
  });
  it('names a missing route, a missing address, a missing rule, a wrong MTU and an unexpected address', () => {
    const pod = all.links.find((l) => l.ns === POD)!;
    const seen: KernelState = {
      ...all,
      routes: [],
      addresses: [...all.addresses.filter((a) => a.ns !== POD), { ns: POD, dev: 'eth0', cidr: '10.99.0.9/24' }],
      rules: [],
      links: all.links.map((l) => (l === pod ? { ...l, mtu: 1400 } : l)),
    };
    const want: KernelState = { ...all, links: all.links.map((l) => (l === pod ? { ...l, mtu: 1500 } : l)) };
    const texts = findings(want, seen, d.scope).map((f) => f.text);
    expect(texts).toEqual([
      `veth eth0 differs: mtu 1400, want 1500 (in ${POD})`,
      `address 10.99.0.9/24 on eth0 is there but not wanted (in ${POD})`,
      `address 10.22.0.2/24 on eth0 is missing (in ${POD})`,
      `route 0.0.0.0/0 via 10.22.0.1 dev eth0 is missing (in ${POD})`,
      expect.stringMatching(/^iptables rule nat\/POSTROUTING -s 10\.22\.0\.2\/32 .* is missing \(in the host namespace\)$/),
    ]);
  });
  it('a missing link is one finding; a chain with a rule gone says which', () => {
    const noBridge = { ...all, links: all.links.filter((l) => l.kind !== 'bridge') };
    expect(
      findings(all, noBridge, d.scope)
        .filter((f) => f.kind === 'link')
        .map((f) => f.text),
    ).toEqual(['bridge cni0 is missing (in the host namespace)']);
    const chain = all.chains[0]!;
    const short = { ...all, chains: [{ ...chain, rules: chain.rules.slice(1) }] };
    const f = findings(all, short, d.scope);
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ kind: 'chain', problem: 'differs' });
    expect(f[0]!.detail).toContain(`missing rule ${chain.rules[0]}`);
  });
  it('property: no findings exactly when plan has nothing to do', () => {
    const parts = ['links', 'addresses', 'routes', 'chains', 'rules'] as const;
    fc.assert(
      fc.property(fc.subarray([...parts]), fc.nat(3), (drop, which) => {
        const seen = { ...all } as Record<string, unknown>;
        for (const k of drop) {
          const xs = all[k] as readonly unknown[];
          seen[k] = xs.filter((_, i) => i !== which % Math.max(1, xs.length));
        }
        const ops = plan(all, seen as unknown as KernelState, d.scope);
        const f = findings(all, seen as unknown as KernelState, d.scope);
        expect(f.length === 0).toBe(ops.length === 0);
        expect(describeOps(ops, all, seen as unknown as KernelState)).toEqual(f);
      }),
      { numRuns: runs(100) },
    );
  });
});

describe('the plan report', () => {
  const f = findings(desiredOf().own, emptyKernelState(), desiredOf().scope);
  it('exit 0 in sync, 2 on drift or an unreadable namespace; text and groups', () => {
    const ok = report([group({ kind: 'network', id: 'network mynet', title: 'bridge cni0' }, [])], []);
    expect(planExit(ok)).toBe(0);
    expect(renderPlan(ok)).toBe('network mynet: bridge cni0: in sync\nin sync: 1 checked, nothing to change\n');
    const bad = report(
      [group({ kind: 'attachment', id: 'attachment mynet c1/eth0', title: 'veth' }, f)],
      [{ what: 'network blue', why: 'ptp' }],
    );
    expect(planExit(bad)).toBe(2);
    const text = renderPlan(bad);
    expect(text).toContain(
      `attachment mynet c1/eth0: veth: ${f.length} differences\n  veth veth0a1b2c3d is missing (in the host namespace)\n  veth eth0 is missing (in ${POD})\n`,
    );
    expect(text).toContain('not checked:\n  network blue: ptp\n');
    expect(planExit(report([group({ kind: 'attachment', id: 'a', title: 't' }, [], [], 'gone')], []))).toBe(2);
  });
  it('names what cannot be checked: host-local addresses no bridge record covers, plugins felt cni ran that keep nothing in the log', () => {
    const u = uncheckedOf(
      [
        {
          network: 'mynet',
          state: {
            ...ipam,
            allocations: { ...ipam.allocations, '10.22.0.9': { ...ipam.allocations['10.22.0.2']!, ip: '10.22.0.9', containerId: 'p9' } },
          },
        },
      ],
      [{ network: 'mynet', records: [rec] }],
      [
        {
          network: 'mynet',
          state: {
            attachments: {
              'c1/eth0': { containerId: 'c1', ifname: 'eth0', netns: POD, plugins: ['bridge', 'portmap'], ips: [], since: '' },
            },
          },
        },
      ],
    );
    expect(u).toEqual([
      {
        what: 'network mynet',
        why: expect.stringContaining('1 address allocated by host-local (p9/eth0 10.22.0.9) belong to attachments no bridge record covers'),
      },
      {
        what: 'network mynet',
        why: expect.stringContaining(
          "felt cni ran portmap for its attachments; what that plugin writes (e.g. portmap's DNAT rules) is not in the log",
        ),
      },
    ]);
  });
});

const netConfig = (() => {
  const r = parseNetConfig(JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right.config;
})();
const node: NodeState = {
  ...nodeInitial(),
  config: netConfig,
  ownLease: {
    key: '10.244.1.0-24',
    subnet: '10.244.1.0/24',
    publicIP: '198.51.100.11',
    backendType: 'vxlan',
    vtepMac: '02:00:00:00:00:11',
    expiration: '2026-01-02T00:00:00.000Z',
    since: '2026-01-01T00:00:00.000Z',
  },
  remotes: {
    '10.244.2.0-24': {
      key: '10.244.2.0-24',
      subnet: '10.244.2.0/24',
      attrs: { PublicIP: '198.51.100.12', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:12' } },
      expiration: '2026-01-02T00:00:00.000Z',
      since: '2026-01-01T00:01:00.000Z',
      changed: '2026-01-01T00:05:00.000Z',
    },
    '10.244.3.0-24': {
      key: '10.244.3.0-24',
      subnet: '10.244.3.0/24',
      attrs: { PublicIP: '198.51.100.13', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:13' } },
      expiration: '2026-01-02T00:00:00.000Z',
      since: '2026-01-01T00:02:00.000Z',
      changed: '2026-01-01T00:02:00.000Z',
    },
  },
};
const overlayNode = {
  publicIP: '198.51.100.11',
  underlayDev: 'eth0',
  underlayCidr: '198.51.100.0/24',
  underlayMtu: 1500,
  vtepMac: '02:00:00:00:00:11',
  ipMasq: true,
};

describe('reconcile.json and the overlay check', () => {
  it('keeps running totals; drift repaired counts full passes only; reads back only a record', () => {
    const a = nextReconcile(undefined, { time: 't1', kind: 'full', durationMs: 12.345, ops: 3 }, overlayNode, 60, 'net:[1]');
    const b = nextReconcile(a, { time: 't2', kind: 'delta', durationMs: 1, ops: 2 }, overlayNode, 60);
    expect(a).toMatchObject({
      kind: 'full',
      durationMs: 12.3,
      ops: 3,
      driftRepaired: 3,
      passes: 1,
      totalDriftRepaired: 3,
      hostNs: 'net:[1]',
    });
    expect(b).toMatchObject({ kind: 'delta', ops: 2, driftRepaired: 0, passes: 2, totalDriftRepaired: 3 });
    expect(parseReconcile(JSON.stringify(b))).toEqual(b);
    expect(parseReconcile('{"time":1}')).toBeUndefined();
    expect(parseReconcile('not json')).toBeUndefined();
    expect(overlayNodeOf(b.node)).toEqual(overlayNode);
    expect(overlayNodeOf({ publicIP: 'x' })).toBeUndefined();
  });
  it('reads what feltd reads: iptables with --ip-masq, the fdb for vxlan', () => {
    const c = overlayCheck(node, overlayNode);
    if (E.isLeft(c)) throw new Error(c.left);
    expect(c.right.iptables).toEqual([4]);
    expect(c.right.fdb).toBe(true);
    expect(c.right.desired.routes.map((r) => r.dst).sort()).toEqual(['10.244.2.0/24', '10.244.3.0/24']);
    expect(overlayCheck({ ...node, ownLease: null }, overlayNode)).toEqual(E.left('no subnet lease held yet'));
  });
});

describe('status', () => {
  const rec1 = nextReconcile(undefined, { time: '2026-01-01T12:00:00.000Z', kind: 'full', durationMs: 5, ops: 1 }, overlayNode, 30);
  const input = {
    now: '2026-01-01T12:00:10.000Z',
    nodes: [{ stream: 'node/198.51.100.11', state: node }],
    reconcile: rec1,
    ipam: [{ network: 'mynet', state: ipam, conf: recordIpamConf(rec)! }],
  };
  it('the lease, its expiry and when renewal is due, from the margin feltd recorded (or --renew-margin)', () => {
    const st = status(input);
    expect(st.nodes[0]!.lease).toEqual({
      subnet: '10.244.1.0/24',
      ipv6Subnet: null,
      since: '2026-01-01T00:00:00.000Z',
      expiration: '2026-01-02T00:00:00.000Z',
      expiresInSeconds: 12 * 3600 - 10,
      renewalDue: '2026-01-01T23:30:00.000Z',
      renewalDueInSeconds: 11.5 * 3600 - 10,
      renewMarginMinutes: 30,
      renewMarginFrom: 'reconcile.json',
    });
    expect(status({ ...input, renewMarginMinutes: 120 }).nodes[0]!.lease).toMatchObject({
      renewalDue: '2026-01-01T22:00:00.000Z',
      renewMarginFrom: 'flag',
    });
    expect(status({ ...input, reconcile: undefined }).nodes[0]!.lease).toMatchObject({
      renewMarginMinutes: 60,
      renewMarginFrom: 'default',
    });
  });
  it('peers with their newest and oldest change; the last reconcile, or none recorded', () => {
    const st = status(input);
    expect(st.nodes[0]!.peers).toEqual({
      count: 2,
      newestChange: { key: '10.244.2.0-24', publicIP: '198.51.100.12', time: '2026-01-01T00:05:00.000Z' },
      oldestChange: { key: '10.244.3.0-24', publicIP: '198.51.100.13', time: '2026-01-01T00:02:00.000Z' },
    });
    expect(st.lastReconcile).toMatchObject({ kind: 'full', ops: 1, driftRepaired: 1, passes: 1 });
    expect(st.lastReconcile).not.toHaveProperty('node');
    const none = status({ ...input, reconcile: undefined });
    expect(none.lastReconcile).toBeNull();
    expect(none.reconcileNote).toBe('no reconcile recorded');
    expect(renderStatus(none)).toContain('last reconcile: no reconcile recorded');
  });
  it('free addresses: the range set minus the gateway minus the allocations; unknown without the ranges', () => {
    const st = status(input);
    expect(st.networks).toEqual([{ network: 'mynet', allocations: 1, free: 252, size: 254, ranges: '10.22.0.1-10.22.0.254' }]);
    const blind = status({ ...input, ipam: [{ network: 'mynet', state: ipam }] });
    expect(blind.networks[0]).toMatchObject({ free: null, note: expect.stringContaining('not in the log') });
    const text = renderStatus(st);
    expect(text).toContain(
      'lease: 10.244.1.0/24 since 2026-01-01T00:00:00.000Z, expires 2026-01-02T00:00:00.000Z (in 11h 59m), renewal due 2026-01-01T23:30:00.000Z (in 11h 29m, 30 min before expiry)',
    );
    expect(text).toContain('peers: 2, newest change 2026-01-01T00:05:00.000Z (10.244.2.0-24 at 198.51.100.12)');
    expect(text).toContain(
      'last reconcile: full pass at 2026-01-01T12:00:00.000Z (10s ago), took 5 ms, 1 op, drift repaired 1; 1 pass since feltd started',
    );
    expect(text).toMatch(/mynet {4}1 {10}252 {3}10\.22\.0\.1-10\.22\.0\.254/);
  });
  it('feltd serving CNI (its cni.json) and the attachments per network; none recorded says so', () => {
    const record = parseCniRecord(
      JSON.stringify({
        socket: '/run/felt/cni.sock',
        since: '2026-01-01T11:00:00.000Z',
        time: '2026-01-01T12:00:05.000Z',
        requestsLastMinute: 42,
        requestsTotal: 900,
      }),
    );
    expect(record).toBeDefined();
    const st = status({ ...input, cni: record!, attachments: [{ network: 'mynet', count: 1 }] });
    expect(st.cni).toEqual(record);
    const text = renderStatus(st);
    expect(text).toContain(
      'cni: feltd serving /run/felt/cni.sock since 2026-01-01T11:00:00.000Z, 42 requests in the minute before 2026-01-01T12:00:05.000Z (5s ago), 900 in all',
    );
    expect(text).toContain('attachments: mynet 1');
    expect(renderStatus(status(input))).toContain('cni: no feltd serving CNI recorded (the plugins run in-process)');
    // Untrusted text: anything but the record's shape is refused.
    for (const bad of [
      '',
      '[]',
      '{"socket":1}',
      JSON.stringify({ socket: 's', since: 'x', time: 'y', requestsLastMinute: -1, requestsTotal: 0 }),
    ]) {
      expect(parseCniRecord(bad)).toBeUndefined();
    }
  });
  it('durations', () => {
    expect([duration(5), duration(-65), duration(3 * 3600 + 60), duration(2 * 86400 + 3600)]).toEqual([
      'in 5s',
      '1m 5s ago',
      'in 3h 1m',
      'in 2d 1h',
    ]);
  });
});

describe('why: rules, chains and attachments, and the kernel now', () => {
  const d = desiredOf();
  const views = { ipam: [{ network: 'mynet', state: ipam }], nodes: [], attachments: [{ network: 'mynet', record: rec, desired: d }] };
  const history = [{ position: 1, stream: 'bridge/mynet', type: 'AttachmentRecorded', data: rec, time: '2026-01-01T00:00:00.000Z' }];
  const chain = d.own.chains[0]!.chain;
  const sources = [{ id: 'attachment mynet c1/eth0', state: union([d.own, d.shared]) }];
  it('a container: its attachment, when it was recorded, its addresses', () => {
    expect(explain('c1', views, history)[0]).toBe(
      `container c1 interface eth0 on network "mynet": the bridge plugin attached it: veth veth0a1b2c3d on bridge cni0 to eth0 in ${POD} (host side in network namespace net:[4026531840]), recorded at 2026-01-01T00:00:00.000Z (event #1); addresses 10.22.0.2/24`,
    );
    expect(explain('c1/eth0', views, history)[0]).toContain('container c1 interface eth0');
  });
  it('a masquerade chain and its rule', () => {
    expect(explain(chain, views, [])[0]).toMatch(
      new RegExp(`^the nat chain ${chain} is the masquerade chain of container c1 interface eth0 on network "mynet" \\(bridge ipMasq\\)`),
    );
    expect(explain('-s 10.22.0.2/32', views, [])[0]).toMatch(
      /^the nat\/POSTROUTING rule "-s 10\.22\.0\.2\/32 .*" sends traffic from container c1/,
    );
    expect(explain('CNI-HOSTPORT-DNAT', views, [])[0]).toContain('written by the portmap plugin');
  });
  it('the gateway address and a route', () => {
    expect(explain('10.22.0.1', views, [])).toContain(
      '10.22.0.1/24 on bridge cni0 is the gateway address of network "mynet" (isGateway), wanted by container c1 interface eth0 on network "mynet" and every other attachment of the network',
    );
    expect(explain('0.0.0.0/0', views, []).join('\n')).toContain(
      `the route 0.0.0.0/0 via 10.22.0.1 dev eth0 in ${POD} is one of container c1`,
    );
  });
  it('matchObjects picks the named objects; presence says which the kernel has', () => {
    const m = matchObjects('10.22.0.2', views, sources);
    expect(m).toHaveLength(1);
    expect(m[0]!.state.addresses).toEqual([{ ns: POD, dev: 'eth0', cidr: '10.22.0.2/24' }]);
    expect(m[0]!.state.rules).toHaveLength(1);
    expect(matchObjects('192.0.2.9', views, sources)).toEqual([]);
    expect(matchObjects('c1', views, sources)[0]!.state.links).toHaveLength(3);
    const seen = { ...m[0]!.state, rules: [] };
    expect(presence(m[0]!.state, seen)).toEqual([
      `the kernel has address 10.22.0.2/24 on eth0 now (in ${POD})`,
      expect.stringMatching(
        /^the kernel does NOT have iptables rule nat\/POSTROUTING -s 10\.22\.0\.2\/32 .* now \(in the host namespace\)/,
      ),
    ]);
  });
});
