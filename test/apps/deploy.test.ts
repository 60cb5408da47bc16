// docs/deploy/: the systemd units pass `systemd-analyze verify` (a copy whose /opt/felt paths point at this
// checkout, so the ExecStart executables exist) and their commands parse; the Kubernetes manifest is valid
// YAML with what kube-flannel.yml has (Namespace, ServiceAccount, ConfigMap with cni-conf.json and
// net-conf.json, a DaemonSet on the host network whose init container runs felt install-cni with the CNI
// directories mounted and whose feltd uses the etcd store), its conflist and net-conf.json parse with felt's
// own parsers, and the init container's exact command installs into temp directories; the Containerfile
// copies what exists and puts felt where the manifest runs it.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { FLANNEL_CONFLIST } from '../../apps/felt/commands/install-cni.ts';
import { parseFlags } from '../../apps/feltd/flags.ts';
import { parseConfList } from '../../core/cni/conflist.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { FELT_CNI, ROOT } from '../support/cni.ts';
import { startEtcd } from '../support/etcd.ts';
import { exec, Sandbox } from '../support/ns.ts';
import { execFile } from '../support/netns.ts';

const DEPLOY = join(ROOT, 'docs', 'deploy');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const sb = new Sandbox();
afterAll(() => sb.cleanup());

const systemdAnalyze = (() => {
  try {
    execFileSync('systemd-analyze', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** The value of `Key=` lines in a unit's text (all of them, in order). */
const directives = (unit: string, key: string): string[] =>
  unit
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));

describe('systemd units', () => {
  const units = readdirSync(DEPLOY)
    .filter((f) => f.endsWith('.service'))
    .sort();

  it('there is one for feltd and one for felt dhcp-daemon, each running the built executables from /opt/felt', () => {
    expect(units).toEqual(['felt-dhcp-daemon.service', 'feltd.service']);
    const feltd = readFileSync(join(DEPLOY, 'feltd.service'), 'utf8');
    expect(directives(feltd, 'ExecStart')).toEqual(['/opt/felt/dist/bin/feltd --cni-socket=/run/felt/cni.sock $FELTD_OPTS']);
    // The CNI socket's directory: made by systemd, kept across restarts (a stale socket is replaced at start).
    expect(directives(feltd, 'RuntimeDirectory')).toEqual(['felt']);
    expect(parseFlags(['--cni-socket=/run/felt/cni.sock'])).toMatchObject({ flags: { cniSocket: '/run/felt/cni.sock', cniOnly: false } });
    const dhcp = readFileSync(join(DEPLOY, 'felt-dhcp-daemon.service'), 'utf8');
    expect(directives(dhcp, 'ExecStart')).toEqual(['/opt/felt/dist/bin/felt dhcp-daemon $FELT_DHCP_OPTS']);
    // The default and the documented options are flags feltd takes.
    for (const env of directives(feltd, 'Environment')) {
      const opts = env
        .replace(/^FELTD_OPTS=/, '')
        .split(/\s+/)
        .filter(Boolean);
      expect(parseFlags(opts), env).toHaveProperty('flags');
    }
    // The examples in the unit's comment and in docs/deploy/README.md are flags feltd takes.
    const readme = readFileSync(join(DEPLOY, 'README.md'), 'utf8');
    for (const text of [feltd, readme]) {
      const example = /FELTD_OPTS=([^'\n]*)'/.exec(text)?.[1];
      expect(example).toBeDefined();
      const parsed = parseFlags(example!.split(' '));
      expect(parsed, example).toHaveProperty('flags');
      expect(parsed).toMatchObject({ flags: { ipMasq: true, etcdEndpoints: ['https://10.0.0.1:2379'] } });
    }
  });

  if (!systemdAnalyze) console.warn('deploy.test.ts: skipping systemd-analyze verify: systemd-analyze is not installed here');
  it.skipIf(!systemdAnalyze).each(['feltd.service', 'felt-dhcp-daemon.service'])('%s passes systemd-analyze verify', async (unit) => {
    const d = sb.dir();
    const text = readFileSync(join(DEPLOY, unit), 'utf8');
    const copy = join(d, unit);
    writeFileSync(copy, text.replaceAll('/opt/felt/', `${ROOT}/`));
    const exe = directives(readFileSync(copy, 'utf8'), 'ExecStart')[0]!.split(' ')[0]!;
    expect(existsSync(exe), exe).toBe(true);
    const r = await exec(['systemd-analyze', 'verify', copy]);
    expect(r.code, r.stderr).toBe(0);
    // verify exits 0 on a directive it ignores; it says so on stderr, naming the file.
    expect(r.stderr.split('\n').filter((l) => l.includes(unit))).toEqual([]);
    // The control: the same check flags a broken copy.
    const broken = join(d, `broken-${unit}`);
    writeFileSync(broken, text.replaceAll('/opt/felt/', `${ROOT}/`).replace('Restart=on-failure', 'Restart=sometimes'));
    const b = await exec(['systemd-analyze', 'verify', broken]);
    expect(b.stderr).toContain(`broken-${unit}`);
    expect(b.stderr).toMatch(/restart specifier/);
  });

  it('the commands they start run: feltd --version, felt dhcp-daemon --help', async () => {
    const v = await exec([join(ROOT, 'dist/bin/feltd'), '--version']);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout + v.stderr).toContain(VERSION);
    const h = await exec([join(ROOT, 'dist/bin/felt'), 'dhcp-daemon', '--help']);
    expect(h.code, h.stderr).toBe(0);
    expect(h.stdout + h.stderr).toContain('--socket-path');
  });
});

// ------------------------------------------------------------------------------------------- Kubernetes

type Obj = Record<string, any>;
const docs = parseAllDocuments(readFileSync(join(DEPLOY, 'kube-felt.yml'), 'utf8'));
const objs = docs.map((d) => d.toJS() as Obj).filter((o) => o !== null);
const byKind = (kind: string): Obj[] => objs.filter((o) => o['kind'] === kind);

describe('kube-felt.yml', () => {
  it('is valid YAML: every document has apiVersion, kind and metadata.name', () => {
    for (const d of docs) expect(d.errors, String(d.errors[0])).toEqual([]);
    expect(objs.length).toBeGreaterThanOrEqual(4);
    for (const o of objs) {
      expect(typeof o['apiVersion'], JSON.stringify(o).slice(0, 80)).toBe('string');
      expect(typeof o['kind']).toBe('string');
      expect(typeof o['metadata']?.name).toBe('string');
    }
    expect(objs.map((o) => o['kind'])).toEqual(['Namespace', 'ServiceAccount', 'ConfigMap', 'DaemonSet']);
    const ns = byKind('Namespace')[0]!.metadata.name;
    for (const o of objs.filter((x) => x['kind'] !== 'Namespace')) expect(o['metadata'].namespace).toBe(ns);
    expect(byKind('DaemonSet')[0]!.apiVersion).toBe('apps/v1');
  });

  const ds = byKind('DaemonSet')[0]!;
  const pod = ds['spec'].template.spec as Obj;
  const cm = byKind('ConfigMap')[0]!;
  const volumes = new Map<string, Obj>((pod['volumes'] as Obj[]).map((v) => [v['name'], v]));
  /** The volume mounted at `path` in container `c`. */
  const mountAt = (c: Obj, path: string): Obj | undefined => {
    const m = (c['volumeMounts'] as Obj[]).find((x) => x['mountPath'].replace(/\/$/, '') === path.replace(/\/$/, ''));
    return m ? volumes.get(m['name']) : undefined;
  };
  const argOf = (args: readonly string[], name: string): string | undefined =>
    args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);

  it('the DaemonSet runs on every Linux node on the host network, its selector matching its pods', () => {
    expect(pod['hostNetwork']).toBe(true);
    expect(pod['priorityClassName']).toBe('system-node-critical');
    expect(pod['tolerations']).toContainEqual({ operator: 'Exists', effect: 'NoSchedule' });
    const labels = ds['spec'].template.metadata.labels;
    for (const [k, v] of Object.entries(ds['spec'].selector.matchLabels)) expect(labels[k]).toBe(v);
    expect(byKind('ServiceAccount').map((s) => s['metadata'].name)).toContain(pod['serviceAccountName']);
    // Every mount names a volume, every container runs the documented image.
    const all = [...(pod['initContainers'] as Obj[]), ...(pod['containers'] as Obj[])];
    for (const c of all) {
      expect(c['image']).toBe(`felt:${VERSION}`);
      for (const m of c['volumeMounts'] as Obj[]) expect(volumes.has(m['name']), m['name']).toBe(true);
    }
  });

  it('the install-cni init container runs felt install-cni with the CNI directories and the ConfigMap mounted', () => {
    const ic = (pod['initContainers'] as Obj[]).find((c) => c['name'] === 'install-cni')!;
    expect(ic).toBeDefined();
    expect(ic['command']).toEqual(['/opt/felt/dist/bin/felt']);
    const args = ic['args'] as string[];
    expect(args[0]).toBe('install-cni');
    expect(args).toContain('--with-node');
    expect(mountAt(ic, argOf(args, 'cni-bin-dir')!)?.['hostPath']?.path).toBe('/opt/cni/bin');
    expect(mountAt(ic, argOf(args, 'cni-conf-dir')!)?.['hostPath']?.path).toBe('/etc/cni/net.d');
    const conflist = argOf(args, 'conflist')!;
    expect(mountAt(ic, dirname(conflist))?.['configMap']?.name).toBe(cm['metadata'].name);
    expect(Object.keys(cm['data'])).toContain(basename(conflist));
  });

  it("the init container's command installs into temp directories standing for the mounts", async () => {
    const ic = (pod['initContainers'] as Obj[]).find((c) => c['name'] === 'install-cni')!;
    const d = sb.dir();
    const at = (p: string): string => join(d, p);
    const args = (ic['args'] as string[]).map((a) => a.replace(/^(--[\w-]+=)\//, `$1${d}/`));
    const conflist = argOf(args, 'conflist')!;
    mkdirSync(dirname(conflist), { recursive: true });
    writeFileSync(conflist, cm['data'][basename(conflist)]);
    const r = await exec([join(ROOT, 'dist/bin/felt'), ...args]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(at('etc/cni/net.d'), '10-flannel.conflist'), 'utf8')).toBe(cm['data']['cni-conf.json']);
    const types = readdirSync(FELT_CNI).filter((t) => !t.startsWith('.'));
    for (const type of types) expect(existsSync(join(at('opt/cni/bin'), type)), type).toBe(true);
    // One support directory, and each forwarder's bundle.
    expect(readdirSync(join(at('opt/cni/bin'), '.felt')).filter((f) => /^[0-9a-f]{12}$/.test(f))).toHaveLength(1);
    expect(
      readdirSync(join(at('opt/cni/bin'), '.felt'))
        .filter((f) => !/^[0-9a-f]{12}$/.test(f))
        .sort(),
    ).toEqual(types.sort());
  });

  it("the ConfigMap's cni-conf.json is flannel's conflist and parses with felt's parser; net-conf.json with feltd's", () => {
    const text = cm['data']['cni-conf.json'] as string;
    expect(JSON.parse(text)).toEqual(FLANNEL_CONFLIST);
    const list = parseConfList(text, true);
    expect(E.isRight(list) ? list.right.plugins.map((p) => p['type']) : list.left).toEqual(['flannel', 'portmap']);
    const net = parseNetConfig(cm['data']['net-conf.json']);
    expect(E.isRight(net) ? net.right.config : net.left).toMatchObject({ backend: { type: 'vxlan' } });
  });

  it('feltd uses the etcd store with TLS from the Secret, masquerades, and mounts /run/flannel and the xtables lock', () => {
    const c = (pod['containers'] as Obj[]).find((x) => x['name'] === 'feltd')!;
    expect(c['command']).toEqual(['/opt/felt/dist/bin/feltd']);
    // $(VAR) as the kubelet expands it, from the container's env (ConfigMap keys).
    const env = new Map<string, string>(
      (c['env'] as Obj[])
        .filter((e) => e['valueFrom']?.configMapKeyRef)
        .map((e) => [e['name'], cm['data'][e['valueFrom'].configMapKeyRef.key]]),
    );
    const args = (c['args'] as string[]).map((a) => a.replace(/\$\((\w+)\)/g, (_, v: string) => env.get(v) ?? `$(${v})`));
    const parsed = parseFlags(args);
    expect(parsed, JSON.stringify(parsed)).toHaveProperty('flags');
    const flags = (parsed as { flags: ReturnType<typeof parseFlags> extends infer T ? (T extends { flags: infer F } ? F : never) : never })
      .flags;
    expect(flags.etcdEndpoints).toEqual(cm['data']['etcd-endpoints'].split(','));
    expect(flags.ipMasq).toBe(true);
    for (const f of [flags.etcdCafile, flags.etcdCertfile, flags.etcdKeyfile]) {
      expect(f).toBeDefined();
      expect(mountAt(c, dirname(f!))?.['secret']?.secretName, f).toBeDefined();
    }
    expect(mountAt(c, dirname(flags.subnetFile))?.['hostPath']?.path).toBe('/run/flannel');
    expect(mountAt(c, flags.stateDir)?.['hostPath']?.path).toBe('/var/lib/felt');
    expect(mountAt(c, '/run/xtables.lock')?.['hostPath']).toEqual({ path: '/run/xtables.lock', type: 'FileOrCreate' });
    expect(c['securityContext'].capabilities.add).toEqual(['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE']);
  });

  it('feltd serves CNI on /run/felt/cni.sock from the host, sees the callers (host PID namespace), their netns and the plugins', () => {
    const c = (pod['containers'] as Obj[]).find((x) => x['name'] === 'feltd')!;
    const parsed = parseFlags((c['args'] as string[]).filter((a) => !a.includes('$(')));
    expect(parsed).toHaveProperty('flags');
    const flags = (parsed as { flags: { cniSocket: string } }).flags;
    expect(flags.cniSocket).toBe('/run/felt/cni.sock');
    expect(mountAt(c, dirname(flags.cniSocket))?.['hostPath']).toEqual({ path: '/run/felt', type: 'DirectoryOrCreate' });
    expect(pod['hostPID']).toBe(true);
    const netns = (c['volumeMounts'] as Obj[]).find((m) => m['mountPath'] === '/run/netns')!;
    expect(netns['mountPropagation']).toBe('HostToContainer');
    expect(mountAt(c, '/run/netns')?.['hostPath']?.path).toBe('/run/netns');
    expect(mountAt(c, '/opt/cni/bin')?.['hostPath']?.path).toBe('/opt/cni/bin');
  });

  it('the net-config init container is a valid sh script writing net-conf.json to <prefix>/config', async () => {
    const nc = (pod['initContainers'] as Obj[]).find((c) => c['name'] === 'net-config')!;
    const [sh, flag, script] = nc['command'] as string[];
    expect([sh, flag]).toEqual(['/bin/sh', '-ec']);
    const r = await exec(['sh', '-n', '-c', script!]);
    expect(r.code, r.stderr).toBe(0);
    expect(script).toContain('${FELT_ETCD_PREFIX}/config');
    expect(mountAt(nc, '/etc/kube-felt')?.['configMap']?.name).toBe(cm['metadata'].name);
  });

  it('the net-config script writes net-conf.json to a real etcd once, and leaves a config that is there', async () => {
    const nc = (pod['initContainers'] as Obj[]).find((c) => c['name'] === 'net-config')!;
    const d = sb.dir();
    const netConf = join(d, 'net-conf.json');
    writeFileSync(netConf, cm['data']['net-conf.json']);
    // This etcd speaks plain http: the script without its TLS flags (as docs/deploy/README.md says to run it
    // without TLS), reading the ConfigMap file from where the test wrote it.
    const script = (nc['command'] as string[])[2]!
      .replace(/ --cacert=\S+ --cert=\S+ --key=\S+/, '')
      .replaceAll('/etc/kube-felt/net-conf.json', netConf);
    expect(script).not.toContain('--cacert');
    const etcd = await startEtcd();
    try {
      const env = {
        ...(process.env as Record<string, string>),
        ETCDCTL_API: '3',
        FELT_ETCD_ENDPOINTS: etcd.endpoint,
        FELT_ETCD_PREFIX: '/felt-deploy-test',
      };
      const first = await execFile(['sh', '-ec', script], { env });
      expect(first.code, first.stderr).toBe(0);
      const got = await etcd.etcdctl(['get', '--print-value-only', '/felt-deploy-test/config']);
      expect(got.stdout.trim()).toBe(cm['data']['net-conf.json'].trim());
      expect(E.isRight(parseNetConfig(got.stdout))).toBe(true);
      // A config already there (the cluster's own) is kept.
      const mine = '{"Network":"10.250.0.0/16","Backend":{"Type":"host-gw"}}';
      expect((await etcd.etcdctl(['put', '/felt-deploy-test/config', mine])).code).toBe(0);
      const again = await execFile(['sh', '-ec', script], { env });
      expect(again.code, again.stderr).toBe(0);
      expect((await etcd.etcdctl(['get', '--print-value-only', '/felt-deploy-test/config'])).stdout.trim()).toBe(mine);
    } finally {
      await etcd.stop();
    }
  });
});

describe('Containerfile', () => {
  const text = readFileSync(join(DEPLOY, 'Containerfile'), 'utf8');
  const lines = text.split('\n').filter((l) => l && !l.startsWith('#'));

  it('copies only what the repository has, builds dist/ and puts felt where the manifest runs it', () => {
    expect(lines.filter((l) => l.startsWith('FROM ')).length).toBe(2);
    for (const l of lines.filter((x) => x.startsWith('COPY ') && !x.includes('--from='))) {
      const srcs = l.split(/\s+/).slice(1, -1);
      for (const s of srcs) expect(existsSync(join(ROOT, s)), s).toBe(true);
    }
    expect(text).toContain('npm run --silent build');
    const workdir = lines
      .filter((l) => l.startsWith('WORKDIR '))
      .at(-1)!
      .split(' ')[1];
    expect(workdir).toBe('/opt/felt');
    expect(lines).toContain('COPY --from=build /src/dist dist');
    expect(lines).toContain('COPY --from=build /src/node_modules node_modules');
    // The tools felt runs, and etcdctl for the net-config init container.
    for (const pkg of ['iproute2', 'iptables', 'util-linux', 'conntrack', 'etcd-client']) expect(text).toContain(pkg);
  });
});
