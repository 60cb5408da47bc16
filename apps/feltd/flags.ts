// feltd's command line: flanneld's flags where they exist, plus felt's own (--state-dir, --store).

export interface Flags {
  readonly etcdEndpoints: readonly string[];
  readonly etcdPrefix: string;
  readonly etcdKeyfile?: string;
  readonly etcdCertfile?: string;
  readonly etcdCafile?: string;
  readonly iface: readonly string[];
  readonly ifaceRegex: readonly string[];
  readonly publicIP?: string;
  readonly publicIPv6?: string;
  readonly ipMasq: boolean;
  readonly subnetFile: string;
  /** Renew this long before the lease expires. */
  readonly renewMarginMinutes: number;
  /** Seconds between full resyncs of the dataplane. */
  readonly resyncSeconds: number;
  readonly healthzIP: string;
  /** 0: no health server. */
  readonly healthzPort: number;
  /** The status page (/, /status, /status.json, /events) on the health server; /metrics stays either way. */
  readonly statusPage: boolean;
  /** Where the CNI plugins' event log is (their dataDir): feltd reads bridge ADD durations from it. */
  readonly cniDataDir: string;
  /** Where feltd serves CNI calls (the forwarders' socket); '' serves none. */
  readonly cniSocket: string;
  /** Seconds a CNI client has, once connected, to send its whole request (then it is dropped). */
  readonly cniClientTimeout: number;
  /** Serve CNI only: no lease store, no underlay, no overlay. */
  readonly cniOnly: boolean;
  readonly netConfigPath: string;
  readonly stateDir: string;
  /** `sqlite:PATH` for the embedded lease store; default `<stateDir>/leases.db` without etcd. */
  readonly store?: string;
  readonly leaseTTLSeconds: number;
  readonly verbosity: number;
  readonly help: boolean;
  readonly version: boolean;
}

export const USAGE = `feltd: flannel-compatible node daemon

Usage: feltd [flags]

  --etcd-endpoints=URL[,URL]     etcd v3 endpoints (default: none, use the embedded store)
  --etcd-prefix=PATH             key prefix (default /coreos.com/network)
  --etcd-keyfile/--etcd-certfile/--etcd-cafile=PATH   TLS for etcd
  --iface=NAME|IP                underlay interface (repeatable; the first with an address of every enabled
                                 family wins); an IPv4 or IPv6 address also picks that address for its family
  --iface-regex=RE               underlay interface by address, then name, regex (repeatable)
  --public-ip=IP                 IPv4 address other nodes reach this node at (default: the interface's)
  --public-ipv6=IP               IPv6 address other nodes reach this node at (default: the interface's global one)
  --ip-masq                      masquerade traffic leaving the pod network (FLANNEL-POSTRTG)
  --subnet-file=PATH             where to write the lease (default /run/flannel/subnet.env)
  --subnet-lease-renew-margin=M  renew M minutes before expiry (default 60)
  --iptables-resync=S            seconds between dataplane resyncs (default 5)
  --healthz-ip=IP --healthz-port=N   /healthz, /readyz, /metrics (default 0.0.0.0, port 0 = off)
  --status-page=true|false       the read-only status page at / on the health port (default true)
  --cni-data-dir=PATH            the CNI plugins' dataDir, for felt_cni_add_duration_seconds (default the state dir)
  --cni-socket=PATH              serve felt's CNI plugins' calls on this unix socket (default /run/felt/cni.sock,
                                 mode 0600; empty: serve none, the plugins run in-process)
  --cni-client-timeout=S         drop a CNI client that has not sent its whole request S seconds after connecting (default 10)
  --cni-only                     only serve CNI (no lease store, no underlay, no overlay): a host that runs
                                 containers without flannel (podman, containerd)
  --net-config-path=PATH         net-conf.json for the embedded store (default /etc/kube-flannel/net-conf.json)
  --state-dir=PATH               felt's event log (default /var/lib/felt)
  --store=sqlite:PATH            embedded lease store (default <state-dir>/leases.db without etcd)
  --lease-ttl=S                  lease TTL in seconds (default 86400)
  -v=N                           log verbosity (0: changes and errors, 1: every reconcile)
  --version                      print the version and exit
`;

const listFlag = new Set(['iface', 'iface-regex', 'etcd-endpoints']);

const KNOWN = new Set([
  'etcd-endpoints',
  'etcd-prefix',
  'etcd-keyfile',
  'etcd-certfile',
  'etcd-cafile',
  'iface',
  'iface-regex',
  'public-ip',
  'public-ipv6',
  'ip-masq',
  'subnet-file',
  'subnet-lease-renew-margin',
  'iptables-resync',
  'healthz-ip',
  'healthz-port',
  'net-config-path',
  'state-dir',
  'store',
  'lease-ttl',
  'v',
  'help',
  'h',
  'version',
  'status-page',
  'cni-data-dir',
  'cni-socket',
  'cni-only',
  'cni-client-timeout',
]);
const BOOLS = new Set(['ip-masq', 'help', 'h', 'version', 'status-page', 'cni-only']);

export function parseFlags(argv: readonly string[]): { flags: Flags } | { error: string } {
  const raw = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--?([a-zA-Z][\w-]*)(?:=(.*))?$/.exec(a);
    if (!m) return { error: `unexpected argument ${JSON.stringify(a)}` };
    const name = m[1]!;
    // Before taking a value: `--bogus x` is an unknown flag, not a flag missing its value.
    if (!KNOWN.has(name)) return { error: `unknown flag: ${a.replace(/=.*$/, '')}` };
    let value = m[2];
    if (value === undefined) {
      if (BOOLS.has(name)) value = 'true';
      else {
        value = argv[++i];
        if (value === undefined) return { error: `--${name} needs a value` };
      }
    }
    const list = raw.get(name) ?? [];
    list.push(...(listFlag.has(name) && name === 'etcd-endpoints' ? value.split(',').filter(Boolean) : [value]));
    raw.set(name, list);
  }
  const one = (k: string): string | undefined => raw.get(k)?.at(-1);
  const num = (k: string, dflt: number, min: number): number | string => {
    const v = one(k);
    if (v === undefined) return dflt;
    const n = Number(v);
    return Number.isFinite(n) && n >= min ? n : `--${k}: ${JSON.stringify(v)} is not a number >= ${min}`;
  };
  const renew = num('subnet-lease-renew-margin', 60, 1);
  const resync = num('iptables-resync', 5, 0.1);
  const port = num('healthz-port', 0, 0);
  const ttl = num('lease-ttl', 86400, 5);
  const v = num('v', 0, 0);
  const cniClientTimeout = num('cni-client-timeout', 10, 0.1);
  for (const x of [renew, resync, port, ttl, v, cniClientTimeout]) if (typeof x === 'string') return { error: x };
  const store = one('store');
  if (store !== undefined && !store.startsWith('sqlite:')) return { error: `--store: ${JSON.stringify(store)} must be sqlite:PATH` };
  const bool = (k: string): boolean => ['true', '1', 'yes'].includes(one(k) ?? 'false');
  const statusPage = one('status-page') ?? 'true';
  if (!['true', '1', 'yes', 'false', '0', 'no'].includes(statusPage))
    return { error: `--status-page: ${JSON.stringify(statusPage)} is not true or false` };
  const stateDir = one('state-dir') ?? '/var/lib/felt';
  if (bool('cni-only') && one('cni-socket') === '')
    return { error: '--cni-only: serving CNI is all it does; --cni-socket must not be empty' };
  return {
    flags: {
      etcdEndpoints: raw.get('etcd-endpoints') ?? [],
      etcdPrefix: one('etcd-prefix') ?? '/coreos.com/network',
      ...(one('etcd-keyfile') ? { etcdKeyfile: one('etcd-keyfile')! } : {}),
      ...(one('etcd-certfile') ? { etcdCertfile: one('etcd-certfile')! } : {}),
      ...(one('etcd-cafile') ? { etcdCafile: one('etcd-cafile')! } : {}),
      iface: raw.get('iface') ?? [],
      ifaceRegex: raw.get('iface-regex') ?? [],
      ...(one('public-ip') ? { publicIP: one('public-ip')! } : {}),
      ...(one('public-ipv6') ? { publicIPv6: one('public-ipv6')! } : {}),
      ipMasq: bool('ip-masq'),
      subnetFile: one('subnet-file') ?? '/run/flannel/subnet.env',
      renewMarginMinutes: renew as number,
      resyncSeconds: resync as number,
      healthzIP: one('healthz-ip') ?? '0.0.0.0',
      healthzPort: port as number,
      statusPage: ['true', '1', 'yes'].includes(statusPage),
      cniDataDir: one('cni-data-dir') ?? stateDir,
      cniSocket: one('cni-socket') ?? '/run/felt/cni.sock',
      cniOnly: bool('cni-only'),
      cniClientTimeout: cniClientTimeout as number,
      netConfigPath: one('net-config-path') ?? '/etc/kube-flannel/net-conf.json',
      stateDir,
      ...(store ? { store } : {}),
      leaseTTLSeconds: ttl as number,
      verbosity: v as number,
      help: bool('help') || bool('h'),
      version: bool('version'),
    },
  };
}
