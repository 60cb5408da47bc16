// The plugin kit (apps/cni/kit.ts) is the one place plugins take their shared helpers from: no plugin module
// declares its own netns check, store access, kernel binding or kernel error mapping again (each had been
// copied into up to a dozen files), and the kit itself does not load the Linux kernel adapter, so that plugins
// which never touch the kernel (host-local, static, win-*) do not bundle it. Plus the kit's own behaviour.

import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { describe, expect, it } from 'vitest';
import type { Kernel } from '../../adapters/kernel/types.ts';
import type { EventStore } from '../../adapters/store/types.ts';
import { applyIn, callStore, liveNetns, netnsExists, noNetns, observeIn, refusedAt, withStore } from '../../apps/cni/kit.ts';
import type { Ctx } from '../../apps/cni/plugin.ts';
import { ErrCode } from '../../core/cni/errors.ts';
import { emptyKernelState } from '../../core/kernel/model.ts';
import { ROOT } from '../support/cni.ts';

const PLUGINS = join(ROOT, 'apps', 'cni', 'plugins');
const sources = (): [string, string][] =>
  readdirSync(PLUGINS)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => [f, readFileSync(join(PLUGINS, f), 'utf8')]);

/** What a plugin module must not write itself: each is the kit's (or kernel.ts's, for the Linux binding). */
const FORBIDDEN: readonly (readonly [RegExp, string])[] = [
  [/\b(const|let|function)\s+noNetns\b/, 'a noNetns of its own (kit: noNetns)'],
  [/failed to open netns/, 'the CNI_NETNS message (kit: noNetns)'],
  [/existsSync\(\s*(args\.)?netns\s*\)/, 'a CNI_NETNS existence check (kit: netnsExists, liveNetns)'],
  [/\b(const|let|function)\s+withStore\b/, 'a withStore of its own (kit: withStore)'],
  [/ctx\.stores\.open\(/, 'opening a store itself (kit: callStore, withStore)'],
  [/existsSync\(\s*join\([^)]*'felt\.db'\s*\)\s*\)/, 'a storeExists of its own (kit: callStore.storeExists)'],
  [/\blinuxKernel\s*\(/, 'the Linux kernel adapter called directly (kernel.ts: kernelFor)'],
  [/adapters\/kernel\/linux\.ts/, 'the Linux kernel adapter imported (kernel.ts: kernelFor)'],
  [/\b(const|let|function)\s+kernelError\b/, 'a kernelError of its own (kit: kernelError, refusedAt)'],
  [/cniError\(\s*ErrCode\.Kernel\s*,\s*e\.msg/, 'a kernel error mapping of its own (kit: kernelError, refusedAt)'],
  [/\(ctx: Ctx\) => Kernel\b/, 'its own type for a kernel source (kit: KernelOf)'],
  [/\bops\.length === 0 \? TE\.right\(undefined\)/, 'an apply wrapper of its own (kit: applyIn)'],
];

describe('plugin kit: plugins do not re-declare its helpers', () => {
  it('finds the plugin modules', () => {
    expect(sources().length).toBeGreaterThan(20);
  });

  it.each(FORBIDDEN.map(([re, what]) => ({ re, what })))('no plugin module has $what', ({ re }) => {
    const offenders = sources()
      .filter(([, src]) => re.test(src))
      .map(([f]) => f);
    expect(offenders).toEqual([]);
  });

  it('the kit does not load the Linux kernel adapter (host-local and win-* bundles stay without it)', () => {
    const kit = readFileSync(join(ROOT, 'apps', 'cni', 'kit.ts'), 'utf8');
    expect(kit).not.toMatch(/adapters\/kernel\/linux\.ts|from '\.\/kernel\.ts'/);
    for (const f of ['host-local.ts', 'static.ts', 'win-common.ts', 'win-bridge.ts', 'win-overlay.ts', 'bridge-log.ts']) {
      expect(readFileSync(join(PLUGINS, f), 'utf8'), f).not.toMatch(/from '\.\.\/kernel\.ts'/);
    }
  });
});

describe('plugin kit: behaviour', () => {
  it('netns checks: the reference error for ADD/CHECK, undefined for an empty or gone path on DEL', () => {
    expect(noNetns('/run/netns/x')).toEqual({
      code: ErrCode.InvalidEnvironment,
      msg: 'CNI_NETNS: failed to open netns "/run/netns/x": no such file',
    });
    const dir = mkdtempSync(join(tmpdir(), 'felt-kit-'));
    try {
      const ns = join(dir, 'ns');
      writeFileSync(ns, '');
      expect(netnsExists(ns)).toBe(true);
      expect(liveNetns(ns)).toBe(ns);
      expect(liveNetns('')).toBeUndefined();
      expect(liveNetns(join(dir, 'gone'))).toBeUndefined();
      expect(netnsExists(join(dir, 'gone'))).toBe(false);
      expect(callStore.storeExists(dir)).toBe(false);
      writeFileSync(join(dir, 'felt.db'), '');
      expect(callStore.storeExists(dir)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('observeIn/applyIn map kernel errors to code 11 with their details; an empty plan runs nothing', async () => {
    let applied = 0;
    const refusing: Kernel = {
      observe: () => TE.left({ kind: 'kernel', msg: 'cannot read', details: 'ip said no' }),
      apply: () => {
        applied++;
        return TE.left({ kind: 'kernel', msg: 'failed to add link x0', details: 'RTNETLINK answers: File exists' });
      },
    };
    expect(await observeIn(refusing, { namespaces: [] })()).toEqual(
      E.left({ code: ErrCode.Kernel, msg: 'cannot read', details: 'ip said no' }),
    );
    expect(await applyIn(refusing, [])()).toEqual(E.right(undefined));
    expect(applied).toBe(0);
    const ops = [{ type: 'link-delete', link: { ns: 'x', name: 'x0' } }] as unknown as Parameters<Kernel['apply']>[0];
    expect(await applyIn(refusing, ops)()).toEqual(
      E.left({ code: ErrCode.Kernel, msg: 'failed to add link x0', details: 'RTNETLINK answers: File exists' }),
    );
    expect(applied).toBe(1);
    const fine: Kernel = { observe: () => TE.right(emptyKernelState()), apply: () => TE.right(undefined) };
    expect(await observeIn(fine, { namespaces: [] })()).toEqual(E.right(emptyKernelState()));
    expect(refusedAt('failed to find HNSEndpoint a_b')({ msg: 'gone' })).toEqual({
      code: ErrCode.Kernel,
      msg: 'failed to find HNSEndpoint a_b: gone',
    });
  });

  it('withStore opens the store for the call, runs one use and closes the handle, also when the use throws', async () => {
    const closed: string[] = [];
    const store = { close: () => closed.push('closed') } as unknown as EventStore;
    const ctx = {} as Ctx;
    const access = { openStore: async (d: string) => (d === '/bad' ? E.left({ code: ErrCode.IO, msg: 'cannot open' }) : E.right(store)) };
    expect(await withStore(access, ctx, '/d', () => E.right(7))()).toEqual(E.right(7));
    expect(closed).toEqual(['closed']);
    await expect(
      withStore(access, ctx, '/d', () => {
        throw new Error('boom');
      })(),
    ).rejects.toThrow('boom');
    expect(closed).toEqual(['closed', 'closed']);
    expect(await withStore(access, ctx, '/bad', () => E.right(7))()).toEqual(E.left({ code: ErrCode.IO, msg: 'cannot open' }));
    expect(closed).toHaveLength(2);
  });
});
