// The stock 10-flannel.conflist (flannel, then portmap) run by `felt cni` on the nodes of a two-node cluster
// with feltd running (embedded store, vxlan): a pod on node 2 serves on a host port of node 2, and a pod on node
// 1 reaches it through node 2's address across the overlay and the port mapping; CHECK, DEL, DEL again.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/cluster.ts';
import { FELT_CNI, ROOT } from '../support/cni.ts';
import { cniChains, exec, nsPath, Sandbox, type Run } from '../support/ns.ts';
import { ask, startServer, writeScripts } from '../support/traffic.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const c = new Cluster({ nodes: 2, store: 'embedded', backend: 'vxlan' });
const sb = new Sandbox();
let scripts: { server: string; client: string };

beforeAll(async () => {
  await c.create();
  for (const n of c.nodes) c.startFeltd(n);
  await c.waitReady();
  scripts = writeScripts(sb.dir());
}, 90_000);

afterAll(async () => {
  for (const n of c.nodes) await c.stopFeltd(n);
  c.destroy();
  await sb.cleanup();
});

/** `felt cni` on a node, with that node's stock flannel conflist. */
function feltCni(nodeIndex: number, args: string[]): Promise<Run> {
  const node = c.nodes[nodeIndex]!;
  const conf = join(node.dir, 'net.d');
  mkdirSync(conf, { recursive: true });
  writeFileSync(
    join(conf, '10-flannel.conflist'),
    JSON.stringify({
      name: 'cbr0',
      cniVersion: '1.0.0',
      plugins: [
        {
          type: 'flannel',
          subnetFile: node.subnetFile,
          dataDir: join(node.dir, 'cni-flannel'),
          ipam: { dataDir: join(node.dir, 'ipam') },
          delegate: { hairpinMode: true, isDefaultGateway: true },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }),
  );
  return exec([
    'ip',
    'netns',
    'exec',
    node.ns,
    'env',
    `CNI_PATH=${FELT_CNI}`,
    FELT,
    'cni',
    ...args,
    '--conf-dir',
    conf,
    '--cache-dir',
    join(node.dir, 'cni-cache'),
    '--data-dir',
    join(node.dir, 'cni-log'),
  ]);
}

const ok = (r: Run): void => expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);

describe('flannel + portmap through felt cni, with feltd running', () => {
  it("a pod reaches another node's pod through that node's host port", async () => {
    const server = await sb.ns();
    const client = await sb.ns();
    const caps = JSON.stringify({ portMappings: [{ hostPort: 30080, containerPort: 8080, protocol: 'tcp' }] });
    ok(await feltCni(1, ['add', 'cbr0', nsPath(server), '--container-id', 'srv', '--cap-args', caps]));
    ok(await feltCni(0, ['add', 'cbr0', nsPath(client), '--container-id', 'cli']));
    const svc = await startServer(server, scripts.server, 8080, 8081);
    try {
      expect(await ask(client, scripts.client, 'tcp', c.nodes[1]!.ip, 30080)).toMatch(/^tcp 8080 /);
    } finally {
      svc.stop();
    }
    ok(await feltCni(1, ['check', 'cbr0', nsPath(server), '--container-id', 'srv']));
    for (const [i, pod, cid] of [
      [1, server, 'srv'],
      [0, client, 'cli'],
    ] as const) {
      ok(await feltCni(i, ['del', 'cbr0', nsPath(pod), '--container-id', cid]));
      ok(await feltCni(i, ['del', 'cbr0', nsPath(pod), '--container-id', cid]));
    }
    expect((await cniChains(c.nodes[1]!.ns)).filter((ch) => ch.startsWith('CNI-DN-'))).toEqual([]);
  });
});
