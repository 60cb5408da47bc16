// node --import tsx test/bench/desired-cache.bench.ts: does desiredOverlay's cache of remote-lease parses pay?
// feltd computes the desired overlay on every full pass whose node state changed (an idle resync reuses the last
// result). At 10,000 remote vxlan leases (IPv4, or dual stack with BENCH_DUAL=1), one remote lease changes
// between passes (a VtepMAC, folded with nodeProjection as feltd folds it), then desiredOverlay runs:
//   - cold: no cache (a fresh one per call: every lease parsed, every kernel object made);
//   - warm: one cache kept across calls, as feltd keeps it (only the changed lease parsed).
// Alternating, BENCH_N rounds each; prints medians, p90, the ratio, and plan(d, d) over the same state for scale.

import * as E from 'fp-ts/lib/Either.js';
import { stamp } from '../../core/events.ts';
import { desiredOverlay, overlayCache, type OverlayNode } from '../../core/flannel/desired.ts';
import type { NodeEvent } from '../../core/flannel/events.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { nodeProjection, type NodeState } from '../../core/flannel/node.ts';
import { plan } from '../../core/kernel/plan.ts';

const N = Number(process.env['BENCH_N'] ?? 40);
const REMOTES = Number(process.env['BENCH_REMOTES'] ?? 10_000);
const DUAL = process.env['BENCH_DUAL'] === '1';
const T = '2030-01-01T00:00:00.000Z';
const EXP = '2030-01-02T00:00:00.000Z';
const hex = (n: number) => n.toString(16).padStart(2, '0');

const conf = parseNetConfig(
  JSON.stringify({
    Network: '10.128.0.0/9',
    ...(DUAL ? { EnableIPv6: true, IPv6Network: 'fd00:10::/48' } : {}),
    Backend: { Type: 'vxlan' },
  }),
);
if (E.isLeft(conf)) throw new Error(conf.left);
const node: OverlayNode = {
  publicIP: '198.51.100.1',
  ...(DUAL ? { publicIPv6: '2001:db8::1', vtepMacV6: '3e:ff:00:00:00:02', underlayCidrV6: '2001:db8::/64' } : {}),
  underlayDev: 'eth0',
  underlayCidr: '198.51.100.0/24',
  underlayMtu: 1500,
  vtepMac: '3e:ff:00:00:00:01',
  ipMasq: true,
};

const seen = (n: number, flip: number): NodeEvent => {
  const subnet = `10.${129 + (n >> 8)}.${n & 255}.0/24`;
  const ipv6Subnet = DUAL ? `fd00:10:0:${(n + 1).toString(16)}::/64` : undefined;
  return {
    type: 'RemoteLeaseSeen',
    data: {
      key: `${subnet.replace('/', '-')}${ipv6Subnet ? `&${ipv6Subnet.replace('/', '-')}` : ''}`,
      subnet,
      ...(ipv6Subnet ? { ipv6Subnet } : {}),
      attrs: {
        PublicIP: `10.0.${n >> 8}.${n & 255}`,
        PublicIPv6: DUAL ? `2001:db8:1::${(n + 1).toString(16)}` : null,
        BackendType: 'vxlan',
        BackendData: { VNI: 1, VtepMAC: `3e:00:${hex(flip)}:${hex(n >> 8)}:${hex(n & 255)}:01` },
        ...(DUAL ? { BackendV6Data: { VNI: 1, VtepMAC: `3e:01:${hex(flip)}:${hex(n >> 8)}:${hex(n & 255)}:01` } } : {}),
      },
      expiration: EXP,
      change: flip ? 'changed' : 'appeared',
    },
  } as NodeEvent;
};

let position = 1;
const apply = (s: NodeState, events: NodeEvent[]): NodeState => {
  const stored = stamp('node/198.51.100.1', events, T, position);
  position += events.length;
  return nodeProjection.evolveAll(s, stored);
};

let state = apply(nodeProjection.initialState(), [
  { type: 'ConfigLoaded', data: { config: conf.right.config } },
  {
    type: 'SubnetLeased',
    data: {
      key: '10.128.0.0-24',
      subnet: '10.128.0.0/24',
      ...(DUAL ? { ipv6Subnet: 'fd00:10::/64', publicIPv6: '2001:db8::1', vtepMacV6: node.vtepMacV6 } : {}),
      publicIP: node.publicIP,
      backendType: 'vxlan',
      vtepMac: node.vtepMac,
      expiration: EXP,
      renewal: false,
    },
  } as NodeEvent,
  ...Array.from({ length: REMOTES }, (_, n) => seen(n, 0)),
]);

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const p90 = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!;

const cache = overlayCache();
const first = desiredOverlay(state, node, cache);
if (E.isLeft(first)) throw new Error(first.left);
const objects = first.right.kernel.routes.length + first.right.kernel.neighbours.length + first.right.kernel.fdb.length;
const cold: number[] = [];
const warm: number[] = [];
for (let i = 0; i < 3 + N; i++) {
  for (const [name, out] of [
    ['cold', cold],
    ['warm', warm],
  ] as const) {
    state = apply(state, [seen((i * 7919) % REMOTES, (i % 250) + 1)]);
    const t0 = performance.now();
    const d = name === 'cold' ? desiredOverlay(state, node) : desiredOverlay(state, node, cache);
    const ms = performance.now() - t0;
    if (E.isLeft(d)) throw new Error(d.left);
    if (i >= 3) out.push(ms);
  }
}
const d = desiredOverlay(state, node, cache);
if (E.isLeft(d)) throw new Error(d.left);
const planMs: number[] = [];
for (let i = 0; i < 5; i++) {
  const t0 = performance.now();
  plan(d.right.kernel, d.right.kernel, d.right.scope);
  planMs.push(performance.now() - t0);
}
const f = (x: number) => x.toFixed(1).padStart(7);
console.log(
  `desiredOverlay, ${REMOTES} remote vxlan leases${DUAL ? ' (dual stack)' : ''}, ${objects} kernel objects, one lease changed per call, ${N} rounds`,
);
console.log(`  cold (no cache)    median ${f(median(cold))} ms  p90 ${f(p90(cold))} ms`);
console.log(`  warm (feltd cache) median ${f(median(warm))} ms  p90 ${f(p90(warm))} ms`);
console.log(
  `  ratio cold/warm ${(median(cold) / median(warm)).toFixed(2)}x; plan(d, d) over the same state: median ${f(median(planMs))} ms`,
);
