// Kernel tests of the bridge plugin's GC: attachments whose DEL never came lose their host veth, masquerade
// chain and rule and their address; attachments in cni.dev/valid-attachments and everything not felt's stay.

import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI, runCni } from '../support/cni.ts';
import { cni, cniChains, cniRules, exec, feltAllocations, link, nsRun, Sandbox, veths, type Call } from '../support/ns.ts';
import { ROOT } from '../support/cni.ts';
import { join } from 'node:path';

const sb = new Sandbox();
afterAll(() => sb.cleanup());

const confOf = (dataDir: string, extra: Record<string, unknown> = {}) => ({
  cniVersion: '1.1.0',
  name: 'gcnet',
  type: 'bridge',
  bridge: 'brgc0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.77.0.0/24' }]], dataDir },
  ...extra,
});

const gc = (hostNs: string, conf: Record<string, unknown>, valid: { containerID: string; ifname: string }[] | undefined) =>
  runCni({
    dir: FELT_CNI,
    type: 'bridge',
    command: 'GC',
    hostNs,
    config: valid === undefined ? conf : { ...conf, 'cni.dev/valid-attachments': valid },
  });

const events = async (dataDir: string): Promise<string> => {
  const r = await exec([join(ROOT, 'dist', 'bin', 'felt'), 'events', '--data-dir', dataDir, '--stream', 'bridge/gcnet']);
  expect(r.stderr).toBe('');
  return r.stdout;
};

describe('bridge GC', () => {
  it('removes the kernel objects and addresses of attachments outside the valid set, and nothing else', async () => {
    const host = await sb.ns();
    const pods = [await sb.ns(), await sb.ns(), await sb.ns()];
    const dataDir = sb.dir();
    const conf = confOf(dataDir);
    const call = (i: number): Call => ({ dir: FELT_CNI, hostNs: host, pod: pods[i]!, cid: `ctr-${i}` });
    const results: any[] = [];
    for (let i = 0; i < pods.length; i++) {
      const r = await cni(call(i), 'ADD', conf);
      expect(r.code, r.stdout).toBe(0);
      results.push(r.json);
    }
    const hostVeth = (i: number): string => results[i].interfaces[1].name as string;
    // Foreign things: a veth pair, a CNI- chain with a jump to it. GC must leave them alone.
    await nsRun(host, ['ip', 'link', 'add', 'name', 'vethforeign', 'type', 'veth', 'peer', 'name', 'vethforeign1']);
    await nsRun(host, ['iptables', '-t', 'nat', '-N', 'CNI-foreign']);
    await nsRun(host, ['iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', '10.99.0.0/24', '-j', 'CNI-foreign']);
    const foreignRules = (await cniRules(host)).filter((l) => l.includes('CNI-foreign'));
    expect(foreignRules).toHaveLength(1);
    expect(await cniChains(host)).toHaveLength(4);

    // GC without the valid set is refused and changes nothing.
    const refused = await gc(host, conf, undefined);
    expect(refused.code).toBe(1);
    expect(refused.json).toMatchObject({ code: 7, msg: expect.stringContaining('cni.dev/valid-attachments') });
    expect((await veths(host)).length).toBe(2 + 3);

    const first = await gc(host, conf, [{ containerID: 'ctr-0', ifname: 'eth0' }]);
    expect(first.stdout).toBe('');
    expect(first.code).toBe(0);
    expect((await veths(host)).sort()).toEqual([hostVeth(0), 'vethforeign', 'vethforeign1'].sort());
    expect(await link(pods[1]!, 'eth0')).toBeUndefined();
    expect(await link(pods[0]!, 'eth0')).toBeDefined();
    expect((await cniChains(host)).sort()).toHaveLength(2);
    expect(await cniChains(host)).toContain('CNI-foreign');
    expect((await cniRules(host)).filter((l) => l.includes('CNI-foreign'))).toEqual(foreignRules);
    expect((await feltAllocations(dataDir)).map((a) => a.containerId)).toEqual(['ctr-0']);
    const log = await events(dataDir);
    expect(log).toContain(`ctr-1/eth0, host veth ${hostVeth(1)} (gc)`);
    expect(log).toContain(`ctr-2/eth0, host veth ${hostVeth(2)} (gc)`);

    // A second GC with the same set has nothing to do; an empty set takes the last one.
    expect((await gc(host, conf, [{ containerID: 'ctr-0', ifname: 'eth0' }])).code).toBe(0);
    expect((await gc(host, conf, [])).code).toBe(0);
    expect((await veths(host)).sort()).toEqual(['vethforeign', 'vethforeign1']);
    expect(await cniChains(host)).toEqual(['CNI-foreign']);
    expect(await cniRules(host)).toEqual(foreignRules);
    expect(await feltAllocations(dataDir)).toEqual([]);
    // The bridge is shared and stays; a late DEL still succeeds.
    expect(await link(host, 'brgc0')).toBeDefined();
    expect((await cni(call(0), 'DEL', conf)).code).toBe(0);
  });

  it('DEL removes the record; GC afterwards has nothing of it to remove', async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const dataDir = sb.dir();
    const conf = confOf(dataDir);
    const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-del' };
    expect((await cni(c, 'ADD', conf)).code).toBe(0);
    expect((await cni(c, 'DEL', conf)).code).toBe(0);
    expect(await events(dataDir)).toMatch(/AttachmentRemoved\s+ctr-del\/eth0, host veth veth[0-9a-f]{8} \(del\)/);
    expect((await gc(host, conf, [])).code).toBe(0);
    expect((await events(dataDir)).match(/AttachmentRemoved/g)).toHaveLength(1);
  });

  it('a valid attachment keeps the masquerade chain it shares with a stale interface of the same container', async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const dataDir = sb.dir();
    const conf = confOf(dataDir);
    expect((await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-x', ifname: 'eth0' }, 'ADD', conf)).code).toBe(0);
    const second = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-x', ifname: 'net1' }, 'ADD', conf);
    expect(second.code, second.stdout).toBe(0);
    const chains = await cniChains(host);
    expect(chains).toHaveLength(1);
    expect((await gc(host, conf, [{ containerID: 'ctr-x', ifname: 'eth0' }])).code).toBe(0);
    expect(await link(pod, 'net1')).toBeUndefined();
    expect(await link(pod, 'eth0')).toBeDefined();
    expect(await cniChains(host)).toEqual(chains);
    expect((await feltAllocations(dataDir)).map((a) => `${a.containerId}/${a.ifname}`)).toEqual(['ctr-x/eth0']);
  });
});
