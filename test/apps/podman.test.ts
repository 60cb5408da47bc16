// A real runtime: Debian's podman with its CNI network backend runs containers on a felt network, with felt's
// plugins installed by `felt install-cni` into a temp dir (cni_plugin_dirs) and the network's conflist in
// another (network_config_dir), inside a network namespace this test makes, so the bridge, the veths and the
// iptables rules land there, never in the root namespace. Nothing of the machine's podman or CNI setup is
// used or written: containers.conf comes from CONTAINERS_CONF, storage is a temp --root/--runroot (vfs), the
// image is imported from a tarball of Debian's busybox-static (no registry is needed).
//
// How podman is run here, and why:
// - `nsenter --net=<ns>`, not `ip netns exec`: ip netns exec remounts /sys for the namespace, which hides
//   /sys/fs/cgroup from the OCI runtime, and it runs podman in a private mount namespace, so the container
//   namespaces podman mounts under /run/netns would be invisible to a later `podman rm` (its CNI DEL).
// - runc when installed (crun refuses this machine's hybrid cgroup layout: "cgroups in hybrid mode not
//   supported"); `--ulimit nofile/nproc` below the hard limits, because rootful podman otherwise asks for
//   1048576 and raising a hard limit needs CAP_SYS_RESOURCE, which a container-hosted machine may lack.
//
// libcni, inside podman, keeps its result cache in /var/lib/cni/results (not configurable): the test checks
// that the entries of its containers are gone after `podman rm`.

import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../support/cni.ts';
import { eventually } from '../support/eventually.ts';
import { exec, feltAllocations, nsPath, nsRun, nsTry, Sandbox, veths } from '../support/ns.ts';
import { execFile, type Run } from '../support/netns.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const BUSYBOX = '/bin/busybox';
const IMAGE = 'localhost/felt-busybox:test';
const NETWORK = 'feltnet';
const SUBNET = '198.51.100.0/24';
const GATEWAY = '198.51.100.1';

const which = (cmd: string): string | undefined => {
  try {
    return execFileSync('which', [cmd], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
};

const podmanBin = which('podman');
const runc = which('runc');
const skipReason = !podmanBin
  ? "podman is not installed (scripts/setup.sh installs Debian's podman)"
  : !existsSync(BUSYBOX)
    ? `${BUSYBOX} is missing (scripts/setup.sh installs busybox-static, the image's only program)`
    : undefined;
if (skipReason) console.warn(`podman.test.ts: skipped: ${skipReason}`);

const sb = new Sandbox();
let host = '';
let dir = '';
let data = '';
let conf = '';

/** podman as this test runs it: its own config, storage and runtime, inside the test's namespace. */
function podman(...args: string[]): Promise<Run> {
  return podmanIn(undefined, ...args);
}
function podmanIn(input: string | undefined, ...args: string[]): Promise<Run> {
  const global = [
    '--root',
    join(dir, 'root'),
    '--runroot',
    join(dir, 'runroot'),
    '--storage-driver',
    'vfs',
    ...(runc ? ['--runtime', runc] : []),
  ];
  return execFile(['nsenter', `--net=${nsPath(host)}`, podmanBin!, ...global, ...args], {
    env: { ...(process.env as Record<string, string>), CONTAINERS_CONF: conf },
    ...(input !== undefined ? { input } : {}),
  });
}
async function podmanOk(...args: string[]): Promise<string> {
  const r = await podman(...args);
  if (r.code !== 0) throw new Error(`podman ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** One HTTP/1.0 GET through busybox nc (busybox's wget crashes in a container without NSS files). */
const GET = 'GET /index.html HTTP/1.0\r\n\r\n';
const body = (response: string): string => response.slice(response.indexOf('\r\n\r\n') + 4);

const RUN = ['run', '-d', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', '--network', NETWORK];

interface Inspected {
  Id: string;
  NetworkSettings: { SandboxKey: string; Networks: Record<string, { IPAddress: string }> };
}
const inspect = async (name: string): Promise<Inspected> => (JSON.parse(await podmanOk('inspect', name)) as Inspected[])[0]!;
const cacheEntries = (id: string): string[] =>
  existsSync('/var/lib/cni/results') ? readdirSync('/var/lib/cni/results').filter((f) => f.includes(id)) : [];

describe.skipIf(skipReason !== undefined)('podman (CNI backend) on a felt network', () => {
  const etcCni = existsSync('/etc/cni/net.d') ? readdirSync('/etc/cni/net.d').sort() : undefined;

  beforeAll(async () => {
    dir = sb.dir();
    data = join(dir, 'data');
    host = await sb.ns();
    await nsRun(host, ['ip', 'link', 'set', 'lo', 'up']);
    // felt's plugins as a node gets them.
    const bin = join(dir, 'cni-bin');
    const inst = await exec([FELT, 'install-cni', '--cni-bin-dir', bin, '--no-conf']);
    if (inst.code !== 0) throw new Error(`felt install-cni: ${inst.stderr}`);
    const netd = join(dir, 'net.d');
    mkdirSync(netd);
    // What `podman network create` writes for the CNI backend (bridge, portmap, firewall, tuning), with
    // felt's log in the test's data dir.
    writeFileSync(
      join(netd, `${NETWORK}.conflist`),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: NETWORK,
        plugins: [
          {
            type: 'bridge',
            bridge: 'felt-pm0',
            isGateway: true,
            ipMasq: true,
            hairpinMode: true,
            ipam: { type: 'host-local', dataDir: data, routes: [{ dst: '0.0.0.0/0' }], ranges: [[{ subnet: SUBNET, gateway: GATEWAY }]] },
          },
          { type: 'portmap', capabilities: { portMappings: true } },
          { type: 'firewall', backend: '', dataDir: data },
          { type: 'tuning' },
        ],
      }),
    );
    conf = join(dir, 'containers.conf');
    writeFileSync(
      conf,
      [
        '[engine]',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `events_logfile_path = "${join(dir, 'events.log')}"`,
        `tmp_dir = "${join(dir, 'tmp')}"`,
        '[network]',
        'network_backend = "cni"',
        `cni_plugin_dirs = ["${bin}"]`,
        `network_config_dir = "${netd}"`,
        '',
      ].join('\n'),
    );
    // The image: busybox (static) and a page to serve.
    const rootfs = join(dir, 'rootfs');
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    mkdirSync(join(rootfs, 'www'));
    execFileSync('cp', [BUSYBOX, join(rootfs, 'bin', 'busybox')]);
    chmodSync(join(rootfs, 'bin', 'busybox'), 0o755);
    for (const a of ['sh', 'sleep', 'httpd', 'nc', 'ping', 'ip', 'cat']) symlinkSync('busybox', join(rootfs, 'bin', a));
    writeFileSync(join(rootfs, 'www', 'index.html'), 'served by c2\n');
    execFileSync('tar', ['-C', rootfs, '-cf', join(dir, 'image.tar'), '.']);
    await podmanOk('import', join(dir, 'image.tar'), IMAGE);
  }, 120_000);

  afterAll(async () => {
    if (dir && host) {
      await podman('rm', '-a', '-f', '-t', '0');
      await podman('rmi', '-a', '-f');
    }
    await sb.cleanup();
  }, 120_000);

  it('podman sees the felt network from its network_config_dir', async () => {
    const ls = await podmanOk('network', 'ls', '--format', '{{.Name}} {{.Driver}}');
    expect(ls.split('\n')).toContain(`${NETWORK} bridge`);
  });

  it("two containers get addresses from felt's host-local, reach each other, a port mapping works, podman rm releases everything", async () => {
    await podmanOk(...RUN, '--name', 'c1', IMAGE, 'sleep', '3600');
    await podmanOk(...RUN, '--name', 'c2', '-p', '8080:80', IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www');
    const [c1, c2] = [await inspect('c1'), await inspect('c2')];
    const ip1 = c1.NetworkSettings.Networks[NETWORK]!.IPAddress;
    const ip2 = c2.NetworkSettings.Networks[NETWORK]!.IPAddress;

    // The addresses podman reports are the ones felt's log holds, for podman's container IDs.
    const held = (await feltAllocations(data)).map((a) => [a.network, a.ip, a.containerId, a.ifname]).sort();
    expect(held).toEqual(
      [
        [NETWORK, ip1, c1.Id, 'eth0'],
        [NETWORK, ip2, c2.Id, 'eth0'],
      ].sort(),
    );
    const events = await exec([FELT, 'events', '--data-dir', data, '--stream', `ipam/${NETWORK}`]);
    expect(events.stdout).toMatch(new RegExp(`AddressAllocated +${ip1} -> ${c1.Id}/eth0`));
    // The bridge and the veths are in the test's namespace; the containers' eth0 have the addresses.
    expect((await nsRun(host, ['ip', '-br', 'addr', 'show', 'felt-pm0'])).split(/\s+/)).toContain(`${GATEWAY}/24`);
    expect(await veths(host)).toHaveLength(2);
    expect(await podmanOk('exec', 'c1', 'ip', '-o', '-4', 'addr', 'show', 'eth0')).toContain(`${ip1}/24`);

    // c1 reaches c2: ping, and HTTP from busybox's httpd.
    await eventually(async () => expect((await podman('exec', 'c1', 'ping', '-c1', '-W2', ip2)).code).toBe(0), {
      what: `c1 pings ${ip2}`,
      timeoutMs: 20_000,
    });
    const page = await podmanIn(GET, 'exec', '-i', 'c1', 'nc', '-w', '5', ip2, '80');
    expect(page.stdout, page.stderr).toMatch(/^HTTP\/1\.[01] 200 /);
    expect(body(page.stdout)).toBe('served by c2\n');

    // The port mapping podman passed (portMappings capability): felt's portmap DNATs the host's 8080 to c2.
    const dnat = await nsRun(host, ['iptables-save', '-t', 'nat']);
    expect(dnat).toMatch(new RegExp(`--dport 8080 .*-j DNAT --to-destination ${ip2.replace(/\./g, '\\.')}:80`));
    const mapped = await eventually(
      async () => {
        const r = await nsTry(host, [BUSYBOX, 'nc', '-w', '5', GATEWAY, '8080'], GET);
        expect(r.stdout, r.stderr).toMatch(/^HTTP\/1\.[01] 200 /);
        return body(r.stdout);
      },
      { what: `the host's ${GATEWAY}:8080 reaches c2`, timeoutMs: 20_000 },
    );
    expect(mapped).toBe('served by c2\n');

    // podman rm: CNI DEL for each; nothing leaks.
    const sandboxes = [c1.NetworkSettings.SandboxKey, c2.NetworkSettings.SandboxKey];
    await podmanOk('rm', '-f', '-t', '0', 'c1', 'c2');
    expect(await feltAllocations(data)).toEqual([]);
    const released = await exec([FELT, 'events', '--data-dir', data, '--stream', `ipam/${NETWORK}`]);
    expect(released.stdout).toMatch(new RegExp(`AddressReleased +${ip2} <- ${c2.Id}/eth0`));
    await eventually(async () => (await veths(host)).length === 0, { what: 'the containers take their veths with them' });
    for (const s of sandboxes) expect(existsSync(s), s).toBe(false);
    expect([...cacheEntries(c1.Id), ...cacheEntries(c2.Id)]).toEqual([]);
    const after = await nsRun(host, ['iptables-save', '-t', 'nat']);
    expect(after).not.toContain(ip2);
    expect(after).not.toMatch(/CNI-DN-/);
  }, 180_000);

  it("leaves the machine's CNI config alone", () => {
    expect(existsSync('/etc/cni/net.d') ? readdirSync('/etc/cni/net.d').sort() : undefined).toEqual(etcCni);
  });
});
