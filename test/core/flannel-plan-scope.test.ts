// OwnershipScope.routeDsts: plan may delete routes on a foreign device when their destination lies inside a
// CIDR felt owns (feltd's host-gw / DirectRouting routes on the underlay), and nothing else on that device.

import { describe, expect, it } from 'vitest';
import { emptyKernelState, HOST, type KernelState, type OwnershipScope, type Route } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';

const state = (routes: Route[]): KernelState => ({ ...emptyKernelState(), routes });
const scope = (routeDsts?: OwnershipScope['routeDsts']): OwnershipScope => ({
  links: [],
  devices: [],
  chains: [],
  ruleMarkers: [],
  ...(routeDsts ? { routeDsts } : {}),
});

const stale: Route = { ns: HOST, dst: '10.244.5.0/24', gw: '198.51.100.5', dev: 'eth0' };
const foreign: Route[] = [
  { ns: HOST, dst: '0.0.0.0/0', gw: '198.51.100.254', dev: 'eth0' },
  { ns: HOST, dst: '198.51.100.0/24', dev: 'eth0', scope: 'link' },
  // Wider than the network: not inside it.
  { ns: HOST, dst: '10.0.0.0/8', gw: '198.51.100.254', dev: 'eth0' },
  // Inside the network, but on another device.
  { ns: HOST, dst: '10.244.9.0/24', dev: 'cni0' },
  // Inside the network, on eth0, but in another namespace.
  { ns: '/var/run/netns/x', dst: '10.244.6.0/24', gw: '198.51.100.6', dev: 'eth0' },
];

describe('plan with scope.routeDsts', () => {
  it('deletes routes inside the CIDR on that device, and nothing else', () => {
    const want = state([{ ns: HOST, dst: '10.244.7.0/24', gw: '198.51.100.7', dev: 'eth0' }]);
    const ops = plan(want, state([stale, ...foreign]), scope([{ ns: HOST, dev: 'eth0', within: '10.244.0.0/16' }]));
    expect(ops).toEqual([
      { op: 'route.del', route: stale },
      { op: 'route.replace', route: want.routes[0] },
    ]);
  });

  it('without routeDsts the same routes are foreign (unchanged behaviour)', () => {
    expect(plan(emptyKernelState(), state([stale, ...foreign]), scope())).toEqual([]);
  });

  it('the network itself is inside; a route equal to a desired one stays', () => {
    const whole: Route = { ns: HOST, dst: '10.244.0.0/16', dev: 'eth0' };
    expect(plan(state([stale]), state([stale, whole]), scope([{ ns: HOST, dev: 'eth0', within: '10.244.0.0/16' }]))).toEqual([
      { op: 'route.del', route: whole },
    ]);
  });

  it('IPv6', () => {
    const r6: Route = { ns: HOST, dst: 'fd00:10:244:5::/64', gw: '2001:db8::5', dev: 'eth0' };
    const other6: Route = { ns: HOST, dst: '2001:db8::/64', dev: 'eth0' };
    expect(plan(emptyKernelState(), state([r6, other6, stale]), scope([{ ns: HOST, dev: 'eth0', within: 'fd00:10:244::/56' }]))).toEqual([
      { op: 'route.del', route: r6 },
    ]);
  });
});
