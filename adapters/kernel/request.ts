// What an ObserveRequest asks to read, namespace by namespace. Pure; shared by the Linux adapter and the
// memory twin so that both report the same things.

import type { IptFamily, IptTable, NftFamily, NsRef } from '../../core/kernel/model.ts';
import { HOST } from '../../core/kernel/model.ts';
import type { ObserveRequest } from './types.ts';

export interface NsReads {
  readonly ns: NsRef;
  /** Per family: the tables to read; an empty list means all of them. */
  readonly iptables: ReadonlyMap<IptFamily, readonly IptTable[]>;
  readonly fdb: boolean;
  readonly qdiscs: boolean;
  /** Devices whose ingress filters to read: those of desired ingress qdiscs with a redirect. */
  readonly filters: readonly string[];
  readonly sysctls: readonly string[];
  readonly ipRules: boolean;
  readonly kernelRoutes: boolean;
  /** nftables tables to list (`nft -j list table F T`): those the desired state or the scope names here. */
  readonly nftTables: readonly { readonly family: NftFamily; readonly name: string }[];
}

export function readsFor(req: ObserveRequest): NsReads[] {
  const d = req.desired;
  return [...new Set(req.namespaces)].map((ns) => {
    const fromDesired = [...(d?.chains ?? []), ...(d?.rules ?? [])].filter((c) => c.ns === ns);
    const fromScope = [...(req.scope?.chains ?? []), ...(req.scope?.ruleMarkers ?? [])].filter((c) => c.ns === ns);
    const named = [...fromDesired, ...fromScope];
    const iptables = new Map<IptFamily, IptTable[]>();
    const families = new Set<IptFamily>(fromDesired.map((c) => c.family));
    for (const f of req.iptables ?? []) {
      if (fromScope.some((c) => c.family === f)) families.add(f);
      else if (req.scope === undefined && d === undefined && ns === HOST) families.add(f);
    }
    for (const f of [...families].sort()) {
      iptables.set(f, [...new Set(named.filter((c) => c.family === f).map((c) => c.table))].sort());
    }
    const nftNamed = [
      ...(d?.nftTables ?? []).map((t) => ({ ns: t.ns, family: t.family, name: t.name })),
      ...[
        ...(d?.nftChains ?? []),
        ...(d?.nftRules ?? []),
        ...(d?.nftSets ?? []),
        ...(req.scope?.nftChains ?? []),
        ...(req.scope?.nftRuleMarkers ?? []),
      ].map((c) => ({
        ns: c.ns,
        family: c.family,
        name: c.table,
      })),
      ...(req.scope?.nftTables ?? []),
    ].filter((t) => t.ns === ns);
    const nftTables = [...new Map(nftNamed.map((t) => [`${t.family} ${t.name}`, { family: t.family, name: t.name }])).values()];
    const keys = new Set([...(req.sysctls ?? []), ...(d?.sysctls ?? [])].filter((s) => s.ns === ns).map((s) => s.key));
    return {
      ns,
      iptables,
      fdb: !!req.fdb || !!d?.fdb.some((f) => f.ns === ns),
      qdiscs: !!req.qdiscs || !!d?.qdiscs.some((q) => q.ns === ns),
      filters: [
        ...new Set((d?.qdiscs ?? []).filter((q) => q.ns === ns && q.kind === 'ingress' && q.redirect !== undefined).map((q) => q.dev)),
      ],
      sysctls: [...keys],
      ipRules: !!req.ipRules || !!d?.ipRules?.some((r) => r.ns === ns),
      kernelRoutes: !!req.kernelRoutes,
      nftTables,
    };
  });
}
