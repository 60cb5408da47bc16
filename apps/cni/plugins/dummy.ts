// dummy: the container interface is a dummy device in the pod with the addresses of the (required) IPAM plugin
// (core/dummy/config.ts), through the shared in-pod flow (pod-link.ts).

import { dummyPlan, parseDummyConf, type DummyConf } from '../../../core/dummy/config.ts';
import { kernelFor } from '../kernel.ts';
import type { KernelOf } from '../kit.ts';
import type { Plugin } from '../plugin.ts';
import { makePodLinkPlugin } from './pod-link.ts';

/** The plugin on a kernel of the caller's choosing (tests pass the memory twin). */
export const makeDummy = (kernel: KernelOf = kernelFor): Plugin =>
  makePodLinkPlugin<DummyConf>(
    {
      type: 'dummy',
      about: 'felt dummy: a dummy device per container',
      parse: (conf) => parseDummyConf(conf),
      desired: (a) =>
        a.addressing
          ? dummyPlan({ ...a, addressing: a.addressing })
          : dummyPlan({ ...a, addressing: { source: a.conf.ipamType, result: {} } }),
    },
    kernel,
  );

export const dummy: Plugin = makeDummy();
