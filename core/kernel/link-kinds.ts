// Every kind of link felt models, in one table: the LinkKind type is its keys, and what reads or makes links
// derives from it (the observer's parser: which `ip -d` info_kind is which kind; the renderer: how each kind is
// created, a table `satisfies Record<LinkKind, ...>`; the twin: which kinds can be created). Adding a kind here
// without saying how it is created does not compile; there is no run-time default anywhere.

export interface LinkKindInfo {
  /**
   * What `ip -d -json link` reports as linkinfo.info_kind (and, for the tun driver, info_data.type), or null for
   * the kinds recognised otherwise (loopback by its LOOPBACK flag; device: anything else).
   */
  readonly infoKind: string | null;
  readonly infoType?: string;
  /** felt can create links of this kind (device and loopback are only ever found). */
  readonly creatable: boolean;
  /** Made on a lower device (the master): deleted with it, created from the master's namespace. */
  readonly lower: boolean;
}

export const LINK_KINDS = {
  bridge: { infoKind: 'bridge', creatable: true, lower: false },
  veth: { infoKind: 'veth', creatable: true, lower: false },
  vxlan: { infoKind: 'vxlan', creatable: true, lower: false },
  macvlan: { infoKind: 'macvlan', creatable: true, lower: true },
  ipvlan: { infoKind: 'ipvlan', creatable: true, lower: true },
  vlan: { infoKind: 'vlan', creatable: true, lower: true },
  ifb: { infoKind: 'ifb', creatable: true, lower: false },
  vrf: { infoKind: 'vrf', creatable: true, lower: false },
  // The tun driver reports both of its modes as "tun": a tap is "tun" with type "tap" (a tun-mode device is a `device`).
  tap: { infoKind: 'tun', infoType: 'tap', creatable: true, lower: false },
  dummy: { infoKind: 'dummy', creatable: true, lower: false },
  loopback: { infoKind: null, creatable: false, lower: false },
  device: { infoKind: null, creatable: false, lower: false },
} as const satisfies Readonly<Record<string, LinkKindInfo>>;

export type LinkKind = keyof typeof LINK_KINDS;

/** The kind `ip -d` describes by info_kind (and info_data.type), or undefined when no modelled kind has them. */
export function kindOfInfo(infoKind: string | undefined, infoType: unknown): LinkKind | undefined {
  if (infoKind === undefined) return undefined;
  for (const [k, v] of Object.entries(LINK_KINDS) as [LinkKind, LinkKindInfo][]) {
    if (v.infoKind === infoKind && (v.infoType === undefined || v.infoType === infoType)) return k;
  }
  return undefined;
}
