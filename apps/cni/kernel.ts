// The kernel as CNI plugins use it: the Linux adapter bound to the call's host namespace, and its errors as CNI errors.

import type { KernelError } from '../../adapters/kernel/types.ts';
import { linuxKernel } from '../../adapters/kernel/linux.ts';
import { cniError, ErrCode, type CniError } from '../../core/cni/errors.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';
import type { Ctx } from './plugin.ts';

/** The kernel as this call sees it: the host namespace is the caller's when feltd serves the call. */
export const kernelFor = (ctx: Ctx): Kernel => ctx.kernel ?? linuxKernel({ pid: ctx.pid, ...(ctx.hostNetns !== undefined ? { hostNetns: ctx.hostNetns } : {}) });

export const kernelError = (e: KernelError): CniError => cniError(ErrCode.Kernel, e.msg, e.details);
