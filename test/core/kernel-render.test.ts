// The Linux adapter's pure halves without a kernel: what iproute2/iptables print, parsed into the model; ops
// rendered into batches; tool errors mapped back to the op at fault.

import { describe, expect, it } from 'vitest';
import {
  pairVeths,
  parseIpBatch,
  parseIptablesSave,
  parseQdiscs,
  parseFdb,
  parseRedirect,
  toLink,
  type IpState,
} from '../../adapters/kernel/parse.ts';
import { explain, invocations, linkAddLines, netnsArg, restoreLines, steps, type Invocation } from '../../adapters/kernel/render.ts';
import { HOST, type Op } from '../../core/kernel/model.ts';

const POD = '/var/run/netns/pod1';

const ipOut = (links: unknown[], addrs: unknown[], routes: unknown[], neigh: unknown[], ids: unknown[] = []): string =>
  [links, addrs, routes, neigh, ids].map((x) => JSON.stringify(x)).join('\n') + '\n';

describe('parseIpBatch', () => {
  const links = [
    { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP', 'LOWER_UP'], mtu: 65536, address: '00:00:00:00:00:00' },
    {
      ifindex: 2,
      ifname: 'cni0',
      flags: ['BROADCAST', 'MULTICAST', 'UP'],
      mtu: 1500,
      address: '6A:A0:AD:E8:A5:F5',
      linkinfo: { info_kind: 'bridge', info_data: { vlan_filtering: 0 } },
    },
    {
      ifindex: 3,
      link_index: 2,
      link_netnsid: 0,
      ifname: 'veth1',
      flags: ['BROADCAST', 'UP'],
      mtu: 1500,
      master: 'cni0',
      address: '02:00:00:00:00:01',
      linkinfo: { info_kind: 'veth', info_slave_kind: 'bridge', info_slave_data: { hairpin: true } },
    },
    {
      ifindex: 4,
      link: 'e1',
      ifname: 'e0',
      flags: ['BROADCAST', 'PROMISC'],
      mtu: 1500,
      address: '02:00:00:00:00:02',
      linkinfo: { info_kind: 'veth' },
    },
    {
      ifindex: 5,
      ifname: 'flannel.1',
      flags: ['BROADCAST', 'UP'],
      mtu: 1450,
      address: '0a:58:24:14:29:cd',
      linkinfo: { info_kind: 'vxlan', info_data: { id: 1, local: '198.51.100.2', link: 'eth0', port: 8472, learning: false, gbp: true } },
    },
    {
      ifindex: 6,
      link: 'e0',
      ifname: 'mv0',
      flags: ['BROADCAST'],
      mtu: 1500,
      address: '02:00:00:00:00:03',
      linkinfo: { info_kind: 'macvlan', info_data: { mode: 'bridge' } },
    },
    { ifindex: 7, ifname: 'tun0', flags: ['POINTOPOINT'], mtu: 1500, linkinfo: { info_kind: 'tun' } },
  ];
  const addrs = [
    { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
    {
      ifname: 'cni0',
      addr_info: [
        { family: 'inet', local: '10.22.0.1', prefixlen: 16, scope: 'global' },
        { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
        { family: 'inet6', local: 'fd00::1', prefixlen: 64, scope: 'global', nodad: true },
      ],
    },
  ];
  const routes = [
    { dst: 'default', gateway: '198.51.100.1', dev: 'eth0', flags: [] },
    { dst: 'default', dev: 'eth0', metric: 1024, flags: [], pref: 'medium' },
    { dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'flannel.1', flags: ['onlink'] },
    { dst: '10.5.0.0/16', gateway: '198.51.100.1', dev: 'eth0', table: '100', metric: 50, flags: [], metrics: [{ mtu: 1400 }] },
    { dst: '198.51.100.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', prefsrc: '198.51.100.2', flags: [] },
    { dst: '10.1.0.1', dev: 'eth0', scope: 'link', flags: [] },
    { type: 'local', dst: '10.22.0.1', dev: 'cni0', table: 'local', protocol: 'kernel', scope: 'host', flags: [] },
    { type: 'multicast', dst: 'ff00::/8', dev: 'cni0', table: 'local', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
    { dst: 'fd01::/64', gateway: 'fd00::fe', dev: 'cni0', metric: 1024, flags: [], pref: 'medium' },
  ];
  const neigh = [
    { dst: '10.244.2.0', dev: 'flannel.1', lladdr: '02:11:22:33:44:55', state: ['PERMANENT'] },
    { dst: '10.22.0.9', dev: 'cni0', state: ['PERMANENT'] },
  ];

  it('maps links, addresses, routes and neighbours to the model', () => {
    const s = parseIpBatch(HOST, ipOut(links, addrs, routes, neigh)) as IpState;
    expect(typeof s).toBe('object');
    expect(s.links.map((l) => [l.name, l.kind])).toEqual([
      ['lo', 'loopback'],
      ['cni0', 'bridge'],
      ['veth1', 'veth'],
      ['e0', 'veth'],
      ['flannel.1', 'vxlan'],
      ['mv0', 'macvlan'],
      ['tun0', 'device'],
    ]);
    expect(s.links[1]).toEqual({
      ns: HOST,
      name: 'cni0',
      kind: 'bridge',
      mtu: 1500,
      mac: '6a:a0:ad:e8:a5:f5',
      up: true,
      master: null,
      promisc: false,
      allmulti: false,
      hairpin: false,
      bridge: { vlanFiltering: false },
    });
    expect(s.links[2]).toMatchObject({ master: 'cni0', hairpin: true, up: true });
    expect(s.links[2]!.veth).toBeUndefined(); // peer in another namespace: see pairVeths
    expect(s.links[3]).toMatchObject({ promisc: true, up: false, veth: { peer: 'e1', peerNs: HOST } });
    expect(s.links[4]!.vxlan).toEqual({ vni: 1, local: '198.51.100.2', port: 8472, learning: false, gbp: true, dev: 'eth0' });
    expect(s.links[5]!.macvlan).toEqual({ master: 'e0', mode: 'bridge' });
    expect(s.addresses).toEqual([
      { ns: HOST, dev: 'lo', cidr: '127.0.0.1/8' },
      { ns: HOST, dev: 'cni0', cidr: '10.22.0.1/16' },
      { ns: HOST, dev: 'cni0', cidr: 'fd00::1/64', nodad: true },
    ]);
    expect(s.routes).toEqual([
      { ns: HOST, dst: '0.0.0.0/0', gw: '198.51.100.1', dev: 'eth0' },
      { ns: HOST, dst: '::/0', dev: 'eth0' },
      { ns: HOST, dst: '10.244.2.0/24', gw: '10.244.2.0', dev: 'flannel.1', onlink: true },
      { ns: HOST, dst: '10.5.0.0/16', gw: '198.51.100.1', dev: 'eth0', table: 100, metric: 50, mtu: 1400 },
      { ns: HOST, dst: '10.1.0.1/32', dev: 'eth0', scope: 'link' },
      { ns: HOST, dst: 'fd01::/64', gw: 'fd00::fe', dev: 'cni0' },
    ]);
    expect(s.neighbours).toEqual([{ ns: HOST, dev: 'flannel.1', ip: '10.244.2.0', lladdr: '02:11:22:33:44:55' }]);
  });

  it('says what is wrong with output it cannot read', () => {
    expect(parseIpBatch(HOST, '[]\n[]\n')).toBe('ip -json printed 2 results, want 5');
    expect(parseIpBatch(HOST, '{oops\n')).toMatch(/^cannot parse ip -json output/);
  });

  it('pairs veth ends across namespaces when one side can name the other', () => {
    const host = parseIpBatch(
      HOST,
      ipOut([{ ifindex: 9, link_index: 2, link_netnsid: 0, ifname: 'vethX', flags: [], linkinfo: { info_kind: 'veth' } }], [], [], [], []),
    ) as IpState;
    const pod = parseIpBatch(
      POD,
      ipOut(
        [{ ifindex: 2, link_index: 9, link_netnsid: 3, ifname: 'eth0', flags: [], linkinfo: { info_kind: 'veth' } }],
        [],
        [],
        [],
        [{ nsid: 3 }],
      ),
    ) as IpState;
    // The host is unnamed; the pod is /run/netns/pod1 and the host numbers it 0.
    const hostNamed = { ...host, nsids: new Map([[0, 'pod1']]) };
    const paired = pairVeths(
      [
        { ns: HOST, state: hostNamed },
        { ns: POD, state: pod },
      ],
      (ns) => (ns === POD ? 'pod1' : undefined),
    );
    expect(paired.get(HOST)![0]!.veth).toEqual({ peer: 'eth0', peerNs: POD });
    expect(paired.get(POD)![0]!.veth).toEqual({ peer: 'vethX', peerNs: HOST });
    // Without a name for either side, no guess.
    const none = pairVeths(
      [
        { ns: HOST, state: host },
        { ns: POD, state: pod },
      ],
      () => undefined,
    );
    expect(none.get(HOST)![0]!.veth).toBeUndefined();
    // Only the host read: its veth names its peer's namespace (peerNetns), the peer itself unknown.
    const alone = pairVeths([{ ns: HOST, state: hostNamed }], () => undefined);
    expect(alone.get(HOST)![0]).toMatchObject({ name: 'vethX', peerNetns: 'pod1' });
    expect(alone.get(HOST)![0]!.veth).toBeUndefined();
    expect(paired.get(HOST)![0]!.peerNetns).toBeUndefined();
  });
});

describe('parseIptablesSave, parseFdb, parseQdiscs', () => {
  const save = `# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-abc - [0:0]
-A POSTROUTING -s 10.22.0.5/32 -m comment --comment "name: \\"x\\" id: \\"y\\"" -j CNI-abc
-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE
-A CNI-abc -d 10.22.0.0/16 -j ACCEPT
-A CNI-abc ! -d 224.0.0.0/4 -j MASQUERADE
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:EMPTY - [0:0]
-A FORWARD -j ACCEPT
COMMIT
`;
  it('user chains whole, builtin rules one by one, only the tables asked for', () => {
    const all = parseIptablesSave(HOST, 4, save);
    expect(all.chains).toEqual([
      { ns: HOST, family: 4, table: 'nat', chain: 'CNI-abc', rules: ['-d 10.22.0.0/16 -j ACCEPT', '! -d 224.0.0.0/4 -j MASQUERADE'] },
      { ns: HOST, family: 4, table: 'filter', chain: 'EMPTY', rules: [] },
    ]);
    expect(all.rules.map((r) => `${r.table}/${r.chain}: ${r.rule}`)).toEqual([
      'nat/POSTROUTING: -s 10.22.0.5/32 -m comment --comment "name: \\"x\\" id: \\"y\\"" -j CNI-abc',
      'nat/POSTROUTING: -s 172.17.0.0/16 -j MASQUERADE',
      'filter/FORWARD: -j ACCEPT',
    ]);
    expect(parseIptablesSave(HOST, 4, save, ['filter']).rules).toHaveLength(1);
  });

  it('fdb: permanent remote entries only; qdiscs: tbf in bits/s and ms, ingress', () => {
    expect(
      parseFdb(
        HOST,
        JSON.stringify([
          { mac: '33:33:00:00:00:01', ifname: 'e0', state: 'permanent' },
          { mac: '02:11:22:33:44:55', ifname: 'vx', dst: '198.51.100.3', state: 'permanent' },
        ]),
      ),
    ).toEqual([{ ns: HOST, dev: 'vx', mac: '02:11:22:33:44:55', dst: '198.51.100.3' }]);
    expect(
      parseQdiscs(
        HOST,
        JSON.stringify([
          { kind: 'ingress', dev: 'b', parent: 'ffff:fff1' },
          { kind: 'tbf', dev: 'a', root: true, options: { rate: 125000, burst: 12500, lat: 25000 } },
          { kind: 'noqueue', dev: 'c', root: true },
        ]),
      ),
    ).toEqual([
      { ns: HOST, dev: 'b', kind: 'ingress' },
      { ns: HOST, dev: 'a', kind: 'tbf', rate: 1_000_000, burst: 12500, latencyMs: 25 },
    ]);
  });
});

describe('rendering', () => {
  const ro = { pid: 4242 };
  it('always names links with `name`/`dev` (a bare "a" would be read as "address")', () => {
    expect(
      linkAddLines(
        { ns: POD, name: 'a', kind: 'veth', up: true, mtu: 1400, veth: { peer: 'b', peerNs: HOST, peerMac: '02:00:00:00:00:01' } },
        ro,
      ),
    ).toEqual(['link add name a mtu 1400 type veth peer name b address 02:00:00:00:00:01 netns 4242', 'link set dev a up']);
    expect(linkAddLines({ ns: HOST, name: 'mv0', kind: 'macvlan', macvlan: { master: 'eth0', mode: 'bridge' } }, ro)).toEqual([
      'link add link eth0 name mv0 type macvlan mode bridge',
    ]);
    expect(
      linkAddLines(
        {
          ns: HOST,
          name: 'flannel.1',
          kind: 'vxlan',
          up: true,
          vxlan: { vni: 1, local: '198.51.100.2', port: 8472, learning: false, gbp: false, dev: 'eth0' },
        },
        ro,
      ),
    ).toEqual(['link add name flannel.1 type vxlan id 1 local 198.51.100.2 dev eth0 dstport 8472 nolearning', 'link set dev flannel.1 up']);
    expect(
      linkAddLines({ ns: HOST, name: 'v', kind: 'veth', master: 'cni0', hairpin: true, veth: { peer: 'p', peerNs: POD } }, ro),
    ).toEqual([
      'link add name v type veth peer name p netns pod1',
      'link set dev v master cni0',
      'link set dev v type bridge_slave hairpin on',
    ]);
  });

  it('names namespaces for `netns` as ip takes them', () => {
    expect(netnsArg(HOST, ro)).toBe('4242');
    expect(netnsArg(HOST, { ...ro, hostNetns: '/var/run/netns/h' })).toBe('/var/run/netns/h');
    expect(netnsArg('/run/netns/x', ro)).toBe('x');
    expect(netnsArg('/proc/77/ns/net', ro)).toBe('77');
    expect(netnsArg('/var/run/docker/netns/abc', ro)).toBe('/var/run/docker/netns/abc');
  });

  it('one iptables-restore per family per group: declarations first, deletions made harmless', () => {
    const ops: Op[] = [
      { op: 'rule.del', rule: { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-j OLD' } },
      { op: 'chain.sync', chain: { ns: HOST, family: 4, table: 'nat', chain: 'NEW', rules: ['-j RETURN'] } },
      { op: 'chain.del', ns: HOST, family: 4, table: 'nat', chain: 'OLD' },
      { op: 'rule.add', rule: { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-j NEW', position: 'head' } },
    ];
    expect(restoreLines(ops as Extract<Op, { op: 'rule.del' | 'chain.sync' | 'chain.del' | 'rule.add' }>[]).map((l) => l.text)).toEqual([
      '*nat',
      ':NEW - [0:0]',
      ':OLD - [0:0]',
      '-D POSTROUTING -j OLD',
      '-A NEW -j RETURN',
      '-X OLD',
      '-I POSTROUTING 1 -j NEW',
      'COMMIT',
    ]);
  });

  it('steps: namespace groups in order, ip runs split only where sysctls or fdb entries come between', () => {
    const ops: Op[] = [
      { op: 'link.add', link: { ns: POD, name: 'eth0', kind: 'veth', veth: { peer: 'v', peerNs: HOST } } },
      { op: 'sysctl.set', sysctl: { ns: POD, key: 'net.ipv6.conf.eth0.accept_dad', value: '0' } },
      { op: 'addr.add', addr: { ns: POD, dev: 'eth0', cidr: '10.0.0.2/24' } },
      { op: 'sysctl.set', sysctl: { ns: HOST, key: 'net.ipv4.ip_forward', value: '1' } },
      { op: 'chain.sync', chain: { ns: HOST, family: 4, table: 'nat', chain: 'C', rules: [] } },
      { op: 'chain.sync', chain: { ns: HOST, family: 6, table: 'nat', chain: 'C', rules: [] } },
      { op: 'rule.add', rule: { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-j C' } },
      { op: 'neigh.replace', neigh: { ns: HOST, dev: 'vx', ip: '10.1.0.0', lladdr: '02:00:00:00:00:01' } },
      { op: 'fdb.replace', fdb: { ns: HOST, dev: 'vx', mac: '02:00:00:00:00:01', dst: '198.51.100.3' } },
      { op: 'route.replace', route: { ns: HOST, dst: '10.1.0.0/24', gw: '10.1.0.0', dev: 'vx', onlink: true } },
    ];
    const s = steps(ops, ro);
    expect(s.map((x) => `${x.ns === HOST ? 'host' : 'pod'} ${x.tool} ${x.lines.length}`)).toEqual([
      'pod ip 1',
      'pod sysctl 1',
      'pod ip 1',
      'host sysctl 1',
      'host iptables-restore 4',
      'host ip6tables-restore 3',
      'host ip 1',
      'host bridge 1',
      'host ip 1',
    ]);
    // One process per step, each an argument vector; the host is this process's namespace (no nsenter), so
    // its sysctl is written by the process itself.
    const inv = s.flatMap((x) => invocations(x, ro));
    expect(inv.map((i) => (i.kind === 'exec' ? i.argv.join(' ') : `write ${i.path} ${i.value}`))).toEqual([
      'ip -n pod1 -force -batch -',
      `nsenter --net=${POD} tee -- /proc/sys/net/ipv6/conf/eth0/accept_dad`,
      'ip -n pod1 -force -batch -',
      'write /proc/sys/net/ipv4/ip_forward 1',
      'iptables-restore -w 30 --noflush',
      'ip6tables-restore -w 30 --noflush',
      'ip -force -batch -',
      'bridge -force -batch -',
      'ip -force -batch -',
    ]);
    const input = inv.map((i) => (i.kind === 'exec' ? i.input : '')).join('');
    expect(input).toContain('neigh replace 10.1.0.0 lladdr 02:00:00:00:00:01 dev vx nud permanent\n');
    expect(input).toContain('fdb replace 02:00:00:00:00:01 dev vx dst 198.51.100.3 self permanent\n');
    expect(input).toContain('route replace 10.1.0.0/24 via 10.1.0.0 dev vx onlink\n');
    // Without IPv6, IPv6 sysctls are skipped, as the reference plugins do.
    expect(invocations(s[1]!, ro, false)).toEqual([]);
    // A device name with a dot is a path segment, not a separator: net.ipv4.conf.flannel/1.forwarding.
    const dotted = steps([{ op: 'sysctl.set', sysctl: { ns: POD, key: 'net.ipv4.conf.flannel/1.forwarding', value: '1' } }], ro);
    expect(invocations(dotted[0]!, ro)).toMatchObject([
      { kind: 'exec', argv: ['nsenter', `--net=${POD}`, 'tee', '--', '/proc/sys/net/ipv4/conf/flannel.1/forwarding'], input: '1\n' },
    ]);
  });

  it('sysctls of differing values in another namespace: one `sysctl -p-` with path = value lines, tee where sysctl.conf would misread', () => {
    const set = (key: string, value: string): Op => ({ op: 'sysctl.set', sysctl: { ns: POD, key, value } });
    const [two] = steps([set('net.ipv6.conf.eth0/5.accept_dad', '0'), set('net.ipv4.conf.eth0/5.arp_notify', '1')], ro);
    expect(invocations(two!, ro)).toMatchObject([
      {
        kind: 'exec',
        argv: ['nsenter', `--net=${POD}`, 'sysctl', '-q', '-p-'],
        input: 'net/ipv6/conf/eth0.5/accept_dad = 0\nnet/ipv4/conf/eth0.5/arp_notify = 1\n',
      },
    ]);
    // Without procps' sysctl: one tee per run of equal values, as before.
    expect(invocations(two!, ro, true, false).map((i) => (i.kind === 'exec' ? i.argv.slice(2) : []))).toEqual([
      ['tee', '--', '/proc/sys/net/ipv6/conf/eth0.5/accept_dad'],
      ['tee', '--', '/proc/sys/net/ipv4/conf/eth0.5/arp_notify'],
    ]);
    // A name sysctl.conf reads as a glob, or a value with a space: tee too.
    const [glob] = steps([set('net.ipv4.conf.a*.arp_notify', '1'), set('net.ipv6.conf.a*.accept_dad', '0')], ro);
    expect(invocations(glob!, ro).map((i) => (i.kind === 'exec' ? i.argv.slice(2, 3) : []))).toEqual([['tee'], ['tee']]);
    const [spaced] = steps([set('net.ipv4.tcp_rmem', '4096 87380 6291456'), set('net.core.somaxconn', '1024')], ro);
    expect(invocations(spaced!, ro).map((i) => (i.kind === 'exec' ? i.argv.slice(2, 3) : []))).toEqual([['tee'], ['tee']]);
    // sysctl's errors name the file or the key: either finds the op.
    const inv = invocations(two!, ro)[0]!;
    expect(explain(two!, inv, 1, 'sysctl: cannot stat /proc/sys/net/ipv4/conf/eth0.5/arp_notify: No such file or directory\n')).toEqual({
      kind: 'error',
      msg: `failed to set sysctl net.ipv4.conf.eth0/5.arp_notify=1 in ${POD}: /proc/sys/net/ipv4/conf/eth0.5/arp_notify: No such file or directory`,
    });
    expect(explain(two!, inv, 1, 'sysctl: setting key "net.ipv4.conf.eth0/5.arp_notify": Invalid argument\n')).toMatchObject({
      kind: 'error',
      msg: expect.stringMatching(/^failed to set sysctl net\.ipv4\.conf\.eth0\/5\.arp_notify=1 in .*Invalid argument$/),
    });
  });
});

describe('explain: tool errors back to the op', () => {
  const ro = { pid: 1 };
  const ops: Op[] = [
    { op: 'link.del', ns: POD, name: 'old0' },
    { op: 'addr.add', addr: { ns: POD, dev: 'eth0', cidr: '10.0.0.2/24' } },
    { op: 'route.replace', route: { ns: POD, dst: '10.9.0.0/24', gw: '10.8.0.1', dev: 'eth0' } },
  ];
  const [step] = steps(ops, ro);
  const inv = invocations(step!, ro)[0]!;

  it('names the op of the failed line, and skips "already gone" deletions', () => {
    expect(
      explain(
        step!,
        inv,
        1,
        ['Cannot find device "old0"', 'Command failed -:1', 'Error: Nexthop has invalid gateway.', 'Command failed -:3'].join('\n'),
      ),
    ).toEqual({
      kind: 'error',
      msg: `failed to add route 10.9.0.0/24 via 10.8.0.1 dev eth0 in ${POD}: Error: Nexthop has invalid gateway.`,
    });
    expect(explain(step!, inv, 1, 'Cannot find device "old0"\nCommand failed -:1\n')).toEqual({ kind: 'ok' });
    expect(explain(step!, inv, 0, '')).toEqual({ kind: 'ok' });
  });

  it('a namespace that cannot be entered is named', () => {
    // The pod's ip batch enters a named namespace with `ip -n`; nsenter enters any other path.
    expect(explain(step!, inv, 255, 'Cannot open network namespace "pod1": No such file or directory\n')).toEqual({
      kind: 'error',
      msg: `failed to enter ${POD}: Cannot open network namespace "pod1": No such file or directory`,
    });
    const other = steps(
      ops.map((o) => (o.op === 'addr.add' ? { ...o, addr: { ...o.addr, ns: '/proc/42/ns/net' } } : o)).filter((o) => o.op === 'addr.add'),
      ro,
    )[0]!;
    const viaNsenter = invocations(other, ro)[0]!;
    expect(viaNsenter.kind === 'exec' && viaNsenter.argv.slice(0, 2)).toEqual(['nsenter', '--net=/proc/42/ns/net']);
    expect(explain(other, viaNsenter, 1, 'nsenter: cannot open /proc/42/ns/net: No such file or directory\n')).toEqual({
      kind: 'error',
      msg: 'failed to enter /proc/42/ns/net: nsenter: cannot open /proc/42/ns/net: No such file or directory',
    });
  });

  it('a sysctl that cannot be written names its op', () => {
    const [sy] = steps([{ op: 'sysctl.set', sysctl: { ns: POD, key: 'net.ipv4.conf.nope.forwarding', value: '1' } }], ro);
    const i = invocations(sy!, ro)[0]!;
    expect(explain(sy!, i, 1, 'tee: /proc/sys/net/ipv4/conf/nope/forwarding: No such file or directory\n')).toEqual({
      kind: 'error',
      msg: `failed to set sysctl net.ipv4.conf.nope.forwarding=1 in ${POD}: /proc/sys/net/ipv4/conf/nope/forwarding: No such file or directory`,
    });
  });

  it('iptables: a missing rule to delete is dropped and the restore rerun; an error at COMMIT finds its rule', () => {
    const ipt: Op[] = [
      { op: 'rule.del', rule: { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-j GONE' } },
      { op: 'rule.add', rule: { ns: HOST, family: 4, table: 'nat', chain: 'POSTROUTING', rule: '-j NOPE' } },
    ];
    const [s] = steps(ipt, ro);
    const i: Invocation = invocations(s!, ro)[0]!;
    const v = explain(s!, i, 1, 'iptables-restore: line 2 failed: Bad rule (does a matching rule exist in that chain?).\n');
    expect(v.kind).toBe('retry');
    if (v.kind === 'retry') expect(v.step.lines.map((l) => l.text)).toEqual(['*nat', '-A POSTROUTING -j NOPE', 'COMMIT']);
    expect(
      explain(
        s!,
        i,
        2,
        "iptables-restore v1.8.9 (nf_tables): Chain 'NOPE' does not exist\nError occurred at line: 4\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n",
      ),
    ).toEqual({
      kind: 'error',
      msg: "failed to add iptables rule in nat/POSTROUTING in the host namespace: -j NOPE: Chain 'NOPE' does not exist",
    });
    // The only op was the deletion of a rule already gone: nothing left to do.
    const [only] = steps([ipt[0]!], ro);
    expect(
      explain(
        only!,
        invocations(only!, ro)[0]!,
        1,
        'iptables-restore: line 2 failed: Bad rule (does a matching rule exist in that chain?).\n',
      ),
    ).toEqual({ kind: 'ok' });
  });
});

describe('ifb links and ingress redirects (the bandwidth plugin)', () => {
  const ro = { pid: 4242 };
  it('an ifb is `type ifb`, parsed back from info_kind', () => {
    expect(linkAddLines({ ns: HOST, name: 'bwp0123456789ab', kind: 'ifb', mtu: 1400, mac: '02:00:00:00:00:09', up: true }, ro)).toEqual([
      'link add name bwp0123456789ab address 02:00:00:00:00:09 mtu 1400 txqlen 0 type ifb',
      'link set dev bwp0123456789ab up',
    ]);
    expect(
      toLink(HOST, {
        ifname: 'bwp1',
        flags: ['BROADCAST', 'NOARP', 'UP'],
        mtu: 1500,
        address: 'AA:3D:E0:76:D3:2B',
        linkinfo: { info_kind: 'ifb' },
      }),
    ).toMatchObject({
      kind: 'ifb',
      up: true,
      mac: 'aa:3d:e0:76:d3:2b',
    });
  });

  it('an ingress qdisc with a redirect is the qdisc plus one u32 filter replaced in place; its deletion takes the filter', () => {
    const q = { ns: HOST, dev: 'veth1', kind: 'ingress' as const, redirect: 'bwp1' };
    const [s] = steps(
      [
        { op: 'qdisc.replace', qdisc: q },
        { op: 'qdisc.replace', qdisc: { ns: HOST, dev: 'bwp1', kind: 'tbf', rate: 1_000_000, burst: 12_500, latencyMs: 25 } },
      ],
      ro,
    );
    expect(s!.tool).toBe('tc');
    expect(s!.lines.map((l) => l.text)).toEqual([
      'qdisc replace dev veth1 ingress',
      'filter replace dev veth1 parent ffff: protocol all prio 1 handle 800::800 u32 match u32 0 0 flowid 1:1 action mirred egress redirect dev bwp1',
      'qdisc replace dev bwp1 root handle 1: tbf rate 1000000bit burst 12500 latency 25ms',
    ]);
    expect(steps([{ op: 'qdisc.del', qdisc: q }], ro)[0]!.lines.map((l) => l.text)).toEqual(['qdisc del dev veth1 ingress']);
    // The redirect target is an interface name: checked like one.
    expect(() => steps([{ op: 'qdisc.replace', qdisc: { ...q, redirect: 'a b' } }], ro)).toThrow(/interface name "a b"/);
  });

  it('parseRedirect: the first action of the prio-1 u32 filter; a target that is gone ("*") is none', () => {
    const filter = (to: string): string =>
      JSON.stringify([
        { parent: 'ffff:', protocol: 'all', pref: 1, kind: 'u32', chain: 0 },
        { parent: 'ffff:', protocol: 'all', pref: 1, kind: 'u32', chain: 0, options: { fh: '800:', ht_divisor: 1 } },
        {
          parent: 'ffff:',
          protocol: 'all',
          pref: 1,
          kind: 'u32',
          chain: 0,
          options: {
            fh: '800::800',
            flowid: '1:1',
            actions: [{ order: 1, kind: 'mirred', mirred_action: 'redirect', direction: 'egress', to_dev: to }],
          },
        },
      ]);
    expect(parseRedirect(filter('bwp1'))).toBe('bwp1');
    expect(parseRedirect(filter('*'))).toBeUndefined();
    expect(parseRedirect('')).toBeUndefined();
    expect(parseRedirect('{')).toMatchObject({ error: expect.stringMatching(/cannot parse/) });
  });
});

describe('tap and dummy links', () => {
  it('ip reports a tap as kind "tun" with type "tap": parsed as a tap with its flags (owner and group only as numbers)', () => {
    const data = { type: 'tap', pi: true, vnet_hdr: true, multi_queue: false, persist: true, user: 4242, group: 'users' };
    expect(
      toLink(POD, { ifname: 't0', flags: ['NO-CARRIER', 'BROADCAST', 'UP'], mtu: 1500, linkinfo: { info_kind: 'tun', info_data: data } }),
    ).toMatchObject({
      kind: 'tap',
      up: true,
      tap: { multiQueue: false, vnetHdr: true, pi: true, owner: 4242 },
    });
    expect(toLink(POD, { ifname: 't1', linkinfo: { info_kind: 'tun', info_data: { type: 'tun' } } }).kind).toBe('device');
    expect(toLink(POD, { ifname: 'd0', linkinfo: { info_kind: 'dummy' } }).kind).toBe('dummy');
  });

  it('a tap is made with `tuntap add` and its flags, then given its attributes; a dummy with `type dummy`', () => {
    const tap = {
      ns: POD,
      name: 't0',
      kind: 'tap',
      mtu: 1400,
      mac: '02:00:00:00:00:01',
      master: 'br0',
      up: true,
      tap: { multiQueue: true, vnetHdr: true, pi: false, owner: 0, group: 7 },
    } as const;
    expect(linkAddLines(tap, { pid: 1 })).toEqual([
      'tuntap add dev t0 mode tap vnet_hdr multi_queue user 0 group 7',
      'link set dev t0 mtu 1400 address 02:00:00:00:00:01',
      'link set dev t0 master br0',
      'link set dev t0 up',
    ]);
    expect(linkAddLines({ ns: POD, name: 'd0', kind: 'dummy' }, { pid: 1 })).toEqual(['link add name d0 type dummy']);
  });

  it('a tap with an SELinux context is made in a step of its own under runcon', () => {
    const ops: Op[] = [
      {
        op: 'link.add',
        link: {
          ns: POD,
          name: 't0',
          kind: 'tap',
          tap: { multiQueue: false, vnetHdr: false, pi: false, selinuxContext: 'system_u:system_r:container_t:s0' },
        },
      },
      { op: 'addr.add', addr: { ns: POD, dev: 't0', cidr: '198.51.100.5/24' } },
    ];
    const s = steps(ops, { pid: 1 });
    expect(s.map((x) => [x.tool, x.label, x.lines.length])).toEqual([
      ['ip', 'system_u:system_r:container_t:s0', 1],
      ['ip', undefined, 1],
    ]);
    expect((invocations(s[0]!, { pid: 1 })[0] as Extract<Invocation, { kind: 'exec' }>).argv).toEqual([
      'nsenter',
      `--net=${POD}`,
      'runcon',
      'system_u:system_r:container_t:s0',
      'ip',
      '-force',
      '-batch',
      '-',
    ]);
    // A context that is not one word is refused before anything runs.
    expect(() =>
      steps(
        [
          {
            op: 'link.add',
            link: { ns: POD, name: 't0', kind: 'tap', tap: { multiQueue: false, vnetHdr: false, pi: false, selinuxContext: 'a b' } },
          },
        ],
        { pid: 1 },
      ),
    ).toThrow(/selinuxContext/);
  });
});
