// The kernel as CNI plugins use it: the Linux adapter bound to the call's host namespace. The rest of what
// plugins share (error mapping, observe/apply, netns checks, stores) is the kit, ./kit.ts, which does not
// load the Linux adapter.

import { linuxKernel } from '../../adapters/kernel/linux.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';
import { callStore, type PluginDeps } from './kit.ts';
import type { Ctx } from './plugin.ts';

/** The kernel as this call sees it: the host namespace is the caller's when feltd serves the call. */
export const kernelFor = (ctx: Ctx): Kernel =>
  ctx.kernel ?? linuxKernel({ pid: ctx.pid, ...(ctx.hostNetns !== undefined ? { hostNetns: ctx.hostNetns } : {}) });

/** The effects of a real call: the Linux kernel and the call's stores. */
export const callDeps: PluginDeps = { kernel: kernelFor, ...callStore };
