// One-line summaries of events for `felt events`, by event type; unknown types fall back to compact JSON.

import type { StoredEvent } from '../../core/events.ts';

type Summarize = (data: Record<string, unknown>) => string;

const SUMMARIES: Readonly<Record<string, Summarize>> = {
  AddressAllocated: (d) => `${String(d['ip'])} -> ${String(d['containerId'])}/${String(d['ifname'])} (range set ${String(d['rangeSet'])})`,
  AddressReleased: (d) => `${String(d['ip'])} <- ${String(d['containerId'])}/${String(d['ifname'])} (${String(d['reason'])})`,
  AttachmentRecorded: (d) =>
    `${String(d['containerId'])}/${String(d['ifname'])} in ${String(d['netns'])}, host veth ${String(d['hostVeth'])}`,
  AttachmentRemoved: (d) =>
    `${String(d['containerId'])}/${String(d['ifname'])}, host veth ${String(d['hostVeth'])} (${String(d['reason'])})`,
  AttachmentReady: (d) => `${att(d)}, host veth ${String(d['hostVeth'])}: ready in ${String(d['durationMs'])} ms`,
  HostDeviceAttached: (d) => {
    const o = (d['original'] ?? {}) as { name?: string };
    return `${String(o.name ?? '?')} moved into ${String(d['netns'])} as ${att(d)}`;
  },
  HostDeviceReleased: (d) => `${att(d)} given back to the host (${String(d['reason'])})`,
  TuningApplied: (d) => {
    const o = (d['original'] ?? {}) as { link?: Record<string, unknown>; sysctls?: readonly { key?: string }[] };
    const changed = [...Object.keys(o.link ?? {}), ...(o.sysctls ?? []).map((s) => String(s.key))];
    return `${att(d)} in ${String(d['netns'])} tuned${changed.length ? `: ${changed.join(', ')} (originals kept)` : ''}`;
  },
  TuningReverted: (d) => `${att(d)} restored (${String(d['reason'])})`,
  ConfigLoaded: (d) => {
    const c = (d['config'] ?? {}) as { network?: string; ipv6Network?: string; backend?: { type?: string } };
    return `network ${[c.network, c.ipv6Network].filter(Boolean).join(' + ')}, backend ${c.backend?.type ?? '?'}`;
  },
  FirewallRulesRecorded: (d) => `${att(d)}: CNI-FORWARD rules for ${list(d['prefixes'])}`,
  FirewallRulesRemoved: (d) => `${att(d)}: CNI-FORWARD rules removed (${String(d['reason'])})`,
  AttachmentAdded: (d) => `${att(d)} in ${String(d['netns'])} through ${list(d['plugins'])}${list(d['ips']) ? `: ${list(d['ips'])}` : ''}`,
  AttachmentAddFailed: (d) =>
    `${att(d)} not added: ${String(d['error'])} (torn down: ${list(d['tornDown']) || 'nothing'}${d['kept'] === true ? '; the attachment made before stays' : ''})`,
  AttachmentDeleted: (d) => `${att(d)} deleted (${String(d['reason'])})${list(d['errors']) ? `, with errors: ${list(d['errors'])}` : ''}`,
  SubnetLeased: (d) =>
    `${subnets(d)} for this node (public ${String(d['publicIP'])}${d['vtepMac'] ? `, VtepMAC ${String(d['vtepMac'])}` : ''}) until ${String(d['expiration'])}${d['renewal'] ? ' (renewed)' : ''}`,
  SubnetLeaseLost: (d) => `${subnets(d)} lost: ${String(d['reason'])}`,
  RemoteLeaseSeen: (d) => `${subnets(d)} <- node ${remote(d)}`,
  RemoteLeaseRemoved: (d) => `${subnets(d)} gone: node ${remote(d)} (${String(d['reason'])})`,
};

const att = (d: Record<string, unknown>): string => `${String(d['containerId'])}/${String(d['ifname'])}`;
const list = (v: unknown): string => (Array.isArray(v) ? v.map(String).join(', ') : '');

const subnets = (d: Record<string, unknown>): string =>
  [d['subnet'], d['ipv6Subnet']].filter(Boolean).map(String).join(' + ') || String(d['key']);

/** A remote node as its lease describes it: public IP and, for vxlan, its VtepMAC. */
function remote(d: Record<string, unknown>): string {
  const a = (d['attrs'] ?? {}) as { PublicIP?: string; BackendData?: { VtepMAC?: string } };
  const mac = a.BackendData?.VtepMAC;
  return `${a.PublicIP ?? d['publicIP'] ?? '?'}${mac ? ` (VtepMAC ${mac})` : ''}`;
}

const MAX = 100;

export function summarize(e: StoredEvent): string {
  const data = e.data;
  const f = SUMMARIES[e.type];
  if (f && typeof data === 'object' && data !== null) return f(data as Record<string, unknown>);
  const s = JSON.stringify(data) ?? '';
  return s.length > MAX ? `${s.slice(0, MAX - 3)}...` : s;
}
