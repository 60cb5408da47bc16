// The in-memory twin of the lease stores (adapters/lease/etcd.ts, adapters/lease/sqlite.ts), for core and
// daemon tests: the same semantics with an injectable clock.
//
// - acquire creates the key if it is absent or expired ('taken' otherwise), renew extends a lease whose key
//   still holds this node's public IP ('lost' otherwise), revoke deletes; every change gets the next revision.
// - A lease past its expiration is absent. Its removal is recorded (and watchers told) when the store notices:
//   on any call, or on `sweep()`. Nothing runs on a timer, so a simulated clock stays in control.
// - Watches are told asynchronously (a microtask after the change), in revision order, batched per change.
// - `compact()` drops the history as etcd compaction does: watches behind it get onReset.
// - `setAvailable(false)` simulates an unreachable store: every call fails with a retryable StoreError and
//   watches are paused (they resume, without losing changes, when the store is back).

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { Lease, LeaseAttrs, LeaseEvent, LeaseSnapshot } from '../../core/flannel/types.ts';
import { expired, iso, leaseMatches, leaseOf, plain, storeError, writeLease, type LeaseWriter } from '../lease/common.ts';
import type { LeaseStore, StoreError, Watch } from '../lease/types.ts';

export interface MemoryLeaseStoreOptions {
  /** Milliseconds since the epoch; default Date.now. */
  readonly clock?: () => number;
  /** Changes kept for watches; older ones are dropped as compaction would (default 10,000). */
  readonly maxChanges?: number;
}

export interface MemoryLeaseStore extends LeaseStore {
  /** The revision of the last change. */
  readonly revision: number;
  /** Every change still kept, oldest first, for assertions. */
  readonly changes: readonly { readonly revision: number; readonly event: LeaseEvent }[];
  /** Notice the leases that have expired by now: they are removed, and watchers told. Returns them. */
  sweep(): readonly Lease[];
  /** Forget the history up to the current revision (etcd compaction): watches behind it get onReset. */
  compact(): void;
  /** false: the store is unreachable until set back to true. */
  setAvailable(up: boolean): void;
  /** Resolves once every pending watch notification has been delivered. */
  flush(): Promise<void>;
}

interface Row {
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
  readonly attrs: LeaseAttrs;
  readonly expiresAt: number;
}

interface Watcher {
  next: number;
  readonly onEvents: (events: readonly LeaseEvent[], revision: number) => void;
  readonly onReset: (why: string) => void;
}

export function memoryLeaseStore(opts: MemoryLeaseStoreOptions = {}): MemoryLeaseStore {
  const clock = opts.clock ?? Date.now;
  const maxChanges = opts.maxChanges ?? 10_000;
  const leases = new Map<string, Row>();
  const changes: { revision: number; event: LeaseEvent }[] = [];
  let config: string | undefined;
  let revision = 0;
  /** Changes with a revision <= this are gone. */
  let compacted = 0;
  let available = true;
  let closed = false;
  const watchers = new Set<Watcher>();
  const configWatchers = new Set<(json: string | undefined) => void>();
  let scheduled: Promise<void> | undefined;

  const toLease = (r: Row): Lease => plain(leaseOf(r.subnet, r.ipv6Subnet, r.attrs, iso(r.expiresAt)));

  const record = (kind: LeaseEvent['type'], lease: Lease): number => {
    revision += 1;
    changes.push({ revision, event: { type: kind, lease } });
    if (changes.length > maxChanges) {
      const drop = changes.splice(0, changes.length - maxChanges);
      compacted = Math.max(compacted, drop.at(-1)!.revision);
    }
    schedule();
    return revision;
  };

  const sweepNow = (): Lease[] => {
    const now = clock();
    const gone: Lease[] = [];
    for (const [k, r] of leases) {
      if (!expired(r.expiresAt, now)) continue;
      leases.delete(k);
      const l = toLease(r);
      record('removed', l);
      gone.push(l);
    }
    return gone;
  };

  const deliver = (): void => {
    scheduled = undefined;
    if (!available || closed) return;
    for (const w of [...watchers]) {
      if (!watchers.has(w)) continue;
      if (w.next <= compacted) {
        watchers.delete(w);
        w.onReset(`revision ${w.next - 1} has been compacted (history starts after ${compacted})`);
        continue;
      }
      const batch = changes.filter((c) => c.revision >= w.next);
      if (batch.length === 0) continue;
      w.next = batch.at(-1)!.revision + 1;
      w.onEvents(
        batch.map((c) => plain(c.event)),
        batch.at(-1)!.revision,
      );
    }
  };

  function schedule(): void {
    if (scheduled || watchers.size === 0) return;
    scheduled = Promise.resolve().then(deliver);
  }

  const op =
    <A>(f: () => E.Either<StoreError, A>): TE.TaskEither<StoreError, A> =>
    () =>
      Promise.resolve().then(() => {
        if (closed) return E.left(storeError('lease store is closed', false));
        if (!available) return E.left(storeError('lease store unavailable (simulated)', true));
        sweepNow();
        return f();
      });

  /** acquire, renew and repair: writeLease (common.ts) over the map. */
  const writer: LeaseWriter = {
    write: (f) => f(clock()),
    held: (key) => leases.get(key),
    put: (key, c, expiresAt) => {
      const row: Row = { ...c, expiresAt };
      leases.set(key, row);
      record('added', toLease(row));
      return toLease(row);
    },
  };

  const store: MemoryLeaseStore = {
    get revision() {
      return revision;
    },
    get changes() {
      return changes.map((c) => plain(c));
    },

    getNetworkConfig: () => op(() => E.right(config)),
    putNetworkConfig: (json) =>
      op(() => {
        config = json;
        for (const w of [...configWatchers]) void Promise.resolve().then(() => configWatchers.has(w) && w(json));
        return E.right(undefined);
      }),
    watchNetworkConfig(onConfig) {
      configWatchers.add(onConfig);
      const at = config;
      void Promise.resolve().then(() => configWatchers.has(onConfig) && onConfig(at));
      return { stop: () => void configWatchers.delete(onConfig) };
    },

    list: () =>
      op((): E.Either<StoreError, LeaseSnapshot> => {
        const all = [...leases.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => toLease(r));
        return E.right({ leases: all, revision });
      }),

    acquire: (req, ttlSeconds) => op(() => writeLease(writer, 'acquire', req, ttlSeconds)),
    renew: (req, ttlSeconds) => op(() => writeLease(writer, 'renew', req, ttlSeconds)),
    repair: (req, ttlSeconds) => op(() => writeLease(writer, 'repair', req, ttlSeconds)),

    revoke: (subnet: string) =>
      op(() => {
        for (const [k, r] of [...leases]) {
          if (!leaseMatches(r, subnet)) continue;
          leases.delete(k);
          record('removed', toLease(r));
        }
        return E.right(undefined);
      }),

    watch(fromRevision, onEvents, onReset): Watch {
      const w: Watcher = { next: fromRevision + 1, onEvents, onReset };
      watchers.add(w);
      schedule();
      return { stop: () => void watchers.delete(w) };
    },

    sweep() {
      return sweepNow();
    },
    compact() {
      changes.length = 0;
      compacted = revision;
      schedule();
    },
    setAvailable(up) {
      available = up;
      if (up) schedule();
    },
    async flush() {
      while (scheduled) await scheduled;
    },
    close() {
      closed = true;
      watchers.clear();
      configWatchers.clear();
      return Promise.resolve();
    },
  };
  return store;
}
