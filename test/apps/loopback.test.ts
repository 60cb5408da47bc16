// Kernel tests of felt's loopback plugin in fresh namespaces: the plugin runs in a "host" namespace made here
// and works on `lo` of a pod namespace made here; both are removed afterwards.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FELT_CNI } from '../support/cni.ts';
import { addrs, cni, link, nsRun, Sandbox, type Call } from '../support/ns.ts';

const conf = (cniVersion: string, extra: Record<string, unknown> = {}) => ({ cniVersion, name: 'lonet', type: 'loopback', ...extra });
const call = (host: string, pod: string): Call => ({ dir: FELT_CNI, hostNs: host, pod, cid: 'ctr-lo', ifname: 'lo' });

describe('loopback', () => {
  const sb = new Sandbox();
  let host = '';
  beforeAll(async () => {
    host = await sb.ns();
  });
  afterAll(() => sb.cleanup());

  it.each(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'])('ADD at %s brings lo up and reports 127.0.0.1/8 and ::1/128', async (v) => {
    const pod = await sb.ns();
    expect((await link(pod, 'lo'))?.flags).not.toContain('UP');
    const r = await cni(call(host, pod), 'ADD', conf(v));
    expect(r.code, r.stdout).toBe(0);
    expect((await link(pod, 'lo'))?.flags).toContain('UP');
    const ver = (fam: string) => (v.startsWith('0.') ? { version: fam } : {});
    // As the reference (which also prints "dns":{} and, at 0.4.0, no ips[].version — felt follows the spec).
    expect(r.json).toEqual({
      cniVersion: v,
      interfaces: [{ name: 'lo', mac: '00:00:00:00:00:00', sandbox: `/run/netns/${pod}` }],
      ips: [
        { ...ver('4'), address: '127.0.0.1/8', interface: 0 },
        { ...ver('6'), address: '::1/128', interface: 0 },
      ],
    });
  });

  it('ADD without IPv6 in the pod reports only 127.0.0.1/8', async () => {
    const pod = await sb.ns();
    await nsRun(pod, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.lo.disable_ipv6=1']);
    const r = await cni(call(host, pod), 'ADD', conf('1.0.0'));
    expect(r.code).toBe(0);
    expect(r.json.ips).toEqual([{ address: '127.0.0.1/8', interface: 0 }]);
  });

  it('chained after another plugin, ADD returns prevResult unchanged', async () => {
    const pod = await sb.ns();
    const prevResult = {
      cniVersion: '1.0.0',
      interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: `/run/netns/${pod}` }],
      ips: [{ address: '10.1.0.2/24', gateway: '10.1.0.1', interface: 0 }],
      routes: [{ dst: '0.0.0.0/0', gw: '10.1.0.1' }],
      dns: { nameservers: ['10.1.0.53'], search: ['example.test'] },
    };
    const r = await cni(call(host, pod), 'ADD', conf('1.0.0', { prevResult }));
    expect(r.code, r.stdout).toBe(0);
    expect(r.json).toEqual(prevResult);
    expect((await link(pod, 'lo'))?.flags).toContain('UP');
    // At 0.4.0 the passed-through result keeps its ips[].version.
    const prev040 = { ...prevResult, cniVersion: '0.4.0', ips: [{ version: '4', ...prevResult.ips[0] }] };
    const r040 = await cni(call(host, pod), 'ADD', conf('0.4.0', { prevResult: prev040 }));
    expect(r040.json).toEqual(prev040);
  });

  it('CHECK passes while lo is up; DEL brings it down; CHECK then fails naming lo (103)', async () => {
    const pod = await sb.ns();
    expect((await cni(call(host, pod), 'ADD', conf('1.0.0'))).code).toBe(0);
    const ok = await cni(call(host, pod), 'CHECK', conf('1.0.0'));
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe('');
    const d = await cni(call(host, pod), 'DEL', conf('1.0.0'));
    expect(d.code).toBe(0);
    expect(d.stdout).toBe('');
    expect((await link(pod, 'lo'))?.flags).not.toContain('UP');
    // The kernel keeps lo's addresses when it is down; the reference leaves them too.
    expect((await addrs(pod))['lo']).toEqual(['127.0.0.1/8']);
    const bad = await cni(call(host, pod), 'CHECK', conf('1.0.0'));
    expect(bad.code).toBe(1);
    expect(bad.json).toEqual({ cniVersion: '1.0.0', code: 103, msg: expect.stringContaining('"lo"') });
    expect(bad.json.msg).toContain('down');
  });

  it('DEL twice, of a gone namespace and with an empty CNI_NETNS succeeds', async () => {
    const pod = await sb.ns();
    expect((await cni(call(host, pod), 'ADD', conf('1.0.0'))).code).toBe(0);
    expect((await cni(call(host, pod), 'DEL', conf('1.0.0'))).code).toBe(0);
    expect((await cni(call(host, pod), 'DEL', conf('1.0.0'))).code).toBe(0);
    await sb.delNs(pod);
    const gone = await cni(call(host, pod), 'DEL', conf('1.0.0'));
    expect(gone.code).toBe(0);
    expect(gone.stdout).toBe('');
    expect((await cni(call(host, ''), 'DEL', conf('1.0.0'))).code).toBe(0);
  });

  it('CHECK of a gone namespace fails', async () => {
    const r = await cni(call(host, '/run/netns/felt-no-such-ns'), 'CHECK', conf('1.0.0'));
    expect(r.code).toBe(1);
    expect(r.json.msg).toContain('/run/netns/felt-no-such-ns');
  });

  it('refuses a lo with a non-loopback address, naming it', async () => {
    const pod = await sb.ns();
    await nsRun(pod, ['ip', 'addr', 'add', '10.9.9.9/32', 'dev', 'lo']);
    const r = await cni(call(host, pod), 'ADD', conf('1.0.0'));
    expect(r.code).toBe(1);
    expect(r.json.code).toBe(7);
    expect(r.json.msg).toContain('10.9.9.9');
  });
});
