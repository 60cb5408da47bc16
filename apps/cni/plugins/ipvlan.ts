// ipvlan: the container interface is an ipvlan on a host device (core/ipvlan/desired.ts), through the shared
// lower-device flow (lower-link.ts). Chained, the master and the addresses may come from prevResult.

import { ipvlanAddressing, ipvlanMaster, ipvlanPlan, parseIpvlanConf, type IpvlanConf } from '../../../core/ipvlan/desired.ts';
import { kernelFor } from '../kernel.ts';
import type { KernelOf } from '../kit.ts';
import type { Plugin } from '../plugin.ts';
import { makeLowerLinkPlugin } from './lower-link.ts';

/** The plugin on a kernel of the caller's choosing (tests pass the memory twin). */
export const makeIpvlan = (kernel: KernelOf = kernelFor): Plugin =>
  makeLowerLinkPlugin<IpvlanConf>(
    {
      type: 'ipvlan',
      about: 'felt ipvlan: an ipvlan on a host device per container',
      parse: parseIpvlanConf,
      chained: true,
      master: ipvlanMaster,
      addressing: ipvlanAddressing,
      desired: (a) => ipvlanPlan(a),
    },
    kernel,
  );

export const ipvlan: Plugin = makeIpvlan();
