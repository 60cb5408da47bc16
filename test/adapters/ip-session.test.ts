// adapters/kernel/ip-session.ts in a namespace of the test's own: one long-lived `ip` answers reads and
// changes as a process of their own would (same stdout, failures numbered from the request's first line),
// survives failed lines, and a device made again behind its back (iproute2's name cache then names the old
// index) costs a re-run of the failed lines, never a wrong answer.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batchSession, ipSession, type IpSession } from '../../adapters/kernel/ip-session.ts';
import { IP_READ, parseIpBatch } from '../../adapters/kernel/parse.ts';
import { HOST } from '../../core/kernel/model.ts';
import { cleanupNetns, createNetns, type Netns } from '../support/netns.ts';

describe('a long-lived ip session', () => {
  let ns: Netns;
  let s: IpSession;
  const spawns: string[][] = [];

  beforeAll(async () => {
    ns = await createNetns();
    s = ipSession(['nsenter', `--net=${ns.path}`], { onSpawn: (a) => spawns.push([...a]) });
  });

  afterAll(async () => {
    s.close();
    await cleanupNetns();
  });

  it('answers reads and changes one after another in one process', async () => {
    const made = await s.request('link add name sbr0 type bridge\nlink set dev sbr0 up\naddr replace 10.9.0.1/24 dev sbr0\n');
    expect(made).toEqual({ code: 0, stdout: '', stderr: '' });
    const read = await s.request(IP_READ);
    expect(read?.code).toBe(0);
    const st = parseIpBatch(HOST, read!.stdout);
    if (typeof st === 'string') throw new Error(st);
    expect(st.links.map((l) => l.name).sort()).toEqual(['lo', 'sbr0']);
    expect(st.addresses).toContainEqual(expect.objectContaining({ dev: 'sbr0', cidr: '10.9.0.1/24' }));
    // Concurrent requests queue: each gets its own answer.
    const [a, b] = await Promise.all([s.request('link add name sd1 type bridge\n'), s.request(IP_READ)]);
    expect(a?.code).toBe(0);
    expect(parseIpBatch(HOST, b!.stdout)).toMatchObject({ links: expect.arrayContaining([expect.objectContaining({ name: 'sd1' })]) });
    expect(s.stats()).toMatchObject({ spawned: 1, requests: 4 });
    expect(spawns).toHaveLength(1);
  });

  it('a failed line is numbered from the request, and the lines after it still run', async () => {
    const r = await s.request('link set dev sd1 up\nlink set dev nosuch7 up\nlink set dev sd1 mtu 1400\n');
    expect(r?.code).not.toBe(0);
    expect(r?.stderr).toMatch(/nosuch7/);
    expect(r?.stderr).toMatch(/Command failed -:2$/m);
    expect(r?.stderr).not.toMatch(/felt\/sync/);
    expect(await ns.run(['ip', '-j', 'link', 'show', 'dev', 'sd1'])).toMatch(/"mtu":1400/);
  });

  it('a bridge deleted and made again by another process: the port still lands on the new one', async () => {
    expect((await s.request('link add name sv0 type veth peer name sv1\nlink set dev sv0 master sbr0\n'))?.code).toBe(0);
    // Another process replaces sbr0: a new index under the same name.
    await ns.run(['ip', 'link', 'del', 'sbr0']);
    await ns.run(['ip', 'link', 'add', 'name', 'sbr0', 'type', 'bridge']);
    const r = await s.request('link set dev sv1 master sbr0\n');
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(await ns.run(['ip', '-j', 'link', 'show', 'dev', 'sv1'])).toMatch(/"master":"sbr0"/);
  });

  it('a session that cannot start answers nothing (the caller runs a process of its own), and does not hang', async () => {
    const none = ipSession(['/nonexistent/felt-no-such-tool']);
    expect(await none.request(IP_READ)).toBeUndefined();
    expect(await none.request('link set dev lo up\n')).toBeUndefined();
    none.close();
  });

  it('a session whose process died answers nothing; the next request starts a new one', async () => {
    const before = s.stats().spawned;
    await s.request(IP_READ);
    const pid = Number((await ns.run(['pgrep', '-n', '-f', 'ip -json -d -force -batch'])).trim());
    if (pid > 0) process.kill(pid, 'SIGKILL');
    // Whatever the request in flight gets (an answer or undefined), the one after gets a fresh process's answer.
    await s.request(IP_READ);
    const r = await s.request(IP_READ);
    expect(r?.code).toBe(0);
    expect(s.stats().spawned).toBeGreaterThan(before);
  });
});

describe('a long-lived tc session', () => {
  let ns: Netns;
  let s: IpSession;
  const spawns: string[][] = [];

  beforeAll(async () => {
    ns = await createNetns();
    await ns.run(['ip', 'link', 'add', 'tq0', 'type', 'veth', 'peer', 'name', 'tq1']);
    s = batchSession('tc', ['nsenter', `--net=${ns.path}`], { onSpawn: (a) => spawns.push([...a]) });
  });

  afterAll(async () => {
    s.close();
    await cleanupNetns();
  });

  it('answers qdisc reads and changes in one process, as tc processes of their own would', async () => {
    const made = await s.request('qdisc replace dev tq0 root tbf rate 1mbit burst 10kb latency 50ms\nqdisc add dev tq0 ingress\n');
    expect(made).toEqual({ code: 0, stdout: '', stderr: '' });
    const [all, filters] = await Promise.all([s.request('qdisc show\n'), s.request('filter show dev tq0 ingress\n')]);
    const own = await ns.run(['tc', '-json', 'qdisc', 'show']);
    expect(all).toEqual({ code: 0, stdout: own, stderr: '' });
    expect(JSON.parse(all!.stdout)).toContainEqual(expect.objectContaining({ kind: 'tbf', dev: 'tq0' }));
    expect(filters).toEqual({ code: 0, stdout: await ns.run(['tc', '-json', 'filter', 'show', 'dev', 'tq0', 'ingress']), stderr: '' });
    expect(s.stats()).toMatchObject({ spawned: 1, requests: 3 });
    expect(spawns.filter((a) => a.includes('tc'))).toEqual([['nsenter', `--net=${ns.path}`, 'tc', '-json', '-force', '-batch', '-']]);
  });

  it('a failed line is numbered from the request; a deletion of what is not there is run again in a process and fails there too', async () => {
    const r = await s.request('qdisc del dev tq0 root\nqdisc del dev tq0 root\n');
    expect(r?.code).not.toBe(0);
    expect(r?.stderr).toMatch(/Command failed -:2$/m);
    expect(r?.stderr).not.toMatch(/felt\/sync/);
    expect(JSON.parse(await ns.run(['tc', '-json', 'qdisc', 'show', 'dev', 'tq0']))).not.toContainEqual(
      expect.objectContaining({ kind: 'tbf' }),
    );
    // A read that fails (no such device) is answered by nobody: the caller runs its own process.
    expect(await s.request('filter show dev nosuch9 ingress\n')).toBeUndefined();
  });
});
