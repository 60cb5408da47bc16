// CNI results. Plugins build the current (1.1.0) shape; `convertResult` writes it in the version the
// network config asked for, as the spec's conversion rules say.

export const CURRENT_VERSION = '1.1.0';
/** Versions felt accepts in a network config. */
export const PLUGIN_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
/** IPAM plugins also answer the legacy 0.1.0/0.2.0 form. */
export const IPAM_VERSIONS = ['0.1.0', '0.2.0', ...PLUGIN_VERSIONS] as const;

export interface Interface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface IPConfig {
  /** CIDR with the host address, e.g. "10.22.0.5/16". */
  address: string;
  gateway?: string;
  interface?: number;
}

export interface Route {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface DNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface Result {
  cniVersion: string;
  interfaces?: Interface[];
  ips?: IPConfig[];
  routes?: Route[];
  dns?: DNS;
}

export const isEmptyDNS = (d: DNS | undefined): boolean =>
  !d || (!d.nameservers?.length && !d.domain && !d.search?.length && !d.options?.length);

/** Compare dotted versions numerically: -1, 0, 1. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

const cleanDNS = (d: DNS | undefined): DNS | undefined => {
  if (isEmptyDNS(d) || !d) return undefined;
  const out: DNS = {};
  if (d.nameservers?.length) out.nameservers = d.nameservers;
  if (d.domain) out.domain = d.domain;
  if (d.search?.length) out.search = d.search;
  if (d.options?.length) out.options = d.options;
  return out;
};

/** Route fields that exist only from 1.1.0 on (mtu, advmss, priority, table, scope). */
const legacyRoute = (r: Route): Route => (r.gw ? { dst: r.dst, gw: r.gw } : { dst: r.dst });

/** Interface fields before 1.1.0: name, mac, sandbox. */
const legacyInterface = (i: Interface): Interface => strip({ name: i.name, mac: i.mac, sandbox: i.sandbox });

const familyOf = (cidr: string): '4' | '6' => (cidr.includes(':') ? '6' : '4');

/**
 * Write `r` in `version`. 1.x keeps everything (1.0.0 drops the 1.1-only route fields); 0.3.x/0.4.0 add
 * `ips[].version`; 0.1.0/0.2.0 use the `ip4`/`ip6` form with the first address of each family.
 */
export function convertResult(r: Result, version: string): Record<string, unknown> {
  const dns = cleanDNS(r.dns);
  if (compareVersions(version, '1.1.0') >= 0) {
    return strip({ cniVersion: version, interfaces: r.interfaces, ips: r.ips, routes: r.routes, dns });
  }
  if (compareVersions(version, '1.0.0') >= 0) {
    return strip({ cniVersion: version, interfaces: r.interfaces?.map(legacyInterface), ips: r.ips, routes: r.routes?.map(legacyRoute), dns });
  }
  if (compareVersions(version, '0.3.0') >= 0) {
    const ips = r.ips?.map((i) => strip({ version: familyOf(i.address), ...i }));
    const interfaces = r.interfaces?.map(legacyInterface);
    return strip({ cniVersion: version, interfaces, ips, routes: r.routes?.map(legacyRoute), dns });
  }
  // 0.1.0 / 0.2.0
  const pick = (fam: '4' | '6'): Record<string, unknown> | undefined => {
    const first = r.ips?.find((i) => familyOf(i.address) === fam);
    if (!first) return undefined;
    const routes = (r.routes ?? []).filter((rt) => familyOf(rt.dst) === fam).map(legacyRoute);
    return strip({ ip: first.address, gateway: first.gateway, routes: routes.length ? routes : undefined });
  };
  return strip({ cniVersion: version, ip4: pick('4'), ip6: pick('6'), dns });
}

/** Read a result printed in any supported version (a prevResult, or a delegate's stdout) into the 1.1.0 shape. */
export function parseResult(raw: unknown): Result | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const o = raw as Record<string, unknown>;
  const version = typeof o['cniVersion'] === 'string' ? o['cniVersion'] : '0.1.0';
  if (compareVersions(version, '0.3.0') < 0) {
    const ips: IPConfig[] = [];
    const routes: Route[] = [];
    for (const k of ['ip4', 'ip6']) {
      const v = o[k] as { ip?: string; gateway?: string; routes?: Route[] } | undefined;
      if (!v?.ip) continue;
      ips.push(v.gateway ? { address: v.ip, gateway: v.gateway } : { address: v.ip });
      routes.push(...(v.routes ?? []));
    }
    const res: Result = { cniVersion: CURRENT_VERSION, ips, routes };
    if (o['dns']) res.dns = o['dns'] as DNS;
    return res;
  }
  const res: Result = { cniVersion: CURRENT_VERSION };
  if (Array.isArray(o['interfaces'])) res.interfaces = o['interfaces'] as Interface[];
  if (Array.isArray(o['ips'])) {
    res.ips = (o['ips'] as (IPConfig & { version?: string })[]).map(({ version: _v, ...rest }) => rest);
  }
  if (Array.isArray(o['routes'])) res.routes = o['routes'] as Route[];
  if (o['dns'] && typeof o['dns'] === 'object') res.dns = o['dns'] as DNS;
  return res;
}

function strip<T extends Record<string, unknown>>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as T;
}
