import { describe, expect, it } from 'vitest';
import { explain } from '../../core/explain.ts';
import { initialState as ipamInitial } from '../../core/ipam/decider.ts';
import { initialState as nodeInitial, type NodeState } from '../../core/flannel/node.ts';
import type { StoredEvent } from '../../core/events.ts';

const ipamState = {
  ...ipamInitial(),
  allocations: {
    '10.22.0.5': { ip: '10.22.0.5', containerId: 'c1', ifname: 'eth0', rangeSet: 0, since: '2026-01-01T00:00:00.000Z', position: 3 },
  },
};
const node: NodeState = {
  ...nodeInitial(),
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
      changed: '2026-01-01T00:01:00.000Z',
    },
  },
};
const views = { ipam: [{ network: 'mynet', state: ipamState }], nodes: [{ stream: 'node/198.51.100.11', state: node }] };
const history: StoredEvent[] = [
  {
    position: 7,
    stream: 'node/198.51.100.11',
    type: 'RemoteLeaseSeen',
    data: { subnet: '10.244.2.0/24', attrs: { PublicIP: '198.51.100.12' } },
    time: '2026-01-01T00:01:00.000Z',
  },
];

describe('explain', () => {
  it('names the allocation behind a pod address', () => {
    expect(explain('10.22.0.5', views, [])[0]).toContain('allocated to container c1 interface eth0 on network "mynet"');
  });
  it('names the lease behind a route, neighbour and fdb entry, with its history', () => {
    const lines = explain('10.244.2.0/24', views, history);
    expect(lines[0]).toContain('exist because node 198.51.100.12 (lease 10.244.2.0-24');
    expect(lines).toContain('  #7 2026-01-01T00:01:00.000Z node/198.51.100.11 RemoteLeaseSeen');
    expect(explain('02:00:00:00:00:12', views, [])[0]).toContain('fdb entry 02:00:00:00:00:12 -> 198.51.100.12');
  });
  it("recognises the node's own subnet and says when nothing accounts for an object", () => {
    expect(explain('10.244.1.7', views, [])[0]).toContain("this node's (198.51.100.11) pod subnet");
    expect(explain('192.0.2.1', views, [])[0]).toContain('nothing in the log accounts for 192.0.2.1');
    expect(explain('bogus', views, [])[0]).toContain('not an IP address');
  });
});
