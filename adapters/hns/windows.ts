// HNS/HCN on Windows through an FFI library (koffi, required at run time on Windows only: it is not a
// dependency of the Linux build, so a Windows install must provide it beside the executables): HNS v1 through vmcompute.dll's HNSCall (GET/POST/DELETE on /networks, /endpoints,
// /globals/version, as hcsshim does), hot attach through HcsModifyComputeSystem, HCN v2 through
// computenetwork.dll (HcnEnumerate*/HcnOpen*/HcnQuery*Properties/HcnCreateEndpoint/HcnDeleteEndpoint/
// HcnModifyNamespace). Type-checked here; it has never run on Windows (docs/cni.md).

import { createRequire } from 'node:module';
import * as E from 'fp-ts/lib/Either.js';
import type * as TE from 'fp-ts/lib/TaskEither.js';
import type { HcnEndpoint, HcnNetwork, HnsEndpoint, HnsNetwork } from '../../core/hns/endpoint.ts';
import type { Hns, HnsError } from './types.ts';

/** The part of koffi's API used here. */
interface KoffiLib {
  func(prototype: string): (...args: unknown[]) => unknown;
}
interface Koffi {
  load(path: string): KoffiLib;
  struct(name: string, def: Record<string, unknown>): unknown;
  array(type: string, n: number): unknown;
  decode(ptr: unknown, type: string): unknown;
}

/** HRESULTs that mean "no such object" (HCN_E_ENDPOINT_NOT_FOUND, HCN_E_NETWORK_NOT_FOUND, ...) and HCS_E_SYSTEM_NOT_FOUND. */
const NOT_FOUND = new Set([0x803b0008, 0x803b0002, 0x803b0003, 0x80070490]);
const SYSTEM_NOT_FOUND = 0xc037010e;

interface Guid {
  Data1: number;
  Data2: number;
  Data3: number;
  Data4: number[];
}
const toGuid = (s: string): Guid => {
  const h = s.replace(/[{}-]/g, '');
  return {
    Data1: parseInt(h.slice(0, 8), 16),
    Data2: parseInt(h.slice(8, 12), 16),
    Data3: parseInt(h.slice(12, 16), 16),
    Data4: [...Array(8).keys()].map((i) => parseInt(h.slice(16 + 2 * i, 18 + 2 * i), 16)),
  };
};
const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

/** koffi, resolved from where the executable is (the bundles hold no dynamic import, so it is required). */
async function loadKoffi(): Promise<Koffi> {
  const req = createRequire(process.argv[1] ?? `${process.cwd()}/`);
  const m = req('koffi') as { default?: Koffi } & Koffi;
  return m.default ?? m;
}

export function windowsHns(): Promise<Hns> {
  return loadKoffi().then(bind);
}

function bind(k: Koffi): Hns {
  k.struct('GUID', { Data1: 'uint32', Data2: 'uint16', Data3: 'uint16', Data4: k.array('uint8', 8) });
  const vmcompute = k.load('vmcompute.dll');
  const hcn = k.load('computenetwork.dll');
  const ole32 = k.load('ole32.dll');
  const free = ole32.func('void CoTaskMemFree(void *p)');
  const f = {
    hnsCall: vmcompute.func(
      'uint32 __stdcall HNSCall(const char16_t *method, const char16_t *path, const char16_t *request, _Out_ void **response)',
    ),
    hcsOpen: vmcompute.func('uint32 __stdcall HcsOpenComputeSystem(const char16_t *id, _Out_ void **system, _Out_ void **result)'),
    hcsModify: vmcompute.func('uint32 __stdcall HcsModifyComputeSystem(void *system, const char16_t *configuration, _Out_ void **result)'),
    hcsClose: vmcompute.func('uint32 __stdcall HcsCloseComputeSystem(void *system)'),
    enumNetworks: hcn.func('uint32 __stdcall HcnEnumerateNetworks(const char16_t *query, _Out_ void **networks, _Out_ void **result)'),
    openNetwork: hcn.func('uint32 __stdcall HcnOpenNetwork(GUID id, _Out_ void **network, _Out_ void **result)'),
    queryNetwork: hcn.func(
      'uint32 __stdcall HcnQueryNetworkProperties(void *network, const char16_t *query, _Out_ void **properties, _Out_ void **result)',
    ),
    closeNetwork: hcn.func('uint32 __stdcall HcnCloseNetwork(void *network)'),
    enumEndpoints: hcn.func('uint32 __stdcall HcnEnumerateEndpoints(const char16_t *query, _Out_ void **endpoints, _Out_ void **result)'),
    openEndpoint: hcn.func('uint32 __stdcall HcnOpenEndpoint(GUID id, _Out_ void **endpoint, _Out_ void **result)'),
    queryEndpoint: hcn.func(
      'uint32 __stdcall HcnQueryEndpointProperties(void *endpoint, const char16_t *query, _Out_ void **properties, _Out_ void **result)',
    ),
    createEndpoint: hcn.func(
      'uint32 __stdcall HcnCreateEndpoint(void *network, GUID id, const char16_t *settings, _Out_ void **endpoint, _Out_ void **result)',
    ),
    closeEndpoint: hcn.func('uint32 __stdcall HcnCloseEndpoint(void *endpoint)'),
    deleteEndpoint: hcn.func('uint32 __stdcall HcnDeleteEndpoint(GUID id, _Out_ void **result)'),
    openNamespace: hcn.func('uint32 __stdcall HcnOpenNamespace(GUID id, _Out_ void **namespace, _Out_ void **result)'),
    modifyNamespace: hcn.func('uint32 __stdcall HcnModifyNamespace(void *namespace, const char16_t *settings, _Out_ void **result)'),
    closeNamespace: hcn.func('uint32 __stdcall HcnCloseNamespace(void *namespace)'),
  };
  /** A returned wide string, freed. */
  const take = (p: unknown): string => {
    if (!p) return '';
    const s = k.decode(p, 'char16_t *') as string;
    free(p);
    return s ?? '';
  };
  const err = (what: string, hr: number, detail: string): HnsError => ({
    kind: 'hns',
    msg: `${what}: HRESULT 0x${(hr >>> 0).toString(16)}${detail ? ` ${detail}` : ''}`,
    ...(NOT_FOUND.has(hr >>> 0) ? { notFound: true } : {}),
    ...(hr >>> 0 === SYSTEM_NOT_FOUND ? { computeSystemGone: true } : {}),
  });
  const te =
    <A>(f: () => E.Either<HnsError, A>): TE.TaskEither<HnsError, A> =>
    async () => {
      try {
        return f();
      } catch (e) {
        return E.left({ kind: 'hns', msg: (e as Error).message });
      }
    };
  /** HNS v1: one HNSCall; the response is {Success, Error, Output}. */
  const hnsCall = <A>(method: string, path: string, body: unknown): E.Either<HnsError, A> => {
    const out: unknown[] = [null];
    const hr = f.hnsCall(method, path, body === undefined ? '' : JSON.stringify(body), out) as number;
    const text = take(out[0]);
    if (hr !== 0) return E.left(err(`HNS ${method} ${path}`, hr, text));
    const r = JSON.parse(text) as { Success?: boolean; Error?: string; Output?: A };
    if (!r.Success)
      return E.left({
        kind: 'hns',
        msg: `HNS ${method} ${path}: ${r.Error ?? 'failed'}`,
        ...(/not found/i.test(r.Error ?? '') ? { notFound: true } : {}),
      });
    return E.right(r.Output as A);
  };
  const query = (filter: Record<string, string>): string =>
    JSON.stringify({ SchemaVersion: { Major: 2, Minor: 0 }, Flags: 0, Filter: JSON.stringify(filter) });
  /** HCN v2: enumerate by filter, open and query each. */
  const hcnFind = <A>(kind: 'network' | 'endpoint', filter: Record<string, string>): E.Either<HnsError, A | undefined> => {
    const ids: unknown[] = [null];
    const res: unknown[] = [null];
    const q = query(filter);
    const hr = (kind === 'network' ? f.enumNetworks : f.enumEndpoints)(q, ids, res) as number;
    const detail = take(res[0]);
    if (hr !== 0) return E.left(err(`HcnEnumerate ${kind}s`, hr, detail));
    const list = JSON.parse(take(ids[0]) || '[]') as string[];
    if (!list[0]) return E.right(undefined);
    const h: unknown[] = [null];
    const r2: unknown[] = [null];
    const ohr = (kind === 'network' ? f.openNetwork : f.openEndpoint)(toGuid(list[0]), h, r2) as number;
    const d2 = take(r2[0]);
    if (ohr !== 0) return E.left(err(`HcnOpen ${kind}`, ohr, d2));
    try {
      const props: unknown[] = [null];
      const r3: unknown[] = [null];
      const qhr = (kind === 'network' ? f.queryNetwork : f.queryEndpoint)(h[0], q, props, r3) as number;
      const d3 = take(r3[0]);
      if (qhr !== 0) return E.left(err(`HcnQuery ${kind} properties`, qhr, d3));
      return E.right(JSON.parse(take(props[0])) as A);
    } finally {
      (kind === 'network' ? f.closeNetwork : f.closeEndpoint)(h[0]);
    }
  };
  const modifyContainer = (containerId: string, endpointId: string, request: 'Add' | 'Remove'): E.Either<HnsError, void> => {
    const h: unknown[] = [null];
    const r: unknown[] = [null];
    const hr = f.hcsOpen(containerId, h, r) as number;
    const d = take(r[0]);
    if (hr !== 0) return E.left(err(`HcsOpenComputeSystem ${containerId}`, hr, d));
    try {
      const r2: unknown[] = [null];
      const mhr = f.hcsModify(h[0], JSON.stringify({ ResourceType: 'Network', RequestType: request, Settings: endpointId }), r2) as number;
      const d2 = take(r2[0]);
      return mhr === 0 ? E.right(undefined) : E.left(err(`HcsModifyComputeSystem ${containerId}`, mhr, d2));
    } finally {
      f.hcsClose(h[0]);
    }
  };
  const namespaceModify = (ns: string, endpointId: string, request: 'Add' | 'Remove'): E.Either<HnsError, void> => {
    const h: unknown[] = [null];
    const r: unknown[] = [null];
    const hr = f.openNamespace(toGuid(ns), h, r) as number;
    const d = take(r[0]);
    if (hr !== 0) return E.left(err(`HcnOpenNamespace ${ns}`, hr, d));
    try {
      const r2: unknown[] = [null];
      const mhr = f.modifyNamespace(
        h[0],
        JSON.stringify({ ResourceType: 'Endpoint', RequestType: request, Settings: { EndpointId: endpointId } }),
        r2,
      ) as number;
      const d2 = take(r2[0]);
      return mhr === 0 ? E.right(undefined) : E.left(err(`HcnModifyNamespace ${ns}`, mhr, d2));
    } finally {
      f.closeNamespace(h[0]);
    }
  };
  const byName = <A extends { Name?: string }>(list: E.Either<HnsError, A[] | null>, name: string): E.Either<HnsError, A | undefined> =>
    E.map((xs: A[] | null) => (xs ?? []).find((x) => x.Name === name))(list);

  return {
    dsrSupported: () =>
      te(() =>
        E.map(
          (v: { Major: number; Minor: number }) => (v.Major === 9 && v.Minor >= 2) || (v.Major >= 10 && (v.Major > 10 || v.Minor >= 2)),
        )(hnsCall('GET', '/globals/version', undefined)),
      ),
    network: (name) => te(() => byName(hnsCall<HnsNetwork[]>('GET', '/networks/', undefined), name)),
    endpoint: (name) => te(() => byName(hnsCall<HnsEndpoint[]>('GET', '/endpoints/', undefined), name)),
    createEndpoint: (req) => te(() => hnsCall<HnsEndpoint>('POST', '/endpoints/', req)),
    deleteEndpoint: (id) => te(() => E.map(() => undefined)(hnsCall('DELETE', `/endpoints/${id}`, undefined))),
    hotAttach: (cid, eid) => te(() => modifyContainer(cid, eid, 'Add')),
    hotDetach: (cid, eid) => te(() => modifyContainer(cid, eid, 'Remove')),
    containerDetach: (cid, eid) =>
      te(() => E.map(() => undefined)(hnsCall('POST', `/endpoints/${eid}/detach`, { ContainerId: cid, SystemType: 'Container' }))),
    hcnNetwork: (name) => te(() => hcnFind<HcnNetwork>('network', { Name: name })),
    hcnEndpoint: (name) => te(() => hcnFind<HcnEndpoint>('endpoint', { Name: name })),
    createHcnEndpoint: (req) =>
      te(() => {
        const n: unknown[] = [null];
        const r: unknown[] = [null];
        const hr = f.openNetwork(toGuid(req.HostComputeNetwork), n, r) as number;
        const d = take(r[0]);
        if (hr !== 0) return E.left(err(`HcnOpenNetwork ${req.HostComputeNetwork}`, hr, d));
        try {
          const h: unknown[] = [null];
          const r2: unknown[] = [null];
          const chr = f.createEndpoint(n[0], toGuid(ZERO_GUID), JSON.stringify(req), h, r2) as number;
          const d2 = take(r2[0]);
          if (chr !== 0) return E.left(err('HcnCreateEndpoint', chr, d2));
          const props: unknown[] = [null];
          const r3: unknown[] = [null];
          const qhr = f.queryEndpoint(h[0], query({}), props, r3) as number;
          const d3 = take(r3[0]);
          f.closeEndpoint(h[0]);
          return qhr === 0 ? E.right(JSON.parse(take(props[0])) as HcnEndpoint) : E.left(err('HcnQueryEndpointProperties', qhr, d3));
        } finally {
          f.closeNetwork(n[0]);
        }
      }),
    deleteHcnEndpoint: (id) =>
      te(() => {
        const r: unknown[] = [null];
        const hr = f.deleteEndpoint(toGuid(id), r) as number;
        const d = take(r[0]);
        return hr === 0 ? E.right(undefined) : E.left(err(`HcnDeleteEndpoint ${id}`, hr, d));
      }),
    namespaceExists: (ns) =>
      te(() => {
        const h: unknown[] = [null];
        const r: unknown[] = [null];
        const hr = f.openNamespace(toGuid(ns), h, r) as number;
        const d = take(r[0]);
        if (hr === 0) {
          f.closeNamespace(h[0]);
          return E.right(true);
        }
        return NOT_FOUND.has(hr >>> 0) ? E.right(false) : E.left(err(`HcnOpenNamespace ${ns}`, hr, d));
      }),
    addNamespaceEndpoint: (ns, eid) => te(() => namespaceModify(ns, eid, 'Add')),
    removeNamespaceEndpoint: (ns, eid) => te(() => namespaceModify(ns, eid, 'Remove')),
  };
}
