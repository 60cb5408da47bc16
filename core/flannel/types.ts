// Shared types of feltd (the flannel-compatible node daemon). Pure data; the logic lives beside this file
// (netconf.ts, subnets.ts, lease.ts, node.ts, desired.ts, lease-machine.ts) and the stores in adapters/.

/** net-conf.json, as flannel reads it, after defaults. CIDRs are canonical strings ("10.244.0.0/16"). */
export interface NetConfig {
  readonly enableIPv4: boolean;
  readonly enableIPv6: boolean;
  readonly network?: string;
  /** 0 when IPv4 is off. */
  readonly subnetLen: number;
  /** First and last leasable subnet, as the address of the subnet ("10.244.1.0"), like flannel's config. */
  readonly subnetMin?: string;
  readonly subnetMax?: string;
  readonly ipv6Network?: string;
  /** 0 when IPv6 is off. */
  readonly ipv6SubnetLen: number;
  readonly ipv6SubnetMin?: string;
  readonly ipv6SubnetMax?: string;
  readonly backend: BackendConfig;
  /** EnableNFTables: masquerade and forward rules in flannel's nftables tables instead of iptables. Absent: false. */
  readonly enableNFTables?: boolean;
}

export type BackendConfig =
  | {
      readonly type: 'vxlan';
      readonly vni: number;
      /** UDP port; flannel's 0 means the Linux default for flannel, 8472. */
      readonly port: number;
      readonly mtu?: number;
      readonly directRouting: boolean;
      readonly gbp: boolean;
      readonly learning: boolean;
    }
  | { readonly type: 'host-gw' };

/** flannel's LeaseAttrs, the JSON value of `<prefix>/subnets/<key>`. */
export interface LeaseAttrs {
  readonly PublicIP: string;
  readonly PublicIPv6?: string | null;
  readonly BackendType: string;
  /** For vxlan: {"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}. Kept as parsed JSON. */
  readonly BackendData?: unknown;
  readonly BackendV6Data?: unknown;
}

/** A subnet lease: which node holds which pod subnet, until when. */
export interface Lease {
  /** IPv4 subnet, canonical CIDR, e.g. "10.244.3.0/24" (undefined for IPv6-only). */
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
  readonly attrs: LeaseAttrs;
  /** ISO time the lease expires (etcd: lease TTL; embedded: stored expiry). */
  readonly expiration: string;
  /**
   * Set when the key is a lease key but its value is not a flannel lease (not JSON, wrong types): why. The
   * subnet is held (nobody may take it) but nothing in the value is trusted; `attrs` are empty.
   */
  readonly invalid?: string;
}

/** A change seen by a watch on the subnets prefix. */
export type LeaseEvent = { readonly type: 'added'; readonly lease: Lease } | { readonly type: 'removed'; readonly lease: Lease };

/** A consistent view of all leases and the store revision it was read at. */
export interface LeaseSnapshot {
  readonly leases: readonly Lease[];
  readonly revision: number;
}
