// feltd with EnableNFTables on real kernels: a two-node vxlan cluster (test/support/cluster.ts) whose nodes
// keep masquerade and forward rules in flannel's tables (ip flannel-ipv4: postrtg, forward) and the other
// node's pod subnet in the set remote-subnets; pods reach each other; drift in the tables is repaired; felt
// plan and felt why see the tables; and switching EnableNFTables off and on across a restart removes the other
// mode's objects (no reboot, as flannel since v0.27).

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, type Node } from '../support/cluster.ts';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { exec } from '../support/ns.ts';

const FELT = join(ROOT, 'dist/bin/felt');
const until = (what: string, f: () => boolean, timeoutMs = 20000): Promise<unknown> => eventually(f, { what, timeoutMs, intervalMs: 200 });
const tryIn = (c: Cluster, n: Node, ...argv: string[]): string => {
  try {
    return c.inNode(n, ...argv);
  } catch {
    return '';
  }
};
const table = (c: Cluster, n: Node): string => tryIn(c, n, 'nft', 'list', 'table', 'ip', 'flannel-ipv4');
const iptNat = (c: Cluster, n: Node): string => c.inNode(n, 'iptables-save', '-t', 'nat');
const net = (c: Cluster, n: Node): string => c.subnetOf(n).replace(/\.1\//, '.0/');

describe('feltd EnableNFTables: a two-node vxlan cluster', () => {
  const c = new Cluster({ nodes: 2, backend: 'vxlan', extraNetConf: { EnableNFTables: true } });
  let n1: Node;
  let n2: Node;

  beforeAll(async () => {
    await c.create();
    [n1, n2] = [c.nodes[0]!, c.nodes[1]!];
    for (const n of c.nodes) c.startFeltd(n);
    await c.waitReady();
    for (const n of c.nodes) await c.addPod(n);
  }, 90_000);
  afterAll(async () => {
    for (const n of c.nodes) await c.stopFeltd(n);
    c.destroy();
  });

  it("programs flannel's tables, the remote subnets set and no iptables chains; pods reach each other", async () => {
    await until(
      'both nodes have the other node in their set',
      () => table(c, n1).includes(net(c, n2)) && table(c, n2).includes(net(c, n1)),
    );
    const t = table(c, n1);
    expect(t).toContain('chain postrtg');
    expect(t).toContain('type nat hook postrouting priority srcnat; policy accept;');
    expect(t).toContain(`ip saddr ${net(c, n1)} ip daddr 10.244.0.0/16 return`);
    expect(t).toContain('chain forward');
    expect(t).toContain('set remote-subnets');
    expect(tryIn(c, n1, 'nft', 'list', 'table', 'ip6', 'flannel-ipv6')).toContain('table ip6 flannel-ipv6');
    expect(iptNat(c, n1)).not.toContain('FLANNEL-POSTRTG');
    expect(c.pingMatrix(), c.logs()).toEqual([]);
  });

  it('repairs drift: a flushed postrtg, a set element deleted', async () => {
    c.inNode(n1, 'nft', 'flush', 'chain', 'ip', 'flannel-ipv4', 'postrtg');
    await until('postrtg restored', () => table(c, n1).includes('masquerade fully-random'));
    c.inNode(n1, 'nft', 'delete', 'element', 'ip', 'flannel-ipv4', 'remote-subnets', `{ ${net(c, n2)} }`);
    await until('the set element restored', () => table(c, n1).includes(net(c, n2)));
  });

  it('felt plan sees the tables in sync; felt why explains the table', async () => {
    const state = join(n1.dir, 'state');
    const r = await eventually(
      async () => {
        const x = await exec(['ip', 'netns', 'exec', n1.ns, FELT, 'plan', '--node', '--data-dir', state]);
        return x.code === 0 ? x : false;
      },
      { what: 'felt plan --node in sync', timeoutMs: 20_000, intervalMs: 200 },
    );
    expect(r.stdout).toContain('in sync');
    const why = await exec(['ip', 'netns', 'exec', n1.ns, FELT, 'why', '--data-dir', state, 'flannel-ipv4']);
    expect(why.stdout).toContain('the nftables table ip flannel-ipv4 is feltd');
    expect(why.stdout).toContain('remote-subnets (1 remote pod subnets)');
  });

  it('switching EnableNFTables off and on across a restart removes the other mode\u2019s objects', async () => {
    const conf = join(c.dir, 'net-conf.json');
    const withNft = c.netConf();
    const { EnableNFTables: _off, ...without } = withNft;
    await c.stopFeltd(n1);
    writeFileSync(conf, JSON.stringify(without));
    let mark = c.logMark(n1);
    c.startFeltd(n1);
    await until(
      'n1 in iptables mode: FLANNEL-POSTRTG there, flannel tables gone',
      () => iptNat(c, n1).includes('-A FLANNEL-POSTRTG') && table(c, n1) === '',
    );
    expect(c.loggedSince(n1, mark, 'subnet.env written')).toBe(true);
    expect(c.pingMatrix(), c.logs()).toEqual([]);
    await c.stopFeltd(n1);
    writeFileSync(conf, JSON.stringify(withNft));
    mark = c.logMark(n1);
    c.startFeltd(n1);
    await until(
      'n1 back in nftables mode: tables there, FLANNEL- chains gone',
      () => table(c, n1).includes(net(c, n2)) && !iptNat(c, n1).includes('FLANNEL-'),
    );
    expect(c.pingMatrix(), c.logs()).toEqual([]);
  });
});

// The docs promise flannel-ipv6 beside flannel-ipv4: a dual-stack cluster keeps the IPv6 half there.
describe('feltd EnableNFTables: a two-node dual-stack vxlan cluster', () => {
  const c = new Cluster({ nodes: 2, backend: 'vxlan', families: 'dual', extraNetConf: { EnableNFTables: true } });
  const table6 = (n: Node): string => tryIn(c, n, 'nft', 'list', 'table', 'ip6', 'flannel-ipv6');
  /** The node's IPv6 pod subnet, from its subnet.env (fd00:10:244:x::1/64 -> fd00:10:244:x::/64). */
  const net6 = (n: Node): string => /^FLANNEL_IPV6_SUBNET=(\S+)$/m.exec(readFileSync(n.subnetFile, 'utf8'))![1]!.replace(/::1\//, '::/');

  beforeAll(async () => {
    await c.create();
    for (const n of c.nodes) c.startFeltd(n);
    await c.waitReady();
    for (const n of c.nodes) await c.addPod(n);
  }, 90_000);
  afterAll(async () => {
    for (const n of c.nodes) await c.stopFeltd(n);
    c.destroy();
  });

  it("flannel-ipv6 masquerades the node's IPv6 pods and holds the other node's IPv6 subnet; pods reach each other over both families", async () => {
    const [n1, n2] = [c.nodes[0]!, c.nodes[1]!];
    await until(
      "both nodes have the other node's IPv6 subnet in their ip6 set",
      () => table6(n1).includes(net6(n2)) && table6(n2).includes(net6(n1)),
    );
    const t6 = table6(n1);
    expect(t6).toContain('chain postrtg');
    expect(t6).toContain(`ip6 saddr ${net6(n1)}`);
    expect(t6).toContain('set remote-subnets');
    expect(table(c, n1)).toContain('chain postrtg');
    expect(c.inNode(n1, 'ip6tables-save', '-t', 'nat')).not.toContain('FLANNEL-POSTRTG');
    // A new bridge's IPv6 gateway address is tentative for a moment: the first IPv6 pings may go unanswered.
    await until('every pod reaches every pod on the other node over IPv4 and IPv6', () => c.pingMatrix().length === 0, 30000);
    expect(c.pods.every((p) => p.ips.some((ip) => ip.includes(':')))).toBe(true);
  });
});
