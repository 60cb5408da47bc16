// win-bridge and win-overlay's pure half against the reference's pkg/hns (netconf_windows_test.go's cases, and
// the documents endpoint_windows.go / the plugins build): policy edits for both APIs, the endpoint name, the
// HNS v1 and HCN v2 endpoint documents, the CNI results.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import type { NetConf } from '../../core/cni/env.ts';
import { endpointName, hcnResult, hnsResult, type HnsNetwork } from '../../core/hns/endpoint.ts';
import {
  hcnEndpointPolicies,
  hnsEndpointPolicies,
  protocolEnum,
  withLoopbackDsr,
  withOutboundNatException,
  withPortMappings,
  withProviderAddress,
  type Policy,
} from '../../core/hns/netconf.ts';
import { bridgeGateway, parseWinBridgeConf, winBridgeHcnEndpoint, winBridgeHnsEndpoint } from '../../core/win-bridge/config.ts';
import { overlayMac, parseWinOverlayConf, winOverlayHcnEndpoint, winOverlayHnsEndpoint } from '../../core/win-overlay/config.ts';

const conf = (raw: Record<string, unknown>): NetConf =>
  ({ cniVersion: '1.0.0', name: 'winnet', type: 'x', raw: { cniVersion: '1.0.0', name: 'winnet', ...raw } }) as unknown as NetConf;
const ep = (value: unknown): Policy => ({ name: 'EndpointPolicy', value });

describe('policies (netconf_windows_test.go)', () => {
  it('ApplyLoopbackDSRPolicy: filters out a listed IP, appends another (v1: Destinations, v2: Settings.Destinations)', () => {
    const v1 = [ep({ Type: 'OutBoundNAT', Destinations: ['172.16.0.12'] })];
    expect(withLoopbackDsr(v1, 1, '172.16.0.12', true)).toEqual(v1);
    expect(withLoopbackDsr(v1, 1, '172.16.0.13', true)).toEqual([...v1, ep({ Type: 'OutBoundNAT', Destinations: ['172.16.0.13'] })]);
    const v2 = [ep({ Type: 'OutBoundNAT', Settings: { Destinations: ['172.16.0.12'] } })];
    expect(withLoopbackDsr(v2, 2, '172.16.0.12', true)).toEqual(v2);
    expect(withLoopbackDsr(v2, 2, '172.16.0.13', true)).toEqual([
      ...v2,
      ep({ Type: 'OutBoundNAT', Settings: { Destinations: ['172.16.0.13'] } }),
    ]);
    // Without DSR support in HNS, nothing.
    expect(withLoopbackDsr([], 1, '172.16.0.13', false)).toEqual([]);
  });

  it('ApplyOutboundNatPolicy: appends an exception; keeps other OutBoundNAT policies; blank CIDR does nothing', () => {
    const other = [ep({ Type: 'OutBoundNAT', OtherList: [] })];
    expect(withOutboundNatException(other, 1, '10.244.0.0/16')).toEqual([
      ...other,
      ep({ Type: 'OutBoundNAT', ExceptionList: ['10.244.0.0/16'] }),
    ]);
    const listed = [ep({ Type: 'OutBoundNAT', ExceptionList: ['10.244.0.0/16'] })];
    expect(withOutboundNatException(listed, 1, '10.244.0.0/16')).toEqual(listed);
    const empty = [ep({ Type: 'OutBoundNAT', ExceptionList: [] })];
    expect(withOutboundNatException(empty, 1, '')).toEqual(empty);
    const other2 = [ep({ Type: 'OutBoundNAT', Settings: { Others: [] } })];
    expect(withOutboundNatException(other2, 2, '10.244.0.0/16')).toEqual([
      ...other2,
      ep({ Type: 'OutBoundNAT', Settings: { Exceptions: ['10.244.0.0/16'] } }),
    ]);
    expect(withOutboundNatException([ep({ Type: 'OutBoundNAT', Settings: { Exceptions: [] } })], 2, '')).toHaveLength(1);
  });

  it('ApplyDefaultPAPolicy: PA (v1) / ProviderAddress (v2), once; blank does nothing', () => {
    const nat = [ep({ Type: 'OutBoundNAT', Exceptions: ['192.168.0.0/16'] })];
    expect(withProviderAddress(nat, 1, '192.168.0.2')).toEqual([...nat, ep({ Type: 'PA', PA: '192.168.0.2' })]);
    expect(withProviderAddress(nat, 2, '192.168.0.2')).toEqual([
      ...nat,
      ep({ Type: 'ProviderAddress', Settings: { ProviderAddress: '192.168.0.2' } }),
    ]);
    expect(withProviderAddress(nat, 1, '')).toEqual(nat);
    const pa = [ep({ Type: 'PA', PA: '192.168.0.2' })];
    expect(withProviderAddress(pa, 1, '192.168.0.2')).toEqual(pa);
  });

  it('ApplyPortMappingPolicy: NAT with the protocol as given (v1), PortMapping with its number and VIP (v2); unknown protocols skipped', () => {
    const m = [{ containerPort: 80, hostPort: 8080, protocol: 'TCP', hostIP: '192.168.1.2' }];
    expect(withPortMappings([], 1, [])).toEqual([]);
    expect(withPortMappings([], 1, m)).toEqual([ep({ Type: 'NAT', InternalPort: 80, ExternalPort: 8080, Protocol: 'TCP' })]);
    expect(withPortMappings([], 2, m)).toEqual([
      ep({ Type: 'PortMapping', Settings: { InternalPort: 80, ExternalPort: 8080, Protocol: 6, VIP: '192.168.1.2' } }),
    ]);
    expect(withPortMappings([], 2, [{ ...m[0]!, protocol: 'sctp' }])).toEqual([]);
    expect([
      protocolEnum('udp'),
      protocolEnum('ICMPv6'),
      protocolEnum('0x11'),
      protocolEnum('17'),
      protocolEnum('1024'),
      protocolEnum('x'),
    ]).toEqual([17, 58, 17, 17, undefined, undefined]);
  });

  it('GetHNSEndpointPolicies / GetHostComputeEndpointPolicies: EndpointPolicy entries only', () => {
    const ps: Policy[] = [
      ep({ Type: 'OutBoundNAT', ExceptionList: ['192.168.1.2'] }),
      { name: 'someOtherType', value: { someOtherKey: 'someOtherValue' } },
    ];
    expect(hnsEndpointPolicies(ps)).toEqual([{ Type: 'OutBoundNAT', ExceptionList: ['192.168.1.2'] }]);
    expect(hcnEndpointPolicies([ep({ Type: 'OutBoundNAT', Settings: { Exceptions: ['192.168.1.2'] } }), ps[1]!])).toEqual([
      { Type: 'OutBoundNAT', Settings: { Exceptions: ['192.168.1.2'] } },
    ]);
  });
});

describe('endpoints and results', () => {
  it('the endpoint is named <sandbox container>_<network>; "container:<id>" names the sandbox', () => {
    expect(endpointName('c1', 'none', 'winnet')).toBe('c1_winnet');
    expect(endpointName('c2', 'container:c1', 'winnet')).toBe('c1_winnet');
    expect(endpointName('c1', '7a2f7d43-0000-4000-8000-000000000001', 'winnet')).toBe('c1_winnet');
  });

  it("win-bridge's gateway is the subnet's .2", () => {
    expect(bridgeGateway('10.244.1.15/24')).toBe('10.244.1.2');
    expect(bridgeGateway('10.244.0.200/16')).toBe('10.244.0.2');
    expect(bridgeGateway('fd00:1::15/64')).toBe('fd00:1::2');
  });

  const bridgeConf = parseWinBridgeConf(
    conf({
      ipMasqNetwork: '10.244.0.0/16',
      loopbackDSR: true,
      dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
      runtimeConfig: { dns: { servers: ['10.96.0.11'] }, portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
      policies: [
        ep({ Type: 'OutBoundNAT', ExceptionList: ['10.0.0.0/8'] }),
        { name: 'EndpointPolicy', value: { Type: 'ROUTE', DestinationPrefix: '10.96.0.0/12', NeedEncap: true } },
      ],
      ipam: { type: 'host-local' },
    }),
  );
  const input = {
    containerId: 'c1',
    netns: 'none',
    networkId: 'NET-ID',
    ipam: { cniVersion: '1.0.0', ips: [{ address: '10.244.1.15/24', gateway: '10.244.1.1' }] },
    dsrSupported: true,
  };

  it('win-bridge HNS v1: the HNSEndpoint document (policies in the reference order: config, OutBoundNAT exception, NAT, DSR)', () => {
    expect(E.isRight(bridgeConf)).toBe(true);
    const c = (bridgeConf as E.Right<ReturnType<typeof parseWinBridgeConf> extends E.Either<unknown, infer A> ? A : never>).right;
    expect(winBridgeHnsEndpoint(c, input)).toEqual(
      E.right({
        Name: 'c1_winnet',
        VirtualNetwork: 'NET-ID',
        DNSServerList: '10.96.0.11',
        DNSSuffix: 'svc.cluster.local',
        GatewayAddress: '10.244.1.2',
        IPAddress: '10.244.1.15',
        Policies: [
          { Type: 'OutBoundNAT', ExceptionList: ['10.0.0.0/8'] },
          { Type: 'ROUTE', DestinationPrefix: '10.96.0.0/12', NeedEncap: true },
          { Type: 'OutBoundNAT', ExceptionList: ['10.244.0.0/16'] },
          { Type: 'NAT', InternalPort: 80, ExternalPort: 8080, Protocol: 'tcp' },
          { Type: 'OutBoundNAT', Destinations: ['10.244.1.15'] },
        ],
      }),
    );
  });

  it('win-bridge HCN v2: the HostComputeEndpoint document (schema 2.0, default route via the gateway)', () => {
    const c2 = parseWinBridgeConf(
      conf({
        apiVersion: 2,
        ipMasqNetwork: '10.244.0.0/16',
        dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
        ipam: { type: 'host-local' },
      }),
    );
    expect(E.isRight(c2)).toBe(true);
    if (E.isLeft(c2)) return;
    expect(winBridgeHcnEndpoint(c2.right, { ...input, netns: 'ns-guid' })).toEqual(
      E.right({
        SchemaVersion: { Major: 2, Minor: 0 },
        Name: 'c1_winnet',
        HostComputeNetwork: 'NET-ID',
        Dns: { Search: ['svc.cluster.local'], ServerList: ['10.96.0.10'] },
        Routes: [{ NextHop: '10.244.1.2', DestinationPrefix: '0.0.0.0/0' }],
        IpConfigurations: [{ IpAddress: '10.244.1.15' }],
        Policies: [{ Type: 'OutBoundNAT', Settings: { Exceptions: ['10.244.0.0/16'] } }],
      }),
    );
    // Without IPAM HNS picks the address; the reference's route then reads as IPv6 with no next hop.
    const noIpam = parseWinBridgeConf(conf({ apiVersion: 2 }));
    if (E.isLeft(noIpam)) throw new Error('parse');
    expect(
      E.map((d: { Routes?: unknown; IpConfigurations?: unknown }) => [d.Routes, d.IpConfigurations])(
        winBridgeHcnEndpoint(noIpam.right, { containerId: 'c1', netns: 'ns', networkId: 'N', dsrSupported: true }),
      ),
    ).toEqual(E.right([[{ DestinationPrefix: '::/0' }], [{}]]));
  });

  const overlayNet: HnsNetwork = {
    Id: 'OVL-ID',
    Name: 'winnet',
    Type: 'Overlay',
    ManagementIP: '198.51.100.11',
    Subnets: [{ AddressPrefix: '10.244.3.0/24', GatewayAddress: '10.244.3.1' }],
  };

  it('win-overlay HNS v1: MAC from the prefix and the address, gateway of the network, PA and OutBoundNAT for the subnet', () => {
    expect(overlayMac('0E-2A', '10.244.3.17')).toBe('0E-2A-0a-f4-03-11');
    const c = parseWinOverlayConf(conf({ ipMasq: true, endpointMacPrefix: '0A-BC', loopbackDSR: true, ipam: { type: 'host-local' } }));
    if (E.isLeft(c)) throw new Error(c.left.msg);
    expect(
      winOverlayHnsEndpoint(c.right, overlayNet, { ...input, ipam: { cniVersion: '1.0.0', ips: [{ address: '10.244.3.17/24' }] } }),
    ).toEqual(
      E.right({
        Name: 'c1_winnet',
        VirtualNetwork: 'OVL-ID',
        GatewayAddress: '10.244.3.1',
        IPAddress: '10.244.3.17',
        MacAddress: '0A-BC-0a-f4-03-11',
        Policies: [
          { Type: 'PA', PA: '198.51.100.11' },
          { Type: 'OutBoundNAT', ExceptionList: ['10.244.3.0/24'] },
          { Type: 'OutBoundNAT', Destinations: ['10.244.3.17'] },
        ],
      }),
    );
    expect(
      winOverlayHnsEndpoint(c.right, overlayNet, { ...input, ipam: { cniVersion: '1.0.0', ips: [{ address: 'fd00::5/64' }] } }),
    ).toMatchObject(E.left({ msg: expect.stringContaining("doesn't support IPv6") }));
  });

  it('win-overlay HCN v2: DSR first, then ProviderAddress and OutBoundNAT (the reference order of its HCN path)', () => {
    const c = parseWinOverlayConf(conf({ apiVersion: 2, ipMasq: true, loopbackDSR: true, ipam: { type: 'host-local' } }));
    if (E.isLeft(c)) throw new Error(c.left.msg);
    expect(
      winOverlayHcnEndpoint(c.right, overlayNet, 'HCN-ID', {
        ...input,
        netns: 'ns',
        ipam: { cniVersion: '1.0.0', ips: [{ address: '10.244.3.17/24' }] },
      }),
    ).toEqual(
      E.right({
        SchemaVersion: { Major: 2, Minor: 0 },
        Name: 'c1_winnet',
        MacAddress: '0E-2A-0a-f4-03-11',
        HostComputeNetwork: 'HCN-ID',
        Routes: [{ NextHop: '10.244.3.1', DestinationPrefix: '0.0.0.0/0' }],
        IpConfigurations: [{ IpAddress: '10.244.3.17' }],
        Policies: [
          { Type: 'OutBoundNAT', Settings: { Destinations: ['10.244.3.17'] } },
          { Type: 'ProviderAddress', Settings: { ProviderAddress: '198.51.100.11' } },
          { Type: 'OutBoundNAT', Settings: { Exceptions: ['10.244.3.0/24'] } },
        ],
      }),
    );
  });

  it('the results: the address with the network prefix, the gateway, DNS (v1 split on ",", as the reference)', () => {
    expect(
      hnsResult('1.0.0', overlayNet, {
        Id: 'E',
        Name: 'c1_winnet',
        VirtualNetwork: 'OVL-ID',
        IPAddress: '10.244.3.17',
        GatewayAddress: '10.244.3.1',
        MacAddress: '0E-2A-0a-f4-03-11',
        DNSServerList: '10.96.0.10,10.96.0.11',
      }),
    ).toEqual({
      cniVersion: '1.0.0',
      interfaces: [{ name: 'c1_winnet', mac: '0E-2A-0a-f4-03-11' }],
      ips: [{ address: '10.244.3.17/24', gateway: '10.244.3.1' }],
      dns: { nameservers: ['10.96.0.10', '10.96.0.11'], search: [''] },
    });
    expect(
      hcnResult(
        '1.0.0',
        { Id: 'N', Name: 'winnet', Type: 'L2Bridge', Ipams: [{ Subnets: [{ IpAddressPrefix: '10.244.1.0/24' }] }] },
        {
          Name: 'c1_winnet',
          HostComputeNetwork: 'N',
          SchemaVersion: { Major: 2, Minor: 0 },
          IpConfigurations: [{ IpAddress: '10.244.1.15' }],
          Routes: [{ NextHop: '10.244.1.2', DestinationPrefix: '0.0.0.0/0' }],
          Dns: { ServerList: ['10.96.0.10'] },
          MacAddress: '00-15-5D-00-00-01',
        },
      ),
    ).toEqual({
      cniVersion: '1.0.0',
      interfaces: [{ name: 'c1_winnet', mac: '00-15-5D-00-00-01' }],
      ips: [{ address: '10.244.1.15/24', gateway: '10.244.1.2' }],
      dns: { nameservers: ['10.96.0.10'] },
    });
  });

  it.each([
    [parseWinBridgeConf, { apiVersion: 3 }, 'apiVersion: must be 1 (HNS) or 2 (HCN)'],
    [parseWinBridgeConf, { ipMasqNetwork: '10.0.0.0/33' }, 'ipMasqNetwork: "10.0.0.0/33" is not a CIDR'],
    [parseWinBridgeConf, { policies: {} }, 'policies: must be a list'],
    [parseWinBridgeConf, { policies: [{ value: {} }] }, 'policies[0].name: must be a string'],
    [
      parseWinBridgeConf,
      { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, protocol: 'sctp' }] } },
      'runtimeConfig.portMappings[0].protocol',
    ],
    [
      parseWinBridgeConf,
      { runtimeConfig: { portMappings: [{ hostPort: 70000, containerPort: 80, protocol: 'tcp' }] } },
      'runtimeConfig.portMappings[0].hostPort',
    ],
    [parseWinBridgeConf, { runtimeConfig: { dns: { servers: 'x' } } }, 'runtimeConfig.dns.servers: must be a list of strings'],
    [parseWinBridgeConf, { loopbackDSR: 'yes' }, 'loopbackDSR: must be true or false'],
    [parseWinOverlayConf, { endpointMacPrefix: '0E2A0', ipam: { type: 'x' } }, 'endpointMacPrefix: "0E2A0" is invalid'],
    [parseWinOverlayConf, { ipMasq: 1, ipam: { type: 'x' } }, 'ipMasq: must be true or false'],
    [parseWinOverlayConf, {}, 'ipam.type: required'],
  ] as const)('%o %j: code 7 naming the field', (parse, raw, msg) => {
    expect(parse(conf(raw))).toMatchObject(E.left({ code: 7, msg: expect.stringContaining(msg) }));
  });
});
