// What the firewall plugin remembers between ADD and DEL: the addresses whose CNI-FORWARD rules an attachment
// has, recorded in felt's log before ADD changes the filter table (as bridge records its veth), so that a DEL
// without prevResult (the runtime was killed before it cached the ADD's result) still removes them. One stream
// per network, `firewall/<network>`; the state holds, per (container, ifname), the host prefixes
// (`10.22.0.5/32`). Commands: RecordRules (the key's prefixes: ADD, before it applies, records the ones it had
// plus its own; an ADD that failed puts back what was recorded before it), ForgetRules (DEL once removed, or an
// ADD that failed and rolled back).
// Events: FirewallRulesRecorded, FirewallRulesRemoved.

import * as E from 'fp-ts/lib/Either.js';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { Event, Projection } from '../events.ts';
import { bits, formatIP, parseCIDR } from '../ip/ip.ts';
import { dataDirProblem, DEFAULT_DATA_DIR } from '../ipam/config.ts';

interface RulesRef {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
}

type FirewallRulesRecorded = Event<'FirewallRulesRecorded', RulesRef & { readonly prefixes: readonly string[] }>;
/** `reason`: `del` (DEL removed them), `add-failed` (an ADD rolled back). */
type FirewallRulesRemoved = Event<'FirewallRulesRemoved', RulesRef & { readonly reason: 'del' | 'add-failed' }>;
export type FirewallEvent = FirewallRulesRecorded | FirewallRulesRemoved;

export type FirewallCommand =
  | { readonly type: 'RecordRules'; readonly data: RulesRef & { readonly prefixes: readonly string[] } }
  | { readonly type: 'ForgetRules'; readonly data: RulesRef & { readonly reason: FirewallRulesRemoved['data']['reason'] } };

interface RecordedRules {
  readonly containerId: string;
  readonly ifname: string;
  readonly prefixes: readonly string[];
  /** Time of the first FirewallRulesRecorded. */
  readonly since: string;
}

export interface FirewallState {
  /** By rulesKey. */
  readonly attachments: Readonly<Record<string, RecordedRules>>;
}

export const firewallStream = (network: string): string => `firewall/${network}`;
/** Container IDs and interface names hold no '/' (core/cni/env.ts). */
const rulesKey = (containerId: string, ifname: string): string => `${containerId}/${ifname}`;

/** A host prefix as hostPrefixes writes it (`10.22.0.5/32`, `fd00::5/128`), and nothing else. */
const isHostPrefix = (p: unknown): p is string => {
  if (typeof p !== 'string') return false;
  const c = parseCIDR(p);
  return c !== undefined && c.prefix === bits(c.ip.family) && `${formatIP(c.ip)}/${c.prefix}` === p;
};

export const firewallProjection: Projection<FirewallState, FirewallEvent> = {
  name: 'firewall@1',
  initialState: () => ({ attachments: {} }),
  evolve: (s, e) => {
    const k = rulesKey(e.data.containerId, e.data.ifname);
    switch (e.type) {
      case 'FirewallRulesRecorded': {
        const before = s.attachments[k];
        return {
          attachments: {
            ...s.attachments,
            [k]: {
              containerId: e.data.containerId,
              ifname: e.data.ifname,
              prefixes: e.data.prefixes,
              since: before ? before.since : e.time,
            },
          },
        };
      }
      case 'FirewallRulesRemoved': {
        const { [k]: _gone, ...rest } = s.attachments;
        return { attachments: rest };
      }
      default: {
        const never: never = e;
        return never;
      }
    }
  },
};

/** The prefixes recorded for (container, ifname); none when nothing is. */
export const recordedPrefixes = (s: FirewallState, containerId: string, ifname: string): readonly string[] =>
  s.attachments[rulesKey(containerId, ifname)]?.prefixes ?? [];

export function decide(c: FirewallCommand, s: FirewallState): E.Either<CniError, FirewallEvent[]> {
  const k = rulesKey(c.data.containerId, c.data.ifname);
  switch (c.type) {
    case 'RecordRules': {
      const d = c.data;
      const bad = d.prefixes.find((p) => !isHostPrefix(p));
      if (bad !== undefined) return E.left(invalidConfig(`prevResult.ips: ${JSON.stringify(bad)} is not an address`));
      const before = s.attachments[k]?.prefixes ?? [];
      const all: string[] = [...new Set(d.prefixes)];
      if (all.length === 0)
        return E.right(
          before.length
            ? [
                {
                  type: 'FirewallRulesRemoved',
                  data: { network: d.network, containerId: d.containerId, ifname: d.ifname, reason: 'add-failed' },
                },
              ]
            : [],
        );
      if (all.length === before.length && all.every((p, i) => p === before[i])) return E.right([]);
      return E.right([
        { type: 'FirewallRulesRecorded', data: { network: d.network, containerId: d.containerId, ifname: d.ifname, prefixes: all } },
      ]);
    }
    case 'ForgetRules': {
      const d = c.data;
      return E.right(
        s.attachments[k]
          ? [{ type: 'FirewallRulesRemoved', data: { network: d.network, containerId: d.containerId, ifname: d.ifname, reason: d.reason } }]
          : [],
      );
    }
    default: {
      const never: never = c;
      return never;
    }
  }
}

/** `dataDir` (felt's log, as tuning's), default /var/lib/felt. */
export function parseFirewallDataDir(raw: Readonly<Record<string, unknown>>): E.Either<CniError, string> {
  const v = raw['dataDir'];
  const dataDir = v === undefined || v === null || v === '' ? DEFAULT_DATA_DIR : v;
  if (typeof dataDir !== 'string') return E.left(invalidConfig(`dataDir: must be a path, got ${JSON.stringify(dataDir)}`));
  const problem = dataDirProblem(dataDir);
  return problem ? E.left(invalidConfig(`dataDir: ${JSON.stringify(dataDir)} ${problem}`)) : E.right(dataDir);
}
