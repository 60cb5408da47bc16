import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { desiredOverlay, overlayCache, type Overlay, type OverlayNode } from '../../core/flannel/desired.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { initialState, type NodeState, type RemoteLease } from '../../core/flannel/node.ts';
import type { NetConfig } from '../../core/flannel/types.ts';
import { routeKey } from '../../core/kernel/keys.ts';
import { emptyKernelState, HOST, type KernelState, type Op, type Route } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';
import { runs } from '../support/runs.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';

const conf = (o: object): NetConfig => {
  const r = parseNetConfig(JSON.stringify(o));
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right.config;
};
const EXP = '2030-01-02T00:00:00.000Z';
const mac = (n: number) => `3e:9c:0f:11:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`;

const remote = (n: number, o: { ip?: string; type?: string; mac?: string | null; ipv6?: boolean; exp?: string } = {}): RemoteLease => {
  const subnet = `10.244.${n}.0/24`;
  const ipv6Subnet = o.ipv6 ? `fd00:10:244:${n.toString(16)}::/64` : undefined;
  const key = `10.244.${n}.0-24${ipv6Subnet ? `&fd00:10:244:${n.toString(16)}::-64` : ''}`;
  return {
    key,
    subnet,
    ...(ipv6Subnet ? { ipv6Subnet } : {}),
    attrs: {
      PublicIP: o.ip ?? `198.51.100.${n}`,
      PublicIPv6: o.ipv6 ? `2001:db8::${n.toString(16)}` : null,
      BackendType: o.type ?? 'vxlan',
      ...(o.mac === null ? {} : { BackendData: { VNI: 1, VtepMAC: o.mac ?? mac(n) } }),
      ...(o.ipv6 ? { BackendV6Data: { VNI: 1, VtepMAC: mac(n + 0x100) } } : {}),
    },
    expiration: o.exp ?? EXP,
    since: EXP,
    changed: EXP,
  };
};

const nodeState = (config: NetConfig, remotes: RemoteLease[], ownN = 1, ipv6 = false): NodeState => ({
  ...initialState(),
  config,
  ownLease: {
    key: `10.244.${ownN}.0-24`,
    subnet: `10.244.${ownN}.0/24`,
    ...(ipv6 ? { ipv6Subnet: `fd00:10:244:${ownN}::/64`, publicIPv6: '2001:db8::1', vtepMacV6: mac(0x101) } : {}),
    publicIP: '198.51.100.1',
    backendType: config.backend.type,
    vtepMac: mac(1),
    expiration: EXP,
    since: EXP,
  },
  remotes: Object.fromEntries(remotes.map((r) => [r.key, r])),
});

const NODE: OverlayNode = {
  publicIP: '198.51.100.1',
  underlayDev: 'eth0',
  underlayCidr: '198.51.100.1/24',
  underlayMtu: 1500,
  vtepMac: mac(1),
  ipMasq: true,
};
const vx = conf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });

const right = <T>(r: E.Either<string, T>): T => {
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right;
};

describe('desiredOverlay: vxlan', () => {
  it('the device, its /32 address, one neighbour/fdb/route per remote, subnet.env', () => {
    const o = right(desiredOverlay(nodeState(vx, [remote(2), remote(3)]), NODE));
    expect(o.kernel.links).toEqual([
      {
        ns: HOST,
        name: 'flannel.1',
        kind: 'vxlan',
        mtu: 1450,
        mac: mac(1),
        up: true,
        vxlan: { vni: 1, local: '198.51.100.1', port: 8472, learning: false, gbp: false, dev: 'eth0' },
      },
    ]);
    expect(o.kernel.addresses).toEqual([{ ns: HOST, dev: 'flannel.1', cidr: '10.244.1.0/32' }]);
    expect(o.kernel.neighbours).toEqual([
      { ns: HOST, dev: 'flannel.1', ip: '10.244.2.0', lladdr: mac(2) },
      { ns: HOST, dev: 'flannel.1', ip: '10.244.3.0', lladdr: mac(3) },
    ]);
    expect(o.kernel.fdb).toEqual([
      { ns: HOST, dev: 'flannel.1', mac: mac(2), dst: '198.51.100.2' },
      { ns: HOST, dev: 'flannel.1', mac: mac(3), dst: '198.51.100.3' },
    ]);
    expect(o.kernel.routes).toEqual([
      { ns: HOST, dst: '10.244.2.0/24', gw: '10.244.2.0', dev: 'flannel.1', onlink: true },
      { ns: HOST, dst: '10.244.3.0/24', gw: '10.244.3.0', dev: 'flannel.1', onlink: true },
    ]);
    expect(o.subnetEnv).toBe('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    expect(o.ignored).toEqual([]);
  });

  it('plan orders neighbour and fdb before the route, as flannel does', () => {
    const o = right(desiredOverlay(nodeState(vx, [remote(2)]), NODE));
    const ops = plan(o.kernel, emptyKernelState(), o.scope).map((x) => x.op);
    expect(ops.indexOf('neigh.replace')).toBeLessThan(ops.indexOf('route.replace'));
    expect(ops.indexOf('fdb.replace')).toBeLessThan(ops.indexOf('route.replace'));
  });

  it('VNI, port, GBP, Learning and Backend.MTU come from the config', () => {
    const c = conf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', VNI: 42, Port: 4789, GBP: true, Learning: true, MTU: 9000 } });
    const o = right(desiredOverlay(nodeState(c, [remote(2)]), NODE));
    expect(o.kernel.links[0]).toMatchObject({ name: 'flannel.42', mtu: 8950, vxlan: { vni: 42, port: 4789, gbp: true, learning: true } });
    expect(o.kernel.routes[0]!.dev).toBe('flannel.42');
    expect(o.mtu).toBe(8950);
  });

  it('DirectRouting: nodes on the underlay segment get a plain route, the others the overlay', () => {
    const c = conf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', DirectRouting: true } });
    const o = right(desiredOverlay(nodeState(c, [remote(2), remote(3, { ip: '203.0.113.3' })]), NODE));
    expect(o.kernel.routes).toEqual([
      { ns: HOST, dst: '10.244.2.0/24', gw: '198.51.100.2', dev: 'eth0' },
      { ns: HOST, dst: '10.244.3.0/24', gw: '10.244.3.0', dev: 'flannel.1', onlink: true },
    ]);
    expect(o.kernel.neighbours.map((n) => n.ip)).toEqual(['10.244.3.0']);
    expect(o.kernel.fdb.map((f) => f.dst)).toEqual(['203.0.113.3']);
  });

  it('ignores leases of another backend, without a VtepMAC, holding our IP, or conflicting', () => {
    const o = right(
      desiredOverlay(
        nodeState(vx, [
          remote(2, { type: 'host-gw' }),
          remote(3, { mac: null }),
          remote(4, { ip: '198.51.100.1' }),
          remote(5, { mac: mac(6), exp: '2030-01-01T00:00:00.000Z' }),
          remote(6),
        ]),
        NODE,
      ),
    );
    expect(o.kernel.routes.map((r) => r.dst)).toEqual(['10.244.6.0/24']);
    expect(o.ignored).toEqual([
      'node 198.51.100.2 (lease 10.244.2.0-24): IPv4: backend type "host-gw" is not vxlan',
      'node 198.51.100.3 (lease 10.244.3.0-24): IPv4: BackendData: must be an object with VNI and VtepMAC, got undefined',
      "node 198.51.100.1 (lease 10.244.4.0-24): IPv4: holds this node's public IP 198.51.100.1",
      `node 198.51.100.5 (lease 10.244.5.0-24): IPv4: VtepMAC ${mac(6)} is also claimed by the newer lease 10.244.6.0-24`,
    ]);
  });

  it('needs a config, an own lease and a good node description', () => {
    expect(desiredOverlay(initialState(), NODE)).toEqual(E.left('no network config loaded yet'));
    expect(desiredOverlay({ ...initialState(), config: vx }, NODE)).toEqual(E.left('no subnet lease held yet'));
    expect(desiredOverlay(nodeState(vx, []), { ...NODE, vtepMac: 'x' })).toEqual(E.left('node: vtepMac "x" is not a MAC address'));
    expect(desiredOverlay(nodeState(vx, []), { ...NODE, publicIP: 'fd00::1' })).toEqual(
      E.left('node: publicIP "fd00::1" is not an IPv4 address'),
    );
    expect(desiredOverlay(nodeState(vx, []), { ...NODE, underlayMtu: 0 })).toEqual(E.left('node: underlayMtu 0 is not a positive integer'));
  });
});

describe('desiredOverlay: host-gw', () => {
  const hg = conf({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
  it('a route per remote subnet via its public IP, MTU of the underlay, no device', () => {
    const o = right(
      desiredOverlay(nodeState(hg, [remote(2, { type: 'host-gw' }), remote(3, { type: 'host-gw' })]), { ...NODE, ipMasq: false }),
    );
    expect(o.kernel.links).toEqual([]);
    expect(o.kernel.routes).toEqual([
      { ns: HOST, dst: '10.244.2.0/24', gw: '198.51.100.2', dev: 'eth0' },
      { ns: HOST, dst: '10.244.3.0/24', gw: '198.51.100.3', dev: 'eth0' },
    ]);
    expect(o.subnetEnv).toBe('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n');
    expect(o.kernel.chains).toEqual([]);
    expect(o.scope.routeDsts).toEqual([{ ns: HOST, dev: 'eth0', within: '10.244.0.0/16' }]);
  });

  it('refuses a node that is not on the segment, naming it', () => {
    expect(desiredOverlay(nodeState(hg, [remote(2, { type: 'host-gw', ip: '203.0.113.2' })]), NODE)).toEqual(
      E.left(
        "host-gw: node 203.0.113.2 (lease 10.244.2.0-24) is not on this node's L2 segment 198.51.100.1/24 on eth0; host-gw needs every node on one segment (use vxlan, with DirectRouting for the nodes that share one)",
      ),
    );
  });
});

describe('desiredOverlay: iptables as flanneld writes them (iptables-save form)', () => {
  it('FLANNEL-POSTRTG and FLANNEL-FWD, and the jumps into them', () => {
    const o = right(desiredOverlay(nodeState(vx, []), NODE));
    expect(o.kernel.chains).toEqual([
      {
        ns: HOST,
        family: 4,
        table: 'nat',
        chain: 'FLANNEL-POSTRTG',
        rules: [
          '-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
          '-s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
          '-s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
          '! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
          '-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
          '! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
        ],
      },
      {
        ns: HOST,
        family: 4,
        table: 'filter',
        chain: 'FLANNEL-FWD',
        rules: [
          '-s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
          '-d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        ],
      },
    ]);
    expect(o.kernel.rules).toEqual([
      { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG' },
      { ns: HOST, family: 4, table: 'filter', chain: 'FORWARD', rule: '-m comment --comment "flanneld forward" -j FLANNEL-FWD' },
    ]);
    const plain = right(desiredOverlay(nodeState(vx, []), { ...NODE, randomFully: false, ipMasq: true, forwardRules: false }));
    expect(plain.kernel.chains.map((c) => c.chain)).toEqual(['FLANNEL-POSTRTG']);
    expect(plain.kernel.chains[0]!.rules[4]).toBe('-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE');
    const none = right(desiredOverlay(nodeState(vx, []), { ...NODE, ipMasq: false }));
    expect(none.kernel.chains).toEqual([]);
    expect(none.kernel.rules).toEqual([]);
    expect(
      right(desiredOverlay(nodeState(vx, []), { ...NODE, ipMasq: false, forwardRules: true })).kernel.chains.map((c) => c.chain),
    ).toEqual(['FLANNEL-FWD']);
  });
});

describe('desiredOverlay: dual stack', () => {
  const ds = conf({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', Backend: { Type: 'vxlan' } });
  const node6: OverlayNode = { ...NODE, publicIPv6: '2001:db8::1', underlayCidrV6: '2001:db8::1/64', vtepMacV6: mac(0x101) };
  it('flannel-v6.<VNI> with its /128, per-family triples, ip6tables chains', () => {
    const o = right(desiredOverlay(nodeState(ds, [remote(2, { ipv6: true })], 1, true), node6));
    expect(o.kernel.links.map((l) => [l.name, l.mtu, l.vxlan?.local, l.mac])).toEqual([
      ['flannel.1', 1450, '198.51.100.1', mac(1)],
      ['flannel-v6.1', 1430, '2001:db8::1', mac(0x101)],
    ]);
    expect(o.kernel.addresses.map((a) => a.cidr)).toEqual(['10.244.1.0/32', 'fd00:10:244:1::/128']);
    expect(o.kernel.routes).toEqual([
      { ns: HOST, dst: '10.244.2.0/24', gw: '10.244.2.0', dev: 'flannel.1', onlink: true },
      { ns: HOST, dst: 'fd00:10:244:2::/64', gw: 'fd00:10:244:2::', dev: 'flannel-v6.1', onlink: true },
    ]);
    expect(o.kernel.fdb).toEqual([
      { ns: HOST, dev: 'flannel-v6.1', mac: mac(0x102), dst: '2001:db8::2' },
      { ns: HOST, dev: 'flannel.1', mac: mac(2), dst: '198.51.100.2' },
    ]);
    expect(o.kernel.chains.map((c) => `${c.family} ${c.chain}`)).toEqual([
      '4 FLANNEL-POSTRTG',
      '4 FLANNEL-FWD',
      '6 FLANNEL-POSTRTG',
      '6 FLANNEL-FWD',
    ]);
    expect(o.kernel.chains[2]!.rules[4]).toBe(
      '-s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    );
    expect(o.subnetEnv).toBe(
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n',
    );
  });
});

// ---- the kernel twin: ops folded onto a KernelState ---------------------------------------------------

/** Apply ops to the in-memory kernel twin (which does what Linux does with what goes along). */
function applyOps(s: KernelState, ops: readonly Op[]): KernelState {
  const k = memoryKernel(s);
  const r = k.applySync(ops);
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return k.state();
}

// ---- properties ---------------------------------------------------------------------------------------

const remotesArb = fc.uniqueArray(fc.integer({ min: 2, max: 250 }), { maxLength: 30 }).map((ns) => ns.map((n) => remote(n)));
const configArb = fc.constantFrom(
  vx,
  conf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', DirectRouting: true } }),
  conf({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } }),
);

describe('desiredOverlay properties', () => {
  it('exactly one route/neighbour/fdb triple per remote node and none for itself', () => {
    fc.assert(
      fc.property(remotesArb, fc.integer({ min: 1, max: 250 }), (remotes, ownN) => {
        const others = remotes.filter((r) => r.subnet !== `10.244.${ownN}.0/24`);
        const o = right(desiredOverlay(nodeState(vx, others, ownN), NODE));
        expect(o.kernel.routes).toHaveLength(others.length);
        expect(o.kernel.neighbours).toHaveLength(others.length);
        expect(o.kernel.fdb).toHaveLength(others.length);
        for (const r of others) {
          const data = r.attrs.BackendData as { VtepMAC: string };
          const gw = r.subnet!.replace('/24', '');
          expect(o.kernel.routes.filter((x) => x.dst === r.subnet)).toEqual([
            { ns: HOST, dst: r.subnet, gw, dev: 'flannel.1', onlink: true },
          ]);
          expect(o.kernel.neighbours.filter((n) => n.ip === gw)).toEqual([{ ns: HOST, dev: 'flannel.1', ip: gw, lladdr: data.VtepMAC }]);
          expect(o.kernel.fdb.filter((f) => f.mac === data.VtepMAC)).toEqual([
            { ns: HOST, dev: 'flannel.1', mac: data.VtepMAC, dst: r.attrs.PublicIP },
          ]);
        }
        expect(o.kernel.routes.some((r) => r.dst === `10.244.${ownN}.0/24`)).toBe(false);
        expect(o.kernel.fdb.some((f) => f.dst === NODE.publicIP || f.mac === NODE.vtepMac)).toBe(false);
      }),
    );
  });

  it('one cache carried across states (as feltd keeps it) gives what no cache gives', () => {
    const backends = [{ Type: 'vxlan' }, { Type: 'host-gw' }, { Type: 'vxlan', DirectRouting: true }, { Type: 'vxlan', VNI: 2 }];
    const configs = backends.map((Backend) => conf({ Network: '10.244.0.0/16', Backend }));
    const node = { ...NODE, underlayCidr: '198.51.100.0/25' };
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.uniqueArray(fc.integer({ min: 2, max: 40 }), { maxLength: 20 }),
            fc.integer({ min: 0, max: 3 }),
            fc.integer({ min: 1, max: 40 }),
            fc.nat(3),
          ),
          {
            minLength: 1,
            maxLength: 8,
          },
        ),
        (steps) => {
          const cache = overlayCache();
          // One lease object per node and backend type, kept across states (as the fold keeps untouched rows),
          // replaced by a new one with another VtepMAC now and then.
          const pool = new Map<string, RemoteLease>();
          for (const [ns, c, ownN, fresh] of steps) {
            const config = configs[c]!;
            const type = config.backend.type;
            const leases = ns
              .filter((n) => n !== ownN)
              .map((n) => {
                const k = `${type} ${n}`;
                const r = pool.get(k);
                if (r && (fresh !== 0 || n % 2)) return r;
                const made = remote(n, { type, mac: mac(n + (r ? 0x200 : 0)) });
                pool.set(k, made);
                return made;
              });
            const s = nodeState(config, leases, ownN);
            expect(desiredOverlay(s, node, cache)).toEqual(desiredOverlay(s, node));
          }
        },
      ),
      { numRuns: runs(200) },
    );
  });

  it("plan converges from any observed state, and never touches what is not felt's", () => {
    const staleRoute = fc
      .integer({ min: 2, max: 250 })
      .map((n): Route => ({ ns: HOST, dst: `10.244.${n}.0/24`, gw: `10.244.${n}.0`, dev: 'flannel.1', onlink: true }));
    const staleUnderlay = fc
      .integer({ min: 2, max: 250 })
      .map((n): Route => ({ ns: HOST, dst: `10.244.${n}.0/24`, gw: `198.51.100.${n}`, dev: 'eth0' }));
    const foreign: KernelState = {
      ...emptyKernelState(),
      links: [
        { ns: HOST, name: 'eth0', kind: 'device', mtu: 1500, up: true },
        { ns: HOST, name: 'cni0', kind: 'bridge', up: true },
      ],
      addresses: [{ ns: HOST, dev: 'eth0', cidr: '198.51.100.1/24' }],
      routes: [
        { ns: HOST, dst: '0.0.0.0/0', gw: '198.51.100.254', dev: 'eth0' },
        { ns: HOST, dst: '198.51.100.0/24', dev: 'eth0', scope: 'link' },
        { ns: HOST, dst: '10.244.1.0/24', dev: 'cni0', scope: 'link' },
      ],
      chains: [{ ns: HOST, family: 4, table: 'nat', chain: 'KUBE-POSTROUTING', rules: ['-j MASQUERADE'] }],
      rules: [{ ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-m comment --comment "kube" -j KUBE-POSTROUTING' }],
    };
    fc.assert(
      fc.property(
        configArb,
        remotesArb,
        fc.boolean(),
        fc.array(staleRoute, { maxLength: 5 }),
        fc.array(staleUnderlay, { maxLength: 5 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.boolean(),
        (config, remotes0, ipMasq, stale, staleUl, keepIdx, wrongMtu) => {
          const remotes = remotes0
            .filter((r) => r.subnet !== '10.244.1.0/24')
            .map((r) => (config.backend.type === 'host-gw' ? { ...r, attrs: { ...r.attrs, BackendType: 'host-gw' } } : r));
          const o: Overlay = right(desiredOverlay(nodeState(config, remotes), { ...NODE, ipMasq }));
          // Observed: part of what is wanted (some of it wrong), stale entries, and foreign objects.
          const keep = <T>(xs: readonly T[]) => xs.filter((_, i) => keepIdx.includes(i));
          const observed: KernelState = {
            ...foreign,
            links: [...foreign.links, ...keep(o.kernel.links).map((l) => (wrongMtu ? { ...l, mtu: 1400 } : l))],
            addresses: [
              ...foreign.addresses,
              ...keep(o.kernel.addresses),
              ...(o.kernel.links.length ? [{ ns: HOST, dev: 'flannel.1', cidr: '10.244.77.0/32' }] : []),
            ],
            // The kernel holds one route per key: the first of each key wins.
            routes: [...foreign.routes, ...keep(o.kernel.routes), ...(o.kernel.links.length ? stale : []), ...staleUl].filter(
              (r, i, all) => all.findIndex((x) => routeKey(x) === routeKey(r)) === i,
            ),
            neighbours: keep(o.kernel.neighbours),
            fdb: [
              ...keep(o.kernel.fdb),
              ...(o.kernel.links.length ? [{ ns: HOST, dev: 'flannel.1', mac: '3e:00:00:00:00:99', dst: '198.51.100.99' }] : []),
            ],
            chains: [...foreign.chains, ...keep(o.kernel.chains).map((c) => ({ ...c, rules: c.rules.slice(1) }))],
            rules: [
              ...foreign.rules,
              ...keep(o.kernel.rules),
              { ns: HOST, family: 4, table: 'filter', chain: 'FORWARD', rule: '-m comment --comment "old" -j FLANNEL-OLD' },
            ],
          };
          const after = applyOps(observed, plan(o.kernel, observed, o.scope));
          expect(plan(o.kernel, after, o.scope)).toEqual([]);
          // Everything desired is there; nothing foreign was touched.
          for (const r of o.kernel.routes) expect(after.routes.filter((x) => routeKey(x) === routeKey(r))).toEqual([r]);
          for (const r of foreign.routes) expect(after.routes).toContainEqual(r);
          for (const l of foreign.links) expect(after.links).toContainEqual(l);
          expect(after.chains).toContainEqual(foreign.chains[0]);
          expect(after.rules).toContainEqual(foreign.rules[0]);
          expect(after.addresses).toContainEqual(foreign.addresses[0]);
          // Stale overlay state is gone.
          const wantDst = new Set(o.kernel.routes.map((r) => r.dst));
          expect(after.routes.filter((r) => r.dev === 'eth0' && r.dst.startsWith('10.244.') && !wantDst.has(r.dst))).toEqual([]);
          expect(after.fdb.filter((f) => f.mac === '3e:00:00:00:00:99')).toEqual([]);
          expect(after.rules.filter((r) => r.rule.includes('FLANNEL-OLD'))).toEqual([]);
        },
      ),
      { numRuns: runs(200) },
    );
  });
});
