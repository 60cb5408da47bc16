// A lease change that arrives while a full resync runs: the delta pass does not wait for the full pass, and
// the full pass's plan (desired state read before the change, kernel read before or after the delta applied
// it) never undoes what the delta applied. feltd runs in-process on the in-memory twins; the kernel twin's
// observe is held until the test releases it, so every interleaving is chosen by the test, not by timing.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Kernel, KernelError, ObserveRequest } from '../../adapters/kernel/types.ts';
import { memoryKernel, type MemoryKernel } from '../../adapters/memory/kernel.ts';
import { memoryLeaseStore, type MemoryLeaseStore } from '../../adapters/memory/leases.ts';
import { memoryStore } from '../../adapters/memory/store.ts';
import { startDaemon, type Daemon } from '../../apps/feltd/daemon.ts';
import { parseFlags } from '../../apps/feltd/flags.ts';
import { Metrics, type Logger } from '../../apps/feltd/observability.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { emptyKernelState, HOST, type KernelState } from '../../core/kernel/model.ts';
import { eventually } from '../support/eventually.ts';

const NET = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';
const config = (() => {
  const c = parseNetConfig(NET);
  if (E.isLeft(c)) throw new Error(c.left);
  return c.right.config;
})();
const underlay = { dev: 'eth0', ip: '198.51.100.11', cidr: '198.51.100.0/24', mtu: 1500, publicIP: '198.51.100.11' };
const remote = (n: number, macByte = 1) => ({
  subnet: `10.244.${n}.0/24`,
  attrs: {
    PublicIP: `198.51.100.${20 + n}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: `02:00:00:00:${macByte.toString(16).padStart(2, '0')}:${n.toString(16).padStart(2, '0')}` },
  },
});

/** The kernel twin, whose next observe can be held: it reads the kernel `when` the call comes in or when released. */
interface HeldKernel extends Kernel {
  hold(when: 'at-call' | 'at-release'): { readonly called: Promise<void>; release(): void };
}
function heldKernel(inner: MemoryKernel): HeldKernel {
  let next: { when: 'at-call' | 'at-release'; called: () => void; released: Promise<void> } | undefined;
  return {
    apply: (ops) => inner.apply(ops),
    observe:
      (req: ObserveRequest): TE.TaskEither<KernelError, KernelState> =>
      async () => {
        const h = next;
        next = undefined;
        if (!h) return inner.observe(req)();
        const early = h.when === 'at-call' ? await inner.observe(req)() : undefined;
        h.called();
        await h.released;
        return early ?? inner.observe(req)();
      },
    hold(when) {
      let called!: () => void;
      let release!: () => void;
      const c = new Promise<void>((r) => (called = r));
      next = { when, called, released: new Promise<void>((r) => (release = r)) };
      return { called: c, release };
    },
  };
}

/**
 * felt_drift_repaired_total of one kind, or summed over every kind; throws when the family is not in the
 * scrape at all (feltd declares every kind at 0 from the start), so a renamed metric fails instead of reading 0.
 */
function drift(m: string, kind?: string): number {
  const samples = [...m.matchAll(/^felt_drift_repaired_total\{kind="([^"]+)"\} (\S+)$/gm)];
  if (samples.length === 0) throw new Error(`no felt_drift_repaired_total{kind=...} in the scrape:\n${m}`);
  return samples.filter((x) => kind === undefined || x[1] === kind).reduce((a, x) => a + Number(x[2]), 0);
}

const quiet: Logger = { info: () => undefined, debug: () => undefined, error: () => undefined };
const routeTo = (k: KernelState, n: number) => k.routes.find((r) => r.dst === `10.244.${n}.0/24`);
const neighOf = (k: KernelState, n: number) => k.neighbours.find((x) => x.ip === `10.244.${n}.0`);
const fdbOf = (k: KernelState, n: number) => k.fdb.filter((x) => x.dst === `198.51.100.${20 + n}`);

describe('feltd: a lease change during a full resync', () => {
  let dir: string;
  let inner: MemoryKernel;
  let kernel: HeldKernel;
  let leases: MemoryLeaseStore;
  let daemon: Daemon;
  let metrics: Metrics;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'felt-overtake-'));
    inner = memoryKernel({ ...emptyKernelState(), links: [{ ns: HOST, name: 'eth0', kind: 'device', up: true }] });
    kernel = heldKernel(inner);
    leases = memoryLeaseStore();
    await leases.putNetworkConfig(NET)();
    for (const n of [2, 3]) expect(E.isRight(await leases.acquire(remote(n), 3600)())).toBe(true);
    // This node takes 10.244.1.0/24 back from a subnet.env of a previous run: a random own subnet could be one
    // the test gives a remote node (10.244.2-4.0/24), whose acquire would then be refused and never seen
    // (about one run in fifty timed out waiting for that lease's delta pass).
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'subnet.env'),
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
    );
    const parsed = parseFlags(['--state-dir', join(dir, 'state'), '--subnet-file', join(dir, 'subnet.env'), '--iptables-resync', '3600']);
    if ('error' in parsed) throw new Error(parsed.error);
    metrics = new Metrics();
    daemon = await startDaemon({ flags: parsed.flags, underlay, leases, events: memoryStore(), kernel, log: quiet, metrics }, config);
    await eventually(() => !!routeTo(inner.state(), 2) && !!routeTo(inner.state(), 3), { what: 'routes to both remote nodes' });
    await daemon.idle();
    expect(readFileSync(join(dir, 'subnet.env'), 'utf8')).toContain('FLANNEL_SUBNET=10.244.1.1/24');
  });

  afterEach(async () => {
    await daemon.stop();
    await leases.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A full resync held in its observation while `change` happens and its delta reaches the kernel. */
  async function overtake(
    when: 'at-call' | 'at-release',
    change: () => Promise<unknown>,
    applied: (k: KernelState) => boolean,
  ): Promise<void> {
    const held = kernel.hold(when);
    const pass = daemon.resync();
    await held.called;
    await change();
    // The delta is applied while the full pass still waits for its observation: it did not queue behind it.
    await eventually(() => applied(inner.state()), { what: 'the delta pass, while the full pass is held' });
    held.release();
    await pass;
  }

  /** Nothing left to do: a further full resync applies no op. */
  async function settled(): Promise<void> {
    const ops = inner.applied.length;
    await daemon.resync();
    expect(inner.applied.slice(ops)).toEqual([]);
  }

  it('a lease removed while the full pass observes stays removed (no stale route put back), and drift elsewhere is repaired', async () => {
    // Drift on a lease nobody changes: the same full pass must still repair it.
    const drifted = routeTo(inner.state(), 3)!;
    expect(E.isRight(inner.applySync([{ op: 'route.del', route: drifted }]))).toBe(true);
    const before = metrics.render();
    await overtake(
      'at-release',
      () => leases.revoke(remote(2).subnet)(),
      (k) => !routeTo(k, 2),
    );
    // The repair is counted as drift: one route. The removed lease's objects are a lease change, not drift.
    expect(drift(metrics.render(), 'route') - drift(before, 'route')).toBe(1);
    expect(drift(metrics.render()) - drift(before)).toBe(1);
    const k = inner.state();
    expect(routeTo(k, 2)).toBeUndefined();
    expect(neighOf(k, 2)).toBeUndefined();
    expect(fdbOf(k, 2)).toEqual([]);
    expect(routeTo(k, 3)).toEqual(drifted);
    await settled();
  });

  // Each change with the kernel read before the delta applied it (at-call) and after (at-release).
  for (const when of ['at-call', 'at-release'] as const) {
    it(`a lease removed during a full pass stays removed (kernel read ${when})`, async () => {
      await overtake(
        when,
        () => leases.revoke(remote(2).subnet)(),
        (k) => !routeTo(k, 2),
      );
      const k = inner.state();
      expect(routeTo(k, 2)).toBeUndefined();
      expect(neighOf(k, 2)).toBeUndefined();
      expect(fdbOf(k, 2)).toEqual([]);
      await settled();
    });

    it(`a lease added during a full pass is not deleted by its plan (kernel read ${when})`, async () => {
      await overtake(
        when,
        () => leases.acquire(remote(4), 3600)(),
        (k) => !!routeTo(k, 4),
      );
      const k = inner.state();
      expect(routeTo(k, 4)).toBeDefined();
      expect(neighOf(k, 4)?.lladdr).toBe('02:00:00:00:01:04');
      expect(fdbOf(k, 4).map((f) => f.mac)).toEqual(['02:00:00:00:01:04']);
      await settled();
    });

    it(`a VtepMAC that moved during a full pass is not moved back (kernel read ${when})`, async () => {
      await overtake(
        when,
        () => leases.renew(remote(3, 2), 3600)(),
        (k) => neighOf(k, 3)?.lladdr === '02:00:00:00:02:03',
      );
      const k = inner.state();
      expect(neighOf(k, 3)?.lladdr).toBe('02:00:00:00:02:03');
      expect(fdbOf(k, 3).map((f) => f.mac)).toEqual(['02:00:00:00:02:03']);
      expect(routeTo(k, 3)).toBeDefined();
      await settled();
    });
  }

  it('full passes that overlap no change apply nothing and count no drift', async () => {
    const before = metrics.render();
    await settled();
    await settled();
    expect(drift(metrics.render())).toBe(drift(before));
  });
});
