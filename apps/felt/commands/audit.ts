// What `felt plan`, `felt status` and `felt why` share: the log read into folded views (through the
// EventStore interface only: streams, load, read), feltd's reconcile.json, the desired kernel state of the
// overlay and of every recorded bridge attachment, the host network namespace each attachment was made in,
// and reading the kernel there.

import { CNI_RECORD_FILE, parseCniRecord, type CniRecord } from '../../../core/audit/cni.ts';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { linuxKernel } from '../../../adapters/kernel/linux.ts';
import type { EventStore } from '../../../adapters/store/types.ts';
import { attachmentDesired, union, type AttachmentDesired } from '../../../core/audit/attachment.ts';
import { overlayCheck, overlayNodeOf, type OverlayCheck } from '../../../core/audit/overlay.ts';
import { parseReconcile, RECONCILE_FILE, type ReconcileRecord } from '../../../core/audit/reconcile.ts';
import { attachmentsProjection, type AttachmentRecord } from '../../../core/bridge/attachments.ts';
import { runtimeProjection, type RuntimeState } from '../../../core/cni/attachments.ts';
import { nodeProjection, type NodeState } from '../../../core/flannel/node.ts';
import { ipamProjection, type IpamState } from '../../../core/ipam/decider.ts';
import { HOST, type IptFamily, type KernelState, type OwnershipScope } from '../../../core/kernel/model.ts';
import { mergeScopes } from '../../../core/kernel/scope.ts';
import type { StoredEvent } from '../../../core/events.ts';

export interface LogViews {
  readonly nodes: readonly { readonly stream: string; readonly state: NodeState }[];
  readonly ipam: readonly { readonly network: string; readonly state: IpamState }[];
  readonly bridges: readonly { readonly network: string; readonly records: readonly AttachmentRecord[] }[];
  readonly runtimes: readonly { readonly network: string; readonly state: RuntimeState }[];
}

/** Every stream felt audits, folded. */
export function loadViews(store: EventStore): E.Either<string, LogViews> {
  const streams = store.streams();
  if (E.isLeft(streams)) return E.left(streams.left.msg);
  const nodes: { stream: string; state: NodeState }[] = [];
  const ipam: { network: string; state: IpamState }[] = [];
  const bridges: { network: string; records: AttachmentRecord[] }[] = [];
  const runtimes: { network: string; state: RuntimeState }[] = [];
  for (const s of [...streams.right].sort()) {
    if (s.startsWith('node/')) {
      const l = store.load(s, nodeProjection);
      if (E.isLeft(l)) return E.left(l.left.msg);
      nodes.push({ stream: s, state: l.right.state });
    } else if (s.startsWith('ipam/')) {
      const l = store.load(s, ipamProjection);
      if (E.isLeft(l)) return E.left(l.left.msg);
      ipam.push({ network: s.slice('ipam/'.length), state: l.right.state });
    } else if (s.startsWith('bridge/')) {
      const l = store.load(s, attachmentsProjection);
      if (E.isLeft(l)) return E.left(l.left.msg);
      const records = Object.values(l.right.state.attachments).sort((a, b) =>
        a.containerId + a.ifname < b.containerId + b.ifname ? -1 : 1,
      );
      if (records.length) bridges.push({ network: s.slice('bridge/'.length), records });
    } else if (s.startsWith('cni/')) {
      const l = store.load(s, runtimeProjection);
      if (E.isLeft(l)) return E.left(l.left.msg);
      runtimes.push({ network: s.slice('cni/'.length), state: l.right.state });
    }
  }
  return E.right({ nodes, ipam, bridges, runtimes });
}

export function readHistory(store: EventStore): E.Either<string, readonly StoredEvent[]> {
  const h = store.read();
  return E.isLeft(h) ? E.left(h.left.msg) : E.right(h.right);
}

/** `<dataDir>/reconcile.json`: the record, `undefined` when absent, a string saying why when unreadable. */
/** feltd's cni.json in `dataDir` (core/audit/cni.ts): the record, undefined when absent, or why not. */
export function readCniRecord(dataDir: string): CniRecord | undefined | string {
  const path = join(dataDir, CNI_RECORD_FILE);
  if (!existsSync(path)) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    return `cannot read ${path}: ${(e as Error).message}`;
  }
  return parseCniRecord(text) ?? `${path} is not a cni record`;
}

export function readReconcile(dataDir: string): ReconcileRecord | undefined | string {
  const path = join(dataDir, RECONCILE_FILE);
  if (!existsSync(path)) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    return `cannot read ${path}: ${(e as Error).message}`;
  }
  return parseReconcile(text) ?? `${path} is not a reconcile record`;
}

// ------------------------------------------------------------------------------------ namespaces

/** This process's network namespace, as the kernel names it (`net:[4026531840]`). */
function currentNetns(): string | undefined {
  try {
    return readlinkSync('/proc/self/ns/net');
  } catch {
    return undefined;
  }
}

/** The namespace a netns file (a /run/netns bind mount, /proc/PID/ns/net) is, in the same words. */
function netnsIdOf(path: string): string | undefined {
  try {
    return `net:[${statSync(path).ino}]`;
  } catch {
    return undefined;
  }
}

const NETNS_DIRS = ['/run/netns', '/var/run/netns'];

/** A named namespace (ip netns) that is `id`, if there is one. */
function findNamedNetns(id: string): string | undefined {
  for (const dir of NETNS_DIRS) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names.sort()) if (netnsIdOf(join(dir, n)) === id) return join(dir, n);
  }
  return undefined;
}

/**
 * Where a namespace recorded as `hostNs` (`net:[...]`) is for this process: `{ hostNetns: undefined }` for
 * the one felt runs in (or when nothing was recorded), a netns path for another one, or why it cannot be
 * found. `--netns` (override) is taken as is.
 */
export function locate(
  hostNs: string | undefined,
  override: string | undefined,
  what: string,
): { readonly hostNetns: string | undefined } | { readonly why: string } {
  if (override !== undefined) return { hostNetns: override };
  const here = currentNetns();
  if (hostNs === undefined || here === undefined || hostNs === here) return { hostNetns: undefined };
  const named = findNamedNetns(hostNs);
  if (named) return { hostNetns: named };
  return {
    why: `${what} in network namespace ${hostNs}, which is not this one (${here}) and has no name under /run/netns: run felt there (nsenter --net=...) or pass --netns PATH`,
  };
}

/** Where an attachment's host side is (the namespace the plugin ran in). */
const hostSideOf = (rec: AttachmentRecord, override: string | undefined) => locate(rec.hostNs, override, 'it was made');

// ------------------------------------------------------------------------------------ the kernel

export type Observed = { readonly ok: true; readonly state: KernelState } | { readonly ok: false; readonly why: string };

export interface Wanted {
  readonly namespaces: readonly string[];
  readonly desired: KernelState;
  readonly scope: OwnershipScope;
  readonly iptables?: readonly IptFamily[];
  readonly fdb?: boolean;
}

/** Read what `wanted` names, with HOST at `hostNetns` (undefined: this process's namespace). Never throws. */
export async function observe(hostNetns: string | undefined, wanted: Wanted): Promise<Observed> {
  const kernel = linuxKernel({ pid: process.pid, ...(hostNetns !== undefined ? { hostNetns } : {}) });
  try {
    const r = await kernel.observe({
      namespaces: wanted.namespaces,
      scope: wanted.scope,
      desired: wanted.desired,
      ...(wanted.iptables ? { iptables: wanted.iptables } : {}),
      ...(wanted.fdb ? { fdb: true } : {}),
    })();
    return E.isRight(r) ? { ok: true, state: r.right } : { ok: false, why: r.left.msg };
  } catch (e) {
    return { ok: false, why: (e as Error).message };
  }
}

// ------------------------------------------------------------------------------------ desired states

/** One recorded attachment with its desired state (or why there is none) and its host side. */
export interface AttachmentCase {
  readonly network: string;
  readonly record: AttachmentRecord;
  readonly desired: E.Either<string, AttachmentDesired>;
  readonly host: { readonly hostNetns: string | undefined } | { readonly why: string };
}

export function attachmentCases(views: LogViews, override: string | undefined, network?: string): AttachmentCase[] {
  const ipamOf = new Map(views.ipam.map((i) => [i.network, i.state]));
  return views.bridges
    .filter((b) => network === undefined || b.network === network)
    .flatMap((b) =>
      b.records.map((record) => ({
        network: b.network,
        record,
        desired: attachmentDesired(record, ipamOf.get(b.network)),
        host: hostSideOf(record, override),
      })),
    );
}

/** The overlay of a node stream, with the node parameters from reconcile.json (or why it cannot be checked). */
export function overlayOf(
  node: { stream: string; state: NodeState },
  rec: ReconcileRecord | undefined | string,
  dataDir: string,
): E.Either<string, OverlayCheck> {
  if (!node.state.ownLease) return E.left('this node holds no subnet lease: feltd wants nothing in the kernel');
  if (typeof rec === 'string') return E.left(rec);
  if (!rec)
    return E.left(
      `feltd has not written ${join(dataDir, RECONCILE_FILE)} yet (it does after every reconcile pass): the underlay and --ip-masq it uses are unknown`,
    );
  const params = overlayNodeOf(rec.node);
  if (!params) return E.left(`${join(dataDir, RECONCILE_FILE)} holds no node parameters (written by an older feltd)`);
  // An IPv6-only node (PublicIP 0.0.0.0) is named by its public IPv6 address, as feltd names its stream.
  const id = params.publicIP !== '0.0.0.0' ? params.publicIP : params.publicIPv6;
  if (`node/${id}` !== node.stream) return E.left(`feltd last ran as node/${id}, not as ${node.stream}`);
  return overlayCheck(node.state, params);
}

/** What to read for a set of attachments sharing one host side. */
export function attachmentWanted(cases: readonly AttachmentCase[]): Wanted {
  const ok = cases.flatMap((c) => (E.isRight(c.desired) ? [c.desired.right] : []));
  return {
    namespaces: [HOST, ...new Set(cases.filter((c) => E.isRight(c.desired) && existsSync(c.record.netns)).map((c) => c.record.netns))],
    desired: union(ok.flatMap((d) => [d.own, d.shared])),
    scope: mergeScopes(...ok.map((d) => d.scope)),
    // Both families, as the bridge plugin reads them: a masquerade chain left in a family the pod no longer
    // has is in scope, and so drift (readsFor reads only the families the scope or desired state names).
    iptables: [4, 6],
  };
}
