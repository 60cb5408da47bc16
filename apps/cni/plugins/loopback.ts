// loopback: bring `lo` up (ADD), down (DEL), check it is up (CHECK). Chained after another plugin it passes
// that plugin's result through unchanged, as the reference does.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import { cniError, ErrCode, type CniError } from '../../../core/cni/errors.ts';
import { readResult, PLUGIN_VERSIONS, type IPConfig, type Result } from '../../../core/cni/result.ts';
import { parseCIDR } from '../../../core/ip/ip.ts';
import type { Op } from '../../../core/kernel/model.ts';
import { kernelFor } from '../kernel.ts';
import { applyIn, kernelError, liveNetns, netnsExists, noNetns } from '../kit.ts';
import type { Plugin } from '../plugin.ts';

const loLink = (ns: string) => ({ ns, name: 'lo', kind: 'loopback' as const });
const setLo = (ns: string, up: boolean): Op => ({ op: 'link.set', link: { ...loLink(ns), up }, changes: { up } });

const isLoopbackAddr = (cidr: string): boolean => {
  const c = parseCIDR(cidr);
  if (!c) return false;
  return c.ip.family === 4 ? c.ip.value >> 24n === 127n : c.ip.value === 1n;
};

/** Absent where the kernel has no IPv6; '1' where it is turned off for the namespace. */
const LO_IPV6_OFF = 'net.ipv6.conf.lo.disable_ipv6';

export const loopback: Plugin = {
  type: 'loopback',
  versions: PLUGIN_VERSIONS,
  about: 'felt loopback: brings the container loopback interface up',
  add: (args, conf, ctx) => {
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const k = kernelFor(ctx);
    return pipe(
      k.apply([setLo(args.netns, true)]),
      TE.chain(() =>
        k.observe({
          namespaces: [args.netns],
          scope: { links: [{ ns: args.netns, name: 'lo' }], devices: [{ ns: args.netns, dev: 'lo' }], chains: [], ruleMarkers: [] },
          sysctls: [{ ns: args.netns, key: LO_IPV6_OFF }],
        }),
      ),
      TE.mapLeft(kernelError),
      TE.chainEitherK((seen): E.Either<CniError, Result> => {
        // The observer leaves out the addresses the kernel gives lo itself (127.0.0.1/8 when it comes up, ::1/128
        // where IPv6 is on): the result names them as the reference does, then whatever else lo carries.
        const v6 = seen.sysctls.find((x) => x.ns === args.netns && x.key === LO_IPV6_OFF)?.value === '0';
        const kernelMade = ['127.0.0.1/8', ...(v6 ? ['::1/128'] : [])];
        const addrs = [
          ...new Set([...kernelMade, ...seen.addresses.filter((a) => a.ns === args.netns && a.dev === 'lo').map((a) => a.cidr)]),
        ];
        const bad = addrs.find((a) => !isLoopbackAddr(a));
        if (bad) return E.left(cniError(ErrCode.InvalidNetworkConfig, `loopback interface found with non-loopback address ${bad}`));
        const prev = conf.raw['prevResult'];
        if (prev !== undefined) {
          const r = readResult(prev);
          return E.isRight(r) ? r : E.left(cniError(ErrCode.DecodeFailure, `prevResult: ${r.left}`));
        }
        const first = (v6: boolean) => addrs.find((a) => a.includes(':') === v6);
        const ips: IPConfig[] = [first(false), first(true)].filter((a): a is string => !!a).map((address) => ({ address, interface: 0 }));
        return E.right({
          cniVersion: conf.cniVersion,
          interfaces: [{ name: 'lo', mac: '00:00:00:00:00:00', sandbox: args.netns }],
          ...(ips.length ? { ips } : {}),
        });
      }),
    );
  },
  del: (args, _conf, ctx) => {
    // DEL of a gone namespace is not an error: the runtime may call it many times.
    if (!liveNetns(args.netns)) return TE.right(undefined);
    return applyIn(kernelFor(ctx), [setLo(args.netns, false)]);
  },
  check: (args, _conf, ctx) => {
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    return pipe(
      kernelFor(ctx).observe({
        namespaces: [args.netns],
        scope: { links: [{ ns: args.netns, name: 'lo' }], devices: [], chains: [], ruleMarkers: [] },
      }),
      TE.mapLeft(kernelError),
      TE.chainEitherK((seen) => {
        const lo = seen.links.find((l) => l.ns === args.netns && l.name === 'lo');
        return lo?.up ? E.right(undefined) : E.left(cniError(ErrCode.Drift, `loopback interface "lo" in ${args.netns} is down`));
      }),
    );
  },
};
