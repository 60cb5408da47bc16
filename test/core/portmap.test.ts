// portmap in core: config validation (code and field), the container addresses picked from prevResult, and
// the desired nat state against what the reference plugin (v1.1.1) leaves in iptables-save, byte for byte.
// Then plan over shared chains, the render of their creation and the memory twin: ADD twice changes nothing,
// DEL removes only the attachment's objects, a concurrent writer's rules in a shared chain survive.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { explain, restoreLines, steps } from '../../adapters/kernel/render.ts';
import type { NetConf } from '../../core/cni/env.ts';
import { parseCIDR } from '../../core/ip/ip.ts';
import { emptyKernelState, HOST, type KernelState, type Op } from '../../core/kernel/model.ts';
import { drift, plan } from '../../core/kernel/plan.ts';
import { containerAddresses, parsePortMapConf, requirePrevResult, type PortMapConf } from '../../core/portmap/config.ts';
import { dnatChain, portmapDesired, portmapScope, splitConditions, udpHostPorts } from '../../core/portmap/desired.ts';

const netconf = (raw: Record<string, unknown>): NetConf => ({
  cniVersion: '1.0.0',
  name: 'pmnet',
  type: 'portmap',
  raw: { cniVersion: '1.0.0', name: 'pmnet', type: 'portmap', ...raw },
});

const PREV = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'cni0' }, { name: 'vethx' }, { name: 'eth0', sandbox: '/var/run/netns/x' }],
  ips: [{ address: '10.22.0.5/16', gateway: '10.22.0.1', interface: 2 }],
};

const MAPPINGS = [
  { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
  { hostPort: 8081, containerPort: 81, protocol: 'udp' },
  { hostPort: 9090, containerPort: 90, protocol: 'tcp', hostIP: '198.51.100.1' },
  { hostPort: 9091, containerPort: 91, protocol: 'sctp' },
];

const conf = (raw: Record<string, unknown>): PortMapConf => {
  const r = parsePortMapConf(netconf(raw));
  if (E.isLeft(r)) throw new Error(r.left.msg);
  return r.right;
};

/** iptables-save -t nat (IPv4) as `rules` lines `-A CHAIN rule`, from a KernelState. */
const saveLines = (s: KernelState, family = 4): string[] => [
  ...s.chains.filter((c) => c.family === family).flatMap((c) => c.rules.map((r) => `-A ${c.chain} ${r}`)),
  ...s.rules.filter((r) => r.family === family).map((r) => `-A ${r.chain} ${r.rule}`),
];

// What /usr/lib/cni/portmap (1.1.1) wrote for PREV + MAPPINGS, container abc123 (iptables-save -t nat).
const REFERENCE = `
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-DN-b5380f05ebb61736bc431 -s 10.22.0.0/16 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-b5380f05ebb61736bc431 -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-b5380f05ebb61736bc431 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.22.0.5:80
-A CNI-DN-b5380f05ebb61736bc431 -s 10.22.0.0/16 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-b5380f05ebb61736bc431 -s 127.0.0.1/32 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-b5380f05ebb61736bc431 -p udp -m udp --dport 8081 -j DNAT --to-destination 10.22.0.5:81
-A CNI-DN-b5380f05ebb61736bc431 -s 10.22.0.0/16 -d 198.51.100.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-b5380f05ebb61736bc431 -s 127.0.0.1/32 -d 198.51.100.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-b5380f05ebb61736bc431 -d 198.51.100.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.22.0.5:90
-A CNI-DN-b5380f05ebb61736bc431 -s 10.22.0.0/16 -p sctp -m sctp --dport 9091 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-b5380f05ebb61736bc431 -s 127.0.0.1/32 -p sctp -m sctp --dport 9091 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-b5380f05ebb61736bc431 -p sctp -m sctp --dport 9091 -j DNAT --to-destination 10.22.0.5:91
-A CNI-HOSTPORT-DNAT -p sctp -m comment --comment "dnat name: \\"pmnet\\" id: \\"abc123\\"" -m multiport --dports 9091 -j CNI-DN-b5380f05ebb61736bc431
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"pmnet\\" id: \\"abc123\\"" -m multiport --dports 8080,9090 -j CNI-DN-b5380f05ebb61736bc431
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"pmnet\\" id: \\"abc123\\"" -m multiport --dports 8081 -j CNI-DN-b5380f05ebb61736bc431
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
`
  .trim()
  .split('\n');

const desiredFor = (raw: Record<string, unknown>, hostIf?: string): KernelState => {
  const pc = conf({ prevResult: PREV, runtimeConfig: { portMappings: MAPPINGS }, ...raw });
  return portmapDesired({
    conf: pc,
    containerId: 'abc123',
    addresses: containerAddresses(pc.prevResult!, 'eth0'),
    ns: HOST,
    ...(hostIf ? { hostIf } : {}),
  });
};

describe('portmap config', () => {
  it('defaults as the reference: snat on, masqAll off, mark bit 13, no conditions', () => {
    const pc = conf({});
    expect(pc).toMatchObject({ snat: true, masqAll: false, markMasqBit: 13, conditionsV4: [], conditionsV6: [], portMappings: [] });
    expect(E.isLeft(requirePrevResult(pc))).toBe(true);
  });

  it.each([
    [{ runtimeConfig: { portMappings: [{ hostPort: 0, containerPort: 80, protocol: 'tcp' }] } }, 'runtimeConfig.portMappings[0].hostPort'],
    [
      { runtimeConfig: { portMappings: [{ hostPort: 65536, containerPort: 80, protocol: 'tcp' }] } },
      'runtimeConfig.portMappings[0].hostPort',
    ],
    [
      { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: -1, protocol: 'tcp' }] } },
      'runtimeConfig.portMappings[0].containerPort',
    ],
    [
      { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, protocol: 'icmp' }] } },
      'runtimeConfig.portMappings[0].protocol',
    ],
    [{ runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80 }] } }, 'runtimeConfig.portMappings[0].protocol'],
    [
      { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, protocol: 'tcp', hostIP: 'localhost' }] } },
      'runtimeConfig.portMappings[0].hostIP',
    ],
    [{ runtimeConfig: { portMappings: {} } }, 'runtimeConfig.portMappings'],
    [{ markMasqBit: 32 }, 'markMasqBit'],
    [{ markMasqBit: 3, externalSetMarkChain: 'KUBE-MARK-MASQ' }, 'markMasqBit'],
    [{ externalSetMarkChain: 'two words' }, 'externalSetMarkChain'],
    [{ externalSetMarkChain: 'X'.repeat(29) }, 'externalSetMarkChain'],
    [{ conditionsV4: ['-m', 'set "x"'] }, 'conditionsV4[1]'],
    [{ conditionsV6: ['-d\n-j'] }, 'conditionsV6[0]'],
    [{ snat: 'yes' }, 'snat'],
    [{ masqAll: 1 }, 'masqAll'],
    [{ backend: 'pf' }, 'backend'],
    [{ backend: 'nftables', conditionsV4: ['-s', '10.0.0.1'] }, 'conditionsV4'],
    [{ backend: 'nftables', externalSetMarkChain: 'KUBE-MARK-MASQ' }, 'externalSetMarkChain'],
  ])('refuses %j with code 7 naming %s', (raw, field) => {
    const r = parsePortMapConf(netconf(raw));
    expect(E.isLeft(r) && r.left.code).toBe(7);
    expect(E.isLeft(r) && r.left.msg).toContain(`${field}:`);
  });

  it('refuses a prevResult that does not parse (code 6, naming the field)', () => {
    const r = parsePortMapConf(netconf({ prevResult: { cniVersion: '1.0.0', ips: [{ address: 'nope' }] } }));
    expect(E.isLeft(r) && r.left).toMatchObject({ code: 6 });
    expect(E.isLeft(r) && r.left.msg).toContain('prevResult: ips[0].address');
  });

  it('normalizes the protocol and treats an empty hostIP as none', () => {
    const pc = conf({ runtimeConfig: { portMappings: [{ hostPort: 53, containerPort: 53, protocol: 'UDP', hostIP: '' }] } });
    expect(pc.portMappings).toEqual([{ hostPort: 53, containerPort: 53, protocol: 'udp' }]);
    expect(udpHostPorts(pc)).toEqual([53]);
  });

  it("picks the container's addresses as the reference: first per family, skipping other known interfaces", () => {
    const prev = {
      cniVersion: '1.1.0',
      interfaces: [{ name: 'cni0' }, { name: 'eth1', sandbox: '/x' }, { name: 'eth0', sandbox: '/x' }],
      ips: [
        { address: '10.1.0.2/24', interface: 0 },
        { address: '10.2.0.2/24', interface: 1 },
        { address: 'fd00::5/64', interface: 2 },
        { address: '10.3.0.2/24', interface: 2 },
        { address: '10.4.0.2/24', interface: 2 },
      ],
    };
    const a = containerAddresses(prev, 'eth0');
    expect(a.v4 && `${a.v4.ip.value}`).toBe(`${parseCIDR('10.3.0.2/24')!.ip.value}`);
    expect(a.v6?.prefix).toBe(64);
    // No interface index: it counts.
    expect(containerAddresses({ cniVersion: '1.1.0', ips: [{ address: '10.9.0.9/8' }] }, 'eth0').v4?.prefix).toBe(8);
  });
});

describe('portmap desired state', () => {
  it("is the reference's nat table, byte for byte", () => {
    const d = desiredFor({});
    expect(dnatChain('pmnet', 'abc123')).toBe('CNI-DN-b5380f05ebb61736bc431');
    expect(saveLines(d).sort()).toEqual([...REFERENCE].sort());
    // The per-attachment chain keeps the reference's order; the masquerade entry goes to the head.
    expect(d.chains.find((c) => c.chain.startsWith('CNI-DN-'))!.rules).toEqual(
      REFERENCE.filter((l) => l.startsWith('-A CNI-DN-')).map((l) => l.slice(l.indexOf(' ', 3) + 1)),
    );
    expect(d.rules.find((r) => r.chain === 'POSTROUTING')!.position).toBe('head');
    expect(
      d.chains
        .filter((c) => c.shared)
        .map((c) => c.chain)
        .sort(),
    ).toEqual(['CNI-HOSTPORT-DNAT', 'CNI-HOSTPORT-MASQ', 'CNI-HOSTPORT-SETMARK']);
    expect(saveLines(d, 6)).toEqual([]);
  });

  it('turns on route_localnet on the host interface that routes to the container (IPv4, snat)', () => {
    expect(desiredFor({}, 'cni0').sysctls).toEqual([{ ns: HOST, key: 'net.ipv4.conf.cni0.route_localnet', value: '1' }]);
    expect(desiredFor({ snat: false }, 'cni0').sysctls).toEqual([]);
  });

  it('snat off: no mark rules and no SETMARK/MASQ chains', () => {
    const d = desiredFor({ snat: false });
    expect(saveLines(d).filter((l) => /SETMARK|MASQ/.test(l))).toEqual([]);
    expect(saveLines(d).filter((l) => l.startsWith('-A CNI-DN-'))).toHaveLength(4);
  });

  it('masqAll marks every source (the -s 0.0.0.0/0 iptables-save leaves out) and drops the localhost rule', () => {
    const d = desiredFor({ masqAll: true });
    expect(d.chains.find((c) => c.chain.startsWith('CNI-DN-'))!.rules.slice(0, 2)).toEqual([
      '-p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK',
      '-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.22.0.5:80',
    ]);
  });

  it('externalSetMarkChain replaces SETMARK and creates no mark chains of its own', () => {
    const d = desiredFor({ externalSetMarkChain: 'KUBE-MARK-MASQ' });
    expect(d.chains.map((c) => c.chain).sort()).toEqual(['CNI-DN-b5380f05ebb61736bc431', 'CNI-HOSTPORT-DNAT']);
    expect(d.chains.find((c) => c.chain.startsWith('CNI-DN-'))!.rules[0]).toBe(
      '-s 10.22.0.0/16 -p tcp -m tcp --dport 8080 -j KUBE-MARK-MASQ',
    );
  });

  it('markMasqBit sets the mark as Go prints it', () => {
    const lines = saveLines(desiredFor({ markMasqBit: 0 }));
    expect(lines).toContain('-A CNI-HOSTPORT-MASQ -m mark --mark 0x1/0x1 -j MASQUERADE');
    expect(lines).toContain('-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x1/0x1');
  });

  it('IPv6: bracketed DNAT target, no localhost rule, hostIPs of the other family skipped; conditions in place', () => {
    const pc = conf({
      conditionsV6: ['!', '-d', 'fd00::1', '-m', 'set', '--match-set', 'x', 'dst'],
      runtimeConfig: {
        portMappings: [
          { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
          { hostPort: 9090, containerPort: 90, protocol: 'tcp', hostIP: '198.51.100.1' },
        ],
      },
    });
    const d = portmapDesired({ conf: pc, containerId: 'c', addresses: { v6: parseCIDR('fd00::5/64')! }, ns: HOST });
    const dn = d.chains.find((c) => c.chain.startsWith('CNI-DN-'))!;
    expect(dn.family).toBe(6);
    expect(dn.rules).toEqual([
      '-s fd00::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK',
      '-p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::5]:80',
    ]);
    expect(d.rules.filter((r) => r.chain === 'CNI-HOSTPORT-DNAT').map((r) => r.rule)).toEqual([
      `! -d fd00::1/128 -p tcp -m comment --comment "dnat name: \\"pmnet\\" id: \\"c\\"" -m multiport --dports 8080,9090 -m set --match-set x dst -j ${dn.chain}`,
    ]);
  });

  it('splits multiport lists at 15 ports', () => {
    const ports = Array.from({ length: 17 }, (_, i) => ({ hostPort: 1000 + i, containerPort: 80, protocol: 'tcp' }));
    const pc = conf({ runtimeConfig: { portMappings: ports } });
    const d = portmapDesired({ conf: pc, containerId: 'c', addresses: { v4: parseCIDR('10.0.0.2/24')! }, ns: HOST });
    const entry = d.rules.filter((r) => r.chain === 'CNI-HOSTPORT-DNAT').map((r) => /--dports (\S+)/.exec(r.rule)![1]);
    expect(entry).toEqual([
      ports
        .slice(0, 15)
        .map((p) => p.hostPort)
        .join(','),
      '1015,1016',
    ]);
  });

  it('splits conditions as iptables-save orders them', () => {
    expect(splitConditions(['-m', 'foo', '-s', '10.1.2.3', '-i', 'eth0', '--destination', '10.0.0.0/8'], 4)).toEqual({
      header: ['-s', '10.1.2.3/32', '-d', '10.0.0.0/8', '-i', 'eth0'],
      matches: ['-m', 'foo'],
    });
  });
});

describe('portmap over the memory twin', () => {
  const scope = portmapScope(HOST, 'pmnet', 'abc123');

  it('ADD from nothing, ADD again (nothing to do), CHECK clean, DEL leaves only the shared chains', async () => {
    const k = memoryKernel();
    const d = desiredFor({});
    const first = plan(d, emptyKernelState(), scope);
    expect(E.isRight(await k.apply(first)())).toBe(true);
    const seen = k.state();
    expect(plan(d, seen, scope)).toEqual([]);
    expect(drift(d, seen, scope)).toEqual([]);
    expect(E.isRight(await k.apply(plan(emptyKernelState(), seen, scope))())).toBe(true);
    const after = k.state();
    expect(after.chains.map((c) => c.chain).sort()).toEqual(['CNI-HOSTPORT-DNAT', 'CNI-HOSTPORT-MASQ', 'CNI-HOSTPORT-SETMARK']);
    expect(after.chains.find((c) => c.chain === 'CNI-HOSTPORT-DNAT')!.rules).toEqual([]);
    // DEL again: nothing to do.
    expect(plan(emptyKernelState(), after, scope)).toEqual([]);
  });

  it("keeps another attachment's rules in the shared chain, and CHECK names what drifted", async () => {
    const k = memoryKernel();
    const other = conf({ prevResult: PREV, runtimeConfig: { portMappings: [{ hostPort: 7000, containerPort: 70, protocol: 'tcp' }] } });
    const od = portmapDesired({ conf: other, containerId: 'other', addresses: containerAddresses(PREV, 'eth0'), ns: HOST });
    const oscope = portmapScope(HOST, 'pmnet', 'other');
    await k.apply(plan(od, emptyKernelState(), oscope))();
    const d = desiredFor({});
    await k.apply(plan(d, k.state(), scope))();
    await k.apply(plan(emptyKernelState(), k.state(), scope))();
    expect(plan(od, k.state(), oscope)).toEqual([]);
    // Drift: the other attachment's chain emptied by hand.
    const s = k.state();
    const broken = { ...s, chains: s.chains.map((c) => (c.chain === dnatChain('pmnet', 'other') ? { ...c, rules: [] } : c)) };
    expect(drift(od, broken, oscope).join('\n')).toContain(`iptables chain nat/${dnatChain('pmnet', 'other')} differs`);
  });
});

describe('shared chains in the iptables-restore batch', () => {
  const sharedChain = { ns: HOST, family: 4 as const, table: 'nat' as const, chain: 'CNI-HOSTPORT-DNAT', rules: [], shared: true };
  // plan turns a desired shared chain into the creation of a missing chain (`chain.add`), nothing else.
  const shared: Op = { op: 'chain.add', ns: HOST, family: 4, table: 'nat', chain: 'CNI-HOSTPORT-DNAT' };
  const rule: Op = { op: 'rule.add', rule: { ns: HOST, family: 4, table: 'nat', chain: 'CNI-HOSTPORT-DNAT', rule: '-p tcp -j CNI-DN-x' } };
  const owned: Op = { op: 'chain.sync', chain: { ns: HOST, family: 4, table: 'nat', chain: 'CNI-DN-x', rules: ['-j RETURN'] } };

  it('are created with -N (never declared, which would flush them), after the declarations', () => {
    expect(restoreLines([shared, owned, rule] as never).map((l) => l.text)).toEqual([
      '*nat',
      ':CNI-DN-x - [0:0]',
      '-N CNI-HOSTPORT-DNAT',
      '-A CNI-DN-x -j RETURN',
      '-A CNI-HOSTPORT-DNAT -p tcp -j CNI-DN-x',
      'COMMIT',
    ]);
  });

  it('when one exists already, the restore runs again without creating it', () => {
    const [step] = steps([shared, owned, rule], { pid: 1 });
    const v = explain(
      step!,
      { kind: 'exec', argv: ['iptables-restore', '--noflush'], input: '', lines: step!.lines },
      1,
      'iptables-restore: line 3 failed: Chain already exists.\n',
    );
    expect(v.kind).toBe('retry');
    expect(v.kind === 'retry' && v.step.lines.map((l) => l.text)).toEqual([
      '*nat',
      ':CNI-DN-x - [0:0]',
      '-A CNI-DN-x -j RETURN',
      '-A CNI-HOSTPORT-DNAT -p tcp -j CNI-DN-x',
      'COMMIT',
    ]);
  });

  it('plan creates a shared chain only when it is missing, and never compares its rules', () => {
    const seen: KernelState = {
      ...emptyKernelState(),
      chains: [{ ns: HOST, family: 4, table: 'nat', chain: 'CNI-HOSTPORT-DNAT', rules: ['-p udp -j CNI-DN-y'] }],
    };
    const want: KernelState = { ...emptyKernelState(), chains: [sharedChain], rules: [(rule as Extract<Op, { op: 'rule.add' }>).rule] };
    expect(plan(want, seen, portmapScope(HOST, 'n', 'c'))).toEqual([rule]);
    expect(plan(want, emptyKernelState(), portmapScope(HOST, 'n', 'c'))).toEqual([shared, rule]);
  });
});
