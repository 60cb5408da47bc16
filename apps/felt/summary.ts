// One-line summaries of events for `felt events`, by event type; unknown types fall back to compact JSON.

import type { StoredEvent } from '../../core/events.ts';

type Summarize = (data: Record<string, unknown>) => string;

const SUMMARIES: Readonly<Record<string, Summarize>> = {
  AddressAllocated: (d) => `${String(d['ip'])} -> ${String(d['containerId'])}/${String(d['ifname'])} (range set ${String(d['rangeSet'])})`,
  AddressReleased: (d) => `${String(d['ip'])} <- ${String(d['containerId'])}/${String(d['ifname'])} (${String(d['reason'])})`,
};

const MAX = 100;

export function summarize(e: StoredEvent): string {
  const data = e.data;
  const f = SUMMARIES[e.type];
  if (f && typeof data === 'object' && data !== null) return f(data as Record<string, unknown>);
  const s = JSON.stringify(data) ?? '';
  return s.length > MAX ? `${s.slice(0, MAX - 3)}...` : s;
}
