// Kernel end-to-end tests of felt's sbr plugin, run as the built executable (dist/cni/sbr) chained after felt's
// bridge + host-local, the way a runtime runs a conflist: prevResult is the bridge's result. Every test makes
// its own host and pod namespaces and removes them afterwards.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI, ROOT } from '../support/cni.ts';
import { cni, exec, nsPath, nsRun, nsTry, Sandbox, veths, type Call } from '../support/ns.ts';

const sb = new Sandbox();
afterAll(() => sb.cleanup());

interface IpRuleJ {
  priority: number;
  src: string;
  srclen?: number;
  table: string;
}

const rules = async (ns: string, family: 4 | 6 = 4): Promise<IpRuleJ[]> =>
  JSON.parse(await nsRun(ns, ['ip', `-${family}`, '-json', 'rule', 'show'])) as IpRuleJ[];
/** The rules felt may make (not the kernel's defaults), as "src/len table". */
const sbrRules = async (ns: string): Promise<string[]> =>
  [...(await rules(ns, 4)), ...(await rules(ns, 6))]
    .filter((r) => r.src !== 'all')
    .map((r) => `${r.src}/${r.srclen ?? (r.src.includes(':') ? 128 : 32)} ${r.table}`);
/** `ip route show table N` (both families, fe80::/64 aside), one line each, sorted. */
const table = async (ns: string, t: number | 'main'): Promise<string[]> => {
  // A table nothing was ever put in "does not exist": that is an empty table.
  const show = async (f: 4 | 6): Promise<string> => (await nsTry(ns, ['ip', `-${f}`, 'route', 'show', 'table', String(t)])).stdout;
  const out = [...(await show(4)).split('\n'), ...(await show(6)).split('\n')];
  return out
    .map((l) => l.trim().replace(/\s+/g, ' '))
    .filter((l) => l && !l.startsWith('fe80::/64') && !l.startsWith('multicast'))
    .sort();
};

interface Pod {
  host: string;
  pod: string;
  call: Call;
  bridgeConf: Record<string, unknown>;
  prev: Record<string, unknown>;
  ip4?: string;
  ip6?: string;
}

/** felt's bridge + host-local into a fresh pod: the attachment sbr chains on. */
async function attach(version: string, subnets: readonly string[] = ['10.77.0.0/24']): Promise<Pod> {
  const host = await sb.ns();
  const pod = await sb.ns();
  const dataDir = sb.dir();
  const bridgeConf = {
    cniVersion: version,
    name: 'sbrnet',
    type: 'bridge',
    bridge: 'sbr0',
    isGateway: true,
    isDefaultGateway: true,
    ipam: { type: 'host-local', ranges: subnets.map((subnet) => [{ subnet }]), dataDir },
  };
  const call: Call = { dir: FELT_CNI, hostNs: host, pod, cid: `sbr-${pod.slice(-6)}` };
  const r = await cni(call, 'ADD', bridgeConf);
  expect(r.code, r.stdout).toBe(0);
  const prev = r.json as Record<string, unknown>;
  const ips = (prev['ips'] as { address: string }[]).map((i) => i.address.split('/')[0]!);
  return {
    host,
    pod,
    call,
    bridgeConf,
    prev,
    ...(ips.find((i) => !i.includes(':')) ? { ip4: ips.find((i) => !i.includes(':'))! } : {}),
    ...(ips.find((i) => i.includes(':')) ? { ip6: ips.find((i) => i.includes(':'))! } : {}),
  };
}

const sbrConf = (p: Pod, extra: Record<string, unknown> = {}, withPrev = true): Record<string, unknown> => ({
  cniVersion: p.bridgeConf['cniVersion'],
  name: 'sbrnet',
  type: 'sbr',
  ...extra,
  ...(withPrev ? { prevResult: p.prev } : {}),
});

const sbr = (p: Pod, command: 'ADD' | 'DEL' | 'CHECK', conf: Record<string, unknown>) => cni({ ...p.call, type: 'sbr' }, command, conf);

describe('sbr after bridge + host-local', () => {
  for (const version of ['0.4.0', '1.0.0', '1.1.0']) {
    it(`cniVersion ${version}: a rule and table 100 per address, traffic from the address uses it, CHECK, DEL, DEL again`, async () => {
      const p = await attach(version);
      const ip = p.ip4!;
      const mainBefore = await table(p.pod, 'main');
      expect(mainBefore).toEqual(['10.77.0.0/24 dev eth0 proto kernel scope link src ' + ip, 'default via 10.77.0.1 dev eth0']);

      const add = await sbr(p, 'ADD', sbrConf(p));
      expect(add.code, add.stdout).toBe(0);
      expect(add.json).toEqual(p.prev); // prevResult passed through, in the config's version

      expect(await sbrRules(p.pod)).toEqual([`${ip}/32 100`]);
      // (The copy of the kernel's prefix route is felt's own: proto boot, where the reference's stays proto kernel.)
      expect(await table(p.pod, 100)).toEqual(['10.77.0.0/24 dev eth0 scope link src ' + ip, 'default via 10.77.0.1 dev eth0']);
      expect(await table(p.pod, 'main')).toEqual([]); // moved, as the reference (v1.1.1) does
      expect(await nsRun(p.pod, ['ip', 'route', 'get', '192.0.2.9', 'from', ip])).toMatch(/via 10\.77\.0\.1 dev eth0 table 100/);
      // From the address the gateway answers (through table 100); without a source there is no route.
      expect((await nsTry(p.pod, ['ping', '-c1', '-W2', '-I', ip, '10.77.0.1'])).code).toBe(0);
      expect((await nsTry(p.pod, ['ip', 'route', 'get', '192.0.2.9'])).stderr).toMatch(/unreachable/);

      const check = await sbr(p, 'CHECK', sbrConf(p));
      expect(check.code, check.stdout).toBe(0);

      // ADD again changes nothing (the address's rule keeps its table).
      expect((await sbr(p, 'ADD', sbrConf(p))).code).toBe(0);
      expect(await sbrRules(p.pod)).toEqual([`${ip}/32 100`]);

      const del = await sbr(p, 'DEL', sbrConf(p));
      expect(del.code, del.stdout).toBe(0);
      expect(await sbrRules(p.pod)).toEqual([]);
      expect(await table(p.pod, 100)).toEqual([]);
      // What moved is back in the main table (the prefix route now as a static route: proto boot).
      expect(await table(p.pod, 'main')).toEqual(['10.77.0.0/24 dev eth0 scope link src ' + ip, 'default via 10.77.0.1 dev eth0']);

      const again = await sbr(p, 'DEL', sbrConf(p));
      expect(again.code, again.stdout).toBe(0);
      expect((await cni(p.call, 'DEL', p.bridgeConf)).code).toBe(0);
      // After the bridge took the interface away, DEL still succeeds (nothing left to do).
      expect((await sbr(p, 'DEL', sbrConf(p))).code).toBe(0);
    });
  }

  it('CHECK names what drifted', async () => {
    const p = await attach('1.0.0');
    expect((await sbr(p, 'ADD', sbrConf(p))).code).toBe(0);
    await nsRun(p.pod, ['ip', 'route', 'del', 'default', 'table', '100']);
    await nsRun(p.pod, ['ip', 'route', 'add', '10.77.0.0/24', 'dev', 'eth0', 'src', p.ip4!]);
    const check = await sbr(p, 'CHECK', sbrConf(p));
    expect(check.code).toBe(1);
    expect(check.json.code).toBe(103);
    expect(check.json.msg).toContain('missing route 0.0.0.0/0 via 10.77.0.1 dev eth0 table 100');
    expect(check.json.msg).toContain(`unexpected route 10.77.0.0/24 dev eth0 scope link src ${p.ip4} in`);
    // ADD repairs it.
    expect((await sbr(p, 'ADD', sbrConf(p))).code).toBe(0);
    expect((await sbr(p, 'CHECK', sbrConf(p))).code).toBe(0);
  });

  it('dual stack: consecutive free tables per address; a table a foreign rule or route uses is skipped', async () => {
    const p = await attach('1.1.0', ['10.77.0.0/24', 'fd00:77::/64']);
    await nsRun(p.pod, ['ip', 'rule', 'add', 'from', '192.0.2.1', 'table', '100']);
    await nsRun(p.pod, ['ip', 'route', 'add', '192.0.2.0/24', 'dev', 'eth0', 'table', '101']);
    const add = await sbr(p, 'ADD', sbrConf(p));
    expect(add.code, add.stdout).toBe(0);
    expect((await sbrRules(p.pod)).sort()).toEqual([`${p.ip4}/32 102`, `${p.ip6}/128 103`, '192.0.2.1/32 100'].sort());
    expect(await table(p.pod, 103)).toEqual([
      'default via fd00:77::1 dev eth0 metric 1024 pref medium',
      'fd00:77::/64 dev eth0 metric 256 pref medium',
    ]);
    expect(await nsRun(p.pod, ['ip', '-6', 'route', 'get', '2001:db8::9', 'from', p.ip6!])).toMatch(/via fd00:77::1 dev eth0 table 103/);
    expect((await sbr(p, 'CHECK', sbrConf(p))).code).toBe(0);
    expect((await sbr(p, 'DEL', sbrConf(p))).code).toBe(0);
    // The foreign rule and route stay.
    expect(await sbrRules(p.pod)).toEqual(['192.0.2.1/32 100']);
    expect(await table(p.pod, 101)).toEqual(['192.0.2.0/24 dev eth0 scope link']);
    expect(await table(p.pod, 'main')).toContain('default via fd00:77::1 dev eth0 metric 1024 pref medium');
  });

  it('`table`: only the rules, to that table; DEL removes only those', async () => {
    const p = await attach('1.0.0');
    const mainBefore = await table(p.pod, 'main');
    expect((await sbr(p, 'ADD', sbrConf(p, { table: 300 }))).code).toBe(0);
    expect(await sbrRules(p.pod)).toEqual([`${p.ip4}/32 300`]);
    expect(await table(p.pod, 'main')).toEqual(mainBefore);
    expect((await sbr(p, 'CHECK', sbrConf(p, { table: 300 }))).code).toBe(0);
    await nsRun(p.pod, ['ip', 'rule', 'add', 'from', p.ip4!, 'table', '301']);
    expect((await sbr(p, 'DEL', sbrConf(p, { table: 300 }))).code).toBe(0);
    expect(await sbrRules(p.pod)).toEqual([`${p.ip4}/32 301`]);
  });

  it('`addSourceHints` keeps the prefix route in main with the address as source; `gateways` overrides the gateway', async () => {
    const p = await attach('1.1.0');
    const conf = sbrConf(p, { addSourceHints: true, gateways: ['10.77.0.254'] });
    const add = await sbr(p, 'ADD', conf);
    expect(add.code, add.stdout).toBe(0);
    expect(await table(p.pod, 'main')).toEqual([`10.77.0.0/24 dev eth0 proto kernel scope link src ${p.ip4}`]);
    expect(await table(p.pod, 100)).toContain('default via 10.77.0.254 dev eth0');
    // Unbound traffic to the subnet works again.
    expect((await nsTry(p.pod, ['ping', '-c1', '-W2', '10.77.0.1'])).code).toBe(0);
    expect((await sbr(p, 'CHECK', conf)).code).toBe(0);
    expect((await sbr(p, 'DEL', conf)).code).toBe(0);
    expect(await sbrRules(p.pod)).toEqual([]);
  });
});

describe('in a conflist run by felt cni', () => {
  it('bridge then sbr: ADD, CHECK with the cached result (the bridge objects), DEL in reverse order leaves nothing', async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    const conf = sb.dir();
    const cache = sb.dir();
    const data = sb.dir();
    const list = {
      cniVersion: '1.0.0',
      name: 'sbrlist',
      plugins: [
        {
          type: 'bridge',
          bridge: 'sbrl0',
          isGateway: true,
          isDefaultGateway: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: '10.78.0.0/24' }]], dataDir: data },
        },
        { type: 'sbr' },
      ],
    };
    writeFileSync(join(conf, '10-sbr.conflist'), JSON.stringify(list));
    const felt = (cmd: string) =>
      exec([
        'ip',
        'netns',
        'exec',
        host,
        'env',
        `CNI_PATH=${FELT_CNI}`,
        join(ROOT, 'dist', 'bin', 'felt'),
        'cni',
        cmd,
        'sbrlist',
        nsPath(pod),
        '--container-id',
        'sbr-list',
        '--conf-dir',
        conf,
        '--cache-dir',
        cache,
        '--data-dir',
        data,
      ]);
    const add = await felt('add');
    expect(add.code, add.stderr).toBe(0);
    const ip = (JSON.parse(add.stdout) as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
    expect(await sbrRules(pod)).toEqual([`${ip}/32 100`]);
    expect(await table(pod, 'main')).toEqual([]);
    // CHECK: the bridge, which runs first, finds its routes in sbr's table and accepts them there (the
    // reference bridge fails here after the reference sbr, "Failed to find Gateway ..."; docs/cni.md, sbr).
    const check = await felt('check');
    expect(check.code, check.stderr).toBe(0);
    const del = await felt('del');
    expect(del.code, del.stderr).toBe(0);
    expect(await sbrRules(pod)).toEqual([]);
    expect(await table(pod, 100)).toEqual([]);
    expect(await veths(host)).toEqual([]);
  });
});

describe('a change the kernel refuses', () => {
  it('fails with code 102 naming the route, and converges back to no source-based routing', async () => {
    const p = await attach('1.0.0');
    const before = [await sbrRules(p.pod), await table(p.pod, 'main')];
    // A gateway no route reaches: the kernel refuses the default route in table 100.
    const r = await sbr(p, 'ADD', sbrConf(p, { gateways: ['192.0.2.1'] }));
    expect([r.code, r.json?.code], r.stdout).toEqual([1, 102]);
    expect(r.json.msg).toMatch(/^failed to add route 0\.0\.0\.0\/0 via 192\.0\.2\.1 dev eth0 table 100 in /);
    expect(await sbrRules(p.pod)).toEqual([]);
    expect(await table(p.pod, 100)).toEqual([]);
    // What moved is back (the prefix route as felt's own route).
    expect(await table(p.pod, 'main')).toEqual(before[1]!.map((l) => l.replace(' proto kernel', '')));
  });
});

describe('bad input changes nothing', () => {
  it('missing prevResult, a table that is not an integer, bad gateways, no address on the interface', async () => {
    const p = await attach('1.0.0');
    const before = [await sbrRules(p.pod), await table(p.pod, 'main')];
    const cases: [Record<string, unknown>, number, RegExp][] = [
      [sbrConf(p, {}, false), 7, /^prevResult: required/],
      [sbrConf(p, { table: 'x' }), 7, /^table: must be an integer/],
      [sbrConf(p, { table: 1.5 }), 7, /^table: /],
      [sbrConf(p, { gateways: ['10.77.0.1', '10.77.0.2'] }), 7, /^gateways\[1\]: a second IPv4 gateway/],
      [sbrConf(p, { gateways: ['nope'] }), 7, /^gateways\[0\]: "nope" is not an IP address/],
      [sbrConf(p, { addSourceHints: 'yes' }), 7, /^addSourceHints: /],
      [{ ...sbrConf(p), prevResult: { ...p.prev, ips: [{ address: '10.77.0.9\n/24' }] } }, 7, /^prevResult: ips\[0\]\.address/],
      [
        { ...sbrConf(p), prevResult: { ...p.prev, ips: [{ address: '10.77.0.9/24', interface: 0 }] } },
        7,
        /^prevResult\.ips: no address on interface "eth0"/,
      ],
    ];
    for (const [conf, code, msg] of cases) {
      const r = await sbr(p, 'ADD', conf);
      expect([r.code, r.json?.code], r.stdout).toEqual([1, code]);
      expect(r.json.msg).toMatch(msg);
    }
    expect([await sbrRules(p.pod), await table(p.pod, 'main')]).toEqual(before);
    // CHECK below 0.4.0 is refused by the contract; CHECK without prevResult names it.
    expect((await sbr(p, 'CHECK', { ...sbrConf(p), cniVersion: '0.3.1' })).json.code).toBe(1);
    expect((await sbr(p, 'CHECK', sbrConf(p, {}, false))).json.msg).toMatch(/^prevResult: required/);
    // An interface that is not there: named, nothing changed.
    const other = await sbr({ ...p, call: { ...p.call, ifname: 'net1' } }, 'ADD', {
      ...sbrConf(p),
      prevResult: { ...p.prev, interfaces: [], ips: [{ address: '10.77.0.9/24' }] },
    });
    expect([other.json.code, other.json.msg]).toEqual([4, expect.stringMatching(/^CNI_IFNAME: no interface "net1"/)]);
    expect([await sbrRules(p.pod), await table(p.pod, 'main')]).toEqual(before);
    expect((await exec(['true'])).code).toBe(0);
  });
});
