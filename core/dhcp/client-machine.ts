// One attachment's DHCP lease as an xstate v5 machine (RFC 2131 4.4, the reference's maintain() loop):
//
//   selecting --done--> held: bound --(T1)--> renewing --ack--> bound
//      |                        renewing --no answer--> renewWait --(half the time left to T2, >= retryMin)--> renewing
//    error                      renewing|renewWait past T2 --> rebinding --ack--> bound
//      v                        rebinding --no answer--> rebindWait --(half the time left, >= retryMin)--> rebinding
//    failed                 held --(lease end) or a NAK--> expired
//                           held --STOP--> releasing --> released;  selecting --STOP--> released
//
// The exchanges are actors the app provides (`acquire`: DISCOVER..ACK; `renew`: unicast REQUEST; `rebind`:
// broadcast REQUEST; `release`), each resolving with a Lease (whose T1/T2/end times it computed from the
// time of the ACK, core/dhcp/lease.ts) or 'nak'. Hooks: `leaseBound`, `leaseRenewed`, `leaseExpired`,
// `acquireFailed`. Time is read only to schedule, from `input.now` (the app's Date.now; in tests the
// SimulatedClock's now, the same clock xstate's delays run on).

import { assign, fromPromise, setup } from 'xstate';
import type { Lease } from './lease.ts';

const DEFAULT_RETRY_MIN_MS = 60_000;

export interface DhcpMachineInput {
  /** The shortest wait between two renew (rebind) attempts; RFC 2131 says 60 s. */
  readonly retryMinMs?: number;
  /** ms since the epoch (the app's Date.now, a test's SimulatedClock.now). */
  readonly now: () => number;
}

export interface DhcpContext {
  readonly lease: Lease | null;
  readonly lastError: string | null;
  /** Renewals (and rebinds) that got an ACK. */
  readonly renewals: number;
  readonly retryMinMs: number;
  readonly now: () => number;
}

export type DhcpEvent = { readonly type: 'STOP' };

export interface ExtendInput {
  readonly lease: Lease;
}

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

const nowOf = (context: DhcpContext): number => context.now();

/** Half the time left until `until`, at least `min` (RFC 2131 4.4.5), never past `until`. */
const halfway = (until: number, now: number, min: number): number => {
  const left = Math.max(0, until - now);
  return Math.min(left, Math.max(min, Math.floor(left / 2)));
};

export const dhcpMachine = setup({
  types: {} as { context: DhcpContext; input: DhcpMachineInput; events: DhcpEvent },
  actors: {
    acquire: fromPromise<Lease, Record<string, never>>(async () => {
      throw new Error('dhcp machine: the app must provide the acquire actor');
    }),
    renew: fromPromise<Lease | 'nak', ExtendInput>(async () => {
      throw new Error('dhcp machine: the app must provide the renew actor');
    }),
    rebind: fromPromise<Lease | 'nak', ExtendInput>(async () => {
      throw new Error('dhcp machine: the app must provide the rebind actor');
    }),
    release: fromPromise<void, ExtendInput>(async () => undefined),
  },
  actions: {
    leaseBound: () => undefined,
    leaseRenewed: () => undefined,
    leaseExpired: () => undefined,
    acquireFailed: () => undefined,
  },
  guards: {
    pastRebind: ({ context }) => context.lease !== null && nowOf(context) >= context.lease.rebindAt,
  },
  delays: {
    renewDelay: ({ context }) => Math.max(0, (context.lease?.renewAt ?? 0) - nowOf(context)),
    expiryDelay: ({ context }) => Math.max(0, (context.lease?.expiresAt ?? 0) - nowOf(context)),
    renewRetryDelay: ({ context }) => halfway(context.lease?.rebindAt ?? 0, nowOf(context), context.retryMinMs),
    rebindRetryDelay: ({ context }) => halfway(context.lease?.expiresAt ?? 0, nowOf(context), context.retryMinMs),
  },
}).createMachine({
  id: 'dhcp',
  context: ({ input }) => ({
    lease: null,
    lastError: null,
    renewals: 0,
    retryMinMs: input.retryMinMs ?? DEFAULT_RETRY_MIN_MS,
    now: input.now,
  }),
  initial: 'selecting',
  states: {
    selecting: {
      on: { STOP: 'released' },
      invoke: {
        src: 'acquire',
        input: () => ({}),
        onDone: { target: 'held', actions: [assign(({ event }) => ({ lease: event.output, lastError: null })), 'leaseBound'] },
        onError: {
          target: 'failed',
          actions: [assign(({ event }) => ({ lastError: `acquire: ${errorText(event.error)}` })), 'acquireFailed'],
        },
      },
    },
    failed: { type: 'final' },
    /** The lease is valid until it ends, whatever renewing and rebinding do; an ACK starts it over. */
    held: {
      initial: 'bound',
      after: { expiryDelay: { target: 'expired', actions: assign({ lastError: 'expired: not renewed in time' }) } },
      on: { STOP: 'releasing' },
      states: {
        bound: { after: { renewDelay: 'renewing' } },
        renewing: {
          invoke: {
            src: 'renew',
            input: ({ context }) => ({ lease: context.lease! }),
            onDone: [
              {
                guard: ({ event }) => event.output === 'nak',
                target: '#dhcp.expired',
                actions: assign({ lastError: 'renew: the server refused the lease (NAK)' }),
              },
              {
                target: '#dhcp.held',
                reenter: true,
                actions: [
                  assign(({ context, event }) => ({ lease: event.output as Lease, lastError: null, renewals: context.renewals + 1 })),
                  'leaseRenewed',
                ],
              },
            ],
            onError: [
              {
                guard: 'pastRebind',
                target: 'rebinding',
                actions: assign(({ event }) => ({ lastError: `renew: ${errorText(event.error)}` })),
              },
              { target: 'renewWait', actions: assign(({ event }) => ({ lastError: `renew: ${errorText(event.error)}` })) },
            ],
          },
        },
        renewWait: { after: { renewRetryDelay: 'renewCheck' } },
        renewCheck: { always: [{ guard: 'pastRebind', target: 'rebinding' }, { target: 'renewing' }] },
        rebinding: {
          invoke: {
            src: 'rebind',
            input: ({ context }) => ({ lease: context.lease! }),
            onDone: [
              {
                guard: ({ event }) => event.output === 'nak',
                target: '#dhcp.expired',
                actions: assign({ lastError: 'rebind: the server refused the lease (NAK)' }),
              },
              {
                target: '#dhcp.held',
                reenter: true,
                actions: [
                  assign(({ context, event }) => ({ lease: event.output as Lease, lastError: null, renewals: context.renewals + 1 })),
                  'leaseRenewed',
                ],
              },
            ],
            onError: { target: 'rebindWait', actions: assign(({ event }) => ({ lastError: `rebind: ${errorText(event.error)}` })) },
          },
        },
        rebindWait: { after: { rebindRetryDelay: 'rebinding' } },
      },
    },
    /** The reference brings the interface down when its lease ends; the app's `leaseExpired` does that. */
    expired: { type: 'final', entry: 'leaseExpired' },
    releasing: {
      invoke: {
        src: 'release',
        input: ({ context }) => ({ lease: context.lease! }),
        onDone: 'released',
        onError: { target: 'released', actions: assign(({ event }) => ({ lastError: `release: ${errorText(event.error)}` })) },
      },
    },
    released: { type: 'final' },
  },
});
