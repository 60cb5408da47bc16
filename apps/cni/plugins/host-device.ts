// host-device: hand an existing host device to the pod. cmdAdd reads top to bottom: parse, observe the host
// and the pod, find the device (by name, MAC, sysfs path or PCI address), run IPAM, record the device's
// original name, MAC, MTU, up state and alias in felt's event log (stream `host-device/<network>`), plan the
// device moved into the pod under CNI_IFNAME against what is there, apply, print. DEL plans the device back
// in the host as it was; an ADD that fails after the record converges back to that and gives the address
// back. A PCI device bound to a userspace (DPDK) driver has no kernel interface: only IPAM runs, as in the
// reference.

import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, readResult, type Result } from '../../../core/cni/result.ts';
import { parseHostDeviceConf, type HostDeviceConf, type Selector } from '../../../core/hostdevice/config.ts';
import {
  attachmentKey,
  decide,
  holderOf,
  hostDeviceProjection,
  hostDeviceStream,
  type HostDeviceCommand,
  type HostDeviceState,
} from '../../../core/hostdevice/decider.ts';
import { attachedState, hostDeviceScope, originalOf, pickDevice, releasedState, type Original } from '../../../core/hostdevice/desired.ts';
import { emptyKernelState, HOST, type KernelState, type Link, type NsRef, type Op } from '../../../core/kernel/model.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import { callDeps } from '../kernel.ts';
import { applyIn, delegateIpam, liveNetns, netnsExists, noNetns, observeIn, withStore, type PluginDeps } from '../kit.ts';
import { toIpam, type Ctx, type Plugin } from '../plugin.ts';

/** Drivers that take a PCI network device away from the kernel (DPDK). */
const USERSPACE_DRIVERS: ReadonlySet<string> = new Set(['vfio-pci', 'uio_pci_generic', 'igb_uio']);

/** The effects host-device uses; tests swap in the memory kernel and store, or a sysfs tree of their own. */
export interface HostDeviceDeps extends PluginDeps {
  /** Where sysfs is mounted (`/sys`): kernelpath and PCI addresses are looked up under it. */
  readonly sysfs: string;
}

const linuxDeps: HostDeviceDeps = {
  ...callDeps,
  sysfs: '/sys',
};

// ------------------------------------------------------------------------------------------------ sysfs

const names = (dir: string): string[] | undefined => {
  try {
    return readdirSync(dir).sort();
  } catch {
    return undefined;
  }
};

/** How a selector resolves in sysfs: the candidate names (kernelpath, pci), or a userspace-driver PCI device. */
type Listed = { readonly kind: 'names'; readonly names: readonly string[] } | { readonly kind: 'dpdk'; readonly driver: string };

function listSysfs(deps: HostDeviceDeps, s: Selector): E.Either<CniError, Listed> {
  if (s.by === 'device' || s.by === 'hwaddr') return E.right({ kind: 'names', names: [] });
  if (s.by === 'kernelpath') {
    const dir = join(deps.sysfs, s.path.slice('/sys/'.length), 'net');
    const found = names(dir);
    return found
      ? E.right({ kind: 'names', names: found })
      : E.left(invalidConfig(`kernelpath: failed to find network devices at "${s.path}/net"`));
  }
  const pci = join(deps.sysfs, 'bus/pci/devices', s.id);
  if (!existsSync(pci)) {
    // runtimeConfig.deviceID may also name an auxiliary device (newer reference releases).
    const aux = join(deps.sysfs, 'bus/auxiliary/devices', s.id, 'net');
    const found = s.field === 'runtimeConfig.deviceID' ? names(aux) : undefined;
    return found
      ? E.right({ kind: 'names', names: found })
      : E.left(invalidConfig(`${s.field}: no PCI${s.field === 'pciBusID' ? '' : ' or auxiliary'} device ${JSON.stringify(s.id)}`));
  }
  let driver: string | undefined;
  try {
    driver = basename(readlinkSync(join(pci, 'driver')));
  } catch {
    driver = undefined;
  }
  if (driver !== undefined && USERSPACE_DRIVERS.has(driver)) return E.right({ kind: 'dpdk', driver });
  const net =
    names(join(pci, 'net')) ?? (names(pci) ?? []).filter((d) => d.startsWith('virtio')).flatMap((d) => names(join(pci, d, 'net')) ?? []);
  return net.length
    ? E.right({ kind: 'names', names: net })
    : E.left(invalidConfig(`${s.field}: no net directory under PCI device ${JSON.stringify(s.id)}`));
}

// ----------------------------------------------------------------------------------------------- effects

const observe = (deps: HostDeviceDeps, ctx: Ctx, namespaces: readonly NsRef[], want?: KernelState): TE.TaskEither<CniError, KernelState> =>
  observeIn(deps.kernel(ctx), { namespaces, ...(want ? { desired: want } : {}) });

const apply = (deps: HostDeviceDeps, ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> => applyIn(deps.kernel(ctx), ops);

const record = (deps: HostDeviceDeps, ctx: Ctx, hc: HostDeviceConf, c: HostDeviceCommand): TE.TaskEither<CniError, void> =>
  TE.map(() => undefined)(
    withStore(deps, ctx, hc.dataDir, (store) =>
      store.transact(hostDeviceStream(hc.name), hostDeviceProjection, (s) => decide(c, s), { time: ctx.now().toISOString() }),
    ),
  );

/** The recorded attachments; none when felt's log does not exist (DEL and CHECK never create it). */
const load = (deps: HostDeviceDeps, ctx: Ctx, hc: HostDeviceConf): TE.TaskEither<CniError, HostDeviceState> =>
  deps.storeExists(hc.dataDir)
    ? TE.map((l: { state: HostDeviceState }) => l.state)(
        withStore(deps, ctx, hc.dataDir, (store) => store.load(hostDeviceStream(hc.name), hostDeviceProjection)),
      )
    : TE.right(hostDeviceProjection.initialState());

/**
 * "Not attached": the device back in the host as it was, when it is in the pod or in the host; nothing when it
 * is neither (gone with its namespace, or moved into another pod by a concurrent ADD that won).
 */
function detached(
  seen: KernelState,
  netns: string,
  ifname: string,
  original: Original | { readonly name: string } | undefined,
): { want: KernelState; there: boolean } {
  const inPod = seen.links.some((l) => l.ns === netns && l.name === ifname);
  const there = original !== undefined && (inPod || seen.links.some((l) => l.ns === HOST && l.name === original.name));
  return { want: there ? releasedState(netns, ifname, original) : emptyKernelState(), there };
}

/** Observe, then plan "not attached" against it and apply. */
const converge = (deps: HostDeviceDeps, ctx: Ctx, netns: string, ifname: string, original: Original): TE.TaskEither<CniError, void> =>
  pipe(
    observe(deps, ctx, [HOST, netns]),
    TE.chain((seen) => apply(deps, ctx, plan(detached(seen, netns, ifname, original).want, seen, hostDeviceScope(ifname, netns)))),
  );

/** A device the selector does not find: where it is when felt knows (attached to another pod), else missing. */
function notFound(s: Selector, state: HostDeviceState, err: CniError): CniError {
  const holder =
    s.by === 'device' ? holderOf(state, (o) => o.name === s.name) : s.by === 'hwaddr' ? holderOf(state, (o) => o.mac === s.mac) : undefined;
  if (!holder) return err;
  return invalidConfig(
    `${s.field}: host device ${JSON.stringify(holder.original.name)} is not in the host namespace: it is attached to container ${holder.containerId} as ${holder.ifname} in ${holder.netns}`,
  );
}

// ----------------------------------------------------------------------------------------------- commands

const cmdAdd =
  (deps: HostDeviceDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> => {
    const parsed = parseHostDeviceConf(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const hc = parsed.right;
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const listed = listSysfs(deps, hc.selector);
    if (E.isLeft(listed)) return TE.left(listed.left);
    const ref = { network: hc.name, containerId: args.containerId, ifname: args.ifname };
    const dns = hc.dns ? { dns: hc.dns } : {};

    // A userspace-driver device: nothing to move; the result has no interface.
    if (listed.right.kind === 'dpdk') {
      return TE.map((r: Result | undefined) => ({
        cniVersion: conf.cniVersion,
        ...(r?.ips?.length ? { ips: r.ips } : {}),
        ...(r?.routes?.length ? { routes: r.routes } : {}),
        ...dns,
      }))(delegateIpam(ctx, hc, args, 'ADD'));
    }
    const candidates = listed.right.names;

    const attach = (seen: KernelState, dev: Link): TE.TaskEither<CniError, Result> => {
      const original: Original = originalOf(dev);
      const release =
        (err: CniError): TE.TaskEither<CniError, never> =>
        async () => {
          await delegateIpam(ctx, hc, args, 'DEL')();
          return E.left(err);
        };
      // Whatever failed after the record, converge back to "the device is in the host, as it was".
      const rollBack =
        (err: CniError): TE.TaskEither<CniError, never> =>
        async () => {
          await pipe(
            converge(deps, ctx, args.netns, args.ifname, original),
            TE.chain(() => delegateIpam(ctx, hc, args, 'DEL')),
            TE.chain(() => record(deps, ctx, hc, { type: 'ForgetAttachment', data: { ...ref, reason: 'add-failed' } })),
          )();
          return E.left(err);
        };
      return pipe(
        delegateIpam(ctx, hc, args, 'ADD'),
        TE.chain((res) => {
          const want = attachedState({
            netns: args.netns,
            ifname: args.ifname,
            original,
            ipamType: hc.ipamType,
            ...(res ? { ipam: res } : {}),
          });
          if (E.isLeft(want)) return release(want.left);
          const result: Result = {
            cniVersion: conf.cniVersion,
            interfaces: [{ name: args.ifname, ...(original.mac ? { mac: original.mac } : {}), sandbox: args.netns }],
            ...(want.right.ips.length ? { ips: want.right.ips } : {}),
            ...(res?.routes?.length ? { routes: res.routes } : {}),
            ...dns,
          };
          return pipe(
            record(deps, ctx, hc, { type: 'RecordAttachment', data: { ...ref, netns: args.netns, original } }),
            TE.orElseW(release),
            TE.chain(() =>
              pipe(apply(deps, ctx, plan(want.right.kernel, seen, hostDeviceScope(args.ifname, args.netns))), TE.orElseW(rollBack)),
            ),
            TE.map(() => result),
          );
        }),
      );
    };

    return pipe(
      observe(deps, ctx, [HOST, args.netns]),
      TE.chain((seen) => {
        if (seen.links.some((l) => l.ns === args.netns && l.name === args.ifname)) {
          return TE.left(
            cniError(ErrCode.InterfaceExists, `container interface name provided (${args.ifname}) already exists in ${args.netns}`),
          );
        }
        const dev = pickDevice(hc.selector, seen.links, candidates);
        if (E.isRight(dev)) return attach(seen, dev.right);
        return pipe(
          load(deps, ctx, hc),
          TE.chain((state) => TE.left<CniError, Result>(notFound(hc.selector, state, dev.left))),
        );
      }),
    );
  };

const cmdDel =
  (deps: HostDeviceDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> => {
    const parsed = parseHostDeviceConf(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const hc = parsed.right;
    const ref = { network: hc.name, containerId: args.containerId, ifname: args.ifname };
    const ipamDel = TE.map(() => undefined)(delegateIpam(ctx, hc, args, 'DEL'));
    const listed = listSysfs(deps, hc.selector);
    if (E.isRight(listed) && listed.right.kind === 'dpdk') return ipamDel;
    return pipe(
      load(deps, ctx, hc),
      TE.chain((state) => {
        const known = state.attachments[attachmentKey(args.containerId, args.ifname)];
        const forget = (reason: 'del' | 'netns-gone' | 'gone'): TE.TaskEither<CniError, void> =>
          known ? record(deps, ctx, hc, { type: 'ForgetAttachment', data: { ...ref, reason } }) : TE.right(undefined);
        // DEL may come many times, before any ADD, and after the namespace is gone: none is an error.
        const netns = args.netns !== '' ? args.netns : (known?.netns ?? '');
        if (!liveNetns(netns))
          return pipe(
            ipamDel,
            TE.chain(() => forget('netns-gone')),
          );
        return pipe(
          observe(deps, ctx, [HOST, netns]),
          TE.chain((seen) => {
            const inPod = seen.links.find((l) => l.ns === netns && l.name === args.ifname);
            // Without a record (an attachment felt did not make) the alias names the device, as for the reference.
            const { want, there } = detached(
              seen,
              netns,
              args.ifname,
              known?.original ?? (inPod?.alias ? { name: inPod.alias } : undefined),
            );
            return pipe(
              apply(deps, ctx, plan(want, seen, hostDeviceScope(args.ifname, netns))),
              TE.chain(() => ipamDel),
              TE.chain(() => forget(there ? 'del' : 'gone')),
            );
          }),
        );
      }),
    );
  };

const cmdCheck =
  (deps: HostDeviceDeps) =>
  (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> => {
    const parsed = parseHostDeviceConf(conf);
    if (E.isLeft(parsed)) return TE.left(parsed.left);
    const hc = parsed.right;
    if (conf.raw['prevResult'] === undefined || conf.raw['prevResult'] === null)
      return TE.left(invalidConfig('prevResult: required for CHECK'));
    const prev = readResult(conf.raw['prevResult']);
    if (E.isLeft(prev)) return TE.left(invalidConfig(`prevResult: ${prev.left}`));
    if (!netnsExists(args.netns)) return TE.left(noNetns(args.netns));
    const listed = listSysfs(deps, hc.selector);
    if (E.isRight(listed) && listed.right.kind === 'dpdk') return TE.map(() => undefined)(delegateIpam(ctx, hc, args, 'CHECK'));
    const cont = (prev.right.interfaces ?? []).find((i) => i.name === args.ifname && i.sandbox === args.netns);
    if (!cont) return TE.left(invalidConfig(`prevResult.interfaces: expected "${args.ifname}" in ${args.netns}`));
    const scope = hostDeviceScope(args.ifname, args.netns);
    return pipe(
      delegateIpam(ctx, hc, args, 'CHECK'),
      TE.chain(() => load(deps, ctx, hc)),
      TE.chain((state) =>
        pipe(
          observe(deps, ctx, [args.netns]),
          TE.chainEitherK((seen) => {
            const known = state.attachments[attachmentKey(args.containerId, args.ifname)];
            const inPod = seen.links.find((l) => l.ns === args.netns && l.name === args.ifname);
            // The alias is checked against felt's record; without one (the reference's ADD) it is what it is.
            const name = known?.original.name ?? inPod?.alias ?? '';
            const want = attachedState({
              netns: args.netns,
              ifname: args.ifname,
              original: { name, up: true, alias: '' },
              ipamType: hc.ipamType,
              ipam: { ips: prev.right.ips ?? [], routes: prev.right.routes ?? [] },
            });
            if (E.isLeft(want)) return want;
            const links = want.right.kernel.links.map((l) => ({ ...l, ...(cont.mac ? { mac: cont.mac } : {}) }));
            const wrong = drift({ ...want.right.kernel, links, sysctls: [] }, seen, scope);
            return wrong.length === 0
              ? E.right(undefined)
              : E.left(
                  cniError(ErrCode.Drift, `host-device attachment of ${args.containerId}/${args.ifname} drifted: ${wrong.join('; ')}`),
                );
          }),
        ),
      ),
    );
  };

export const makeHostDevice = (deps: HostDeviceDeps = linuxDeps): Plugin => ({
  type: 'host-device',
  versions: PLUGIN_VERSIONS,
  about: 'felt host-device: moves a host device into the pod, and back on DEL as it was',
  add: cmdAdd(deps),
  del: cmdDel(deps),
  check: cmdCheck(deps),
  gc: toIpam('GC'),
  status: toIpam('STATUS'),
});

export const hostDevice: Plugin = makeHostDevice();
