import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseFlannelConf, delegateConfig } from '../../core/cni/flannel.ts';
import {
  configKeyPath,
  leaseKeyPath,
  parseLease,
  parseLeaseAttrs,
  parseLeaseKeyPath,
  parseSubnetEnv,
  parseSubnetKey,
  parseVxlanBackendData,
  previousSubnets,
  renderSubnetEnv,
  serializeLeaseAttrs,
  subnetKey,
  subnetsKeyPrefix,
  vxlanBackendData,
} from '../../core/flannel/lease.ts';
import type { LeaseAttrs } from '../../core/flannel/types.ts';

const right = <T>(r: E.Either<string, T>): T => {
  if (E.isLeft(r)) throw new Error(r.left);
  return r.right;
};
const left = <T>(r: E.Either<string, T>): string => {
  if (E.isRight(r)) throw new Error(`expected an error, got ${JSON.stringify(r.right)}`);
  return r.left;
};

describe('etcd keys', () => {
  it('subnetKey: IPv4, dual stack, IPv6 only', () => {
    expect(subnetKey({ subnet: '10.244.3.0/24' })).toBe('10.244.3.0-24');
    expect(subnetKey({ subnet: '10.244.3.0/24', ipv6Subnet: 'fd00:10:244:3::/64' })).toBe('10.244.3.0-24&fd00:10:244:3::-64');
    expect(subnetKey({ ipv6Subnet: 'fd00:10:244:3::/64' })).toBe('0.0.0.0-0&fd00:10:244:3::-64');
  });

  it('parseSubnetKey inverts subnetKey', () => {
    expect(right(parseSubnetKey('10.244.3.0-24'))).toEqual({ subnet: '10.244.3.0/24' });
    expect(right(parseSubnetKey('10.244.3.0-24&fd00:10:244:3::-64'))).toEqual({
      subnet: '10.244.3.0/24',
      ipv6Subnet: 'fd00:10:244:3::/64',
    });
    expect(right(parseSubnetKey('0.0.0.0-0&fd00:10:244:3::-64'))).toEqual({ ipv6Subnet: 'fd00:10:244:3::/64' });
  });

  it('parseSubnetKey refuses what is not a subnet key', () => {
    expect(left(parseSubnetKey('10.244.3.0/24'))).toMatch(/not of the form/);
    expect(left(parseSubnetKey('10.244.300.0-24'))).toMatch(/is not an IPv4 subnet/);
    expect(left(parseSubnetKey('10.244.3.0-33'))).toMatch(/is not an IPv4 subnet/);
    expect(left(parseSubnetKey('10.244.3.5-24'))).toMatch(/not the first address of a \/24/);
    expect(left(parseSubnetKey('10.244.3.0-24&fd00::1-64'))).toMatch(/not the first address/);
    expect(left(parseSubnetKey('0.0.0.0-0'))).toMatch(/neither/);
  });

  it('round-trips any IPv4 /8../30 subnet, with and without IPv6', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 8, max: 30 }),
        fc.option(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
        (v, len, hi) => {
          const net = (v >>> 0) & ~((1 << (32 - len)) - 1);
          const subnet = `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${len}`;
          const pair = hi === null ? { subnet } : { subnet, ipv6Subnet: right(parseSubnetKey(`1.0.0.0-8&${v6(hi)}-64`)).ipv6Subnet! };
          expect(right(parseSubnetKey(subnetKey(pair)))).toEqual(pair);
        },
      ),
    );
  });

  it('paths as flannel joins them', () => {
    expect(configKeyPath()).toBe('/coreos.com/network/config');
    expect(configKeyPath('/felt/net/')).toBe('/felt/net/config');
    expect(subnetsKeyPrefix()).toBe('/coreos.com/network/subnets/');
    expect(leaseKeyPath('/coreos.com/network', { subnet: '10.244.3.0/24' })).toBe('/coreos.com/network/subnets/10.244.3.0-24');
    expect(right(parseLeaseKeyPath('/coreos.com/network', '/coreos.com/network/subnets/10.244.3.0-24'))).toEqual({
      subnet: '10.244.3.0/24',
    });
    expect(left(parseLeaseKeyPath('/coreos.com/network', '/other/subnets/10.244.3.0-24'))).toMatch(
      /not under \/coreos.com\/network\/subnets\//,
    );
  });
});

const v6 = (hi: bigint): string => {
  const words = [48n, 32n, 16n, 0n].map((s) => ((hi >> s) & 0xffffn).toString(16));
  return `${words.join(':')}::`;
};

describe('LeaseAttrs JSON', () => {
  const flanneld =
    '{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"3e:9c:0f:11:22:33"}}';

  it('parses a lease as flanneld writes it and writes it back byte for byte', () => {
    const a = right(parseLeaseAttrs(flanneld));
    expect(a).toEqual({
      PublicIP: '198.51.100.2',
      PublicIPv6: null,
      BackendType: 'vxlan',
      BackendData: { VNI: 1, VtepMAC: '3e:9c:0f:11:22:33' },
    });
    expect(serializeLeaseAttrs(a)).toBe(flanneld);
    expect(right(parseVxlanBackendData(a.BackendData))).toEqual({ vni: 1, vtepMac: '3e:9c:0f:11:22:33' });
  });

  it('felt leases are what flanneld writes', () => {
    const a: LeaseAttrs = {
      PublicIP: '198.51.100.2',
      PublicIPv6: null,
      BackendType: 'vxlan',
      BackendData: vxlanBackendData(1, '3e:9c:0f:11:22:33'),
    };
    expect(serializeLeaseAttrs(a)).toBe(flanneld);
    expect(serializeLeaseAttrs({ PublicIP: '198.51.100.3', BackendType: 'host-gw' })).toBe(
      '{"PublicIP":"198.51.100.3","PublicIPv6":null,"BackendType":"host-gw"}',
    );
  });

  it('dual stack attrs round-trip', () => {
    const a: LeaseAttrs = {
      PublicIP: '198.51.100.2',
      PublicIPv6: '2001:db8::2',
      BackendType: 'vxlan',
      BackendData: vxlanBackendData(1, '3e:9c:0f:11:22:33'),
      BackendV6Data: vxlanBackendData(1, '3e:9c:0f:11:22:34'),
    };
    const s = serializeLeaseAttrs(a);
    expect(s).toBe(
      '{"PublicIP":"198.51.100.2","PublicIPv6":"2001:db8::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"3e:9c:0f:11:22:33"},"BackendV6Data":{"VNI":1,"VtepMAC":"3e:9c:0f:11:22:34"}}',
    );
    expect(right(parseLeaseAttrs(s))).toEqual(a);
  });

  it('is tolerant of missing optional fields and of key case, as Go is', () => {
    expect(right(parseLeaseAttrs('{"PublicIP":"10.0.0.1"}'))).toEqual({ PublicIP: '10.0.0.1', PublicIPv6: null, BackendType: '' });
    expect(right(parseLeaseAttrs('{}'))).toEqual({ PublicIP: '0.0.0.0', PublicIPv6: null, BackendType: '' });
    expect(right(parseLeaseAttrs('{"publicip":"10.0.0.1","backendtype":"host-gw","backenddata":null}'))).toEqual({
      PublicIP: '10.0.0.1',
      PublicIPv6: null,
      BackendType: 'host-gw',
    });
    expect(right(parseVxlanBackendData({ vni: 2, vtepmac: '3E-9C-0F-11-22-33' }))).toEqual({ vni: 2, vtepMac: '3e:9c:0f:11:22:33' });
  });

  it('errors name the field', () => {
    expect(left(parseLeaseAttrs('{"PublicIP":"x"}'))).toBe('lease: PublicIP: "x" is not an IPv4 address');
    expect(left(parseLeaseAttrs('{"PublicIP":"10.0.0.1","PublicIPv6":"10.0.0.1"}'))).toMatch(/^lease: PublicIPv6:/);
    expect(left(parseLeaseAttrs('{"PublicIP":"10.0.0.1","BackendType":3}'))).toMatch(/^lease: BackendType:/);
    expect(left(parseLeaseAttrs('nope'))).toMatch(/^lease: invalid JSON/);
    expect(left(parseLeaseAttrs('[]'))).toMatch(/must be a JSON object/);
    expect(left(parseVxlanBackendData({ VNI: 1 }))).toMatch(/^BackendData.VtepMAC: null is not a MAC address/);
    expect(left(parseVxlanBackendData({ VNI: 'x', VtepMAC: '3e:9c:0f:11:22:33' }))).toMatch(/^BackendData.VNI/);
    expect(left(parseLease('10.244.3.0-24', '{"PublicIP":1}', 'x'))).toMatch(/^lease 10.244.3.0-24: PublicIP:/);
  });

  it('parseLease combines the key, the value and the expiry', () => {
    expect(right(parseLease('10.244.3.0-24', flanneld, '2030-01-01T00:00:00.000Z'))).toEqual({
      subnet: '10.244.3.0/24',
      attrs: right(parseLeaseAttrs(flanneld)),
      expiration: '2030-01-01T00:00:00.000Z',
    });
  });
});

describe('subnet.env', () => {
  it('renders exactly as WriteSubnetFile', () => {
    expect(renderSubnetEnv({ network: '10.244.0.0/16', subnet: '10.244.3.0/24', mtu: 1450, ipMasq: true })).toBe(
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
    expect(
      renderSubnetEnv({
        network: '10.244.0.0/16',
        subnet: '10.244.3.0/24',
        ipv6Network: 'fd00:10:244::/56',
        ipv6Subnet: 'fd00:10:244:3::/64',
        mtu: 1450,
        ipMasq: false,
      }),
    ).toBe(
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
    );
    expect(renderSubnetEnv({ ipv6Network: 'fd00::/56', ipv6Subnet: 'fd00:0:0:3::/64', mtu: 1500, ipMasq: false })).toBe(
      'FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:3::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n',
    );
  });

  it('parses back as the CNI plugin reads it, and the plugin builds its delegate from it', () => {
    const text = renderSubnetEnv({ network: '10.244.0.0/16', subnet: '10.244.3.0/24', mtu: 1450, ipMasq: true });
    const env = right(parseSubnetEnv(text));
    expect(env).toEqual({ network: '10.244.0.0/16', subnet: '10.244.3.0/24', mtu: 1450, ipMasq: true });
    const conf = parseFlannelConf({
      cniVersion: '1.0.0',
      name: 'cbr0',
      type: 'flannel',
      raw: { cniVersion: '1.0.0', name: 'cbr0', type: 'flannel' },
    });
    if (E.isLeft(conf)) throw new Error(conf.left.msg);
    const d = delegateConfig(conf.right, env);
    expect(d).toMatchObject({
      type: 'bridge',
      mtu: 1450,
      ipMasq: false,
      isGateway: true,
      ipam: { ranges: [[{ subnet: '10.244.3.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
    });
  });

  it('previousSubnets is lenient, as flanneld at start', () => {
    expect(previousSubnets('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n')).toEqual({
      network: '10.244.0.0/16',
      subnet: '10.244.3.0/24',
    });
    expect(previousSubnets('FLANNEL_SUBNET=garbage\nFLANNEL_IPV6_SUBNET=fd00:0:0:3::1/64\n')).toEqual({ ipv6Subnet: 'fd00:0:0:3::/64' });
    expect(previousSubnets('')).toEqual({});
  });
});
