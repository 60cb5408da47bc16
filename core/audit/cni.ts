// feltd's cni.json: while feltd serves CNI (apps/feltd/cni-service.ts), every few seconds, the socket and how
// many calls it answered in the last minute, written atomically into feltd's state dir; `felt status` shows
// it. Read back as untrusted text: parsed into a typed record or refused.

export const CNI_RECORD_FILE = 'cni.json';

export interface CniRecord {
  /** The socket feltd serves CNI on. */
  readonly socket: string;
  /** When feltd started serving (ISO). */
  readonly since: string;
  /** When this record was written (ISO). */
  readonly time: string;
  /** Calls answered in the minute before `time`. */
  readonly requestsLastMinute: number;
  /** Calls answered since `since`. */
  readonly requestsTotal: number;
}

const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const iso = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v));

export function parseCniRecord(text: string): CniRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as Record<string, unknown>;
  if (
    typeof r['socket'] !== 'string' ||
    !iso(r['since']) ||
    !iso(r['time']) ||
    !count(r['requestsLastMinute']) ||
    !count(r['requestsTotal'])
  )
    return undefined;
  return {
    socket: r['socket'],
    since: r['since'],
    time: r['time'],
    requestsLastMinute: r['requestsLastMinute'],
    requestsTotal: r['requestsTotal'],
  };
}
