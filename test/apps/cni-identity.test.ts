// Host devices are deleted by identity, not by a recorded name alone (issue 15, item 8): DEL and GC check that
// the host link named like an attachment's recorded veth is that veth (a veth, the recorded MAC, on the
// attachment's bridge or on none) before deleting it, and otherwise leave it and say so on stderr. A veth
// that later took the name survives DEL and GC; a bridge named by an imported record survives GC. ptp's GC
// removes what bridge's does of stale attachments: the host veth (and with it the pod's eth0), the
// masquerade chain and rule, the allocation.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI, ROOT, runCni } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { cni, cniChains, cniRules, exec, feltAllocations, link, nsPath, nsRun, Sandbox, veths, type Call } from '../support/ns.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const sb = new Sandbox();
afterAll(() => sb.cleanup());

const bridgeConf = (dataDir: string) => ({
  cniVersion: '1.1.0',
  name: 'idnet',
  type: 'bridge',
  bridge: 'brid0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.74.0.0/24' }]], dataDir },
});
const ptpConf = (dataDir: string) => ({
  cniVersion: '1.1.0',
  name: 'idptp',
  type: 'ptp',
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.73.0.0/24' }]], dataDir },
});

const gc = (type: string, hostNs: string, conf: Record<string, unknown>, valid: { containerID: string; ifname: string }[]) =>
  runCni({ dir: FELT_CNI, type, command: 'GC', hostNs, config: { ...conf, 'cni.dev/valid-attachments': valid } });

/** The pod namespace goes (and with it the veth pair); another veth then takes the host veth's name. */
async function impostor(host: string, pod: string, name: string): Promise<string> {
  await sb.delNs(pod);
  await eventually(async () => (await link(host, name)) === undefined, { what: `${name} goes with its pod namespace` });
  await nsRun(host, ['ip', 'link', 'add', 'name', name, 'type', 'veth', 'peer', 'name', `${name.slice(0, 11)}p`]);
  return (await link(host, name))!.address;
}

describe('DEL and GC delete host devices by identity', () => {
  for (const type of ['bridge', 'ptp'] as const) {
    const confOf = type === 'bridge' ? bridgeConf : ptpConf;

    it(`${type} DEL: a different veth that took the recorded name survives (and is named on stderr)`, async () => {
      const host = await sb.ns();
      const pod = await sb.ns();
      const dataDir = sb.dir();
      const conf = confOf(dataDir);
      const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid: `${type}-del` };
      const add = await cni(c, 'ADD', conf);
      expect(add.code, add.stdout).toBe(0);
      const hostVeth = (add.json.interfaces as { name: string; sandbox?: string }[]).find((i) => !i.sandbox && i.name !== 'brid0')!.name;
      const mac = await impostor(host, pod, hostVeth);
      // The runtime's DEL after the pod's namespace is gone (CNI_NETNS no longer exists).
      const del = await cni({ ...c, pod: nsPath(pod) }, 'DEL', conf);
      expect(del.code, del.stdout).toBe(0);
      expect(del.stderr).toContain(hostVeth);
      expect((await link(host, hostVeth))?.address).toBe(mac);
      expect(await feltAllocations(dataDir)).toEqual([]);
      expect(await cniChains(host)).toEqual([]);
    });

    it(`${type} GC: a different veth that took the recorded name survives; the rest of the stale attachment goes`, async () => {
      const host = await sb.ns();
      const pod = await sb.ns();
      const dataDir = sb.dir();
      const conf = confOf(dataDir);
      const add = await cni({ dir: FELT_CNI, hostNs: host, pod, cid: `${type}-gc` }, 'ADD', conf);
      expect(add.code, add.stdout).toBe(0);
      const hostVeth = (add.json.interfaces as { name: string; sandbox?: string }[]).find((i) => !i.sandbox && i.name !== 'brid0')!.name;
      const mac = await impostor(host, pod, hostVeth);
      const r = await gc(type, host, conf, []);
      expect(r.code, r.stdout).toBe(0);
      expect(r.stderr).toContain(hostVeth);
      expect((await link(host, hostVeth))?.address).toBe(mac);
      expect(await feltAllocations(dataDir)).toEqual([]);
      expect(await cniChains(host)).toEqual([]);
    });
  }

  it('bridge GC: a record (imported) naming a bridge does not delete that bridge', async () => {
    const host = await sb.ns();
    const dataDir = sb.dir();
    const conf = bridgeConf(dataDir);
    await nsRun(host, ['ip', 'link', 'add', 'name', 'brvictim0', 'type', 'bridge']);
    const file = join(sb.dir(), 'import.jsonl');
    const record = {
      network: 'idnet',
      containerId: 'ctr-imported',
      ifname: 'eth0',
      netns: '/run/netns/gone',
      hostVeth: 'brvictim0',
      dataDir,
      hostVethMac: '0a:00:00:00:00:01',
    };
    writeFileSync(
      file,
      `${JSON.stringify({ position: 1, time: new Date().toISOString(), stream: 'bridge/idnet', type: 'AttachmentRecorded', data: record })}\n`,
    );
    const imp = await exec([FELT, 'import', '--data-dir', dataDir, file]);
    expect(imp.code, imp.stderr).toBe(0);
    const r = await gc('bridge', host, conf, []);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stderr).toContain('brvictim0');
    expect((await link(host, 'brvictim0'))?.linkinfo?.info_kind).toBe('bridge');
  });

  it('ptp GC removes stale attachments whole (host veth, pod eth0, masquerade chain and rule, address) and keeps valid ones', async () => {
    const host = await sb.ns();
    const pods = [await sb.ns(), await sb.ns()];
    const dataDir = sb.dir();
    const conf = ptpConf(dataDir);
    const hostVeths: string[] = [];
    for (let i = 0; i < 2; i++) {
      const add = await cni({ dir: FELT_CNI, hostNs: host, pod: pods[i]!, cid: `ptp-${i}` }, 'ADD', conf);
      expect(add.code, add.stdout).toBe(0);
      hostVeths.push((add.json.interfaces as { name: string; sandbox?: string }[]).find((x) => !x.sandbox)!.name);
    }
    const chainsBefore = await cniChains(host);
    expect(chainsBefore).toHaveLength(2);
    const r = await gc('ptp', host, conf, [{ containerID: 'ptp-0', ifname: 'eth0' }]);
    expect(r.code, r.stdout).toBe(0);
    expect((await veths(host)).sort()).toEqual([hostVeths[0]]);
    expect(await link(pods[1]!, 'eth0')).toBeUndefined();
    expect(await link(pods[0]!, 'eth0')).toBeDefined();
    const kept = await cniChains(host);
    expect(kept).toHaveLength(1);
    const gone = chainsBefore.find((c) => !kept.includes(c))!;
    expect((await cniRules(host)).filter((l) => l.includes(gone))).toEqual([]);
    expect((await cniRules(host)).some((l) => l.includes(kept[0]!))).toBe(true);
    expect((await feltAllocations(dataDir)).map((a) => a.containerId)).toEqual(['ptp-0']);
    // GC with nothing valid takes the last one; DEL of it afterwards is still fine.
    expect((await gc('ptp', host, conf, [])).code).toBe(0);
    expect(await veths(host)).toEqual([]);
    expect(await cniChains(host)).toEqual([]);
    expect(await cniRules(host)).toEqual([]);
    expect(await feltAllocations(dataDir)).toEqual([]);
    expect((await cni({ dir: FELT_CNI, hostNs: host, pod: pods[0]!, cid: 'ptp-0' }, 'DEL', conf)).code).toBe(0);
  });
});
