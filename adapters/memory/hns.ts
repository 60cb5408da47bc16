// The twin of HNS/HCN: networks given by the test, endpoints made, attached and deleted in memory, every call
// recorded (with the documents it was sent). As HNS does, a new endpoint gets an Id, a MAC (00-15-5D-...) when
// none is asked for, and an address of the network's first subnet when none is asked for; attaching to a
// container the test marks gone fails as hcsshim's ErrComputeSystemDoesNotExist.

import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { HcnEndpoint, HcnNetwork, HnsEndpoint, HnsNetwork } from '../../core/hns/endpoint.ts';
import { add, contains, formatIP, networkOf, parseCIDR, parseIP } from '../../core/ip/ip.ts';
import type { Hns, HnsError } from '../hns/types.ts';

export interface MemoryHns extends Hns {
  readonly calls: { op: string; arg?: unknown }[];
  readonly endpoints: Map<string, HnsEndpoint>;
  readonly hcnEndpoints: Map<string, HcnEndpoint>;
  /** endpoint Id -> containers it is attached to (v1) */
  readonly attached: Map<string, Set<string>>;
  /** namespace -> endpoint Ids (v2) */
  readonly namespaces: Map<string, Set<string>>;
  /** Containers whose compute system is gone. */
  readonly gone: Set<string>;
  /** Fail the next call of this op. */
  failNext?: string;
}

export function memoryHns(
  opts: { networks?: HnsNetwork[]; hcnNetworks?: HcnNetwork[]; dsr?: boolean; namespaces?: string[] } = {},
): MemoryHns {
  let n = 0;
  const id = (): string => `00000000-0000-0000-0000-${(++n).toString(16).padStart(12, '0')}`;
  const ok =
    <A>(a: A): TE.TaskEither<HnsError, A> =>
    async () =>
      E.right(a);
  const fail =
    (msg: string, extra: Partial<HnsError> = {}): TE.TaskEither<HnsError, never> =>
    async () =>
      E.left({ kind: 'hns', msg, ...extra });
  const m: MemoryHns = {
    calls: [],
    endpoints: new Map(),
    hcnEndpoints: new Map(),
    attached: new Map(),
    namespaces: new Map((opts.namespaces ?? []).map((x) => [x, new Set<string>()])),
    gone: new Set(),
    dsrSupported: () => ok(opts.dsr ?? true),
    network: (name) => step('network', name, () => ok(opts.networks?.find((x) => x.Name === name))),
    endpoint: (name) => step('endpoint', name, () => ok([...m.endpoints.values()].find((e) => e.Name === name))),
    createEndpoint: (req) =>
      step('createEndpoint', req, () => {
        const net = opts.networks?.find((x) => x.Id === req.VirtualNetwork);
        if (!net) return fail(`network ${req.VirtualNetwork} not found`, { notFound: true });
        const ip = req.IPAddress ?? freeAddress(net.Subnets[0]?.AddressPrefix ?? '', used());
        const ep: HnsEndpoint = {
          ...req,
          Id: id(),
          MacAddress: req.MacAddress ?? `00-15-5D-00-00-${n.toString(16).padStart(2, '0')}`,
          ...(ip ? { IPAddress: ip } : {}),
        };
        m.endpoints.set(ep.Id!, ep);
        return ok(ep);
      }),
    deleteEndpoint: (eid) =>
      step('deleteEndpoint', eid, () =>
        m.endpoints.delete(eid) ? (m.attached.delete(eid), ok(undefined)) : fail(`endpoint ${eid} not found`, { notFound: true }),
      ),
    hotAttach: (cid, eid) =>
      step('hotAttach', [cid, eid], () => {
        if (m.gone.has(cid)) return fail(`compute system ${cid} does not exist`, { computeSystemGone: true });
        m.attached.set(eid, new Set([...(m.attached.get(eid) ?? []), cid]));
        return ok(undefined);
      }),
    hotDetach: (cid, eid) => step('hotDetach', [cid, eid], () => (m.attached.get(eid)?.delete(cid), ok(undefined))),
    containerDetach: (cid, eid) => step('containerDetach', [cid, eid], () => (m.attached.get(eid)?.delete(cid), ok(undefined))),
    hcnNetwork: (name) => step('hcnNetwork', name, () => ok(opts.hcnNetworks?.find((x) => x.Name === name))),
    hcnEndpoint: (name) => step('hcnEndpoint', name, () => ok([...m.hcnEndpoints.values()].find((e) => e.Name === name))),
    createHcnEndpoint: (req) =>
      step('createHcnEndpoint', req, () => {
        const net = opts.hcnNetworks?.find((x) => x.Id === req.HostComputeNetwork);
        if (!net) return fail(`network ${req.HostComputeNetwork} not found`, { notFound: true });
        const want = req.IpConfigurations?.[0]?.IpAddress;
        const ip = want ?? freeAddress(net.Ipams[0]?.Subnets[0]?.IpAddressPrefix ?? '', used());
        const ep: HcnEndpoint = {
          ...req,
          Id: id(),
          MacAddress: req.MacAddress ?? `00-15-5D-00-00-${n.toString(16).padStart(2, '0')}`,
          IpConfigurations: [{ ...(ip ? { IpAddress: ip } : {}) }],
        };
        m.hcnEndpoints.set(ep.Id!, ep);
        return ok(ep);
      }),
    deleteHcnEndpoint: (eid) =>
      step('deleteHcnEndpoint', eid, () =>
        m.hcnEndpoints.delete(eid) ? ok(undefined) : fail(`endpoint ${eid} not found`, { notFound: true }),
      ),
    namespaceExists: (ns) => step('namespaceExists', ns, () => ok(m.namespaces.has(ns))),
    addNamespaceEndpoint: (ns, eid) =>
      step('addNamespaceEndpoint', [ns, eid], () => {
        const set = m.namespaces.get(ns);
        const ep = m.hcnEndpoints.get(eid);
        if (!set || !ep) return fail(`namespace ${ns} or endpoint ${eid} not found`, { notFound: true });
        set.add(eid);
        m.hcnEndpoints.set(eid, { ...ep, HostComputeNamespace: ns });
        return ok(undefined);
      }),
    removeNamespaceEndpoint: (ns, eid) =>
      step('removeNamespaceEndpoint', [ns, eid], () => {
        m.namespaces.get(ns)?.delete(eid);
        const ep = m.hcnEndpoints.get(eid);
        if (ep) {
          const { HostComputeNamespace: _gone, ...rest } = ep;
          m.hcnEndpoints.set(eid, rest);
        }
        return ok(undefined);
      }),
  };
  const used = (): Set<string> =>
    new Set([
      ...[...m.endpoints.values()].map((e) => e.IPAddress ?? ''),
      ...[...m.hcnEndpoints.values()].map((e) => e.IpConfigurations?.[0]?.IpAddress ?? ''),
    ]);
  function step<A>(op: string, arg: unknown, f: () => TE.TaskEither<HnsError, A>): TE.TaskEither<HnsError, A> {
    return async () => {
      m.calls.push({ op, arg });
      if (m.failNext === op) {
        delete m.failNext;
        return E.left({ kind: 'hns', msg: `${op} failed (injected)` });
      }
      return f()();
    };
  }
  return m;
}

/** The first address of `prefix` past the network's .1 and .2 that nothing uses. */
function freeAddress(prefix: string, used: ReadonlySet<string>): string | undefined {
  const c = parseCIDR(prefix);
  if (!c) return undefined;
  const net = networkOf(c);
  for (let a = add(net.ip, 3n); contains(net, a); a = add(a, 1n)) {
    const s = formatIP(a);
    if (!used.has(s) && parseIP(s)) return s;
  }
  return undefined;
}
