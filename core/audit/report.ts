// `felt plan`'s report: one group per object felt keeps in the kernel (feltd's overlay, a network's shared
// bridge, one attachment), each in sync or with its findings in words, and what could not be checked and
// why. Text for people, JSON for scripts; the exit code is 0 in sync and 2 on drift. Pure.

import type { AttachmentRecord } from '../bridge/attachments.ts';
import type { RuntimeState } from '../cni/attachments.ts';
import type { IpamState } from '../ipam/decider.ts';
import type { Finding } from './diff.ts';

type GroupKind = 'overlay' | 'network' | 'attachment';
/** `unreadable`: the namespace the objects live in could not be read (a pod namespace that is gone, say). */
type GroupStatus = 'in-sync' | 'drift' | 'unreadable';

export interface Group {
  readonly kind: GroupKind;
  /** "overlay 198.51.100.11", "network mynet", "attachment mynet c1/eth0". */
  readonly id: string;
  /** What it is, in a few words: "bridge cni0 (shared by 2 attachments)". */
  readonly title: string;
  readonly status: GroupStatus;
  readonly findings: readonly Finding[];
  readonly notes: readonly string[];
  readonly network?: string;
  readonly containerId?: string;
  readonly ifname?: string;
  readonly netns?: string;
  readonly hostVeth?: string;
}

export interface Unchecked {
  /** "network blue", "attachment mynet c9/eth0", "overlay". */
  readonly what: string;
  readonly why: string;
}

export interface PlanReport {
  readonly inSync: boolean;
  readonly groups: readonly Group[];
  readonly unchecked: readonly Unchecked[];
}

export const report = (groups: readonly Group[], unchecked: readonly Unchecked[]): PlanReport => ({
  inSync: groups.every((g) => g.status === 'in-sync'),
  groups,
  unchecked,
});

/** 0 in sync, 2 on drift (a namespace that cannot be read is drift too: the objects in it are not there). */
export const planExit = (r: PlanReport): number => (r.inSync ? 0 : 2);

export function group(
  base: Omit<Group, 'status' | 'findings' | 'notes'>,
  findings: readonly Finding[],
  notes: readonly string[] = [],
  unreadable?: string,
): Group {
  return {
    ...base,
    status: unreadable !== undefined ? 'unreadable' : findings.length ? 'drift' : 'in-sync',
    findings,
    notes: unreadable !== undefined ? [unreadable, ...notes] : notes,
  };
}

export function renderPlan(r: PlanReport): string {
  const lines: string[] = [];
  for (const g of r.groups) {
    const state =
      g.status === 'in-sync'
        ? 'in sync'
        : g.status === 'unreadable'
          ? 'cannot be read'
          : `${g.findings.length} difference${g.findings.length === 1 ? '' : 's'}`;
    lines.push(`${g.id}: ${g.title}: ${state}`);
    for (const f of g.findings) lines.push(`  ${f.text}`);
    for (const n of g.notes) lines.push(`  note: ${n}`);
  }
  if (r.groups.length === 0) lines.push('nothing recorded that felt plan can check');
  if (r.unchecked.length) {
    lines.push('not checked:');
    for (const u of r.unchecked) lines.push(`  ${u.what}: ${u.why}`);
  }
  const drifted = r.groups.filter((g) => g.status !== 'in-sync').length;
  lines.push(
    r.inSync
      ? `in sync: ${r.groups.length} checked, nothing to change`
      : `drift: ${drifted} of ${r.groups.length} checked differ from the log (feltd repairs its overlay on the next resync; a CNI attachment is repaired by deleting and adding it again)`,
  );
  return lines.join('\n') + '\n';
}

/** Plugins whose kernel objects `felt plan` computes from the log. */
const CHECKED_PLUGINS: ReadonlySet<string> = new Set(['bridge', 'flannel', 'host-local', 'static', 'loopback']);

/**
 * What the log shows that `felt plan` cannot check: host-local addresses of attachments no bridge record
 * covers (ptp, macvlan, ipvlan, vlan, host-device... keep no attachment record), and attachments `felt cni`
 * made through plugins whose kernel objects are not in the log (portmap's DNAT rules, tuning, bandwidth...).
 */
export function uncheckedOf(
  ipam: readonly { readonly network: string; readonly state: IpamState }[],
  bridges: readonly { readonly network: string; readonly records: readonly AttachmentRecord[] }[],
  runtimes: readonly { readonly network: string; readonly state: RuntimeState }[],
): Unchecked[] {
  const out: Unchecked[] = [];
  const covered = new Set(bridges.flatMap((b) => b.records.map((r) => `${b.network}\u0000${r.containerId}\u0000${r.ifname}`)));
  for (const { network, state } of ipam) {
    const loose = Object.values(state.allocations).filter((a) => !covered.has(`${network}\u0000${a.containerId}\u0000${a.ifname}`));
    if (loose.length === 0) continue;
    const names =
      loose
        .slice(0, 5)
        .map((a) => `${a.containerId}/${a.ifname} ${a.ip}`)
        .join(', ') + (loose.length > 5 ? `, and ${loose.length - 5} more` : '');
    out.push({
      what: `network ${network}`,
      why: `${loose.length} address${loose.length === 1 ? '' : 'es'} allocated by host-local (${names}) belong to attachments no bridge record covers: made by a plugin that records no attachment in the log (ptp, macvlan, ipvlan, vlan, host-device), so their kernel objects are unknown to felt plan`,
    });
  }
  for (const { network, state } of runtimes) {
    const others = new Set(Object.values(state.attachments).flatMap((a) => a.plugins.filter((p) => !CHECKED_PLUGINS.has(p))));
    if (others.size === 0) continue;
    out.push({
      what: `network ${network}`,
      why: `felt cni ran ${[...others].sort().join(', ')} for its attachments; what ${others.size === 1 ? 'that plugin writes' : 'those plugins write'} (e.g. portmap's DNAT rules) is not in the log, so it is not checked`,
    });
  }
  return out;
}
