// The kernel as CNI plugins use it: the Linux adapter bound to this process, and its errors as CNI errors.

import type { KernelError } from '../../adapters/kernel/types.ts';
import { linuxKernel } from '../../adapters/kernel/linux.ts';
import { cniError, ErrCode, type CniError } from '../../core/cni/errors.ts';
import type { Kernel } from '../../adapters/kernel/types.ts';
import type { Ctx } from './plugin.ts';

export const kernelFor = (ctx: Ctx): Kernel => linuxKernel({ pid: ctx.pid });

export const kernelError = (e: KernelError): CniError => cniError(ErrCode.Kernel, e.msg, e.details);
