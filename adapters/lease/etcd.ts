// The etcd v3 lease store, with flanneld's keys, values and transactions (flannel-io/flannel
// pkg/subnet/etcd/registry.go), so feltd and flanneld nodes can share one etcd:
//
//   <prefix>/config                       the network config JSON
//   <prefix>/subnets/10.244.3.0-24        flannel's LeaseAttrs JSON, bound to an etcd lease of the TTL
//   <prefix>/subnets/10.244.3.0-24&fd00:10:244:3::-64   (dual stack)
//
// - acquire: grant an etcd lease of the TTL, then `If(CreateRevision(key) == 0) Then(Put(key, value, lease))`
//   (flannel compares Version == 0: the same condition). A lost race revokes the granted lease.
// - renew: read the key; 'lost' when it is gone or holds another node's public IP; else grant a new etcd lease
//   and put the new value with it, if the key's ModRevision is still the one read (flannel's updateSubnet
//   puts unconditionally; the compare keeps a renewal from overwriting a node that took the subnet meanwhile).
//   The old etcd lease is left to expire, as flanneld does.
// - list: a paginated range read pinned to the revision of its first page (one consistent read); each
//   lease's expiration is now + the remaining TTL of its etcd lease (never, for a key put without a lease).
// - watch: a prefix watch from revision+1 with previous key-values (a DELETE, or the expiry of the etcd lease,
//   carries the removed lease), resumed from the last delivered revision after a reconnect; a canceled watch
//   (the revision was compacted) calls onReset.
// - Each call waits at most `timeoutMs` (default 5 s): an unreachable etcd is a retryable StoreError, never a
//   hang. The etcd3 client (and gRPC) is loaded on first use, so the embedded store never pays for it.

import { readFileSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { Etcd3, IKeyValue, IOptions, IWatchResponse, Watcher } from 'etcd3';
import {
  configKeyPath,
  DEFAULT_ETCD_PREFIX,
  leaseKeyPath,
  parseLeaseAttrs,
  parseLeaseKeyPath,
  serializeLeaseAttrs,
  subnetsKeyPrefix,
} from '../../core/flannel/lease.ts';
import type { Lease, LeaseAttrs, LeaseEvent, LeaseSnapshot } from '../../core/flannel/types.ts';
import { checkRequest, errorMessage, iso, isStoreError, leaseMatches, leaseOf, NEVER, NO_ATTRS, sameOwner, storeError } from './common.ts';
import type { LeaseRequest, LeaseStore, StoreError, Watch } from './types.ts';

export interface EtcdLeaseStoreOptions {
  /** Client URLs, e.g. ["http://127.0.0.1:2379"] (https:// with `tls`). */
  readonly endpoints: readonly string[];
  /** Default /coreos.com/network, flannel's. */
  readonly prefix?: string;
  /** File paths of the client key and certificate and of the CA bundle (flanneld's --etcd-keyfile etc.). */
  readonly tls?: { readonly key?: string; readonly cert?: string; readonly ca?: string };
  /** The longest one etcd call may take before it fails as a retryable StoreError (default 5,000 ms). */
  readonly timeoutMs?: number;
  /** The longest pause between two attempts to re-establish a broken watch (default 2,000 ms). */
  readonly watchRetryMaxMs?: number;
  /** Told about keys under the subnets prefix that are not flannel leases (skipped, as flanneld does). */
  readonly onSkip?: (key: string, why: string) => void;
}

/** The etcd3 client module, loaded on first use. */
type Etcd3Module = typeof import('etcd3');

// etcdserverpb.Compare enums, by number (the wire values).
const CMP_EQUAL = 0;
const TARGET_CREATE = 1;
const TARGET_MOD = 2;

const PAGE = 500;
const TTL_CONCURRENCY = 32;

/** The smallest key after every key that starts with `p`. */
function prefixEnd(p: Buffer): Buffer {
  const end = Buffer.from(p);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** Map with at most `n` calls of `f` in flight. */
async function pool<A, B>(xs: readonly A[], n: number, f: (x: A) => Promise<B>): Promise<B[]> {
  const out: B[] = new Array<B>(xs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < xs.length) {
      const i = next++;
      out[i] = await f(xs[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, xs.length) }, worker));
  return out;
}

const NOT_RETRYABLE =
  /PermissionDenied|Unauthenticated|AuthenticationFailed|InvalidAuthToken|RoleNotGranted|InvalidArgument|ClientClosed|permission denied|invalid auth/i;

export function etcdLeaseStore(opts: EtcdLeaseStoreOptions): LeaseStore {
  const prefix = opts.prefix ?? DEFAULT_ETCD_PREFIX;
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const watchRetryMaxMs = opts.watchRetryMaxMs ?? 2_000;
  const where = opts.endpoints.join(',');
  const dir = subnetsKeyPrefix(prefix);
  const dirKey = Buffer.from(dir);
  const dirEnd = prefixEnd(dirKey);
  let closed = false;
  let clientP: Promise<{ c: Etcd3; m: Etcd3Module }> | undefined;
  const watches = new Set<() => void>();

  const client = (): Promise<{ c: Etcd3; m: Etcd3Module }> =>
    (clientP ??= (async () => {
      if (opts.endpoints.length === 0) throw storeError('etcd: no endpoints given', false);
      let credentials: IOptions['credentials'];
      if (opts.tls && (opts.tls.ca || opts.tls.cert || opts.tls.key)) {
        try {
          credentials = {
            rootCertificate: (opts.tls.ca ? readFileSync(opts.tls.ca) : undefined) as Buffer,
            ...(opts.tls.key ? { privateKey: readFileSync(opts.tls.key) } : {}),
            ...(opts.tls.cert ? { certChain: readFileSync(opts.tls.cert) } : {}),
          };
        } catch (e) {
          throw storeError(`etcd TLS files: ${errorMessage(e)}`, false);
        }
      }
      const m = await import('etcd3');
      // Reconnect a broken watch soon (the client's default backs off to 30 s).
      interface Backoff {
        readonly duration: number;
        next(): Backoff;
      }
      const backoff = (n: number): Backoff => ({
        duration: Math.min(watchRetryMaxMs, 100 * 2 ** n),
        next: () => backoff(Math.min(n + 1, 20)),
      });
      const c = new m.Etcd3({
        hosts: [...opts.endpoints],
        ...(credentials ? { credentials } : {}),
        defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
        grpcOptions: { 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 5_000 },
        faultHandling: { watchBackoff: backoff(0) as unknown as NonNullable<IOptions['faultHandling']>['watchBackoff'] },
      });
      return { c, m };
    })());

  const toStoreError = (what: string, e: unknown): StoreError => {
    if (isStoreError(e)) return e;
    const name = (e as { name?: unknown })?.name ?? (e as object)?.constructor?.name ?? '';
    const msg = errorMessage(e);
    return storeError(`etcd ${what} at ${where}: ${msg}`, !closed && !NOT_RETRYABLE.test(`${String(name)} ${msg}`));
  };

  /** One etcd call, bounded by the timeout whatever the client's retries do. */
  const call = <A>(what: string, f: (c: Etcd3) => Promise<A>): Promise<A> =>
    new Promise<A>((resolve, reject) => {
      if (closed) return reject(storeError('etcd lease store is closed', false));
      const t = setTimeout(() => reject(storeError(`etcd ${what} at ${where}: no answer within ${timeoutMs} ms`, true)), timeoutMs);
      client()
        .then(({ c }) => f(c))
        .then(
          (v) => {
            clearTimeout(t);
            resolve(v);
          },
          (e: unknown) => {
            clearTimeout(t);
            reject(toStoreError(what, e));
          },
        );
    });

  const op =
    <A>(what: string, f: () => Promise<E.Either<StoreError, A>>): TE.TaskEither<StoreError, A> =>
    () =>
      f().catch((e: unknown) => E.left(toStoreError(what, e)));

  /**
   * Absolute expiry (ms) of the etcd leases looked up so far. felt and flanneld renew by granting a new etcd
   * lease, so a lease id's expiry does not move; one that has passed while its key still exists was kept
   * alive by someone, and is looked up again. This makes a resync list cost one range read, not one
   * time-to-live call per lease.
   */
  const expiries = new Map<string, number>();
  const remember = (id: string, at: number): void => {
    if (expiries.size >= 200_000) expiries.clear();
    expiries.set(id, at);
  };

  /** Expiration of the etcd lease `id` as an ISO time: now + its remaining TTL (never for no lease). */
  const expirationOf = async (id: string): Promise<string> => {
    if (!id || id === '0') return NEVER;
    const known = expiries.get(id);
    if (known !== undefined && known > Date.now()) return iso(known);
    const r = await call('lease time-to-live', (c) => c.leaseClient.leaseTimeToLive({ ID: id }));
    const ttl = Number(r.TTL);
    const at = Date.now() + Math.max(0, ttl) * 1000;
    if (ttl > 0) remember(id, at);
    return iso(at);
  };

  /**
   * Parse a key-value under the subnets prefix; undefined (and onSkip) when the key is not a lease key. A lease
   * key whose value is not a flannel lease comes back with `invalid` (the subnet is held; nothing else is
   * trusted), so feltd can refuse it, or repair it when it is its own.
   */
  const parseKv = (
    kv: IKeyValue,
    withValue: boolean,
  ): { subnet?: string; ipv6Subnet?: string; attrs?: LeaseAttrs; invalid?: string } | undefined => {
    const key = kv.key.toString();
    const k = parseLeaseKeyPath(prefix, key);
    if (E.isLeft(k)) {
      opts.onSkip?.(key, k.left);
      return undefined;
    }
    if (!withValue) return k.right;
    const a = parseLeaseAttrs(kv.value.toString());
    if (E.isLeft(a)) return { ...k.right, attrs: NO_ATTRS, invalid: a.left };
    return { ...k.right, attrs: a.right };
  };
  const withInvalid = (l: Lease, invalid: string | undefined): Lease => (invalid ? { ...l, invalid } : l);

  /**
   * The etcd this store talks to, as its response headers name it: a cluster id that changes, or a revision
   * below one already seen, means the data was wiped or restored (watches must list again).
   */
  let clusterId: string | undefined;
  const sameCluster = (header: { cluster_id?: unknown } | undefined): string | undefined => {
    const id = header?.cluster_id === undefined ? undefined : String(header.cluster_id);
    if (!id) return undefined;
    if (clusterId === undefined || clusterId === id) {
      clusterId = id;
      return undefined;
    }
    const was = clusterId;
    clusterId = id;
    return `etcd at ${where} is another cluster now (cluster id ${was} -> ${id}): its data was wiped or replaced`;
  };

  const revokeQuietly = (id: string): Promise<void> =>
    call('lease revoke', (c) => c.leaseClient.leaseRevoke({ ID: id })).then(
      () => undefined,
      () => undefined,
    );

  const grant = (ttlSeconds: number): Promise<{ id: string; ttl: number }> =>
    call('lease grant', (c) => c.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 })).then((r) => ({
      id: String(r.ID),
      ttl: Number(r.TTL),
    }));

  /**
   * Put `req` with a fresh etcd lease over the key's present value, when `mayWrite` accepts that value (renew:
   * this node's lease; repair: anything); `miss` when the key is absent or not accepted. A compare-and-swap on the
   * value's mod revision: changed between the read and the write, it is looked at again (five times at most).
   */
  const rewrite = async <Miss extends 'lost' | 'absent'>(
    what: 'renew' | 'repair',
    req: LeaseRequest,
    ttlSeconds: number,
    miss: Miss,
    mayWrite: (value: string, mine: LeaseAttrs) => boolean,
  ): Promise<E.Either<StoreError, Lease | Miss>> => {
    const checked = checkRequest(req, ttlSeconds);
    if (E.isLeft(checked)) return checked;
    const c = checked.right;
    const key = Buffer.from(leaseKeyPath(prefix, c));
    const value = Buffer.from(serializeLeaseAttrs(c.attrs));
    for (let attempt = 0; attempt < 5; attempt++) {
      const cur = (await call(what, (cl) => cl.kv.range({ key }))).kvs[0];
      if (!cur || !mayWrite(cur.value.toString(), c.attrs)) return E.right(miss);
      const g = await grant(ttlSeconds);
      let txn;
      try {
        txn = await call(what, (cl) =>
          cl.kv.txn({
            compare: [{ key, target: TARGET_MOD, result: CMP_EQUAL, mod_revision: cur.mod_revision }],
            success: [{ request_put: { key, value, lease: g.id } }],
            failure: [{ request_range: { key } }],
          }),
        );
      } catch (e) {
        await revokeQuietly(g.id);
        throw e;
      }
      // A failed compare can be our own put applied by a retry of the client: then the key holds our lease.
      const holder = txn.succeeded ? undefined : txn.responses[0]?.response_range?.kvs[0];
      if (txn.succeeded || String(holder?.lease) === g.id) {
        remember(g.id, Date.now() + g.ttl * 1000);
        return E.right(leaseOf(c.subnet, c.ipv6Subnet, c.attrs, iso(Date.now() + g.ttl * 1000)));
      }
      // Changed between our read and our write: look again.
      await revokeQuietly(g.id);
    }
    return E.left(storeError(`etcd ${what} at ${where}: the lease kept changing under us`, true));
  };

  const listOnce = async (): Promise<LeaseSnapshot> => {
    let revision: string | undefined;
    let from = dirKey;
    const kvs: IKeyValue[] = [];
    for (;;) {
      const r = await call('range', (c) =>
        c.kv.range({ key: from, range_end: dirEnd, limit: PAGE, ...(revision !== undefined ? { revision } : {}) }),
      );
      revision ??= r.header.revision;
      kvs.push(...r.kvs);
      if (!r.more || r.kvs.length === 0) break;
      from = Buffer.concat([r.kvs.at(-1)!.key, Buffer.from([0])]);
    }
    const parsed = kvs.flatMap((kv) => {
      const p = parseKv(kv, true);
      return p?.attrs ? [{ kv, p: { ...p, attrs: p.attrs } }] : [];
    });
    const ids = [...new Set(parsed.map(({ kv }) => String(kv.lease)))];
    const exps = new Map(ids.map((id, i) => [id, i]));
    const values = await pool(ids, TTL_CONCURRENCY, expirationOf);
    const present = new Set(ids);
    for (const id of [...expiries.keys()]) if (!present.has(id)) expiries.delete(id);
    const leases = parsed.map(({ kv, p }) =>
      withInvalid(leaseOf(p.subnet, p.ipv6Subnet, p.attrs, values[exps.get(String(kv.lease))!]!), p.invalid),
    );
    return { leases, revision: Number(revision ?? 0) };
  };

  const store: LeaseStore = {
    getNetworkConfig: () =>
      op('get config', async () => {
        const r = await call('get config', (c) => c.kv.range({ key: Buffer.from(configKeyPath(prefix)) }));
        return E.right(r.kvs[0]?.value.toString());
      }),

    putNetworkConfig: (json) =>
      op('put config', async () => {
        await call('put config', (c) => c.kv.put({ key: Buffer.from(configKeyPath(prefix)), value: Buffer.from(json) }));
        return E.right(undefined);
      }),

    watchNetworkConfig(onConfig): Watch {
      let stopped = false;
      let watcher: Watcher | undefined;
      const key = Buffer.from(configKeyPath(prefix));
      const stop = (): void => {
        if (stopped) return;
        stopped = true;
        watches.delete(stop);
        watcher?.cancel().catch(() => undefined);
      };
      watches.add(stop);
      const current = (): void => {
        call('get config', (c) => c.kv.range({ key })).then(
          (r) => void (stopped || onConfig(r.kvs[0]?.value.toString())),
          () => undefined, // unreachable: the next connection asks again
        );
      };
      client().then(
        ({ c }) => {
          if (stopped) return;
          const w = c.watch().key(key).watcher();
          watcher = w;
          // (Re)connected: what it is now, changes missed while away included.
          w.on('connected', () => current());
          w.on('data', (res: IWatchResponse) => {
            if (stopped) return;
            for (const ev of res.events) onConfig(ev.type === 'Put' ? ev.kv.value.toString() : undefined);
          });
          w.on('error', () => undefined);
        },
        () => undefined,
      );
      return { stop };
    },

    list: () =>
      op('list', async () => {
        // A later page can fail when compaction overtakes the pinned revision: read again from the start.
        for (let attempt = 0; ; attempt++) {
          try {
            return E.right(await listOnce());
          } catch (e) {
            if (attempt >= 2 || !/compacted/i.test(errorMessage(isStoreError(e) ? e.msg : e))) throw e;
          }
        }
      }),

    acquire: (req: LeaseRequest, ttlSeconds: number) =>
      op('acquire', async (): Promise<E.Either<StoreError, Lease | 'taken'>> => {
        const checked = checkRequest(req, ttlSeconds);
        if (E.isLeft(checked)) return checked;
        const c = checked.right;
        const key = Buffer.from(leaseKeyPath(prefix, c));
        const value = Buffer.from(serializeLeaseAttrs(c.attrs));
        const g = await grant(ttlSeconds);
        let txn;
        try {
          txn = await call('acquire', (cl) =>
            cl.kv.txn({
              compare: [{ key, target: TARGET_CREATE, result: CMP_EQUAL, create_revision: 0 }],
              success: [{ request_put: { key, value, lease: g.id } }],
              failure: [{ request_range: { key } }],
            }),
          );
        } catch (e) {
          await revokeQuietly(g.id);
          throw e;
        }
        // A failed compare can be our own put applied by a retry of the client: then the key holds our lease.
        const holder = txn.succeeded ? undefined : txn.responses[0]?.response_range?.kvs[0];
        if (!txn.succeeded && String(holder?.lease) !== g.id) {
          await revokeQuietly(g.id);
          return E.right('taken');
        }
        remember(g.id, Date.now() + g.ttl * 1000);
        return E.right(leaseOf(c.subnet, c.ipv6Subnet, c.attrs, iso(Date.now() + g.ttl * 1000)));
      }),

    renew: (req: LeaseRequest, ttlSeconds: number) =>
      op('renew', () =>
        rewrite('renew', req, ttlSeconds, 'lost', (value, mine) => {
          const attrs = parseLeaseAttrs(value);
          return E.isRight(attrs) && sameOwner(attrs.right, mine);
        }),
      ),

    repair: (req: LeaseRequest, ttlSeconds: number) => op('repair', () => rewrite('repair', req, ttlSeconds, 'absent', () => true)),

    revoke: (subnet: string) =>
      op('revoke', async () => {
        const r = await call('revoke', (c) => c.kv.range({ key: dirKey, range_end: dirEnd, keys_only: true }));
        const keys = r.kvs.filter((kv) => {
          const p = parseKv(kv, false);
          return p !== undefined && leaseMatches(p, subnet);
        });
        if (keys.length > 0) {
          await call('revoke', (c) =>
            c.kv.txn({ compare: [], success: keys.map((kv) => ({ request_delete_range: { key: kv.key } })), failure: [] }),
          );
        }
        return E.right(undefined);
      }),

    watch(fromRevision, onEvents, onReset): Watch {
      let stopped = false;
      /** The first revision not yet delivered: where a re-established watch starts. */
      let next = fromRevision + 1;
      let watcher: Watcher | undefined;
      let chain: Promise<void> = Promise.resolve();
      const stop = (): void => {
        if (stopped) return;
        stopped = true;
        watches.delete(stop);
        watcher?.cancel().catch(() => undefined);
      };
      watches.add(stop);
      const reset = (why: string): void => {
        if (stopped) return;
        stop();
        chain = chain.then(() => onReset(why));
      };

      const toEvents = async (res: IWatchResponse): Promise<LeaseEvent[]> => {
        const mapped = res.events.map((ev) => {
          const isPut = ev.type === 'Put';
          const p = parseKv(ev.kv, isPut);
          if (!p) return undefined;
          if (isPut) return { type: 'added' as const, p, lease: String(ev.kv.lease) };
          // The removed lease as it was, when etcd kept the previous value.
          const prev = ev.prev_kv ? parseLeaseAttrs(ev.prev_kv.value.toString()) : undefined;
          const attrs: LeaseAttrs = prev && E.isRight(prev) ? prev.right : { PublicIP: '0.0.0.0', PublicIPv6: null, BackendType: '' };
          return { type: 'removed' as const, p: { ...p, attrs }, lease: '0' };
        });
        const ids = [...new Set(mapped.flatMap((m) => (m?.type === 'added' ? [m.lease] : [])))];
        const exps = new Map<string, string>();
        await pool(ids, TTL_CONCURRENCY, async (id) => {
          // The lease may be gone already (expired, or etcd briefly away): its removal follows, or it is now.
          exps.set(id, await expirationOf(id).catch(() => iso(Date.now())));
        });
        return mapped.flatMap((m) =>
          m
            ? [
                {
                  type: m.type,
                  lease: withInvalid(
                    leaseOf(m.p.subnet, m.p.ipv6Subnet, m.p.attrs!, m.type === 'added' ? exps.get(m.lease)! : iso(Date.now())),
                    m.type === 'added' ? m.p.invalid : undefined,
                  ),
                },
              ]
            : [],
        );
      };

      client().then(
        ({ c }) => {
          if (stopped) return;
          const w = c.watch().prefix(dir).withPreviousKV().startRevision(String(next)).watcher();
          watcher = w;
          // The client re-sends this request after a reconnect with the revision it last saw in a header, which
          // can be past events it has not delivered yet; resume from what we delivered instead.
          w.on('connecting', () => {
            w.request.start_revision = String(next);
          });
          // A wiped etcd, restarted (with the same flags it keeps its cluster id) and given the config again, is
          // at a revision far below ours: watching "from revision N" there would wait silently for N. So is one
          // restored from an older backup. Either means what we know is no longer what it holds: list again.
          const wiped = (header: IWatchResponse['header'] | undefined): boolean => {
            const other = sameCluster(header);
            const rev = Number(header?.revision ?? NaN);
            const why =
              other ??
              (Number.isFinite(rev) && rev < next - 1
                ? `etcd at ${where} is at revision ${rev}, below revision ${next - 1} already seen: its data was wiped or restored from a backup`
                : undefined);
            if (why) reset(why);
            return why !== undefined;
          };
          w.on('connected', (res: IWatchResponse) => {
            if (!stopped) wiped(res.header);
          });
          w.on('data', (res: IWatchResponse) => {
            if (stopped || wiped(res.header) || res.events.length === 0) return;
            const revision = Math.max(...res.events.map((ev) => Number(ev.kv.mod_revision)));
            next = Math.max(next, revision + 1);
            chain = chain
              .then(() => toEvents(res))
              .then((events) => {
                if (!stopped && events.length > 0) onEvents(events, revision);
              })
              .catch(() => undefined);
          });
          w.on('error', (err: Error) => {
            // etcd cancels a watch whose start revision is compacted (the client does not pass compact_revision
            // on, nor a reason): ask etcd for that revision to say which it was.
            const from = next;
            call('range', (cl) => cl.kv.range({ key: dirKey, range_end: dirEnd, limit: 1, keys_only: true, revision: from })).then(
              () => reset(`etcd canceled the watch from revision ${from}: ${err.message}`),
              (e: unknown) => {
                const msg = isStoreError(e) ? e.msg : errorMessage(e);
                reset(
                  /compacted/i.test(msg)
                    ? `etcd watch: revision ${from} has been compacted`
                    : `etcd canceled the watch from revision ${from}: ${err.message}`,
                );
              },
            );
          });
          w.on('disconnected', () => undefined);
        },
        (e: unknown) => reset(`etcd watch could not start: ${isStoreError(e) ? e.msg : errorMessage(e)}`),
      );
      return { stop };
    },

    async close() {
      for (const stop of [...watches]) stop();
      closed = true;
      if (clientP) {
        try {
          (await clientP).c.close();
        } catch {
          // The client never came up: nothing to release.
        }
      }
    },
  };
  return store;
}
