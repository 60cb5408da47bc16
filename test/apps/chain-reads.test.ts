// What the chained plugins read, process by process (FELT_TRACE=1 lists every process a call starts): the
// conflist bridge + portmap + bandwidth + tuning + firewall (npm run bench:chain's) run standalone, ADD then
// DEL, in a namespace made here. Each plugin reads only what it plans: bridge the host alone, in its own
// backend; portmap and firewall no links; on ADD only the chosen backend's tables in the families the pod has
// an address in; bandwidth no ingress filters where nothing compares them. DEL still reads every backend and
// family (what it finds there goes), but bridge's of a recorded attachment only the host and its backend; it
// leaves nothing behind. The state after each step is the same as before these cuts: the other tests of
// these plugins check it against the reference; here, that ADD made what it should and DEL removed it.

import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI } from '../support/cni.ts';
import { cni, cniChains, iptSave, links, nsRun, Sandbox, sysctl, type Call } from '../support/ns.ts';

const sb = new Sandbox();
afterAll(() => sb.cleanup());

const plugins = (data: string): Record<string, unknown>[] => [
  {
    type: 'bridge',
    bridge: 'cnird0',
    isGateway: true,
    ipMasq: true,
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.97.0.0/24' }]], dataDir: data },
  },
  { type: 'portmap', snat: true, runtimeConfig: { portMappings: [{ hostPort: 18097, containerPort: 80, protocol: 'tcp' }] } },
  {
    type: 'bandwidth',
    runtimeConfig: { bandwidth: { ingressRate: 100_000_000, ingressBurst: 1_000_000, egressRate: 100_000_000, egressBurst: 1_000_000 } },
  },
  { type: 'tuning', sysctl: { 'net.ipv4.conf.IFNAME.arp_notify': '1' }, dataDir: data },
  { type: 'firewall', dataDir: data },
];

/** The argv of every process FELT_TRACE shows, joined by spaces. */
const spawned = (stderr: string): string[] =>
  stderr
    .split('\n')
    .filter((l) => /^@[\d.]+ \$ \[/.test(l))
    .map((l) => (JSON.parse(l.slice(l.indexOf('$ ') + 2)) as string[]).join(' '));

const ipRead = (p: string): boolean => / ?ip -json -d -batch -$/.test(p);

/** Run the list (DEL in reverse, with the ADD's result), the processes of each plugin by type. */
async function runList(
  c: Call,
  data: string,
  command: 'ADD' | 'DEL',
  prev: unknown,
): Promise<{ result: unknown; procs: Map<string, string[]> }> {
  const list = plugins(data);
  const procs = new Map<string, string[]>();
  let result = prev;
  for (const p of command === 'ADD' ? list : [...list].reverse()) {
    const config = {
      cniVersion: '1.0.0',
      name: 'readsnet',
      ...p,
      ...(result !== undefined ? { prevResult: command === 'ADD' ? result : prev } : {}),
    };
    // Standalone, so that the call's trace is this process's stderr.
    const o = await cni(c, command, config, { FELT_CNI_SOCKET: '', FELT_TRACE: '1' });
    expect(o.code, `${command} ${String(p['type'])}: ${o.stdout}${o.stderr}`).toBe(0);
    procs.set(String(p['type']), spawned(o.stderr));
    if (command === 'ADD') result = o.json;
  }
  return { result, procs };
}

describe('the chain bridge + portmap + bandwidth + tuning + firewall: the processes of each plugin', () => {
  it('ADD and DEL read only what they plan; DEL reads both backends and families and leaves nothing', async () => {
    const host = await sb.ns();
    const pod = await sb.ns();
    await nsRun(host, ['ip', 'link', 'set', 'lo', 'up']);
    const c: Call = { dir: FELT_CNI, hostNs: host, pod, cid: 'reads1' };
    const data = sb.dir();

    const add = await runList(c, data, 'ADD', undefined);
    // bridge reads the host alone (not the new pod: the pair made into it says whether eth0 is taken), and
    // only the backend in use.
    const br = add.procs.get('bridge')!;
    expect(br.filter(ipRead)).toEqual(['ip -json -d -batch -']);
    expect(br.filter((p) => p.includes('nft '))).toEqual([]);
    const pm = add.procs.get('portmap')!;
    // The route lookup, one nat table, one restore: no links, no nftables, no IPv6 (the pod has none).
    expect(pm.filter(ipRead)).toEqual([]);
    expect(pm.filter((p) => p.includes('nft '))).toEqual([]);
    expect(pm.filter((p) => p.includes('ip6tables'))).toEqual([]);
    expect(pm.some((p) => p.includes('iptables-save -t nat'))).toBe(true);
    const fw = add.procs.get('firewall')!;
    expect(fw.filter((p) => ipRead(p) || p.includes('nft '))).toEqual([]);
    expect(fw.some((p) => p.includes('iptables-save -t filter'))).toBe(true);
    // A fresh veth has no ingress qdisc: no filter to read. The host alone: prevResult names the host veth,
    // whose peer the host read places in the pod's namespace.
    expect(add.procs.get('bandwidth')!.filter((p) => p.includes('filter show'))).toEqual([]);
    expect(add.procs.get('bandwidth')!.filter(ipRead)).toEqual(['ip -json -d -batch -']);

    // What ADD made: the DNAT chain, the firewall's rules of the address, the limits.
    const ip = (add.result as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
    expect((await cniChains(host)).some((l) => l.includes('CNI-DN-'))).toBe(true);
    expect((await iptSave(host, 4, 'filter')).some((l) => l.startsWith('-A CNI-FORWARD') && l.includes(ip))).toBe(true);
    expect((await links(host)).some((l) => l.linkinfo?.info_kind === 'ifb')).toBe(true);
    const veth = (add.result as { interfaces: { name: string }[] }).interfaces[1]!.name;
    expect(
      JSON.parse(await nsRun(host, ['tc', '-json', 'qdisc', 'show', 'dev', veth]))
        .map((q: { kind: string }) => q.kind)
        .sort(),
    ).toEqual(['ingress', 'tbf']);

    // bandwidth's ADD again: it finds the ingress qdisc and reads that veth's filter (only it), changing nothing.
    const bw = plugins(data).find((p) => p['type'] === 'bandwidth')!;
    const bwAgain = await cni(
      c,
      'ADD',
      { cniVersion: '1.0.0', name: 'readsnet', ...bw, prevResult: add.result },
      { FELT_CNI_SOCKET: '', FELT_TRACE: '1' },
    );
    expect(bwAgain.code, bwAgain.stdout).toBe(0);
    expect(spawned(bwAgain.stderr).filter((p) => p.includes('filter show'))).toEqual([`tc -json filter show dev ${veth} ingress`]);
    expect(spawned(bwAgain.stderr).filter((p) => p.startsWith('tc -force') || p.startsWith('ip -force'))).toEqual([]);

    const del = await runList(c, data, 'DEL', add.result);
    // bridge's DEL of its recorded attachment: the host alone (the veth's deletion takes the pod's end), and
    // only the backend its ADD used.
    const bd = del.procs.get('bridge')!;
    expect(bd.filter(ipRead)).toEqual(['ip -json -d -batch -']);
    expect(bd.filter((p) => p.includes('nft '))).toEqual([]);
    const pd = del.procs.get('portmap')!;
    expect(pd.filter(ipRead)).toEqual([]);
    expect(pd.filter((p) => p.includes('nft -j list table')).sort()).toEqual([
      'nft -j list table ip cni_hostport',
      'nft -j list table ip6 cni_hostport',
    ]);
    expect(pd.filter((p) => /^ip6?tables-save -t nat$/.test(p)).sort()).toEqual(['ip6tables-save -t nat', 'iptables-save -t nat']);
    const fd = del.procs.get('firewall')!;
    expect(fd.filter(ipRead)).toEqual([]);
    expect(fd).toContain('nft -j list table inet cni_firewall');
    expect(del.procs.get('bandwidth')!.filter((p) => p.includes('filter show'))).toEqual([]);
    expect(del.procs.get('bandwidth')!.filter(ipRead)).toEqual(['ip -json -d -batch -']);

    // Nothing of the attachment is left.
    expect((await cniChains(host)).filter((l) => l.includes('CNI-DN-'))).toEqual([]);
    expect((await iptSave(host, 4, 'filter')).filter((l) => l.includes(ip))).toEqual([]);
    expect((await links(host)).filter((l) => l.linkinfo?.info_kind === 'ifb' || l.linkinfo?.info_kind === 'veth')).toEqual([]);
  });

  it('portmap: route_localnet goes on the interface routing to the pod when prevResult does not name it', async () => {
    const host = await sb.ns();
    await nsRun(host, ['ip', 'link', 'add', 'rl0', 'type', 'veth', 'peer', 'name', 'rl1']);
    await nsRun(host, ['ip', 'addr', 'add', '10.96.5.1/24', 'dev', 'rl0']);
    await nsRun(host, ['ip', 'link', 'set', 'rl0', 'up']);
    await nsRun(host, ['ip', 'link', 'set', 'rl1', 'up']);
    expect(await sysctl(host, 'net.ipv4.conf.rl0.route_localnet')).toBe('0');
    const c: Call = { dir: FELT_CNI, hostNs: host, pod: '/var/run/netns/x', cid: 'reads2' };
    const conf = {
      cniVersion: '1.0.0',
      name: 'readsnet',
      type: 'portmap',
      snat: true,
      runtimeConfig: { portMappings: [{ hostPort: 18098, containerPort: 80, protocol: 'tcp' }] },
      prevResult: {
        cniVersion: '1.0.0',
        interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }],
        ips: [{ address: '10.96.5.2/24', interface: 0 }],
      },
    };
    const add = await cni(c, 'ADD', conf, { FELT_CNI_SOCKET: '' });
    expect(add.code, add.stdout).toBe(0);
    expect(await sysctl(host, 'net.ipv4.conf.rl0.route_localnet')).toBe('1');
    expect((await cniChains(host)).some((l) => l.includes('CNI-DN-'))).toBe(true);
    const del = await cni(c, 'DEL', conf, { FELT_CNI_SOCKET: '' });
    expect(del.code, del.stdout).toBe(0);
    expect((await cniChains(host)).filter((l) => l.includes('CNI-DN-'))).toEqual([]);
  });
});
