// The lease lifecycle stepped with xstate's SimulatedClock: no real time passes; promises of the provided
// actors settle between steps.

import { describe, expect, it } from 'vitest';
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { leaseMachine, type AcquireInput, type LeaseMachineInput, type RenewInput } from '../../core/flannel/lease-machine.ts';
import type { Lease } from '../../core/flannel/types.ts';

const H = 3600_000;
const T0 = Date.parse('2030-01-01T00:00:00.000Z');
const iso = (ms: number) => new Date(ms).toISOString();
const lease = (expiresAt: number, subnet = '10.244.3.0/24'): Lease => ({
  subnet,
  attrs: { PublicIP: '198.51.100.1', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '3e:9c:0f:11:22:33' } },
  expiration: iso(expiresAt),
});
const settle = () => new Promise<void>((r) => setImmediate(r));

type Outcome<T> = T | Error;

/** A machine whose acquire/renew answer from scripts, recording every call with the simulated time. */
function harness(opts: {
  acquire: ((input: AcquireInput, now: number) => Outcome<Lease>)[];
  renew?: ((input: RenewInput, now: number) => Outcome<Lease | 'lost'>)[];
  input?: LeaseMachineInput;
  withNow?: boolean;
}) {
  const clock = new SimulatedClock();
  clock.set(T0);
  const calls: string[] = [];
  const acquires = [...opts.acquire];
  const renews = [...(opts.renew ?? [])];
  const answer = <T>(kind: string, script: ((i: never, now: number) => Outcome<T>)[], input: unknown): Promise<T> => {
    calls.push(`${kind}@${(clock.now() - T0) / 1000}s`);
    const f = script.shift();
    if (!f) return new Promise<T>(() => undefined); // never settles
    const r = f(input as never, clock.now());
    return r instanceof Error ? Promise.reject(r) : Promise.resolve(r);
  };
  const lost: string[] = [];
  const actor = createActor(
    leaseMachine.provide({
      actors: {
        acquire: fromPromise(({ input }: { input: AcquireInput }) => answer('acquire', acquires, input)),
        renew: fromPromise(({ input }: { input: RenewInput }) => answer('renew', renews, input)),
      },
      actions: { leaseLost: ({ context }) => void lost.push(context.lastError ?? '') },
    }),
    { clock, input: { ...opts.input, ...(opts.withNow ? { now: () => clock.now() } : {}) } },
  );
  const state = () => actor.getSnapshot().value;
  const at = async (ms: number) => {
    clock.increment(ms);
    await settle();
  };
  return { clock, actor, calls, lost, state, at };
}

describe('lease machine', () => {
  it('acquires, renews at expiration minus the margin, and schedules from the new expiration', async () => {
    const h = harness({
      acquire: [(_, now) => lease(now + 24 * H)],
      renew: [(_, now) => lease(now + 24 * H), (_, now) => lease(now + 24 * H)],
      input: { renewMarginMs: 1 * H },
    });
    h.actor.start();
    await settle();
    expect(h.state()).toEqual({ held: 'leased' });
    expect(h.actor.getSnapshot().context.lease?.expiration).toBe(iso(T0 + 24 * H));
    await h.at(23 * H - 1);
    expect(h.state()).toEqual({ held: 'leased' });
    await h.at(1);
    // Renewed (the promise settled): back to leased with the new expiration, next renewal 23 h later.
    expect(h.state()).toEqual({ held: 'leased' });
    expect(h.actor.getSnapshot().context.lease?.expiration).toBe(iso(T0 + 47 * H));
    await h.at(23 * H - 1);
    expect(h.calls).toEqual(['acquire@0s', 'renew@82800s']);
    await h.at(1);
    expect(h.calls).toEqual(['acquire@0s', 'renew@82800s', 'renew@165600s']);
  });

  it('uses input.now when given (same timing)', async () => {
    const h = harness({
      acquire: [(_, now) => lease(now + 2 * H)],
      renew: [(_, now) => lease(now + 2 * H)],
      input: { renewMarginMs: 30 * 60_000 },
      withNow: true,
    });
    h.actor.start();
    await settle();
    await h.at(90 * 60_000);
    expect(h.calls).toEqual(['acquire@0s', 'renew@5400s']);
  });

  it('a renewal past the margin happens at once', async () => {
    const h = harness({ acquire: [(_, now) => lease(now + 30 * 60_000)], renew: [(_, now) => lease(now + 24 * H)] });
    h.actor.start();
    await settle();
    await h.at(0);
    expect(h.calls).toEqual(['acquire@0s', 'renew@0s']);
  });

  it('acquire failure: retried after a doubling backoff, then leased', async () => {
    const fail = () => new Error('etcd unreachable');
    const h = harness({
      acquire: [fail, fail, fail, (_, now) => lease(now + 24 * H)],
      input: { backoffInitialMs: 1000, backoffMaxMs: 3000 },
    });
    h.actor.start();
    await settle();
    expect(h.state()).toBe('backoff');
    expect(h.actor.getSnapshot().context).toMatchObject({ attempt: 1, lastError: 'acquire: etcd unreachable' });
    await h.at(999);
    expect(h.calls).toEqual(['acquire@0s']);
    await h.at(1); // 1 s
    await h.at(2000); // 2 s more
    await h.at(2999); // capped at 3 s: not yet
    expect(h.calls).toEqual(['acquire@0s', 'acquire@1s', 'acquire@3s']);
    await h.at(1);
    expect(h.calls).toEqual(['acquire@0s', 'acquire@1s', 'acquire@3s', 'acquire@6s']);
    expect(h.state()).toEqual({ held: 'leased' });
    expect(h.actor.getSnapshot().context).toMatchObject({ attempt: 0, lastError: null });
  });

  it('renew failure: retried every minute while the lease is valid, lost at expiry, then acquired again', async () => {
    const old = lease(T0 + 2 * H);
    const fail = () => new Error('timeout');
    const h = harness({
      acquire: [() => old, (input, now) => (expect(input.previous).toEqual(old), lease(now + 24 * H, '10.244.3.0/24'))],
      renew: Array.from({ length: 100 }, () => fail),
      input: { renewMarginMs: 3 * 60_000, renewRetryMs: 50_000 },
    });
    h.actor.start();
    await settle();
    await h.at(2 * H - 3 * 60_000); // renewal due at 7020 s
    expect(h.state()).toEqual({ held: 'renewRetry' });
    expect(h.actor.getSnapshot().context.lastError).toBe('renew: timeout');
    await h.at(50_000);
    await h.at(50_000);
    await h.at(50_000);
    expect(h.calls).toEqual(['acquire@0s', 'renew@7020s', 'renew@7070s', 'renew@7120s', 'renew@7170s']);
    await h.at(30_000 - 1);
    expect(h.state()).toEqual({ held: 'renewRetry' });
    expect(h.lost).toEqual([]);
    // Expiry: lost (the hook runs), and acquiring again right away, with the old lease as `previous`.
    await h.at(1);
    expect(h.lost).toEqual(['expired: not renewed in time']);
    expect(h.calls.at(-1)).toBe('acquire@7200s');
    expect(h.state()).toEqual({ held: 'leased' });
  });

  it('renew says lost: lost, then acquiring', async () => {
    const h = harness({
      acquire: [(_, now) => lease(now + 24 * H), (_, now) => lease(now + 24 * H, '10.244.9.0/24')],
      renew: [() => 'lost'],
    });
    h.actor.start();
    await settle();
    await h.at(23 * H);
    expect(h.state()).toBe('lost');
    expect(h.lost).toEqual(['renew: the lease is gone or held by another node']);
    await h.at(0);
    expect(h.state()).toEqual({ held: 'leased' });
    expect(h.actor.getSnapshot().context.lease?.subnet).toBe('10.244.9.0/24');
  });

  it('REVOKED: the lease was removed by someone; acquire again at once', async () => {
    const h = harness({ acquire: [(_, now) => lease(now + 24 * H), (_, now) => lease(now + 24 * H)] });
    h.actor.start();
    await settle();
    await h.at(5 * H);
    h.actor.send({ type: 'REVOKED' });
    expect(h.state()).toBe('lost');
    expect(h.lost).toEqual(['revoked: the lease was removed from the store']);
    await h.at(0);
    expect(h.calls).toEqual(['acquire@0s', 'acquire@18000s']);
    // The old renewal timer is gone: the next renewal is 23 h after the new lease.
    await h.at(23 * H - 1);
    expect(h.calls).toEqual(['acquire@0s', 'acquire@18000s']);
  });

  it('LEASE_UPDATED moves the renewal and the expiry', async () => {
    const h = harness({ acquire: [(_, now) => lease(now + 24 * H)], renew: [(_, now) => lease(now + 24 * H)] });
    h.actor.start();
    await settle();
    await h.at(10 * H);
    h.actor.send({ type: 'LEASE_UPDATED', lease: lease(T0 + 34 * H) });
    await h.at(13 * H); // the old renewal time (23 h) passes
    expect(h.calls).toEqual(['acquire@0s']);
    await h.at(10 * H); // 33 h
    expect(h.calls).toEqual(['acquire@0s', 'renew@118800s']);
  });

  it('without a time source, scheduling a renewal fails loudly', async () => {
    const actor = createActor(leaseMachine.provide({ actors: { acquire: fromPromise(async () => lease(T0 + H)) } }), { input: {} });
    const errors: unknown[] = [];
    actor.subscribe({ error: (e) => void errors.push(e) });
    actor.start();
    await settle();
    expect(actor.getSnapshot().status).toBe('error');
    expect(String(errors[0])).toMatch(/lease machine: no time source/);
  });
});
