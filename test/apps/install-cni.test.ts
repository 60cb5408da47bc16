// felt install-cni through the built dist/bin/felt into temporary directories: copies of every plugin that
// run without the source tree (checked by hiding it: the copies run in a private mount namespace where the
// checkout, its node_modules and, with --with-node, the system node are covered), the support files next to
// them, the stock flannel conflist; a second run changes nothing; a foreign plugin and a different conflist
// are left and named (exit 3) unless --force, and a foreign plugin left next to felt's is executed, not
// replaced by felt's code in-process; an older install (links, an older support directory) is replaced.

import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FLANNEL_CONFLIST, SUPPORT_DIR } from '../../apps/felt/commands/install-cni.ts';
import { FELT_CNI, REF_CNI, ROOT } from '../support/cni.ts';
import { addrs, exec, feltAllocations, nsPath, refAllocations, Sandbox } from '../support/ns.ts';
import { execFile, type Run } from '../support/netns.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const TYPES = readdirSync(FELT_CNI)
  .filter((t) => !t.startsWith('.'))
  .sort();
/** The support directories under <bin>/.felt (the rest are the plugins' bundles). */
const supportDirs = (bin: string): string[] => readdirSync(join(bin, SUPPORT_DIR)).filter((f) => /^[0-9a-f]{12}$/.test(f));
const sb = new Sandbox();
afterAll(() => sb.cleanup());

const install = (bin: string, conf: string, ...more: string[]): Promise<Run> =>
  exec([FELT, 'install-cni', '--cni-bin-dir', bin, '--cni-conf-dir', conf, ...more]);

// Runs argv in a private mount namespace with `hide` covered (directories by an empty tmpfs, files by
// /dev/null), inside network namespace `ns`. The helper lives in a temp dir, outside what it hides.
const HIDE = `import { execFileSync, spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
const i = process.argv.indexOf('--');
for (const p of process.argv.slice(2, i)) {
  if (statSync(p).isDirectory()) execFileSync('mount', ['-t', 'tmpfs', 'felt-hidden', p]);
  else execFileSync('mount', ['--bind', '/dev/null', p]);
}
const r = spawnSync(process.argv[i + 1], process.argv.slice(i + 2), { stdio: 'inherit' });
process.exit(r.status ?? 1);
`;
let helper: string | undefined;
function hidden(ns: string, hide: readonly string[], argv: readonly string[], env: Record<string, string>, input = ''): Promise<Run> {
  if (!helper) {
    helper = join(sb.dir(), 'hide.mjs');
    writeFileSync(helper, HIDE);
  }
  // FELT_CNI_SOCKET empty: the forwarders run their bundles in-process (a feltd on this machine is not asked).
  return execFile(
    ['ip', 'netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private', '--', process.execPath, helper, ...hide, '--', ...argv],
    {
      env: { FELT_CNI_SOCKET: '', ...env },
      input,
    },
  );
}
/** The checkout and the node_modules it uses (a worktree's may be a link to another checkout's). */
// A path under one already covered is covered with it (and cannot be reached to mount over once it is).
const SOURCE = ((paths: string[]) => paths.filter((p, i) => !paths.some((q, j) => j !== i && (p === q ? j < i : p.startsWith(q + '/')))))([
  ROOT,
  realpathSync(join(ROOT, 'node_modules')),
]);

const cniEnv = (command: string, bin: string, pod: string, cid: string): Record<string, string> => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: cid,
  CNI_NETNS: nsPath(pod),
  CNI_IFNAME: 'eth0',
  CNI_PATH: bin,
});

describe('felt install-cni', () => {
  it('copies every plugin with its support files and writes the flannel conflist; again: nothing to do', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const conf = join(d, 'net.d');
    const r = await install(bin, conf);
    expect(r.code, r.stderr).toBe(0);
    const [hash, ...others] = supportDirs(bin);
    expect(others).toEqual([]);
    expect(readdirSync(join(bin, SUPPORT_DIR)).sort()).toEqual([hash!, ...TYPES].sort());
    const support = join(bin, SUPPORT_DIR, hash!);
    for (const type of TYPES) {
      // The forwarder, a copy of the built one.
      const p = join(bin, type);
      expect(lstatSync(p).isFile()).toBe(true);
      expect(lstatSync(p).mode & 0o777).toBe(0o755);
      expect(readFileSync(p).equals(readFileSync(join(FELT_CNI, type)))).toBe(true);
      // Its bundle, run when no feltd serves CNI.
      const b = join(bin, SUPPORT_DIR, type);
      expect(lstatSync(b).mode & 0o777).toBe(0o755);
      const [first, second] = readFileSync(b, 'utf8').split('\n');
      expect(first).toBe(`#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS NODE_PATH=${support}/node_modules ${process.execPath}`);
      expect(second).toBe(`// felt-cni ${type}`);
      // The rest is the built bundle, unchanged.
      const built = readFileSync(join(FELT_CNI, SUPPORT_DIR, type), 'utf8');
      expect(readFileSync(b, 'utf8').slice(first!.length)).toBe(built.slice(built.indexOf('\n')));
    }
    expect(existsSync(join(support, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node'))).toBe(true);
    expect(existsSync(join(support, 'node_modules/better-sqlite3/deps'))).toBe(false);
    expect(existsSync(join(support, 'node'))).toBe(false);
    expect(JSON.parse(readFileSync(join(conf, '10-flannel.conflist'), 'utf8'))).toEqual(FLANNEL_CONFLIST);
    const again = await install(bin, conf);
    expect(again).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });

  it('an installed bridge runs ADD and DEL (host-local in-process, the log in the data dir) with the source tree hidden', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const data = join(d, 'data');
    expect((await install(bin, join(d, 'net.d'))).code).toBe(0);
    const host = await sb.ns();
    const pod = await sb.ns();
    const config = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'copied',
      type: 'bridge',
      bridge: 'felt-ic0',
      isGateway: true,
      ipam: { type: 'host-local', dataDir: data, ranges: [[{ subnet: '198.51.100.0/24' }]] },
    });
    const about = await hidden(host, SOURCE, [join(bin, 'host-local')], {});
    expect(about.stderr).toMatch(/^felt host-local: .*\(felt v\d+\.\d+\.\d+\)/);
    // The control: a bare copy of the built bundle does not run there (better-sqlite3 is in the hidden tree).
    const bare = join(d, 'bare');
    mkdirSync(bare);
    writeFileSync(join(bare, 'bridge'), readFileSync(join(FELT_CNI, SUPPORT_DIR, 'bridge')), { mode: 0o755 });
    const control = await hidden(host, SOURCE, [join(bare, 'bridge')], cniEnv('ADD', bare, pod, 'c0'), config);
    expect(control.code, JSON.stringify(control)).not.toBe(0);
    expect(control.stdout + control.stderr).toContain('better-sqlite3');
    const add = await hidden(host, SOURCE, [join(bin, 'bridge')], cniEnv('ADD', bin, pod, 'c1'), config);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(JSON.parse(add.stdout).ips[0].address).toBe('198.51.100.2/24');
    expect((await addrs(pod))['eth0']).toEqual(['198.51.100.2/24']);
    expect((await feltAllocations(data)).map((a) => [a.network, a.ip, a.containerId])).toEqual([['copied', '198.51.100.2', 'c1']]);
    const del = await hidden(host, SOURCE, [join(bin, 'bridge')], cniEnv('DEL', bin, pod, 'c1'), config);
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(await feltAllocations(data)).toEqual([]);
    expect((await addrs(pod))['eth0']).toBeUndefined();
  });

  it('--with-node copies node too: the plugins run with the system node hidden as well', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const r = await install(bin, join(d, 'net.d'), '--with-node', '--no-conf');
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(d, 'net.d'))).toBe(false);
    const [hash] = supportDirs(bin);
    const node = join(bin, SUPPORT_DIR, hash!, 'node');
    expect(lstatSync(node).mode & 0o777).toBe(0o755);
    expect(readFileSync(join(bin, SUPPORT_DIR, 'bridge'), 'utf8').split('\n')[0]).toMatch(new RegExp(` ${node.replace(/[.]/g, '\\.')}$`));
    const host = await sb.ns();
    const pod = await sb.ns();
    const hide = [...SOURCE, realpathSync(process.execPath)];
    const config = JSON.stringify({ cniVersion: '1.0.0', name: 'lo', type: 'loopback' });
    const add = await hidden(host, hide, [join(bin, 'loopback')], cniEnv('ADD', bin, pod, 'c1'), config);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(JSON.parse(add.stdout).ips.map((i: { address: string }) => i.address)).toContain('127.0.0.1/8');
    // The store too (better-sqlite3 loaded by the copied node from the support directory).
    const data = join(d, 'data');
    const hl = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'n',
      type: 'x',
      ipam: { type: 'host-local', dataDir: data, ranges: [[{ subnet: '198.51.100.0/28' }]] },
    });
    const ipam = await hidden(host, hide, [join(bin, 'host-local')], cniEnv('ADD', bin, pod, 'c2'), hl);
    expect(ipam.code, ipam.stdout + ipam.stderr).toBe(0);
    expect((await feltAllocations(data)).map((a) => a.ip)).toEqual(['198.51.100.2']);
  });

  it('leaves a foreign plugin and a different conflist alone (exit 3) unless --force', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const conf = join(d, 'net.d');
    mkdirSync(bin, { recursive: true });
    mkdirSync(conf, { recursive: true });
    writeFileSync(join(bin, 'bridge'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(conf, '10-flannel.conflist'), '{"name":"mine"}\n');
    const r = await install(bin, conf);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`left ${join(bin, 'bridge')} alone`);
    expect(r.stderr).toContain(`left ${join(conf, '10-flannel.conflist')} alone`);
    expect(readFileSync(join(bin, 'bridge'), 'utf8')).toBe('#!/bin/sh\n');
    expect(readFileSync(join(conf, '10-flannel.conflist'), 'utf8')).toBe('{"name":"mine"}\n');
    expect(existsSync(join(bin, 'portmap'))).toBe(true);
    const forced = await install(bin, conf, '--force');
    expect(forced.code, forced.stderr).toBe(0);
    expect(readFileSync(join(bin, 'bridge')).equals(readFileSync(join(FELT_CNI, 'bridge')))).toBe(true);
    expect(JSON.parse(readFileSync(join(conf, '10-flannel.conflist'), 'utf8'))).toEqual(FLANNEL_CONFLIST);
  });

  it("a foreign host-local left next to felt's bridge is executed, not run as felt's in-process", async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'host-local'), readFileSync(join(REF_CNI, 'host-local')), { mode: 0o755 });
    expect((await install(bin, join(d, 'net.d'), '--no-conf')).code).toBe(3);
    const host = await sb.ns();
    const pod = await sb.ns();
    const data = join(d, 'data');
    const config = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'mixed',
      type: 'bridge',
      bridge: 'felt-ic1',
      ipam: { type: 'host-local', dataDir: data, ranges: [[{ subnet: '198.51.100.0/24' }]] },
    });
    const add = await hidden(host, SOURCE, [join(bin, 'bridge')], cniEnv('ADD', bin, pod, 'c1'), config);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    // The reference host-local's files, not felt's log.
    expect(refAllocations(data, 'mixed')).toEqual(['198.51.100.2']);
    expect(await feltAllocations(data)).toEqual([]);
    const del = await hidden(host, SOURCE, [join(bin, 'bridge')], cniEnv('DEL', bin, pod, 'c1'), config);
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(refAllocations(data, 'mixed')).toEqual([]);
  });

  it('replaces an older install: links become copies, an unused support directory goes', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    mkdirSync(join(bin, SUPPORT_DIR, '0123456789ab'), { recursive: true });
    symlinkSync(join(FELT_CNI, 'bridge'), join(bin, 'bridge'));
    // An install from before the forwarders: the bundle itself stood at <bin>/<type>.
    writeFileSync(join(bin, 'ptp'), readFileSync(join(FELT_CNI, SUPPORT_DIR, 'ptp')), { mode: 0o755 });
    const r = await install(bin, join(d, 'net.d'));
    expect(r.code, r.stderr).toBe(0);
    expect(lstatSync(join(bin, 'bridge')).isFile()).toBe(true);
    expect(readFileSync(join(bin, 'ptp')).equals(readFileSync(join(FELT_CNI, 'ptp')))).toBe(true);
    expect(supportDirs(bin)).toHaveLength(1);
    expect(supportDirs(bin)).not.toContain('0123456789ab');
  });

  it('never writes through a link planted where it writes: a bundle link is replaced, a .felt link is refused', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const victim = join(d, 'victim');
    writeFileSync(victim, 'precious\n');
    mkdirSync(join(bin, SUPPORT_DIR), { recursive: true });
    symlinkSync(victim, join(bin, SUPPORT_DIR, 'bridge'));
    const r = await install(bin, join(d, 'net.d'), '--no-conf');
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(lstatSync(join(bin, SUPPORT_DIR, 'bridge')).isFile()).toBe(true);
    const bin2 = join(d, 'bin2');
    const elsewhere = join(d, 'elsewhere');
    mkdirSync(elsewhere);
    mkdirSync(bin2);
    symlinkSync(elsewhere, join(bin2, SUPPORT_DIR));
    const r2 = await install(bin2, join(d, 'net2.d'), '--no-conf');
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain(`${join(bin2, SUPPORT_DIR)} is a symbolic link`);
    expect(readdirSync(elsewhere)).toEqual([]);
  });

  it('--conflist installs that conflist; one that does not parse is refused naming the option and the field, nothing changed', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const conf = join(d, 'net.d');
    const mine = join(d, 'mine.conflist');
    const text = JSON.stringify(
      { cniVersion: '1.0.0', name: 'cbr0', plugins: [{ type: 'flannel' }, { type: 'portmap', capabilities: { portMappings: true } }] },
      null,
      2,
    );
    writeFileSync(mine, text);
    const r = await install(bin, conf, '--conflist', mine);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(conf, '10-flannel.conflist'), 'utf8')).toBe(`${text}\n`);
    const bad = join(d, 'bad.conflist');
    writeFileSync(bad, JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', plugins: [{ delegate: {} }] }));
    const b = await install(join(d, 'bin2'), join(d, 'net2.d'), '--conflist', bad);
    expect(b.code).toBe(1);
    expect(b.stderr).toContain(`--conflist: ${bad}: plugins[0].type`);
    expect(existsSync(join(d, 'bin2'))).toBe(false);
    expect(existsSync(join(d, 'net2.d'))).toBe(false);
    const missing = await install(join(d, 'bin2'), join(d, 'net2.d'), `--conflist=${join(d, 'nope')}`);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`--conflist: cannot read ${join(d, 'nope')}: ENOENT`);
  });

  it('a .felt planted as a symbolic link (or one of its support directories) is refused, named, and nothing is written through it', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const elsewhere = join(d, 'elsewhere');
    mkdirSync(bin);
    mkdirSync(elsewhere);
    symlinkSync(elsewhere, join(bin, SUPPORT_DIR));
    const r = await install(bin, join(d, 'net.d'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${join(bin, SUPPORT_DIR)} is a symbolic link`);
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(readdirSync(bin)).toEqual([SUPPORT_DIR]);
    // The same for a support directory of the hash this felt would install: its node_modules would be run.
    const bin2 = join(d, 'bin2');
    expect((await install(bin2, join(d, 'net2.d'))).code).toBe(0);
    const hash = supportDirs(bin2)[0]!;
    const bin3 = join(d, 'bin3');
    mkdirSync(join(bin3, SUPPORT_DIR), { recursive: true });
    symlinkSync(elsewhere, join(bin3, SUPPORT_DIR, hash));
    const r3 = await install(bin3, join(d, 'net3.d'));
    expect(r3.code).toBe(1);
    expect(r3.stderr).toContain(`${join(bin3, SUPPORT_DIR, hash)} is a symbolic link`);
    expect(readdirSync(bin3)).toEqual([SUPPORT_DIR]);
    expect(readdirSync(elsewhere)).toEqual([]);
  });

  it.each(['../../bin/sh', '/bin/sh', '..', 'a\\b'])(
    '--conflist naming plugin type %j is refused, naming the field, nothing changed',
    async (type) => {
      const d = sb.dir();
      const bad = join(d, 'bad.conflist');
      writeFileSync(bad, JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', plugins: [{ type: 'flannel' }, { type }] }));
      const r = await install(join(d, 'bin'), join(d, 'net.d'), '--conflist', bad);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`--conflist: ${bad}: plugins[1].type: ${JSON.stringify(type)}`);
      expect(existsSync(join(d, 'bin'))).toBe(false);
      expect(existsSync(join(d, 'net.d'))).toBe(false);
    },
  );

  it('refuses a bin dir that cannot stand in a #! line, naming the option, and changes nothing', async () => {
    const d = sb.dir();
    const bin = join(d, 'my bin');
    const r = await install(bin, join(d, 'net.d'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--cni-bin-dir');
    expect(existsSync(bin)).toBe(false);
    expect(existsSync(join(d, 'net.d'))).toBe(false);
    const long = join(d, 'x'.repeat(100), 'y'.repeat(50));
    const r2 = await install(long, join(d, 'net.d'));
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/--cni-bin-dir: .* is too long for a #! line/);
    expect(existsSync(join(d, 'x'.repeat(100)))).toBe(false);
  });
});
