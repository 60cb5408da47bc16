// host-device in-process on the memory twins of the kernel and the event store, with a sysfs tree of the
// test's own: a device found by pciBusID, by runtimeConfig.deviceID (a PCI address or an auxiliary device),
// a PCI device bound to a userspace (DPDK) driver (nothing moves, the result has no interface), and an ADD
// whose apply fails half-way converging back to the recorded originals.

import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { memoryKernel, type MemoryKernel } from '../../adapters/memory/kernel.ts';
import { memoryStore, type MemoryStore } from '../../adapters/memory/store.ts';
import type { Kernel, KernelError } from '../../adapters/kernel/types.ts';
import { dispatch, makeCtx } from '../../apps/cni/dispatch.ts';
import { makeHostDevice } from '../../apps/cni/plugins/host-device.ts';
import { emptyKernelState, HOST, type KernelState, type Link } from '../../core/kernel/model.ts';

const dir = mkdtempSync(join(tmpdir(), 'felt-hostdev-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// Any existing path serves as CNI_NETNS: the twin does not enter namespaces.
const NS = join(dir, 'pod');
mkdirSync(NS);
const SYS = join(dir, 'sys');
const mk = (...p: string[]) => mkdirSync(join(SYS, ...p), { recursive: true });
mk('bus/pci/devices/0000:00:05.0/net/ens5');
mk('bus/pci/devices/0000:00:07.0/virtio3/net/ens7');
mk('bus/pci/devices/0000:00:06.0');
mk('bus/pci/drivers/vfio-pci');
symlinkSync('../../../bus/pci/drivers/vfio-pci', join(SYS, 'bus/pci/devices/0000:00:06.0/driver'));
mk('bus/auxiliary/devices/mlx5_core.sf.4/net/ens5');

const ens = (name: string, mac: string): Link => ({
  ns: HOST,
  name,
  kind: 'device',
  mtu: 9000,
  mac,
  up: true,
  master: null,
  promisc: false,
  allmulti: false,
  txqlen: 1000,
  hairpin: false,
});
const world = (): KernelState => ({
  ...emptyKernelState(),
  links: [ens('ens5', '02:00:00:00:00:05'), ens('ens7', '02:00:00:00:00:07'), { ns: NS, name: 'lo', kind: 'loopback', up: true }],
});

let k: MemoryKernel;
let store: MemoryStore;
let failAfterMove = false;

/** The twin, except that (when asked) an apply fails right after the device moved. */
const flaky = (): Kernel => ({
  observe: (req) => k.observe(req),
  apply:
    (ops): TE.TaskEither<KernelError, void> =>
    async () => {
      const i = ops.findIndex((o) => o.op === 'link.move');
      if (!failAfterMove || i < 0 || ops[i]!.op !== 'link.move' || (ops[i] as { ns: string }).ns !== HOST) return k.applySync(ops);
      const r = k.applySync(ops.slice(0, i + 1));
      return E.isLeft(r) ? r : E.left({ kind: 'kernel', msg: 'failed to set up on eth0: RTNETLINK answers: Invalid argument' });
    },
});

const plugin = () =>
  makeHostDevice({ kernel: flaky, openStore: async () => E.right(store), storeExists: () => store.events.length > 0, sysfs: SYS });
const conf = (extra: Record<string, unknown>) => ({ cniVersion: '1.0.0', name: 'hd', type: 'host-device', ...extra });

async function call(command: 'ADD' | 'DEL' | 'CHECK', c: unknown) {
  const env = { CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: NS, CNI_IFNAME: 'eth0', CNI_PATH: '/nowhere' };
  const out = await dispatch(plugin(), env, JSON.stringify(c), makeCtx(env, '/nowhere', {}));
  return { code: out.exitCode, json: out.stdout ? JSON.parse(out.stdout) : undefined };
}
const where = (name: string) => k.state().links.find((l) => l.name === name || l.alias === name);

beforeEach(() => {
  k = memoryKernel(world());
  store = memoryStore();
  failAfterMove = false;
});

describe('host-device on the twins', () => {
  it.each([
    [{ pciBusID: '0000:00:05.0' }, 'ens5'],
    [{ pciBusID: '0000:00:07.0' }, 'ens7'],
    [{ runtimeConfig: { deviceID: '0000:00:05.0' } }, 'ens5'],
    [{ pciBusID: '0000:00:07.0', runtimeConfig: { deviceID: 'mlx5_core.sf.4' } }, 'ens5'],
  ])('%j finds %s; ADD, CHECK, DEL, DEL', async (sel, name) => {
    const r = await call('ADD', conf(sel));
    expect(r.json).toMatchObject({ interfaces: [{ name: 'eth0', sandbox: NS }] });
    expect(where(name)).toMatchObject({ ns: NS, name: 'eth0', alias: name, up: true, mtu: 9000 });
    expect((await call('CHECK', { ...conf(sel), prevResult: r.json })).code).toBe(0);
    expect((await call('DEL', conf(sel))).code).toBe(0);
    expect(where(name)).toEqual(ens(name, name === 'ens5' ? '02:00:00:00:00:05' : '02:00:00:00:00:07'));
    expect((await call('DEL', conf(sel))).code).toBe(0);
    expect(store.events.map((e) => e.type)).toEqual(['HostDeviceAttached', 'HostDeviceReleased']);
  });

  it('a PCI device on a userspace driver: nothing moves, the result has no interface', async () => {
    const r = await call('ADD', conf({ pciBusID: '0000:00:06.0' }));
    expect(r).toEqual({ code: 0, json: { cniVersion: '1.0.0' } });
    expect(k.applied).toEqual([]);
    expect((await call('CHECK', { ...conf({ pciBusID: '0000:00:06.0' }), prevResult: r.json })).code).toBe(0);
    expect((await call('DEL', conf({ pciBusID: '0000:00:06.0' }))).code).toBe(0);
    expect(store.events).toEqual([]);
  });

  it('an apply that fails after the move converges back to the originals and forgets them', async () => {
    failAfterMove = true;
    const r = await call('ADD', conf({ device: 'ens5' }));
    expect(r.json).toMatchObject({ code: 102 });
    expect(where('ens5')).toEqual(ens('ens5', '02:00:00:00:00:05'));
    expect(store.events.map((e) => [e.type, (e.data as { reason?: string }).reason])).toEqual([
      ['HostDeviceAttached', undefined],
      ['HostDeviceReleased', 'add-failed'],
    ]);
  });

  it('CHECK names a device that is not in the pod', async () => {
    const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: NS }] };
    const r = await call('CHECK', { ...conf({ device: 'ens5' }), prevResult: prev });
    expect(r.json).toMatchObject({ code: 103, msg: expect.stringContaining(`missing eth0 in ${NS}`) });
  });
});
