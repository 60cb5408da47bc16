// The CNI flow of win-bridge and win-overlay, as the reference's: find the HNS network named by the config (of
// the kind's types); reuse the container's endpoint (`<sandbox>_<network>`) unless it is on another network, else
// run IPAM and create it from the document the core computes; attach it (HNS v1: hot attach to the container;
// HCN v2: add it to the host compute namespace CNI_NETNS names); print the result built from the endpoint HNS
// made. A failure gives the address back. DEL detaches (a shared endpoint) or removes it. On a host without
// HNS (anything but Windows) every command but VERSION and STATUS answers that it needs Windows.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import type { Hns, HnsError } from '../../../adapters/hns/types.ts';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, invalidConfig, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, type Result } from '../../../core/cni/result.ts';
import {
  endpointName,
  hcnResult,
  hnsResult,
  PAUSE_NETNS,
  type HcnEndpoint,
  type HcnNetwork,
  type HnsEndpoint,
  type HnsNetwork,
} from '../../../core/hns/endpoint.ts';
import type { HnsNetConf } from '../../../core/hns/netconf.ts';
import type { WinEndpointInput } from '../../../core/win-bridge/config.ts';
import { delegateIpam, refusedAt } from '../kit.ts';
import { toIpam, type Ctx, type Plugin } from '../plugin.ts';

export interface WinKind<C extends HnsNetConf> {
  readonly type: string;
  readonly about: string;
  readonly parse: (conf: NetConf) => E.Either<CniError, C>;
  /** The HNS v1 / HCN v2 network types the plugin attaches to, as the reference names them. */
  readonly hnsTypes: readonly string[];
  readonly hcnTypes: readonly string[];
  readonly hnsRequest: (c: C, net: HnsNetwork, a: WinEndpointInput) => E.Either<CniError, HnsEndpoint>;
  /** `v1`: the same network through HNS v1, when the kind needs it (win-overlay: its gateway and management IP). */
  readonly hcnRequest: (c: C, net: HcnNetwork, v1: HnsNetwork | undefined, a: WinEndpointInput) => E.Either<CniError, HcnEndpoint>;
  readonly hcnNeedsHnsNetwork: boolean;
}

/** HNS for this call, or why there is none here. */
export type HnsFor = (ctx: Ctx, type: string) => E.Either<CniError, Hns>;

/** The host's HNS: on Windows the FFI adapter (loaded on first use), elsewhere an error naming the platform. */
export const platformHns: HnsFor = (_ctx, type) =>
  process.platform === 'win32'
    ? E.right(lazyWindowsHns())
    : E.left(
        cniError(
          ErrCode.InvalidEnvironment,
          `${type} needs Windows: it programs the Host Networking Service (HNS/HCN), which this ${process.platform} host does not have`,
        ),
      );

function lazyWindowsHns(): Hns {
  let h: Promise<Hns> | undefined;
  const get = (): Promise<Hns> => (h ??= import('../../../adapters/hns/windows.ts').then((m) => m.windowsHns()));
  const wrap =
    <K extends keyof Hns>(k: K) =>
    (...xs: Parameters<Hns[K]>): ReturnType<Hns[K]> =>
      (async () => ((await get())[k] as (...a: Parameters<Hns[K]>) => TE.TaskEither<HnsError, unknown>)(...xs)()) as ReturnType<Hns[K]>;
  const keys: (keyof Hns)[] = [
    'dsrSupported',
    'network',
    'endpoint',
    'createEndpoint',
    'deleteEndpoint',
    'hotAttach',
    'hotDetach',
    'containerDetach',
    'hcnNetwork',
    'hcnEndpoint',
    'createHcnEndpoint',
    'deleteHcnEndpoint',
    'namespaceExists',
    'addNamespaceEndpoint',
    'removeNamespaceEndpoint',
  ];
  return Object.fromEntries(keys.map((k) => [k, wrap(k)])) as unknown as Hns;
}

const run = async <A>(what: string, t: TE.TaskEither<HnsError, A>): Promise<E.Either<CniError, A>> => E.mapLeft(refusedAt(what))(await t());
const sameId = (a: string | undefined, b: string): boolean => (a ?? '').toLowerCase() === b.toLowerCase();

export function makeWinPlugin<C extends HnsNetConf>(kind: WinKind<C>, hnsFor: HnsFor): Plugin {
  /** RemoveHnsEndpoint: a shared endpoint is detached from the container; the pod's own is detached and deleted. */
  async function removeHns(hns: Hns, name: string, netns: string, containerId: string): Promise<E.Either<CniError, void>> {
    if (netns === '') return E.right(undefined);
    const ep = await run(`failed to find HNSEndpoint ${name}`, hns.endpoint(name));
    if (E.isLeft(ep) || !ep.right?.Id) return E.isLeft(ep) ? ep : E.right(undefined);
    if (netns !== PAUSE_NETNS) {
      await hns.containerDetach(containerId, ep.right.Id)();
      return E.right(undefined);
    }
    await hns.hotDetach(containerId, ep.right.Id)();
    await hns.deleteEndpoint(ep.right.Id)();
    return E.right(undefined);
  }

  /** RemoveHcnEndpoint: out of its namespace (when that still exists), then deleted. */
  async function removeHcn(hns: Hns, name: string): Promise<E.Either<CniError, void>> {
    const ep = await run(`failed to find HostComputeEndpoint ${name}`, hns.hcnEndpoint(name));
    if (E.isLeft(ep) || !ep.right?.Id) return E.isLeft(ep) ? ep : E.right(undefined);
    const ns = ep.right.HostComputeNamespace;
    if (ns) {
      const there = await run(`failed to get HostComputeNamespace ${ns}`, hns.namespaceExists(ns));
      if (E.isLeft(there)) return there;
      if (there.right) {
        const out = await hns.removeNamespaceEndpoint(ns, ep.right.Id)();
        if (E.isLeft(out) && !out.left.notFound) return E.left(refusedAt(`error removing endpoint ${name} from namespace`)(out.left));
      }
    }
    return run(`failed to remove HostComputeEndpoint ${name}`, hns.deleteHcnEndpoint(ep.right.Id));
  }

  const wrongType = (c: C, t: string, want: readonly string[]): CniError =>
    invalidConfig(`name: network ${JSON.stringify(c.name)} is of unexpected type ${JSON.stringify(t)} (want ${want.join(' or ')})`);
  const noNetwork = (c: C): CniError => invalidConfig(`name: network ${JSON.stringify(c.name)} is not found in HNS`);

  async function hnsAdd(hns: Hns, c: C, args: CmdArgs, ctx: Ctx, dsr: boolean): Promise<E.Either<CniError, Result>> {
    const net = await run(`error while getting network ${c.name}`, hns.network(c.name));
    if (E.isLeft(net)) return net;
    if (!net.right) return E.left(noNetwork(c));
    const n = net.right;
    if (!kind.hnsTypes.some((t) => t.toLowerCase() === n.Type.toLowerCase())) return E.left(wrongType(c, n.Type, kind.hnsTypes));
    const name = endpointName(args.containerId, args.netns, c.name);
    const found = await run(`failed to find HNSEndpoint ${name}`, hns.endpoint(name));
    if (E.isLeft(found)) return found;
    let ep = found.right;
    // A container joining another's network namespace ("container:<id>") shares that one's endpoint.
    if (args.netns !== PAUSE_NETNS && !ep)
      return E.left(cniError(ErrCode.Kernel, `failed to find HNSEndpoint ${name} (the endpoint of the sandbox this container joins)`));
    if (ep && !sameId(ep.VirtualNetwork, n.Id)) {
      const del = await run(`failed to delete corrupted HNSEndpoint ${name}`, hns.deleteEndpoint(ep.Id ?? ''));
      if (E.isLeft(del)) return del;
      ep = undefined;
    }
    let made = false;
    if (!ep) {
      const res = await delegateIpam(ctx, c, args, 'ADD')();
      if (E.isLeft(res)) return res;
      const req = kind.hnsRequest(c, n, {
        containerId: args.containerId,
        netns: args.netns,
        networkId: n.Id,
        ...(res.right ? { ipam: res.right } : {}),
        dsrSupported: dsr,
      });
      if (E.isLeft(req)) return req;
      const created = await run('failed to create the new HNSEndpoint', hns.createEndpoint(req.right));
      if (E.isLeft(created)) return created;
      ep = created.right;
      made = true;
    }
    const attached = await hns.hotAttach(args.containerId, ep.Id ?? '')();
    if (E.isLeft(attached)) {
      if (made) await removeHns(hns, name, args.netns, args.containerId);
      else if (attached.left.computeSystemGone) return toResult(hnsResult(c.cniVersion, n, ep));
      return E.left(refusedAt(`failed to attach container ${args.containerId} to HNSEndpoint ${ep.Id ?? name}`)(attached.left));
    }
    return toResult(hnsResult(c.cniVersion, n, ep));
  }

  async function hcnAdd(hns: Hns, c: C, args: CmdArgs, ctx: Ctx, dsr: boolean): Promise<E.Either<CniError, Result>> {
    const net = await run(`error while getting network ${c.name}`, hns.hcnNetwork(c.name));
    if (E.isLeft(net)) return net;
    if (!net.right) return E.left(noNetwork(c));
    const n = net.right;
    if (!kind.hcnTypes.includes(n.Type)) return E.left(wrongType(c, n.Type, kind.hcnTypes));
    let v1: HnsNetwork | undefined;
    if (kind.hcnNeedsHnsNetwork) {
      const got = await run(`error while getting network ${c.name}`, hns.network(c.name));
      if (E.isLeft(got)) return got;
      if (!got.right) return E.left(noNetwork(c));
      v1 = got.right;
    }
    const name = endpointName(args.containerId, args.netns, c.name);
    const found = await run(`failed to find HostComputeEndpoint ${name}`, hns.hcnEndpoint(name));
    if (E.isLeft(found)) return found;
    let ep = found.right;
    if (ep && !sameId(ep.HostComputeNetwork, n.Id)) {
      const del = await run(`failed to delete corrupted HostComputeEndpoint ${name}`, hns.deleteHcnEndpoint(ep.Id ?? ''));
      if (E.isLeft(del)) return del;
      ep = undefined;
    }
    let made = false;
    if (!ep) {
      const res = await delegateIpam(ctx, c, args, 'ADD')();
      if (E.isLeft(res)) return res;
      const req = kind.hcnRequest(c, n, v1, {
        containerId: args.containerId,
        netns: args.netns,
        networkId: n.Id,
        ...(res.right ? { ipam: res.right } : {}),
        dsrSupported: dsr,
      });
      if (E.isLeft(req)) return req;
      const created = await run('failed to create the new HostComputeEndpoint', hns.createHcnEndpoint(req.right));
      if (E.isLeft(created)) return created;
      ep = created.right;
      made = true;
    }
    const added = await run(
      `failed to add HostComputeEndpoint ${name} to HostComputeNamespace ${args.netns}`,
      hns.addNamespaceEndpoint(args.netns, ep.Id ?? ''),
    );
    if (E.isLeft(added)) {
      if (made) await removeHcn(hns, name);
      return added;
    }
    return toResult(hcnResult(c.cniVersion, n, ep));
  }

  const toResult = (r: Result | string): E.Either<CniError, Result> =>
    typeof r === 'string' ? E.left(cniError(ErrCode.Kernel, `error while constructing the result: ${r}`)) : E.right(r);

  const cmdAdd =
    (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> =>
    async () => {
      const parsed = kind.parse(conf);
      if (E.isLeft(parsed)) return parsed;
      const c = parsed.right;
      const hns = hnsFor(ctx, kind.type);
      if (E.isLeft(hns)) return hns;
      const dsr = await run('failed to ask HNS whether it supports DSR', hns.right.dsrSupported());
      if (E.isLeft(dsr)) return dsr;
      const out = c.apiVersion === 2 ? await hcnAdd(hns.right, c, args, ctx, dsr.right) : await hnsAdd(hns.right, c, args, ctx, dsr.right);
      if (E.isLeft(out)) await delegateIpam(ctx, c, args, 'DEL')();
      return out;
    };

  const cmdDel =
    (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> =>
    async () => {
      const parsed = kind.parse(conf);
      if (E.isLeft(parsed)) return parsed;
      const c = parsed.right;
      const hns = hnsFor(ctx, kind.type);
      if (E.isLeft(hns)) return hns;
      const released = await delegateIpam(ctx, c, args, 'DEL')();
      if (E.isLeft(released)) return released;
      const name = endpointName(args.containerId, args.netns, c.name);
      return c.apiVersion === 2 ? removeHcn(hns.right, name) : removeHns(hns.right, name, args.netns, args.containerId);
    };

  // The reference's CHECK does nothing; felt checks that the endpoint is there.
  const cmdCheck =
    (args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> =>
    async () => {
      const parsed = kind.parse(conf);
      if (E.isLeft(parsed)) return parsed;
      const c = parsed.right;
      const hns = hnsFor(ctx, kind.type);
      if (E.isLeft(hns)) return hns;
      const name = endpointName(args.containerId, args.netns, c.name);
      const ep =
        c.apiVersion === 2
          ? await run(`failed to find HostComputeEndpoint ${name}`, hns.right.hcnEndpoint(name))
          : await run(`failed to find HNSEndpoint ${name}`, hns.right.endpoint(name));
      if (E.isLeft(ep)) return ep;
      return ep.right ? E.right(undefined) : E.left(cniError(ErrCode.Drift, `${kind.type} endpoint ${name} is missing`));
    };

  return {
    type: kind.type,
    versions: PLUGIN_VERSIONS,
    about: kind.about,
    add: cmdAdd,
    del: cmdDel,
    check: cmdCheck,
    status: toIpam('STATUS'),
  };
}
