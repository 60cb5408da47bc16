// A cluster of felt nodes on one machine, in throwaway network namespaces:
//
//   <id>-u   the underlay: a bridge (198.51.100.1/24, and 2001:db8::1/64 with IPv6), and etcd when asked for
//   <id>-n1..nN  nodes: eth0 = 198.51.100.1x/24 (IPv4) and 2001:db8::1x/64 (IPv6; nodad, so usable at once)
//            on the underlay bridge, default routes via the bridge; each runs dist/bin/feltd
//   <id>-n1-p1.. pods: attached inside their node's namespace through dist/cni/flannel
//
// Used by the multi-node tests and by the demo. Everything is removed by `destroy()`, which also runs on
// failure of `create()`.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FELT_CNI, ROOT, runCni } from './cni.ts';
import { eventually } from './eventually.ts';

export interface ClusterOptions {
  readonly nodes: number;
  readonly backend?: 'vxlan' | 'host-gw';
  readonly store?: 'embedded' | 'etcd';
  readonly network?: string;
  readonly ipMasq?: boolean;
  readonly resyncSeconds?: number;
  readonly extraNetConf?: Record<string, unknown>;
  /** The families of the network config and the underlay (default ipv4): dual stack, or IPv6 only (EnableIPv4 false, no IPv4 on the nodes). */
  readonly families?: 'ipv4' | 'dual' | 'ipv6';
  /**
   * Who serves the pods' CNI calls: the test run's mode (default: standalone, or the daemon project's feltd), or
   * `node`: each node's own feltd on its socket (`<node dir>/cni.sock`), as on a real node with feltd running.
   */
  readonly cni?: 'mode' | 'node';
}

/** The pod network's IPv6 half in the clusters with IPv6. */
export const IPV6_NETWORK = 'fd00:10:244::/56';

export interface Node {
  readonly name: string;
  readonly ns: string;
  /** The node's underlay IPv4 address ('' for an IPv6-only node) and IPv6 address ('' without IPv6). */
  readonly ip: string;
  readonly ip6: string;
  readonly dir: string;
  readonly subnetFile: string;
  proc?: ChildProcess;
  readonly logFile: string;
}

export interface Pod {
  readonly node: Node;
  readonly ns: string;
  readonly id: string;
  /** The pod's first address, and all of them (one per family), without prefix. */
  ip: string;
  ips: string[];
}

const sh = (argv: string[]): string => execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const trySh = (argv: string[]): void => {
  try {
    sh(argv);
  } catch {
    /* already gone */
  }
};
/** SIGTERM, then SIGKILL if the process has not exited after 5 s; resolves once it has exited. */
async function terminate(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

let counter = 0;

export class Cluster {
  readonly id = `fc${process.pid % 100000}${counter++}`;
  readonly underlay = `${this.id}-u`;
  readonly dir = mkdtempSync(join(tmpdir(), 'felt-cluster-'));
  readonly nodes: Node[] = [];
  readonly pods: Pod[] = [];
  etcd?: ChildProcess;
  etcdEndpoint?: string;
  private namespaces: string[] = [];

  constructor(readonly opts: ClusterOptions) {}

  get v4(): boolean {
    return (this.opts.families ?? 'ipv4') !== 'ipv6';
  }

  get v6(): boolean {
    return (this.opts.families ?? 'ipv4') !== 'ipv4';
  }

  netConf(): Record<string, unknown> {
    return {
      ...(this.v4 ? { Network: this.opts.network ?? '10.244.0.0/16' } : { EnableIPv4: false }),
      ...(this.v6 ? { EnableIPv6: true, IPv6Network: IPV6_NETWORK } : {}),
      Backend: { Type: this.opts.backend ?? 'vxlan' },
      ...(this.opts.extraNetConf ?? {}),
    };
  }

  private addNs(name: string): void {
    sh(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    sh(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  }

  async create(): Promise<this> {
    try {
      this.addNs(this.underlay);
      sh(['ip', '-n', this.underlay, 'link', 'add', 'br0', 'type', 'bridge']);
      sh(['ip', '-n', this.underlay, 'addr', 'add', '198.51.100.1/24', 'dev', 'br0']);
      if (this.v6) sh(['ip', '-n', this.underlay, 'addr', 'add', '2001:db8::1/64', 'dev', 'br0', 'nodad']);
      sh(['ip', '-n', this.underlay, 'link', 'set', 'br0', 'up']);
      writeFileSync(join(this.dir, 'net-conf.json'), JSON.stringify(this.netConf()));
      if (this.opts.store === 'etcd') await this.startEtcd();
      for (let i = 1; i <= this.opts.nodes; i++) {
        const name = `n${i}`;
        const ns = `${this.id}-${name}`;
        this.addNs(ns);
        const ip = this.v4 ? `198.51.100.${10 + i}` : '';
        const ip6 = this.v6 ? `2001:db8::${10 + i}` : '';
        sh(['ip', '-n', this.underlay, 'link', 'add', `u${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        sh(['ip', '-n', this.underlay, 'link', 'set', `u${i}`, 'master', 'br0', 'up']);
        if (ip) sh(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
        if (ip6) sh(['ip', '-n', ns, 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad']);
        sh(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
        if (ip) sh(['ip', '-n', ns, 'route', 'add', 'default', 'via', '198.51.100.1']);
        if (ip6) sh(['ip', '-n', ns, '-6', 'route', 'add', 'default', 'via', '2001:db8::1']);
        const dir = join(this.dir, name);
        mkdirSync(dir, { recursive: true });
        this.nodes.push({ name, ns, ip, ip6, dir, subnetFile: join(dir, 'subnet.env'), logFile: join(dir, 'feltd.log') });
      }
      return this;
    } catch (e) {
      this.destroy();
      throw e;
    }
  }

  private async startEtcd(): Promise<void> {
    const data = join(this.dir, 'etcd');
    // IPv6-only nodes reach etcd over IPv6.
    this.etcdEndpoint = this.v4 ? 'http://198.51.100.1:2379' : 'http://[2001:db8::1]:2379';
    this.etcd = spawn(
      'ip',
      [
        'netns',
        'exec',
        this.underlay,
        'etcd',
        '--name',
        'felt',
        '--data-dir',
        data,
        '--listen-client-urls',
        this.v4 ? this.etcdEndpoint : `http://198.51.100.1:2379,${this.etcdEndpoint}`,
        '--advertise-client-urls',
        this.etcdEndpoint,
        '--listen-peer-urls',
        'http://127.0.0.1:2380',
        '--initial-advertise-peer-urls',
        'http://127.0.0.1:2380',
        '--initial-cluster',
        'felt=http://127.0.0.1:2380',
      ],
      { stdio: ['ignore', openSync(join(this.dir, 'etcd.log'), 'a'), openSync(join(this.dir, 'etcd.log'), 'a')] },
    );
    await eventually(() => sh(['ip', 'netns', 'exec', this.underlay, 'etcdctl', '--endpoints', this.etcdEndpoint!, 'endpoint', 'health']), {
      what: `etcd healthy at ${this.etcdEndpoint} (log: ${join(this.dir, 'etcd.log')})`,
      timeoutMs: 20_000,
    });
    sh([
      'ip',
      'netns',
      'exec',
      this.underlay,
      'etcdctl',
      '--endpoints',
      this.etcdEndpoint,
      'put',
      '/coreos.com/network/config',
      JSON.stringify(this.netConf()),
    ]);
  }

  /** Stop etcd; resolves once it has exited (SIGKILL after 5 s). */
  stopEtcd(): Promise<void> {
    const p = this.etcd;
    this.etcd = undefined;
    return p ? terminate(p) : Promise.resolve();
  }

  async restartEtcd(): Promise<void> {
    await this.startEtcd();
  }

  etcdctl(...args: string[]): string {
    return sh(['ip', 'netns', 'exec', this.underlay, 'etcdctl', '--endpoints', this.etcdEndpoint!, ...args]);
  }

  /** Where a node's feltd serves CNI calls. */
  cniSocket(node: Node): string {
    return join(node.dir, 'cni.sock');
  }

  feltdArgs(node: Node): string[] {
    const common = [
      '--iface',
      'eth0',
      '--subnet-file',
      node.subnetFile,
      '--state-dir',
      join(node.dir, 'state'),
      '--cni-socket',
      this.cniSocket(node),
      '--iptables-resync',
      String(this.opts.resyncSeconds ?? 1),
      ...(this.opts.ipMasq === false ? [] : ['--ip-masq']),
    ];
    return this.opts.store === 'etcd'
      ? [...common, '--etcd-endpoints', this.etcdEndpoint!]
      : [...common, '--net-config-path', join(this.dir, 'net-conf.json'), '--store', `sqlite:${join(this.dir, 'leases.db')}`];
  }

  startFeltd(node: Node): void {
    const out = openSync(node.logFile, 'a');
    node.proc = spawn('ip', ['netns', 'exec', node.ns, join(ROOT, 'dist/bin/feltd'), ...this.feltdArgs(node)], {
      stdio: ['ignore', out, out],
    });
  }

  /** Stop a node's feltd; resolves once it has exited (SIGKILL after 5 s). */
  async stopFeltd(node: Node): Promise<void> {
    const p = node.proc;
    node.proc = undefined;
    if (p) await terminate(p);
  }

  /** Where a node's log ends now, for `loggedSince`. */
  logMark(node: Node): number {
    return existsSync(node.logFile) ? statSync(node.logFile).size : 0;
  }

  /** Whether a node's log, after `mark`, has a line containing `text`. */
  loggedSince(node: Node, mark: number, text: string): boolean {
    return existsSync(node.logFile) && readFileSync(node.logFile).subarray(mark).toString().includes(text);
  }

  /** Wait until every running node has written subnet.env. */
  async waitReady(nodes: readonly Node[] = this.nodes, timeoutMs = 20000): Promise<void> {
    const check = (): void => {
      if (!nodes.every((n) => existsSync(n.subnetFile))) throw new Error(`a subnet.env is missing; logs:\n${this.logs()}`);
    };
    await eventually(check, { what: 'every node wrote its subnet.env', timeoutMs });
  }

  subnetOf(node: Node): string {
    const m = /FLANNEL_SUBNET=(\S+)/.exec(readFileSync(node.subnetFile, 'utf8'));
    return m![1]!;
  }

  async addPod(node: Node): Promise<Pod> {
    const id = `${node.name}p${this.pods.filter((p) => p.node === node).length + 1}`;
    const ns = `${this.id}-${id}`;
    this.addNs(ns);
    const r = await runCni({
      dir: FELT_CNI,
      type: 'flannel',
      command: 'ADD',
      hostNs: node.ns,
      containerId: id,
      netns: `/var/run/netns/${ns}`,
      ifname: 'eth0',
      config: this.podConf(node),
      ...(this.opts.cni === 'node' ? { env: { FELT_CNI_SOCKET: this.cniSocket(node) } } : {}),
    });
    if (r.code !== 0) throw new Error(`ADD ${id} failed: ${r.stdout} ${r.stderr}`);
    const ips = (r.json.ips as { address: string }[]).map((x) => String(x.address).split('/')[0]!);
    const pod: Pod = { node, ns, id, ip: ips[0]!, ips };
    this.pods.push(pod);
    return pod;
  }

  podConf(node: Node): Record<string, unknown> {
    return {
      cniVersion: '1.0.0',
      name: 'cbr0',
      type: 'flannel',
      subnetFile: node.subnetFile,
      dataDir: join(node.dir, 'cni-flannel'),
      ipam: { dataDir: join(node.dir, 'ipam') },
      delegate: { hairpinMode: true, isDefaultGateway: true },
    };
  }

  ping(from: Pod, to: string, count = 1): boolean {
    try {
      sh(['ip', 'netns', 'exec', from.ns, 'ping', ...(to.includes(':') ? ['-6'] : []), '-c', String(count), '-W', '2', '-q', to]);
      return true;
    } catch {
      return false;
    }
  }

  /** Every pod to every pod on another node, at every address it has (every family): the failures, as "a -> b". */
  pingMatrix(): string[] {
    const bad: string[] = [];
    for (const a of this.pods) {
      for (const b of this.pods) {
        if (a.node === b.node) continue;
        for (const ip of b.ips) if (!this.ping(a, ip)) bad.push(`${a.id} -> ${b.id} (${ip})`);
      }
    }
    return bad;
  }

  inNode(node: Node, ...argv: string[]): string {
    return sh(['ip', 'netns', 'exec', node.ns, ...argv]);
  }

  logs(): string {
    return this.nodes
      .map((n) => `--- ${n.name}\n${existsSync(n.logFile) ? readFileSync(n.logFile, 'utf8').split('\n').slice(-15).join('\n') : ''}`)
      .join('\n');
  }

  destroy(): void {
    for (const n of this.nodes) n.proc?.kill('SIGKILL');
    this.etcd?.kill('SIGKILL');
    this.etcd = undefined;
    for (const ns of [...this.namespaces].reverse()) trySh(['ip', 'netns', 'del', ns]);
    this.namespaces = [];
    rmSync(this.dir, { recursive: true, force: true });
  }
}
