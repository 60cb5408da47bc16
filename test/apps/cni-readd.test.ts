// An ADD run again for an attachment that is live (issue 15, item 2): it fails, and it must leave the first
// attachment as it was: the pod's interface and address, the host veth, the allocation, libcni's cached
// result, felt's records. The reference (libcni AddNetworkList + bridge) fails the second ADD and tears
// nothing down. Both through `felt cni` (whose failed ADD tears down only what that ADD made) and through
// the bridge plugin alone (whose rollback gives back only the address that ADD was given).

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, ROOT } from '../support/cni.ts';
import { addrs, cni, exec, feltAllocations, nsPath, Sandbox, veths, type Call, type Run } from '../support/ns.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const sb = new Sandbox();
let host = '';
let conf = '';
let cache = '';
let data = '';

const bridgeConf = (dataDir: string, subnet = '10.93.0.0/24') => ({
  type: 'bridge',
  bridge: 'cnireadd0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir },
});

beforeAll(async () => {
  host = await sb.ns();
  conf = sb.dir();
  cache = sb.dir();
  data = sb.dir();
  writeFileSync(
    join(conf, '10-readd.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'readd',
      plugins: [bridgeConf(data), { type: 'firewall', dataDir: data }, { type: 'portmap', capabilities: { portMappings: true } }],
    }),
  );
});
afterAll(() => sb.cleanup());

const felt = (args: string[]): Promise<Run> =>
  exec([
    'ip',
    'netns',
    'exec',
    host,
    'env',
    `CNI_PATH=${FELT_CNI}:${REF_CNI}`,
    FELT,
    'cni',
    ...args,
    '--conf-dir',
    conf,
    '--cache-dir',
    cache,
    '--data-dir',
    data,
  ]);

const filterRules = async (ns: string): Promise<string[]> =>
  (await exec(['ip', 'netns', 'exec', ns, 'iptables-save', '-t', 'filter'])).stdout
    .split('\n')
    .filter((l) => l.startsWith('-A CNI-FORWARD') && l.includes('ACCEPT'));

describe('ADD again for a live attachment', () => {
  it('felt cni: the second ADD fails and the first attachment, its address, its rules and its cache survive', async () => {
    const pod = await sb.ns();
    const first = await felt(['add', 'readd', nsPath(pod), '--container-id', 'ctr-live']);
    expect(first.code, first.stderr).toBe(0);
    const cacheFile = join(cache, 'results', 'readd-ctr-live-eth0');
    const cached = readFileSync(cacheFile, 'utf8');
    const podAddrs = await addrs(pod);
    const hostVeths = await veths(host);
    const allocations = await feltAllocations(data);
    const rules = await filterRules(host);
    expect(podAddrs['eth0']).toHaveLength(1);
    expect(allocations).toHaveLength(1);
    expect(rules).toHaveLength(2);

    const again = await felt(['add', 'readd', nsPath(pod), '--container-id', 'ctr-live']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('plugin bridge failed (add)');
    expect(again.stderr).toContain('not torn down');

    expect(await addrs(pod)).toEqual(podAddrs);
    expect(await veths(host)).toEqual(hostVeths);
    expect(await feltAllocations(data)).toEqual(allocations);
    expect(await filterRules(host)).toEqual(rules);
    expect(existsSync(cacheFile)).toBe(true);
    expect(readFileSync(cacheFile, 'utf8')).toBe(cached);
    // The runtime's record in felt's log still has the attachment; CHECK still passes.
    const check = await felt(['check', 'readd', nsPath(pod), '--container-id', 'ctr-live']);
    expect(check.code, check.stderr).toBe(0);
    const events = await exec([FELT, 'events', '--data-dir', data, '--stream', 'cni/readd']);
    expect(events.stdout).toMatch(/ctr-live\/eth0 not added: .*torn down: nothing/);

    // DEL then takes it all.
    const del = await felt(['del', 'readd', nsPath(pod), '--container-id', 'ctr-live']);
    expect(del.code, del.stderr).toBe(0);
    expect(await veths(host)).toEqual([]);
    expect(await feltAllocations(data)).toEqual([]);
    expect(await filterRules(host)).toEqual([]);
  });

  it('bridge alone: the first ADD on a fresh data dir that fails after IPAM forgets its record (a record left would keep later rollbacks from giving addresses back)', async () => {
    const pod = await sb.ns();
    const dataDir = sb.dir();
    // A link named like the bridge that is not a bridge: refused after IPAM answered.
    await exec(['ip', '-n', host, 'link', 'add', 'name', 'cnireadd2', 'type', 'veth', 'peer', 'name', 'cnireadd2p']);
    const netconf = { cniVersion: '1.0.0', name: 'readd-fresh', ...bridgeConf(dataDir, '10.92.0.0/24'), bridge: 'cnireadd2' };
    const r = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-fresh' }, 'ADD', netconf);
    expect(r.code).toBe(1);
    expect(r.json.msg).toContain('not a bridge');
    const events = await exec([FELT, 'events', '--data-dir', dataDir, '--stream', 'bridge/readd-fresh']);
    expect(events.stdout).toMatch(/AttachmentRemoved\s+ctr-fresh\/eth0, host veth veth[0-9a-f]{8} \(rollback\)/);
    expect(await feltAllocations(dataDir)).toEqual([]);
    await exec(['ip', '-n', host, 'link', 'del', 'cnireadd2']);
  });

  it('bridge alone: a second ADD given a new address by IPAM (the range changed) gives back only that one', async () => {
    const pod = await sb.ns();
    const dataDir = sb.dir();
    const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-twice' };
    const netconf = (subnet: string) => ({
      cniVersion: '1.0.0',
      name: 'readd-bridge',
      ...bridgeConf(dataDir, subnet),
      bridge: 'cnireadd1',
    });
    const first = await cni(c, 'ADD', netconf('10.94.0.0/24'));
    expect(first.code, first.stdout).toBe(0);
    const podAddrs = await addrs(pod);
    const hostVeths = await veths(host);
    expect((await feltAllocations(dataDir)).map((a) => a.ip)).toEqual(['10.94.0.2']);

    // The same range: host-local refuses the duplicate (as the reference), nothing changes.
    const dup = await cni(c, 'ADD', netconf('10.94.0.0/24'));
    expect(dup.code).toBe(1);
    expect(dup.json).toMatchObject({ code: 101 });
    expect(await addrs(pod)).toEqual(podAddrs);
    expect((await feltAllocations(dataDir)).map((a) => a.ip)).toEqual(['10.94.0.2']);

    // Another range: IPAM allocates, eth0 is taken (by the first attachment): the new address is given
    // back, the first one stays allocated.
    const other = await cni(c, 'ADD', netconf('10.95.0.0/24'));
    expect(other.code).toBe(1);
    expect(other.json).toMatchObject({ code: 104 });
    expect(await addrs(pod)).toEqual(podAddrs);
    expect(await veths(host)).toEqual(hostVeths);
    expect((await feltAllocations(dataDir)).map((a) => a.ip).sort()).toContain('10.94.0.2');

    expect((await cni(c, 'DEL', netconf('10.94.0.0/24'))).code).toBe(0);
    expect(await feltAllocations(dataDir)).toEqual([]);
  });
});
