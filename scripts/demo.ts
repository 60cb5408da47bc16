// felt's main job on the embedded store: a three-node cluster in throwaway namespaces, one feltd per node,
// two pods per node attached through dist/cni/flannel, the node subnets, a cross-node ping matrix, a peek at
// one node's event log, then everything removed.

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Cluster } from '../test/support/cluster.ts';
import { ROOT } from '../test/support/cni.ts';

// cni: 'node': every pod's CNI call goes from the forwarder dist/cni/flannel to its node's feltd (daemon mode).
const c = new Cluster({ nodes: 3, store: 'embedded', backend: 'vxlan', cni: 'node' });
const say = (s: string) => console.log(s);
try {
  say('== an underlay bridge (198.51.100.1/24) and three nodes on it, each in its own network namespace');
  await c.create();
  for (const n of c.nodes) c.startFeltd(n);
  say('== feltd on every node leases a pod subnet from the embedded store (SQLite) and writes subnet.env');
  await c.waitReady();
  for (const n of c.nodes) say(`   ${n.name} (${n.ip}): ${c.subnetOf(n)}`);
  say("== two pods per node through dist/cni/flannel (-> bridge -> host-local), served by the node's feltd");
  for (const n of c.nodes) {
    const a = await c.addPod(n);
    const b = await c.addPod(n);
    say(`   ${n.name}: ${a.id} ${a.ip}, ${b.id} ${b.ip}`);
  }
  // Every node has seen every other node's lease and routes its subnet (polled, at most 20 s).
  const net = (n: (typeof c.nodes)[number]) => c.subnetOf(n).replace(/\.1\//, '.0/');
  for (let t0 = Date.now(); ; await new Promise((r) => setTimeout(r, 100))) {
    const done = c.nodes.every((n) => c.nodes.every((o) => o === n || c.inNode(n, 'ip', 'route', 'show').includes(net(o))));
    if (done || Date.now() - t0 > 20_000) break;
  }
  say('== cross-node ping matrix (rows ping columns; "." = same node)');
  say('         ' + c.pods.map((p) => p.id.padEnd(6)).join(''));
  let failed = 0;
  for (const a of c.pods) {
    const cells = c.pods.map((b) => {
      if (a.node === b.node) return '.     ';
      const ok = c.ping(a, b.ip);
      if (!ok) failed++;
      return (ok ? 'ok' : 'FAIL').padEnd(6);
    });
    say(`   ${a.id.padEnd(6)}${cells.join('')}`);
  }
  say(`== routes on ${c.nodes[0]!.name}: one per other node, through flannel.1`);
  for (const l of c
    .inNode(c.nodes[0]!, 'ip', 'route', 'show')
    .split('\n')
    .filter((l) => l.includes('flannel')))
    say(`   ${l}`);
  say(`== ${c.nodes[0]!.name}'s event log (dist/bin/felt events)`);
  const ev = execFileSync(join(ROOT, 'dist/bin/felt'), ['events', '--data-dir', join(c.nodes[0]!.dir, 'state')], { encoding: 'utf8' });
  for (const l of ev.trim().split('\n')) say(`   ${l}`);
  const other = c.subnetOf(c.nodes[1]!).replace(/\.1\//, '.0/');
  say(`== why does ${c.nodes[0]!.name} route ${other}? (dist/bin/felt explain ${other})`);
  const why = execFileSync(join(ROOT, 'dist/bin/felt'), ['explain', other, '--data-dir', join(c.nodes[0]!.dir, 'state')], {
    encoding: 'utf8',
  });
  for (const l of why.trim().split('\n')) say(`   ${l}`);
  say(failed ? `== ${failed} pings FAILED` : '== every pod reached every pod on the other nodes');
  process.exitCode = failed ? 1 : 0;
} finally {
  say('== cleaning up');
  for (const n of c.nodes) await c.stopFeltd(n);
  c.destroy();
}
