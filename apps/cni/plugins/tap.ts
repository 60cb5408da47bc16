// tap: the container interface is a persistent tap device in the pod (core/tap/config.ts), through the shared
// in-pod flow (pod-link.ts). Its bridge, when configured, must be a bridge in the pod's namespace already.
// selinuxContext needs a host with SELinux (the tap is made under that label with runcon).

import { existsSync } from 'node:fs';
import { invalidConfig } from '../../../core/cni/errors.ts';
import { parseTapConf, tapPlan, type TapConf } from '../../../core/tap/config.ts';
import { kernelFor } from '../kernel.ts';
import type { KernelOf } from '../kit.ts';
import type { Plugin } from '../plugin.ts';
import { makePodLinkPlugin } from './pod-link.ts';

/** Whether this host has SELinux (selinuxfs mounted), as go-selinux decides. */
const hostHasSelinux = (): boolean => existsSync('/sys/fs/selinux/enforce');

/** The plugin on a kernel (and SELinux probe) of the caller's choosing (tests pass the memory twin). */
export const makeTap = (kernel: KernelOf = kernelFor, selinux: () => boolean = hostHasSelinux): Plugin =>
  makePodLinkPlugin<TapConf>(
    {
      type: 'tap',
      about: 'felt tap: a persistent tap device per container',
      parse: (conf, args) => parseTapConf(conf, args.args),
      // Checked at ADD only: DEL and CHECK of such a config still work.
      precondition: (c, seen, netns) => {
        if (c.selinuxContext !== undefined && !selinux()) {
          return invalidConfig(
            `selinuxContext: this host has no SELinux (/sys/fs/selinux is not mounted), so the tap cannot be labelled ${c.selinuxContext}`,
          );
        }
        if (!c.bridge) return undefined;
        const b = seen.links.find((l) => l.ns === netns && l.name === c.bridge);
        if (!b) return invalidConfig(`bridge: failed to find "${c.bridge}" in ${netns}`);
        if (b.kind !== 'bridge') return invalidConfig(`bridge: "${c.bridge}" in ${netns} is a ${b.kind}, not a bridge`);
        return undefined;
      },
      desired: (a) => tapPlan(a),
    },
    kernel,
  );

export const tap: Plugin = makeTap();
