// feltd's node services composed: the node's event log (node-log.ts), the overlay reconciler (full and delta
// passes, overlay-reconciler.ts), the own lease's lifecycle and the lease store watch (lease-lifecycle.ts), and
// the metrics they report through (hooks.ts). Also reading the network config (etcd or net-conf.json).

import * as E from 'fp-ts/lib/Either.js';
import { readFileSync } from 'node:fs';
import type { EventStore } from '../../adapters/store/types.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';
import type { LeaseStore } from '../../adapters/lease/types.ts';
import { underlayIdentity, type Underlay } from '../../adapters/kernel/underlay.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import type { NetConfig } from '../../core/flannel/types.ts';
import type { NodeCommand } from '../../core/flannel/node.ts';
import type { Flags } from './flags.ts';
import { stableVtepMac } from './files.ts';
import { feltdHooks } from './hooks.ts';
import { startLeaseLifecycle } from './lease-lifecycle.ts';
import { openNodeLog } from './node-log.ts';
import type { Logger, Metrics } from './observability.ts';
import { startOverlayReconciler } from './overlay-reconciler.ts';
import type { DaemonView } from './status-page.ts';

export interface DaemonDeps {
  readonly flags: Flags;
  readonly underlay: Underlay;
  readonly leases: LeaseStore;
  readonly events: EventStore;
  readonly kernel: Kernel;
  readonly log: Logger;
  readonly metrics: Metrics;
}

export interface Daemon {
  /** True once subnet.env is written (readyz). */
  ready(): boolean;
  /** What the status page shows of this node. */
  view(): DaemonView;
  /** Resolves when the daemon has stopped (after stop()). */
  readonly done: Promise<void>;
  /** A full resync now, as the --iptables-resync timer does; resolves when no pass runs or is pending. */
  resync(): Promise<void>;
  /** Resolves when no reconcile pass (full or delta) runs or is pending. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

/** net-conf.json for the embedded store: its text and config, once it is known to be readable and a valid config. */
export function readNetConfigFile(path: string): E.Either<string, { text: string; config: NetConfig }> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    return E.left(`--net-config-path: cannot read ${path}: ${(e as Error).message}`);
  }
  const parsed = parseNetConfig(text);
  return E.isLeft(parsed) ? E.left(`network config ${path}: ${parsed.left}`) : E.right({ text, config: parsed.right.config });
}

export async function loadNetConfig(deps: Pick<DaemonDeps, 'flags' | 'leases' | 'log'>): Promise<E.Either<string, NetConfig>> {
  const { flags, leases, log } = deps;
  let text: string | undefined;
  if (flags.etcdEndpoints.length) {
    const r = await leases.getNetworkConfig()();
    if (E.isLeft(r)) return E.left(`etcd: cannot read ${flags.etcdPrefix}/config: ${r.left.msg}`);
    text = r.right;
    if (text === undefined) return E.left(`etcd: ${flags.etcdPrefix}/config does not exist: write the network config there first`);
  } else {
    const file = readNetConfigFile(flags.netConfigPath);
    if (E.isLeft(file)) return file;
    text = file.right.text;
    const put = await leases.putNetworkConfig(text)();
    if (E.isLeft(put)) return E.left(`embedded store: ${put.left.msg}`);
  }
  const parsed = parseNetConfig(text);
  if (E.isLeft(parsed)) return E.left(`network config: ${parsed.left}`);
  for (const n of parsed.right.notices) log.info(n);
  return E.right(parsed.right.config);
}

export async function startDaemon(deps: DaemonDeps, config: NetConfig): Promise<Daemon> {
  const { flags, underlay, leases, events, kernel, log, metrics } = deps;
  const vni = config.backend.type === 'vxlan' ? config.backend.vni : 0;
  const vtepMac = stableVtepMac(flags.stateDir, vni);
  const v6 = config.enableIPv6 && config.backend.type === 'vxlan' ? { vtepMacV6: stableVtepMac(flags.stateDir, vni, 6) } : {};
  const identity = underlayIdentity(underlay);
  const hooks = feltdHooks(metrics);
  const node = openNodeLog({ publicIP: identity, events, log, hooks });
  node.record({ type: 'LoadConfig', data: { config } } as NodeCommand);
  const overlay = startOverlayReconciler({ flags, underlay, kernel, log, hooks, node, config, vtepMac, ...v6 });
  const lease = startLeaseLifecycle({ flags, underlay, leases, log, hooks, node, config, vtepMac, ...v6, reconcile: overlay.reconcile });

  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((r) => (resolveDone = r));
  return {
    ready: overlay.ready,
    view: () => ({
      publicIP: identity,
      backendType: config.backend.type,
      ...(config.backend.type === 'vxlan' ? { vtepMac } : {}),
      ready: overlay.ready(),
      state: node.state(),
      recent: node.recent(),
    }),
    done,
    resync: () => overlay.reconcile(true),
    idle: overlay.idle,
    stop: async () => {
      overlay.stop();
      lease.stop();
      await overlay.idle();
      resolveDone();
    },
  };
}
