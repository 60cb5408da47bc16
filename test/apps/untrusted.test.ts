// The nastiest strings an attacker can put in a config, the CNI environment or an IPAM plugin's result, through
// the real executables in throwaway namespaces: each is refused with the right code naming the field and
// changes nothing (no link, no rule, no allocation, no file a shell could have made), or is carried as the
// literal name it is (the reference plugins create such names too) and DEL leaves nothing behind.

import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI, runCni } from '../support/cni.ts';
import { cniChains, cniRules, feltAllocations, iptSave, links, nsPath, nsRun, Sandbox } from '../support/ns.ts';

const sb = new Sandbox();
let host = '';
let pod = '';
let dataDir = '';
let evilDir = '';
const PWNED = '/tmp/felt-pwned';

beforeAll(async () => {
  host = await sb.ns();
  pod = await sb.ns();
  dataDir = sb.dir();
  evilDir = sb.dir();
});
afterAll(() => sb.cleanup());

const conf = (extra: Record<string, unknown> = {}) => ({
  cniVersion: '1.0.0',
  name: 'untrusted',
  type: 'bridge',
  bridge: 'cniu0',
  isGateway: true,
  ipMasq: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.95.0.0/24' }]], dataDir },
  ...extra,
});

const call = (command: 'ADD' | 'DEL', config: unknown, over: { ifname?: string; netns?: string; cid?: string; path?: string } = {}) =>
  runCni({
    dir: FELT_CNI,
    type: 'bridge',
    command,
    hostNs: host,
    containerId: over.cid ?? 'untrusted-ctr',
    netns: over.netns ?? nsPath(pod),
    ifname: over.ifname ?? 'eth0',
    config,
    ...(over.path ? { env: { CNI_PATH: over.path } } : {}),
  });

/** What a bad call could have changed: links of both namespaces, nat rules, allocations, a shell's file. */
async function state(): Promise<unknown> {
  return {
    host: (await links(host)).map((l) => l.ifname).sort(),
    pod: (await links(pod)).map((l) => l.ifname).sort(),
    nat4: await iptSave(host, 4),
    nat6: await iptSave(host, 6),
    allocations: await feltAllocations(dataDir),
    pwned: existsSync(PWNED),
  };
}

async function refused(config: unknown, code: number, names: string[], over: Parameters<typeof call>[2] = {}): Promise<void> {
  const before = await state();
  const r = await call('ADD', config, over);
  expect(r.code, r.stdout + r.stderr).toBe(1);
  expect(r.json?.code, r.stdout).toBe(code);
  for (const n of names) expect(`${r.json.msg} ${r.json.details ?? ''}`).toContain(n);
  expect(await state()).toEqual(before);
}

describe('refused: code and field named, nothing changed', () => {
  it.each([
    ['a newline that would end an iptables-restore input', 'x\n*nat\n-A POSTROUTING -j ACCEPT\nCOMMIT'],
    ['a quote and a shell command', `n"; touch ${PWNED}; "`],
    ['a command substitution', 'n$(touch /tmp/felt-pwned)'],
    ['a path', '../x'],
  ])('network name with %s: code 7', async (_what, name) => {
    await refused(conf({ name }), 7, ['name: invalid characters found in network name']);
  });

  it.each([['br\nlink add evil type bridge'], ['br#0'], ['"cniq"'], ["b'q"], ['b\\q'], ['../x'], ['-b']])(
    'bridge %j: code 7 naming "bridge"',
    async (bridge) => {
      await refused(conf({ bridge }), 7, ['bridge: ']);
    },
  );

  it.each([['e#0'], ['"eth0"'], ['e\n0'], ['e\\0']])('CNI_IFNAME %j: code 4 naming it', async (ifname) => {
    await refused(conf(), 4, ['CNI_IFNAME'], { ifname });
  });

  it.each([['/run/netns/x\nlink add evil type bridge'], ['/run/netns/a b'], ['relative/ns'], ['/run/netns/../x']])(
    'CNI_NETNS %j: code 4 naming it',
    async (netns) => {
      await refused(conf(), 4, ['CNI_NETNS'], { netns });
    },
  );

  it('ipam.dataDir with a .. component: code 7 naming it', async () => {
    await refused(conf({ ipam: { type: 'host-local', ranges: [[{ subnet: '10.95.0.0/24' }]], dataDir: `${dataDir}/../x` } }), 7, [
      'ipam.dataDir',
    ]);
  });

  it('an IPAM plugin whose result holds a newline in a gateway, a route or an address: code 105 naming the plugin and field', async () => {
    const results = [
      { cniVersion: '1.0.0', ips: [{ address: '10.95.0.9/24', gateway: `10.95.0.1\nlink add evil type bridge` }] },
      { cniVersion: '1.0.0', ips: [{ address: '10.95.0.9/24' }], routes: [{ dst: '0.0.0.0/0', gw: `10.95.0.1; touch ${PWNED}` }] },
      { cniVersion: '1.0.0', ips: [{ address: '10.95.0.9/24' }], routes: [{ dst: '10.0.0.0/8\nlink add evil type bridge' }] },
      { cniVersion: '1.0.0', ips: [{ address: '10.95.0.9/24 dev lo' }] },
    ];
    const fields = ['ips[0].gateway', 'routes[0].gw', 'routes[0].dst', 'ips[0].address'];
    for (const [i, res] of results.entries()) {
      const dir = join(evilDir, String(i));
      mkdirSync(dir, { recursive: true });
      // An IPAM plugin that prints whatever it was told to (and accepts DEL).
      const exe = join(dir, 'evil-ipam');
      writeFileSync(exe, `#!/bin/sh\n[ "$CNI_COMMAND" = ADD ] || exit 0\ncat <<'EOF'\n${JSON.stringify(res)}\nEOF\n`);
      chmodSync(exe, 0o755);
      await refused(conf({ ipam: { type: 'evil-ipam' } }), 105, ['evil-ipam returned an invalid result', fields[i]!], {
        path: `${dir}:${FELT_CNI}`,
      });
    }
  });
});

describe('carried as literal names: what no shell reads is no risk', () => {
  it('a bridge named with shell metacharacters and a dotted interface name: ADD makes exactly those names, DEL removes the attachment', async () => {
    const bridge = 'b$(id)`x`;z';
    const ifname = 'eth0.5';
    const before = await state();
    const add = await call('ADD', conf({ bridge }), { ifname, cid: 'literal-ctr' });
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(add.json.interfaces.map((i: { name: string }) => i.name)).toEqual(expect.arrayContaining([bridge, ifname]));
    expect((await links(host)).map((l) => l.ifname)).toContain(bridge);
    expect((await links(pod)).map((l) => l.ifname)).toContain(ifname);
    // The dotted name's sysctls went to its own directory, not to a split path.
    expect((await nsRun(pod, ['cat', `/proc/sys/net/ipv4/conf/${ifname}/arp_notify`])).trim()).toBe('1');
    expect(existsSync(PWNED)).toBe(false);
    expect(await nsRun(host, ['ip', '-br', 'link', 'show', 'master', bridge])).toMatch(/^veth/);

    const del = await call('DEL', conf({ bridge }), { ifname, cid: 'literal-ctr' });
    expect(del.code, del.stdout + del.stderr).toBe(0);
    const after = await state();
    // The shared bridge stays (as the reference's does); the veth, the rules and the address are gone.
    expect(after).toEqual({ ...(before as object), host: [...(before as { host: string[] }).host, bridge].sort() });
    expect(await cniChains(host)).toEqual([]);
    expect(await cniRules(host)).toEqual([]);
  });
});
