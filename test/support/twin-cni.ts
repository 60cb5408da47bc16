// Run a CNI plugin in-process against the memory twin of the kernel, with a fake IPAM plugin beside it that
// hands out one fixed address per (container, ifname) and remembers what it holds, so tests can see that a
// failed ADD or a DEL gave the address back. CNI_NETNS is any existing path: the twin enters no namespace.

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { dispatch, feltMark, makeCtx } from '../../apps/cni/dispatch.ts';
import type { Plugin } from '../../apps/cni/plugin.ts';
import { PLUGIN_VERSIONS, type Result } from '../../core/cni/result.ts';

export interface FakeIpam {
  readonly plugin: Plugin;
  /** "containerId/ifname" of the attachments holding an address. */
  readonly held: Set<string>;
  readonly calls: string[];
}

export function fakeIpam(result: Omit<Result, 'cniVersion'>): FakeIpam {
  const held = new Set<string>();
  const calls: string[] = [];
  const key = (a: { containerId: string; ifname: string }): string => `${a.containerId}/${a.ifname}`;
  const plugin: Plugin = {
    type: 'fake-ipam',
    versions: PLUGIN_VERSIONS,
    about: 'a fake IPAM plugin',
    add: (args, conf) => {
      calls.push('ADD');
      held.add(key(args));
      return TE.right({ cniVersion: conf.cniVersion, ...result });
    },
    del: (args) => {
      calls.push('DEL');
      held.delete(key(args));
      return TE.right(undefined);
    },
    check: () => {
      calls.push('CHECK');
      return TE.right(undefined);
    },
  };
  return { plugin, held, calls };
}

/**
 * A directory holding a `fake-ipam` file carrying felt's plugin mark (so CNI_PATH resolves it to "felt's own"
 * and it runs in-process).
 */
export function pluginDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'felt-twin-cni-'));
  writeFileSync(join(dir, 'fake-ipam'), `#!/bin/false\n${feltMark('fake-ipam')}\n`);
  chmodSync(join(dir, 'fake-ipam'), 0o755);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface TwinCall {
  readonly plugin: Plugin;
  readonly ipam?: FakeIpam;
  readonly dir: string;
  readonly netns: string;
  readonly command: 'ADD' | 'DEL' | 'CHECK';
  readonly config: unknown;
  readonly containerId?: string;
  readonly ifname?: string;
}

export async function callTwin(c: TwinCall): Promise<{ code: number; json: any }> {
  const env = {
    CNI_COMMAND: c.command,
    CNI_CONTAINERID: c.containerId ?? 'c1',
    CNI_NETNS: c.netns,
    CNI_IFNAME: c.ifname ?? 'eth0',
    CNI_PATH: c.dir,
  };
  const out = await dispatch(c.plugin, env, JSON.stringify(c.config), makeCtx(env, c.dir, c.ipam ? { 'fake-ipam': c.ipam.plugin } : {}));
  return { code: out.exitCode, json: out.stdout ? JSON.parse(out.stdout) : undefined };
}
