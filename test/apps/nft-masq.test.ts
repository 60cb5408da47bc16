// bridge and ptp `ipMasqBackend: "nftables"`, differential against the reference v1.9.1 in fresh namespaces
// (each side its own host and pod namespaces and IPAM data dir, v1.9.1's host-local on both): the same
// ruleset after ADD (nft prints no handles without -a), and either side's DEL removes what the other's ADD
// made, leaving what the reference's own ADD + DEL leaves (its table and chains stay; only the pod's rules go).
// Teardown removes what either backend left; an unknown backend is code 7 naming the field, nothing changed.

import { existsSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { masqInstanceHash } from '../../core/netfilter/masquerade.ts';
import { FELT_CNI, runCni } from '../support/cni.ts';
import { cni, cniChains, iptSave, nsRun, nsTry, Sandbox } from '../support/ns.ts';
import { CNI_MODE } from '../support/cni-mode.ts';

const daemonWhy =
  "feltd serving the call resolves the backend with its own PATH (only the caller's CNI_* variables reach it): this case is the standalone mode's";

const REF = '/work/shared/reference-plugins/v1.9.1';
const sb = new Sandbox();
afterAll(() => sb.cleanup());

type Conf = Record<string, unknown>;
const ipam = (dataDir: string): Conf => ({
  type: 'host-local',
  dataDir,
  ranges: [[{ subnet: '10.93.0.0/24' }], [{ subnet: 'fd00:93::/64' }]],
});
const CONFS: Record<'bridge' | 'ptp', (dataDir: string, backend?: string) => Conf> = {
  bridge: (d, backend = 'nftables') => ({
    cniVersion: '1.0.0',
    name: 'nftnet',
    type: 'bridge',
    bridge: 'cnin0',
    isGateway: true,
    ipMasq: true,
    ipMasqBackend: backend,
    ipam: ipam(d),
  }),
  ptp: (d, backend = 'nftables') => ({
    cniVersion: '1.0.0',
    name: 'nftnet',
    type: 'ptp',
    ipMasq: true,
    ipMasqBackend: backend,
    ipam: ipam(d),
  }),
};

const ruleset = async (ns: string): Promise<string> => nsRun(ns, ['nft', 'list', 'ruleset']);
/** The masquerade table as nft prints it ('' when there is none). iptables-nft's own tables are left out. */
const masqTable = async (ns: string): Promise<string> =>
  (await nsTry(ns, ['nft', 'list', 'table', 'inet', 'cni_plugins_masquerade'])).stdout;
/** The masquerade table's rules in masq_checks (their comments), read through nft -j. */
async function masqRules(ns: string): Promise<string[]> {
  const r = await nsTry(ns, ['nft', '-j', 'list', 'chain', 'inet', 'cni_plugins_masquerade', 'masq_checks']);
  if (r.code !== 0) return [];
  return JSON.parse(r.stdout).nftables.flatMap((x: any) => (x.rule ? [x.rule.comment] : []));
}

async function side(type: 'bridge' | 'ptp', dir: string, backend?: string) {
  const host = await sb.ns();
  const pod = await sb.ns();
  const conf = CONFS[type](sb.dir(), backend);
  const call = { dir, hostNs: host, pod, cid: 'ctr-nft-1' };
  return { host, pod, conf, call };
}

describe.each(['bridge', 'ptp'] as const)('%s ipMasqBackend nftables against the reference v1.9.1', (type) => {
  it('ADD: the same ruleset; CHECK passes on both; DEL removes the pod rules and leaves what the reference leaves', async () => {
    const felt = await side(type, FELT_CNI);
    const ref = await side(type, REF);
    const fa = await cni(felt.call, 'ADD', felt.conf);
    const ra = await cni(ref.call, 'ADD', ref.conf);
    expect(fa.code, fa.stdout).toBe(0);
    expect(ra.code, ra.stdout).toBe(0);
    const rs = await ruleset(felt.host);
    expect(rs).toContain('table inet cni_plugins_masquerade');
    expect(rs).toEqual(await ruleset(ref.host));
    expect(await masqRules(felt.host)).toHaveLength(2);
    // No iptables masquerade with the nftables backend.
    expect(await cniChains(felt.host)).toEqual([]);
    expect((await cni(felt.call, 'CHECK', { ...felt.conf, prevResult: fa.json })).code).toBe(0);
    expect((await cni(felt.call, 'DEL', felt.conf)).code).toBe(0);
    expect((await cni(ref.call, 'DEL', ref.conf)).code).toBe(0);
    expect(await masqRules(felt.host)).toEqual([]);
    expect(await masqTable(felt.host)).toEqual(await masqTable(ref.host));
  });

  it('felt ADD then reference DEL, and reference ADD then felt DEL, leave no pod rule', async () => {
    for (const [adder, deleter] of [
      [FELT_CNI, REF],
      [REF, FELT_CNI],
    ] as const) {
      const s = await side(type, adder);
      const a = await cni(s.call, 'ADD', s.conf);
      expect(a.code, a.stdout).toBe(0);
      expect(await masqRules(s.host)).toHaveLength(2);
      const d = await cni({ ...s.call, dir: deleter }, 'DEL', s.conf);
      expect(d.code, d.stdout).toBe(0);
      expect(await masqRules(s.host), `${adder} ADD, ${deleter} DEL`).toEqual([]);
    }
  });

  it('CHECK reports a pod rule deleted behind its back; DEL then ADD puts it back', async () => {
    const s = await side(type, FELT_CNI);
    const a = await cni(s.call, 'ADD', s.conf);
    expect(a.code, a.stdout).toBe(0);
    const listed = JSON.parse(await nsRun(s.host, ['nft', '-j', '-a', 'list', 'chain', 'inet', 'cni_plugins_masquerade', 'masq_checks']));
    const handle = listed.nftables.find((x: any) => x.rule)!.rule.handle;
    await nsRun(s.host, ['nft', 'delete', 'rule', 'inet', 'cni_plugins_masquerade', 'masq_checks', 'handle', String(handle)]);
    const c = await cni(s.call, 'CHECK', { ...s.conf, prevResult: a.json });
    expect(c.code).not.toBe(0);
    expect(c.json.msg).toMatch(/missing nftables rule in inet cni_plugins_masquerade masq_checks/);
    expect((await cni(s.call, 'DEL', s.conf)).code).toBe(0);
    expect(await masqRules(s.host)).toEqual([]);
    const again = await cni(s.call, 'ADD', s.conf);
    expect(again.code, again.stdout).toBe(0);
    expect(await masqRules(s.host)).toHaveLength(2);
    expect((await cni(s.call, 'CHECK', { ...s.conf, prevResult: again.json })).code).toBe(0);
  });

  it('teardown removes what either backend left: iptables ADD, nftables DEL; nftables ADD, iptables DEL', async () => {
    for (const [add, del] of [
      ['iptables', 'nftables'],
      ['nftables', 'iptables'],
    ] as const) {
      const s = await side(type, FELT_CNI, add);
      const a = await cni(s.call, 'ADD', s.conf);
      expect(a.code, a.stdout).toBe(0);
      expect(add === 'iptables' ? (await cniChains(s.host)).length : (await masqRules(s.host)).length).toBeGreaterThan(0);
      const d = await cni(s.call, 'DEL', CONFS[type]((s.conf['ipam'] as Conf)['dataDir'] as string, del));
      expect(d.code, d.stdout).toBe(0);
      expect(await cniChains(s.host)).toEqual([]);
      expect((await iptSave(s.host, 4)).filter((l) => l.includes('CNI-'))).toEqual([]);
      expect(await masqRules(s.host)).toEqual([]);
    }
  });

  it('an unknown backend is code 7 naming ipMasqBackend, and nothing changes', async () => {
    const s = await side(type, FELT_CNI, 'pf');
    const before = await ruleset(s.host);
    const a = await cni(s.call, 'ADD', s.conf);
    expect(a.code).toBe(1);
    expect(a.json.code).toBe(7);
    expect(a.json.msg).toMatch(/ipMasqBackend: must be "iptables" or "nftables", got "pf"/);
    expect(await ruleset(s.host)).toEqual(before);
    expect(await cniChains(s.host)).toEqual([]);
  });

  it('the default backend: iptables where it is usable; nftables where iptables is not installed and nft is', async (ctx) => {
    ctx.skip(CNI_MODE === 'daemon', daemonWhy);
    const noIpt = sb.dir();
    for (const d of ['/usr/sbin', '/usr/bin']) {
      for (const f of readdirSync(d))
        if (!/^(?:ip6?tables|xtables|arptables|ebtables)/.test(f) && !existsSync(join(noIpt, f))) symlinkSync(join(d, f), join(noIpt, f));
    }
    const { ipMasqBackend: _unset, ...conf } = CONFS[type](sb.dir());
    const withIpt = await side(type, FELT_CNI);
    expect((await cni(withIpt.call, 'ADD', { ...conf, ipam: ipam(sb.dir()) })).code).toBe(0);
    expect((await cniChains(withIpt.host)).length).toBeGreaterThan(0);
    expect(await masqRules(withIpt.host)).toEqual([]);
    const nftOnly = await side(type, FELT_CNI);
    const a = await cni(nftOnly.call, 'ADD', { ...conf, ipam: ipam(sb.dir()) }, { PATH: noIpt });
    expect(a.code, a.stdout).toBe(0);
    expect(await masqRules(nftOnly.host)).toHaveLength(2);
    expect(await cniChains(nftOnly.host)).toEqual([]);
    // DEL on that host: nothing of iptables to read, the nftables rules go.
    const d = await cni(nftOnly.call, 'DEL', { ...conf, ipam: ipam(sb.dir()) }, { PATH: noIpt });
    expect(d.code, d.stdout).toBe(0);
    expect(await masqRules(nftOnly.host)).toEqual([]);
  });

  it("GC removes the masquerade rules of attachments outside cni.dev/valid-attachments that the reference v1.9.1 made (felt has no record of them), and keeps the valid ones and other networks'", async () => {
    const host = await sb.ns();
    const conf: Conf = { ...CONFS[type](sb.dir()), cniVersion: '1.1.0' };
    const other: Conf = {
      ...conf,
      name: 'othernet',
      ...(type === 'bridge' ? { bridge: 'cnin1' } : {}),
      ipam: { ...(conf['ipam'] as Conf), dataDir: sb.dir(), ranges: [[{ subnet: '10.94.0.0/24' }]] },
    };
    const calls = ['ctr-gc-a', 'ctr-gc-b', 'ctr-gc-c'].map(async (cid) => ({ dir: REF, hostNs: host, pod: await sb.ns(), cid }));
    const [a, b, c] = await Promise.all(calls);
    for (const call of [a!, b!]) expect((await cni(call, 'ADD', conf)).code).toBe(0);
    expect((await cni(c!, 'ADD', other)).code).toBe(0);
    expect(await masqRules(host)).toHaveLength(5);
    const before = (await masqRules(host)).filter((x) => !x.startsWith(masqInstanceHash('nftnet', 'eth0', 'ctr-gc-b')));
    const gc = await runCni({
      dir: FELT_CNI,
      type,
      command: 'GC',
      hostNs: host,
      config: { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'ctr-gc-a', ifname: 'eth0' }] },
    });
    expect(gc.code, gc.stdout + gc.stderr).toBe(0);
    const after = await masqRules(host);
    expect(after).toEqual(before);
    expect(after.filter((x) => x.startsWith(masqInstanceHash('nftnet', 'eth0', 'ctr-gc-a')))).toHaveLength(2);
    expect(after.filter((x) => x.startsWith(masqInstanceHash('othernet', 'eth0', 'ctr-gc-c')))).toHaveLength(1);
    // A second GC has nothing left to do; the reference's DEL of the valid one still works.
    expect(
      (
        await runCni({
          dir: FELT_CNI,
          type,
          command: 'GC',
          hostNs: host,
          config: { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'ctr-gc-a', ifname: 'eth0' }] },
        })
      ).code,
    ).toBe(0);
    expect(await masqRules(host)).toEqual(after);
    expect((await cni(a!, 'DEL', conf)).code).toBe(0);
    expect((await masqRules(host)).filter((x) => x.includes('nftnet'))).toEqual([]);
  });

  it('nftables asked for where nft is not on PATH: code 7 naming nft, nothing changed', async (ctx) => {
    ctx.skip(CNI_MODE === 'daemon', daemonWhy);
    const s = await side(type, FELT_CNI);
    const a = await cni(s.call, 'ADD', s.conf, { PATH: '/usr/bin:/bin' });
    expect(a.code).toBe(1);
    expect(a.json.code).toBe(7);
    expect(a.json.msg).toMatch(/ipMasqBackend: "nftables" needs the nft command/);
    expect(await ruleset(s.host)).toEqual('');
  });
});
