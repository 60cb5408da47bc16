// The subnet lease lifecycle as an xstate v5 machine (flanneld: AcquireLease, then CompleteLease's renewal
// loop in pkg/subnet/etcd/local_manager.go):
//
//   acquiring --done--> held: leased --(expiration - renewMargin - now)--> renewing --done--> held (again)
//      |   ^                    renewing --error--> renewRetry --(1 min)--> renewing
//    error |                held --(expiration reached) / REVOKED / renew said 'lost'--> lost --> acquiring
//      v   |
//     backoff (1 s, 2 s, ... 30 s)
//
// The effects are actors the app provides (`machine.provide({ actors: { acquire, renew } })`), and optional
// hook actions (`leaseAcquired`, `leaseRenewed`, `leaseLost`). The machine reads time only to schedule the
// renewal: `input.now`, else the `now()` of the clock xstate runs with (SimulatedClock has one; the app can pass
// `{ setTimeout, clearTimeout, now: Date.now }` as `clock`). Without either, scheduling a renewal fails loudly.

import { assign, fromPromise, setup } from 'xstate';
import type { Lease } from './types.ts';

const DEFAULT_RENEW_MARGIN_MS = 60 * 60_000;
/** flanneld retries a failed renewal after a minute. */
const DEFAULT_RENEW_RETRY_MS = 60_000;
const DEFAULT_BACKOFF_INITIAL_MS = 1_000;
const DEFAULT_BACKOFF_MAX_MS = 30_000;

export interface LeaseMachineInput {
  /** Renew this long before expiry (flanneld --subnet-lease-renew-margin, 60 min). */
  readonly renewMarginMs?: number;
  readonly renewRetryMs?: number;
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  /** Milliseconds since the epoch; defaults to the xstate clock's now(). */
  readonly now?: () => number;
}

export interface LeaseContext {
  /** The lease held, or while acquiring again the last one held (passed to `acquire` as `previous`). */
  readonly lease: Lease | null;
  /** lease.expiration in ms (0 when none). */
  readonly expiresAt: number;
  /** Consecutive failed acquisitions. */
  readonly attempt: number;
  readonly lastError: string | null;
  readonly renewMarginMs: number;
  readonly renewRetryMs: number;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  readonly now: (() => number) | null;
}

export type LeaseMachineEvent =
  /** The own lease was removed from the store by someone else: acquire again. */
  | { readonly type: 'REVOKED' }
  /** The watch saw the own lease with a new expiration (flanneld updates its timer the same way). */
  | { readonly type: 'LEASE_UPDATED'; readonly lease: Lease };

export interface AcquireInput {
  readonly previous: Lease | null;
}
export interface RenewInput {
  readonly lease: Lease;
}

const msOf = (iso: string): number => {
  const t = Date.parse(iso); // parsing, not a clock
  return Number.isFinite(t) ? t : 0;
};
const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function nowOf(context: LeaseContext, system: unknown): number {
  if (context.now) return context.now();
  const clock = (system as unknown as { _clock?: { now?: () => number } })._clock;
  if (clock && typeof clock.now === 'function') return clock.now();
  throw new Error('lease machine: no time source; pass input.now or run the actor with a clock that has now()');
}

const leased = (lease: Lease) => ({ lease, expiresAt: msOf(lease.expiration) });

export const leaseMachine = setup({
  types: {} as {
    context: LeaseContext;
    input: LeaseMachineInput | undefined;
    events: LeaseMachineEvent;
  },
  actors: {
    acquire: fromPromise<Lease, AcquireInput>(async () => {
      throw new Error('lease machine: the app must provide the acquire actor');
    }),
    renew: fromPromise<Lease | 'lost', RenewInput>(async () => {
      throw new Error('lease machine: the app must provide the renew actor');
    }),
  },
  actions: {
    leaseAcquired: () => undefined,
    leaseRenewed: () => undefined,
    leaseLost: () => undefined,
  },
  delays: {
    renewDelay: ({ context, system }) => Math.max(0, context.expiresAt - context.renewMarginMs - nowOf(context, system)),
    expiryDelay: ({ context, system }) => Math.max(0, context.expiresAt - nowOf(context, system)),
    renewRetryDelay: ({ context }) => context.renewRetryMs,
    backoffDelay: ({ context }) => Math.min(context.backoffMaxMs, context.backoffInitialMs * 2 ** Math.max(0, context.attempt - 1)),
  },
}).createMachine({
  id: 'lease',
  context: ({ input }) => ({
    lease: null,
    expiresAt: 0,
    attempt: 0,
    lastError: null,
    renewMarginMs: input?.renewMarginMs ?? DEFAULT_RENEW_MARGIN_MS,
    renewRetryMs: input?.renewRetryMs ?? DEFAULT_RENEW_RETRY_MS,
    backoffInitialMs: input?.backoffInitialMs ?? DEFAULT_BACKOFF_INITIAL_MS,
    backoffMaxMs: input?.backoffMaxMs ?? DEFAULT_BACKOFF_MAX_MS,
    now: input?.now ?? null,
  }),
  initial: 'acquiring',
  states: {
    acquiring: {
      invoke: {
        src: 'acquire',
        input: ({ context }) => ({ previous: context.lease }),
        onDone: {
          target: 'held',
          actions: [assign(({ event }) => ({ ...leased(event.output), attempt: 0, lastError: null })), 'leaseAcquired'],
        },
        onError: {
          target: 'backoff',
          actions: assign(({ context, event }) => ({ attempt: context.attempt + 1, lastError: `acquire: ${errorText(event.error)}` })),
        },
      },
    },
    backoff: {
      after: { backoffDelay: 'acquiring' },
    },
    /** The lease is held until it expires, whatever renewal is doing; renewal success starts it over. */
    held: {
      initial: 'leased',
      after: { expiryDelay: { target: 'lost', actions: assign({ lastError: 'expired: not renewed in time' }) } },
      on: {
        REVOKED: { target: 'lost', actions: assign({ lastError: 'revoked: the lease was removed from the store' }) },
        LEASE_UPDATED: { target: 'held', reenter: true, actions: assign(({ event }) => leased(event.lease)) },
      },
      states: {
        leased: {
          after: { renewDelay: 'renewing' },
        },
        renewing: {
          invoke: {
            src: 'renew',
            input: ({ context }) => ({ lease: context.lease! }),
            onDone: [
              {
                guard: ({ event }) => event.output === 'lost',
                target: '#lease.lost',
                actions: assign({ lastError: 'renew: the lease is gone or held by another node' }),
              },
              {
                target: '#lease.held',
                reenter: true,
                actions: [assign(({ event }) => ({ ...leased(event.output as Lease), lastError: null })), 'leaseRenewed'],
              },
            ],
            onError: { target: 'renewRetry', actions: assign(({ event }) => ({ lastError: `renew: ${errorText(event.error)}` })) },
          },
        },
        renewRetry: {
          after: { renewRetryDelay: 'renewing' },
        },
      },
    },
    /** Visible to subscribers for one turn (a zero delay), then acquiring again. */
    lost: {
      entry: 'leaseLost',
      after: { 0: 'acquiring' },
    },
  },
});
