// felt cni: conflists run the way libcni runs them, through the built dist/bin/felt inside a throwaway "host"
// namespace: plugins in order with prevResult and the capabilities they declare, libcni's result cache,
// CHECK and DEL from the cache, teardown of a failed ADD, GC of attachments outside the valid set, every
// attachment an event in felt's log.

import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, ROOT } from '../support/cni.ts';
import { cniChains, exec, feltAllocations, nsPath, Sandbox, veths, type Run } from '../support/ns.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const sb = new Sandbox();
let host = '';
let podA = '';
let podB = '';
let conf = '';
let cache = '';
let data = '';

// 1.0.0: the reference portmap (1.1.1) does not speak 1.1.0; cniVersions picks the highest this runtime has.
const net = (name: string, plugins: unknown[], extra: Record<string, unknown> = {}) => ({
  cniVersion: '0.4.0',
  cniVersions: ['1.0.0', '9.9.9'],
  name,
  plugins,
  ...extra,
});
const bridge = (subnet: string, dataDir: () => string) => ({
  type: 'bridge',
  bridge: `cnic${subnet.split('.')[1]}`,
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir: dataDir() },
});

beforeAll(async () => {
  host = await sb.ns();
  podA = await sb.ns();
  podB = await sb.ns();
  conf = sb.dir();
  cache = sb.dir();
  data = sb.dir();
  writeFileSync(
    join(conf, '10-chain.conflist'),
    JSON.stringify(
      net('chain', [bridge('10.96.0.0/24', () => data), { type: 'portmap', capabilities: { portMappings: true }, snat: true }]),
    ),
  );
  writeFileSync(
    join(conf, '20-broken-second.conflist'),
    JSON.stringify(net('broken', [bridge('10.97.0.0/24', () => data), { type: 'no-such-plugin' }])),
  );
  writeFileSync(
    join(conf, '30-single.conf'),
    JSON.stringify({ cniVersion: '1.0.0', name: 'single', ...bridge('10.98.0.0/24', () => data) }),
  );
});
afterAll(() => sb.cleanup());

/** `felt cni ...` inside the host namespace, with felt's plugins first and the reference's after. */
const felt = (args: string[], env: Record<string, string> = {}, confDir = conf): Promise<Run> =>
  exec([
    'ip',
    'netns',
    'exec',
    host,
    'env',
    `CNI_PATH=${FELT_CNI}:${REF_CNI}`,
    ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    FELT,
    'cni',
    ...args,
    '--conf-dir',
    confDir,
    '--cache-dir',
    cache,
    '--data-dir',
    data,
  ]);

const cacheFile = (network: string, cid: string, ifname = 'eth0') => join(cache, 'results', `${network}-${cid}-${ifname}`);

describe('felt cni add / check / del', () => {
  it('runs the chain in order with the capabilities each plugin declares, caches the result as libcni does, and DEL undoes it', async () => {
    const caps = JSON.stringify({ portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }] });
    const add = await felt(['add', 'chain', nsPath(podA), '--container-id', 'ctr-a', '--cap-args', caps]);
    expect(add.code, add.stderr).toBe(0);
    const result = JSON.parse(add.stdout);
    expect(result.cniVersion).toBe('1.0.0');
    expect(result.ips[0].address).toMatch(/^10\.96\.0\.\d+\/24$/);

    // libcni's cache: kind cniCacheV1, mode 0600, the list's bytes in base64, the capability args kept.
    const file = cacheFile('chain', 'ctr-a');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const entry = JSON.parse(readFileSync(file, 'utf8'));
    expect(entry).toMatchObject({
      kind: 'cniCacheV1',
      containerId: 'ctr-a',
      ifName: 'eth0',
      networkName: 'chain',
      netns: nsPath(podA),
      result,
    });
    expect(entry.capabilityArgs).toEqual(JSON.parse(caps));
    expect(JSON.parse(Buffer.from(entry.config, 'base64').toString()).name).toBe('chain');
    // portmap got its runtimeConfig: the DNAT chain for the attachment exists.
    expect((await cniChains(host)).some((c) => c.startsWith('CNI-DN-'))).toBe(true);

    const check = await felt(['check', 'chain', nsPath(podA), '--container-id', 'ctr-a']);
    expect(check.code, check.stderr).toBe(0);

    const del = await felt(['del', 'chain', nsPath(podA), '--container-id', 'ctr-a']);
    expect(del.code, del.stderr).toBe(0);
    expect(existsSync(file)).toBe(false);
    expect(await veths(host)).toEqual([]);
    expect((await cniChains(host)).filter((c) => c.startsWith('CNI-DN-'))).toEqual([]);
    expect(await feltAllocations(data)).toEqual([]);
    // DEL again: nothing cached, nothing there, still fine.
    expect((await felt(['del', 'chain', nsPath(podA), '--container-id', 'ctr-a'])).code).toBe(0);

    const events = await exec([FELT, 'events', '--data-dir', data, '--stream', 'cni/chain']);
    expect(events.stdout).toMatch(/AttachmentAdded\s+ctr-a\/eth0 in \/run\/netns\/\S+ through bridge, portmap: 10\.96\.0\.\d+\/24/);
    expect(events.stdout).toMatch(/AttachmentDeleted\s+ctr-a\/eth0 deleted \(del\)/);
  });

  it('defaults as cnitool: the container ID from the netns path, CNI_IFNAME, a .conf wrapped into a list', async () => {
    const add = await felt(['add', 'single', nsPath(podB)], { CNI_IFNAME: 'net1' });
    expect(add.code, add.stderr).toBe(0);
    const cached = readFileSync(
      join(
        cache,
        'results',
        (await exec(['ls', join(cache, 'results')])).stdout
          .trim()
          .split('\n')
          .find((f) => f.startsWith('single-'))!,
      ),
      'utf8',
    );
    const entry = JSON.parse(cached);
    expect(entry.containerId).toMatch(/^cnitool-[0-9a-f]{20}$/);
    expect(entry.ifName).toBe('net1');
    expect((await felt(['del', 'single', nsPath(podB)], { CNI_IFNAME: 'net1' })).code).toBe(0);
    expect(await veths(host)).toEqual([]);
  });

  it('a failed ADD tears down what the plugins before it did, and says which plugin failed', async () => {
    const add = await felt(['add', 'broken', nsPath(podA), '--container-id', 'ctr-x']);
    expect(add.code).toBe(1);
    expect(add.stderr).toContain('plugin no-such-plugin failed (add): not found in CNI_PATH');
    expect(await veths(host)).toEqual([]);
    expect(await feltAllocations(data)).toEqual([]);
    expect(existsSync(cacheFile('broken', 'ctr-x'))).toBe(false);
    const events = await exec([FELT, 'events', '--data-dir', data, '--stream', 'cni/broken']);
    expect(events.stdout).toContain('ctr-x/eth0 not added: plugin no-such-plugin failed (add)');
  });
});

describe('felt cni gc', () => {
  it('removes cached attachments outside the valid set (kernel objects and addresses), keeps the rest', async () => {
    for (const [cid, pod] of [
      ['keep-me', podA],
      ['stale-one', podB],
    ] as const) {
      const r = await felt(['add', 'chain', nsPath(pod), '--container-id', cid]);
      expect(r.code, r.stderr).toBe(0);
    }
    expect(await veths(host)).toHaveLength(2);
    const gc = await felt(['gc', 'chain', '--valid-attachments', JSON.stringify([{ containerID: 'keep-me', ifname: 'eth0' }])]);
    expect(gc.code, gc.stderr).toBe(0);
    expect(await veths(host)).toHaveLength(1);
    expect(existsSync(cacheFile('chain', 'stale-one'))).toBe(false);
    expect(existsSync(cacheFile('chain', 'keep-me'))).toBe(true);
    expect((await feltAllocations(data)).map((a) => a.containerId)).toEqual(['keep-me']);
    expect((await felt(['del', 'chain', nsPath(podA), '--container-id', 'keep-me'])).code).toBe(0);
  });
});

describe('felt cni: bad input', () => {
  it('a broken file is named with the JSON position; unknown networks and bad CAP_ARGS are named', async () => {
    const bad = sb.dir();
    mkdirSync(bad, { recursive: true });
    writeFileSync(join(bad, '05-bad.conflist'), '{\n  "name": "x",\n  "plugins": [}\n');
    const r = await felt(['add', 'x', nsPath(podA)], {}, bad);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/05-bad\.conflist: .*line 3, column \d+/);
    const unknown = await felt(['add', 'nope', nsPath(podA)]);
    expect(unknown.stderr).toContain('no network configuration named "nope"');
    const caps = await felt(['add', 'chain', nsPath(podA)], { CAP_ARGS: 'not json' });
    expect(caps.code).toBe(1);
    expect(caps.stderr).toContain('CAP_ARGS: must be a JSON object');
    expect(await veths(host)).toEqual([]);
  });
});

describe("felt cni: felt's own plugins", () => {
  it("runs a plugin in its own process only when it is felt's plugin of that type in felt's directory; anything else there is executed", async () => {
    // A felt installed as <root>/bin/felt, whose plugin directory <root>/cni holds a loopback that is not felt's.
    const root = sb.dir();
    mkdirSync(join(root, 'bin'), { recursive: true });
    mkdirSync(join(root, 'cni'), { recursive: true });
    copyFileSync(FELT, join(root, 'bin', 'felt'));
    writeFileSync(
      join(root, 'cni', 'loopback'),
      '#!/bin/sh\necho \'{"cniVersion":"1.1.0","code":11,"msg":"a loopback that is not felt\\u0027s"}\'\nexit 1\n',
      { mode: 0o755 },
    );
    const confs = sb.dir();
    mkdirSync(confs, { recursive: true });
    writeFileSync(
      join(confs, '10-foreign.conflist'),
      JSON.stringify({ cniVersion: '1.1.0', name: 'foreign', plugins: [{ type: 'loopback' }] }),
    );
    const r = await exec([
      'env',
      `CNI_PATH=${join(root, 'cni')}`,
      join(root, 'bin', 'felt'),
      'cni',
      'status',
      'foreign',
      '--conf-dir',
      confs,
      '--cache-dir',
      sb.dir(),
      '--data-dir',
      sb.dir(),
    ]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("plugin loopback failed (status): a loopback that is not felt's (code 11)");
  });
});
