// vlan: the container interface is an 802.1Q vlan on a host device (core/vlan/desired.ts), through the shared
// lower-device flow (lower-link.ts).

import * as E from 'fp-ts/lib/Either.js';
import { parseVlanConf, vlanPlan, type VlanConf } from '../../../core/vlan/desired.ts';
import { kernelFor } from '../kernel.ts';
import type { KernelOf } from '../kit.ts';
import type { Plugin } from '../plugin.ts';
import { makeLowerLinkPlugin } from './lower-link.ts';

/** The plugin on a kernel of the caller's choosing (tests pass the memory twin). */
export const makeVlan = (kernel: KernelOf = kernelFor): Plugin =>
  makeLowerLinkPlugin<VlanConf>(
    {
      type: 'vlan',
      about: 'felt vlan: an 802.1Q vlan on a host device per container',
      parse: parseVlanConf,
      chained: false,
      master: (c) => E.right({ name: c.master, from: 'master' }),
      addressing: (c, _prev, ipam) => E.right({ source: c.ipamType, result: ipam ?? {} }),
      desired: (a) => vlanPlan(a),
    },
    kernel,
  );

export const vlan: Plugin = makeVlan();
