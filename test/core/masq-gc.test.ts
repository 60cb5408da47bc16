// GC of nftables masquerade rules by network hash (the reference's gcIPMasqNFTables): what goes is decided from
// the observed rules' comments alone, so attachments felt has no record of are covered.

import { describe, expect, it } from 'vitest';
import { HOST, type NftRule } from '../../core/kernel/model.ts';
import { MASQ_CHAIN, MASQ_TABLE, masqComment, masqNetworkScope, staleMasquerade } from '../../core/netfilter/masquerade.ts';

const rule = (comment: string, extra: Partial<NftRule> = {}): NftRule => ({
  ns: HOST,
  family: 'inet',
  table: MASQ_TABLE,
  chain: MASQ_CHAIN,
  comment,
  expr: [],
  handle: 1,
  ...extra,
});

describe('staleMasquerade', () => {
  const a = masqComment('net1', 'eth0', 'ctr-a');
  const b = masqComment('net1', 'eth0', 'ctr-b');
  const b1 = masqComment('net1', 'eth1', 'ctr-b');
  const other = masqComment('net2', 'eth0', 'ctr-b');
  const observed = [
    rule(a),
    rule(a),
    rule(b),
    rule(b1),
    rule(other),
    rule('admin rule'),
    rule(b, { table: 'other' }),
    rule(b, { ns: '/run/netns/x' }),
  ];

  it('names every rule of the network whose (ifname, container) is not valid, by its exact comment, once', () => {
    const s = staleMasquerade(HOST, 'net1', [{ containerId: 'ctr-b', ifname: 'eth0' }], observed);
    expect(s.nftRuleMarkers.map((m) => m.comment).sort()).toEqual([a, b1].sort());
    expect(
      s.nftRuleMarkers.every((m) => m.exact && m.table === MASQ_TABLE && m.chain === MASQ_CHAIN && m.family === 'inet' && m.ns === HOST),
    ).toBe(true);
  });

  it('leaves other networks, rules without the hash, other tables and namespaces', () => {
    const s = staleMasquerade(HOST, 'net1', [], observed);
    expect(s.nftRuleMarkers.map((m) => m.comment).sort()).toEqual([a, b, b1].sort());
  });

  it('nothing when every attachment is valid', () => {
    expect(
      staleMasquerade(
        HOST,
        'net1',
        [
          { containerId: 'ctr-a', ifname: 'eth0' },
          { containerId: 'ctr-b', ifname: 'eth0' },
          { containerId: 'ctr-b', ifname: 'eth1' },
        ],
        observed,
      ).nftRuleMarkers,
    ).toEqual([]);
  });

  it("reads the network's rules by its hash in masq_checks", () => {
    const [m] = masqNetworkScope(HOST, 'net1').nftRuleMarkers!;
    expect(a.startsWith(m!.comment)).toBe(true);
    expect(other.startsWith(m!.comment)).toBe(false);
    expect(m!.exact).toBeUndefined();
  });
});
