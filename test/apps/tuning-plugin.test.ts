// The tuning plugin in-process, on the memory twins of the kernel and the event store: the allowlist file
// (its path injected), an ADD whose apply fails half-way converging back to the originals, and the event log
// as the only memory between ADD and DEL.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { memoryKernel, type MemoryKernel } from '../../adapters/memory/kernel.ts';
import { memoryStore, type MemoryStore } from '../../adapters/memory/store.ts';
import type { Kernel, KernelError } from '../../adapters/kernel/types.ts';
import { dispatch, makeCtx } from '../../apps/cni/dispatch.ts';
import { linuxDeps, makeTuning, type TuningDeps } from '../../apps/cni/plugins/tuning.ts';
import { emptyKernelState, type KernelState } from '../../core/kernel/model.ts';

const dir = mkdtempSync(join(tmpdir(), 'felt-tuning-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// Any existing path serves as CNI_NETNS: the twin does not enter namespaces.
const NS = dir;
const ALLOWLIST = join(dir, 'allowlist.conf');

const world = (): KernelState => ({
  ...emptyKernelState(),
  links: [
    {
      ns: NS,
      name: 'eth0',
      kind: 'veth',
      mtu: 1500,
      mac: '02:00:00:00:00:01',
      up: true,
      promisc: false,
      allmulti: false,
      txqlen: 1000,
      master: null,
      hairpin: false,
    },
  ],
  sysctls: [
    { ns: NS, key: 'net.core.somaxconn', value: '4096' },
    { ns: NS, key: 'net.ipv4.conf.eth0.arp_filter', value: '0' },
  ],
});

let k: MemoryKernel;
let store: MemoryStore;
let failLinkSet = false;

/** The twin, except that (when asked) a link.set fails after the ops before it were applied. */
const flaky = (): Kernel => ({
  observe: (req) => k.observe(req),
  apply:
    (ops): TE.TaskEither<KernelError, void> =>
    async () => {
      const i = failLinkSet ? ops.findIndex((o) => o.op === 'link.set') : -1;
      if (i < 0) return k.applySync(ops);
      const r = k.applySync(ops.slice(0, i));
      return E.isLeft(r) ? r : E.left({ kind: 'kernel', msg: 'failed to set mtu 1400 on eth0: RTNETLINK answers: Invalid argument' });
    },
});

const deps = (): TuningDeps => ({
  kernel: flaky,
  openStore: async () => E.right(store),
  storeExists: () => store.events.length > 0,
  allowlistPath: ALLOWLIST,
  readText: linuxDeps.readText,
});

const prevResult = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: NS }],
  ips: [{ address: '10.0.0.2/24', interface: 0 }],
};
const conf = (extra: Record<string, unknown> = {}) => ({
  cniVersion: '1.0.0',
  name: 'n1',
  type: 'tuning',
  sysctl: { 'net.core.somaxconn': '100', 'net.ipv4.conf.IFNAME.arp_filter': '1' },
  mtu: 1400,
  prevResult,
  ...extra,
});

async function call(command: 'ADD' | 'DEL' | 'CHECK', c: unknown) {
  const env = { CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: NS, CNI_IFNAME: 'eth0', CNI_PATH: '/nowhere' };
  const out = await dispatch(makeTuning(deps()), env, JSON.stringify(c), makeCtx(env, '/nowhere', {}));
  return { code: out.exitCode, json: out.stdout ? JSON.parse(out.stdout) : undefined };
}

beforeEach(() => {
  k = memoryKernel(world());
  store = memoryStore();
  failLinkSet = false;
  rmSync(ALLOWLIST, { force: true });
});

describe('tuning on the twins', () => {
  it('ADD, CHECK, DEL: the originals come back from the log', async () => {
    expect((await call('ADD', conf())).code).toBe(0);
    expect(k.state().links[0]).toMatchObject({ mtu: 1400 });
    expect(k.state().sysctls.map((s) => s.value)).toEqual(['100', '1']);
    expect((await call('CHECK', conf())).code).toBe(0);
    expect((await call('DEL', conf())).code).toBe(0);
    expect(k.state()).toEqual(world());
    expect(store.events.map((e) => e.type)).toEqual(['TuningApplied', 'TuningReverted']);
  });

  it('the allowlist file is honoured when it exists', async () => {
    writeFileSync(ALLOWLIST, '^net\\.core\\.somaxconn$\n');
    const r = await call('ADD', conf());
    expect(r.json).toMatchObject({
      code: 7,
      msg: expect.stringContaining(`sysctl["net.ipv4.conf.IFNAME.arp_filter"]: not allowed by ${ALLOWLIST}`),
    });
    expect(k.state()).toEqual(world());
    writeFileSync(ALLOWLIST, '^net\\.core\\.somaxconn$\nIFNAME\n');
    expect((await call('ADD', conf())).code).toBe(0);
    writeFileSync(ALLOWLIST, '([\n');
    expect((await call('ADD', conf())).json).toMatchObject({
      code: 7,
      msg: expect.stringContaining(`the allowlist ${ALLOWLIST} does not parse: line 1`),
    });
    // DEL is not blocked by the allowlist.
    expect((await call('DEL', conf())).code).toBe(0);
    expect(k.state()).toEqual(world());
  });

  it('an ADD that fails half-way puts the originals back and forgets them', async () => {
    failLinkSet = true;
    const r = await call('ADD', conf());
    expect(r.json).toMatchObject({ code: 102, msg: expect.stringContaining('failed to set mtu 1400 on eth0') });
    // The sysctls were written before the link failed; they are back.
    expect(k.state()).toEqual(world());
    expect(store.events.map((e) => [e.type, (e.data as { reason?: string }).reason])).toEqual([
      ['TuningApplied', undefined],
      ['TuningReverted', 'add-failed'],
    ]);
    failLinkSet = false;
    expect((await call('DEL', conf())).code).toBe(0);
    expect(k.state()).toEqual(world());
  });

  it('CHECK: promiscuous mode must be off unless configured on, as the reference checks it', async () => {
    expect((await call('ADD', conf())).code).toBe(0);
    k.applySync([{ op: 'link.set', link: { ns: NS, name: 'eth0', kind: 'device' }, changes: { promisc: true } }]);
    expect((await call('CHECK', conf())).json).toMatchObject({
      code: 103,
      msg: expect.stringContaining('wrong promiscuous mode on eth0: on, want off'),
    });
    expect((await call('CHECK', conf({ promisc: true }))).code).toBe(0);
  });
});
