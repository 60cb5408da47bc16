// feltd's EnableNFTables: flannel's tables and chains, the remote pod subnets in one set, modes that remove
// each other's objects, and a lease change that is one set element (delta = full pass), in the memory twin.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import { overlayDelta } from '../../core/flannel/delta.ts';
import { desiredOverlay, type OverlayNode } from '../../core/flannel/desired.ts';
import { initialState, type NodeState, type RemoteLease } from '../../core/flannel/node.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { HOST, type KernelState } from '../../core/kernel/model.ts';
import { drift, plan } from '../../core/kernel/plan.ts';

const configOf = (json: string) => {
  const c = parseNetConfig(json);
  if (E.isLeft(c)) throw new Error(c.left);
  return c.right;
};
const NFT = configOf('{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}');
const IPT = configOf('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const node: OverlayNode = {
  publicIP: '198.51.100.11',
  underlayDev: 'eth0',
  underlayCidr: '198.51.100.0/24',
  underlayMtu: 1500,
  vtepMac: '02:00:00:00:00:0b',
  ipMasq: true,
};
const T = '2030-01-01T00:00:00.000Z';
const remote = (n: number, v: number): RemoteLease => ({
  key: `10.244.${n}.0-24`,
  subnet: `10.244.${n}.0/24`,
  attrs: {
    PublicIP: `198.51.100.${20 + n}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: `02:00:00:00:${v.toString(16).padStart(2, '0')}:${n.toString(16).padStart(2, '0')}` },
  },
  expiration: T,
  since: T,
  changed: T,
});
const stateOf = (config: typeof NFT.config, remotes: readonly number[]): NodeState => ({
  ...initialState(),
  config,
  ownLease: {
    key: '10.244.1.0-24',
    subnet: '10.244.1.0/24',
    publicIP: node.publicIP,
    backendType: 'vxlan',
    vtepMac: node.vtepMac,
    expiration: T,
    since: T,
  },
  remotes: Object.fromEntries(remotes.map((n) => [remote(n, 1).key, remote(n, 1)])),
});
const overlay = (s: NodeState) => {
  const d = desiredOverlay(s, node);
  if (E.isLeft(d)) throw new Error(d.left);
  return d.right;
};
const eth0 = { ns: HOST, name: 'eth0', kind: 'device' as const, up: true };

describe('EnableNFTables', () => {
  it('is a setting now (no notice), recorded as such', () => {
    expect(NFT.config.enableNFTables).toBe(true);
    expect(NFT.notices).toEqual([]);
    expect(IPT.config.enableNFTables).toBeUndefined();
  });

  it("wants flannel's tables and chains and the remote subnets in a set, and no iptables", () => {
    const k = overlay(stateOf(NFT.config, [2, 3])).kernel;
    expect(k.chains).toEqual([]);
    expect(k.rules).toEqual([]);
    expect(k.nftTables!.map((t) => `${t.family} ${t.name}`)).toEqual(['ip flannel-ipv4', 'ip6 flannel-ipv6']);
    expect(k.nftChains!.map((c) => `${c.table} ${c.name} ${c.rules.length}`)).toEqual(['flannel-ipv4 postrtg 6', 'flannel-ipv4 forward 2']);
    expect(k.nftSets).toEqual([
      expect.objectContaining({ table: 'flannel-ipv4', name: 'remote-subnets', elements: ['10.244.2.0/24', '10.244.3.0/24'] }),
    ]);
  });

  it("switching modes removes the other mode's objects, both ways", () => {
    const ipt = overlay(stateOf(IPT.config, [2]));
    const nft = overlay(stateOf(NFT.config, [2]));
    const k = memoryKernel({ ...ipt.kernel, links: [...ipt.kernel.links, eth0] });
    // iptables → nftables.
    const there = plan(nft.kernel, k.state(), nft.scope);
    expect(
      there
        .filter((o) => o.op === 'chain.del')
        .map((o) => (o as { chain: string }).chain)
        .sort(),
    ).toEqual(['FLANNEL-FWD', 'FLANNEL-POSTRTG']);
    expect(there.filter((o) => o.op === 'rule.del')).toHaveLength(2);
    expect(E.isRight(k.applySync(there))).toBe(true);
    expect(plan(nft.kernel, k.state(), nft.scope)).toEqual([]);
    expect(k.state().chains.filter((c) => c.chain.startsWith('FLANNEL-'))).toEqual([]);
    // nftables → iptables: the tables go, whole.
    const back = plan(ipt.kernel, k.state(), ipt.scope);
    expect(
      back
        .filter((o) => o.op === 'nft.table.del')
        .map((o) => (o as { name: string }).name)
        .sort(),
    ).toEqual(['flannel-ipv4', 'flannel-ipv6']);
    expect(E.isRight(k.applySync(back))).toBe(true);
    expect(plan(ipt.kernel, k.state(), ipt.scope)).toEqual([]);
    expect(k.state().nftTables ?? []).toEqual([]);
  });

  it('drift names nftables objects: a flushed postrtg, a missing set element', () => {
    const nft = overlay(stateOf(NFT.config, [2, 3]));
    const k = memoryKernel({ ...nft.kernel, links: [...nft.kernel.links, eth0] });
    expect(E.isRight(k.applySync(plan(nft.kernel, k.state(), nft.scope)))).toBe(true);
    const s = k.state();
    const broken: KernelState = {
      ...s,
      nftChains: s.nftChains!.map((c) => (c.name === 'postrtg' ? { ...c, rules: [] } : c)),
      nftSets: s.nftSets!.map((x) => ({ ...x, elements: x.elements.filter((e) => e !== '10.244.3.0/24') })),
    };
    expect(drift(nft.kernel, broken, nft.scope)).toEqual([
      'nftables set ip flannel-ipv4 remote-subnets lacks 10.244.3.0/24 (in the host namespace)',
      'nftables chain ip flannel-ipv4 postrtg differs: 0 rules, want 6 (in the host namespace)',
    ]);
  });

  it('a lease change is one set element, and delta = full pass (property)', () => {
    const ids = fc.uniqueArray(fc.integer({ min: 2, max: 60 }), { maxLength: 10 });
    fc.assert(
      fc.property(ids, ids, (a, b) => {
        const before = stateOf(NFT.config, a);
        const after = stateOf(NFT.config, b);
        const keys = [...new Set([...a, ...b])].filter((n) => a.includes(n) !== b.includes(n)).map((n) => remote(n, 1).key);
        const k = memoryKernel({ ...overlay(before).kernel, links: [...overlay(before).kernel.links, eth0] });
        const ops = overlayDelta(before, after, keys, node);
        if (E.isLeft(ops) || ops.right === 'full') throw new Error('unexpected');
        const setOps = ops.right.filter((o) => o.op.startsWith('nft.'));
        expect(setOps.every((o) => o.op === 'nft.set.elements')).toBe(true);
        expect(setOps.flatMap((o) => (o.op === 'nft.set.elements' ? [...o.add, ...o.del] : []))).toHaveLength(keys.length);
        expect(E.isRight(k.applySync(ops.right))).toBe(true);
        expect([...k.state().nftSets![0]!.elements].sort()).toEqual(overlay(after).kernel.nftSets![0]!.elements);
      }),
    );
  });
});
