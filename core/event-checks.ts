// The data check of every event type felt records, one table per stream kind (used by core/projections.ts,
// whose `kind` makes the compiler check that a table covers exactly its projection's event types). Each check
// accepts what the kind's decider emits and nothing else (see core/event-data.ts). Pure.

import * as E from 'fp-ts/lib/Either.js';
import type { AttachmentEvent } from './bridge/attachments.ts';
import type { FirewallEvent } from './firewall/records.ts';
import type { RuntimeEvent } from './cni/attachments.ts';
import {
  array,
  bool,
  checkData,
  cidrText,
  cniName,
  ifname,
  int,
  ipText,
  json,
  macText,
  nullable,
  object,
  oneOf,
  path,
  record,
  refine,
  refuse,
  str,
  subnetText,
  text,
  time,
  token,
  type DataChecks,
  type Parser,
} from './event-data.ts';
import { dataDirProblem } from './ipam/config.ts';
import type { NodeEvent } from './flannel/events.ts';
import { parseSubnetKey } from './flannel/lease.ts';
import { parseNetConfig } from './flannel/netconf.ts';
import type { BackendConfig, LeaseAttrs, NetConfig } from './flannel/types.ts';
import type { HostDeviceEvent } from './hostdevice/decider.ts';
import type { IpamEvent } from './ipam/decider.ts';
import type { TuningEvent } from './tuning/decider.ts';
import { parseIPv4, parseIPv6 } from './ip/ip.ts';

const family = (s: string): 4 | 6 => (s.includes(':') ? 6 : 4);

// ---- ipam/<network> (host-local) ----------------------------------------------------------------------

const address = {
  network: cniName,
  containerId: cniName,
  ifname,
  rangeSet: int(0, 1_000_000),
  ip: ipText,
};

export const IPAM_CHECKS: DataChecks<IpamEvent> = {
  AddressAllocated: checkData(object(address), { networkIsStream: true }),
  AddressReleased: checkData(object({ ...address, reason: oneOf('del', 'gc') }), { networkIsStream: true }),
};

// ---- bridge/<network> ---------------------------------------------------------------------------------

const dataDir: Parser<string> = (v, at) => {
  const s = str(v, at);
  const p = dataDirProblem(s);
  return p ? refuse(at, `${JSON.stringify(s)} ${p}`) : s;
};

const who = { network: cniName, containerId: cniName, ifname };

export const BRIDGE_CHECKS: DataChecks<AttachmentEvent> = {
  AttachmentRecorded: checkData(
    object(
      { ...who, netns: path, hostVeth: ifname, dataDir },
      { conf: record(json), cniArgs: record(str), hostVethMac: macText, hostNs: text },
    ),
    { networkIsStream: true },
  ),
  AttachmentReady: checkData(object({ ...who, hostVeth: ifname, durationMs: int(0, Number.MAX_SAFE_INTEGER) }), { networkIsStream: true }),
  AttachmentRemoved: checkData(object({ ...who, hostVeth: ifname, reason: oneOf('del', 'rollback', 'gc') }), { networkIsStream: true }),
};

// ---- ptp/<network>: bridge's records, without AttachmentReady ----------------------------------------------

export const PTP_CHECKS: DataChecks<Exclude<AttachmentEvent, { readonly type: 'AttachmentReady' }>> = {
  AttachmentRecorded: BRIDGE_CHECKS.AttachmentRecorded,
  AttachmentRemoved: BRIDGE_CHECKS.AttachmentRemoved,
};

// ---- host-device/<network> ----------------------------------------------------------------------------

export const HOST_DEVICE_CHECKS: DataChecks<HostDeviceEvent> = {
  HostDeviceAttached: checkData(
    object({
      ...who,
      netns: path,
      original: object({ name: ifname, up: bool, alias: (v, at) => (v === '' ? '' : token(v, at)) }, { mac: macText, mtu: int(0, 65535) }),
    }),
    { networkIsStream: true },
  ),
  HostDeviceReleased: checkData(object({ ...who, reason: oneOf('del', 'add-failed', 'netns-gone', 'gone') }), { networkIsStream: true }),
};

// ---- tuning/<network> ---------------------------------------------------------------------------------

/** A sysctl key as tuning records it: dotted, under net., one batch token, no empty or '..' component. */
const sysctlKey: Parser<string> = refine(token, (k) =>
  k.startsWith('net.') && !k.split('.').some((s) => s === '') && !k.includes('/')
    ? undefined
    : `${JSON.stringify(k)} is not a network sysctl key (net.*)`,
);

export const TUNING_CHECKS: DataChecks<TuningEvent> = {
  TuningApplied: checkData(
    object({
      ...who,
      netns: path,
      original: object({
        link: object({}, { mac: macText, mtu: int(0, 65535), promisc: bool, allmulti: bool, txqlen: int(0, 0xffffffff) }),
        sysctls: array(
          object({
            key: sysctlKey,
            value: refine(str, (v) =>
              v === '' || /^[^\s\x00-\x1f\x7f#'"\\]+( [^\s\x00-\x1f\x7f#'"\\]+)*$/.test(v)
                ? undefined
                : `${JSON.stringify(v)} is not a sysctl value`,
            ),
          }),
        ),
      }),
    }),
    { networkIsStream: true },
  ),
  TuningReverted: checkData(object({ ...who, reason: oneOf('del', 'netns-gone', 'add-failed') }), { networkIsStream: true }),
};

// ---- firewall/<network> ----------------------------------------------------------------------------------

/** A host prefix as the firewall records it (`10.22.0.5/32`, `fd00::5/128`): canonical, of the family's full length. */
const hostPrefix: Parser<string> = refine(cidrText, (c) =>
  /\/(32|128)$/.test(c) && (c.endsWith('/32') ? !c.includes(':') : c.includes(':')) ? undefined : `${c} is not a host prefix`,
);

export const FIREWALL_CHECKS: DataChecks<FirewallEvent> = {
  FirewallRulesRecorded: checkData(object({ ...who, prefixes: array(hostPrefix) }), { networkIsStream: true }),
  FirewallRulesRemoved: checkData(object({ ...who, reason: oneOf('del', 'add-failed') }), { networkIsStream: true }),
};

// ---- cni/<network> (felt cni) -------------------------------------------------------------------------

const runtimeWho = { network: cniName, containerId: cniName, ifname };

export const RUNTIME_CHECKS: DataChecks<RuntimeEvent> = {
  AttachmentAdded: checkData(object({ ...runtimeWho, netns: path, plugins: array(cniName), ips: array(cidrText) }), {
    networkIsStream: true,
  }),
  AttachmentAddFailed: checkData(
    object({ ...runtimeWho, netns: path, plugin: cniName, error: str, tornDown: array(cniName) }, { kept: bool }),
    { networkIsStream: true },
  ),
  AttachmentDeleted: checkData(object({ ...runtimeWho, reason: oneOf('del', 'gc'), errors: array(str) }), { networkIsStream: true }),
};

// ---- node/<public IP> (feltd) -------------------------------------------------------------------------

const backendConfig: Parser<BackendConfig> = (v, at) =>
  (v as { type?: unknown } | null)?.type === 'host-gw'
    ? object({ type: oneOf('host-gw') })(v, at)
    : object(
        { type: oneOf('vxlan'), vni: int(0, 0xffffff), port: int(0, 65535), directRouting: bool, gbp: bool, learning: bool },
        { mtu: int(0, 65535) },
      )(v, at);

/** The net-conf.json a NetConfig comes from: parsed again, it must give the same config (feltd's rules). */
const netConfJson = (c: NetConfig): string =>
  JSON.stringify({
    EnableIPv4: c.enableIPv4,
    EnableIPv6: c.enableIPv6,
    ...(c.network !== undefined ? { Network: c.network, SubnetLen: c.subnetLen } : {}),
    ...(c.subnetMin !== undefined ? { SubnetMin: c.subnetMin } : {}),
    ...(c.subnetMax !== undefined ? { SubnetMax: c.subnetMax } : {}),
    ...(c.ipv6Network !== undefined ? { IPv6Network: c.ipv6Network, IPv6SubnetLen: c.ipv6SubnetLen } : {}),
    ...(c.ipv6SubnetMin !== undefined ? { IPv6SubnetMin: c.ipv6SubnetMin } : {}),
    ...(c.ipv6SubnetMax !== undefined ? { IPv6SubnetMax: c.ipv6SubnetMax } : {}),
    ...(c.enableNFTables ? { EnableNFTables: true } : {}),
    Backend:
      c.backend.type === 'host-gw'
        ? { Type: 'host-gw' }
        : {
            Type: 'vxlan',
            VNI: c.backend.vni,
            Port: c.backend.port,
            GBP: c.backend.gbp,
            Learning: c.backend.learning,
            DirectRouting: c.backend.directRouting,
            ...(c.backend.mtu ? { MTU: c.backend.mtu } : {}),
          },
  });

/** JSON with its object keys sorted, to compare two configs. */
const canonical = (v: unknown): string =>
  JSON.stringify(v, (_k, x: unknown) =>
    typeof x === 'object' && x !== null && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1)))
      : x,
  );

const netConfig: Parser<NetConfig> = refine(
  object(
    { enableIPv4: bool, enableIPv6: bool, subnetLen: int(0, 32), ipv6SubnetLen: int(0, 128), backend: backendConfig },
    {
      network: subnetText,
      subnetMin: ipText,
      subnetMax: ipText,
      ipv6Network: subnetText,
      ipv6SubnetMin: ipText,
      ipv6SubnetMax: ipText,
      enableNFTables: bool,
    },
  ),
  (c) => {
    const again = parseNetConfig(netConfJson(c));
    if (E.isLeft(again)) return `not a config feltd accepts: ${again.left}`;
    return canonical(again.right.config) === canonical(c)
      ? undefined
      : `not a config as feltd records it (from its net-conf.json feltd makes ${canonical(again.right.config)})`;
  },
);

const leaseKey: Parser<string> = refine(str, (k) => {
  const p = parseSubnetKey(k);
  return E.isLeft(p) ? p.left : undefined;
});

/** The subnets must be the ones the key names. */
const subnetsMatchKey = <T extends { key: string; subnet?: string; ipv6Subnet?: string }>(t: T): string | undefined => {
  const p = parseSubnetKey(t.key);
  if (E.isLeft(p)) return p.left;
  return p.right.subnet === t.subnet && p.right.ipv6Subnet === t.ipv6Subnet
    ? undefined
    : `subnet ${JSON.stringify(t.subnet)} and ipv6Subnet ${JSON.stringify(t.ipv6Subnet)} are not those of key ${JSON.stringify(t.key)}`;
};

const subnets = { key: leaseKey };
const subnetsOptional = {
  subnet: refine(subnetText, (s) => (family(s) === 4 ? undefined : `${s} is not an IPv4 subnet`)),
  ipv6Subnet: refine(subnetText, (s) => (family(s) === 6 ? undefined : `${s} is not an IPv6 subnet`)),
};
const ipv4: Parser<string> = refine(ipText, (s) => (parseIPv4(s) ? undefined : `${s} is not an IPv4 address`));
const ipv6: Parser<string> = refine(ipText, (s) => (parseIPv6(s) && s.includes(':') ? undefined : `${s} is not an IPv6 address`));

const leaseAttrs: Parser<LeaseAttrs> = object(
  { PublicIP: ipv4, BackendType: token },
  { PublicIPv6: nullable(ipv6), BackendData: json, BackendV6Data: json },
);

export const NODE_CHECKS: DataChecks<NodeEvent> = {
  ConfigLoaded: checkData(object({ config: netConfig })),
  SubnetLeased: checkData(
    refine(
      object(
        { ...subnets, publicIP: ipv4, backendType: token, expiration: time, renewal: bool },
        { ...subnetsOptional, publicIPv6: ipv6, vtepMac: macText, vtepMacV6: macText },
      ),
      subnetsMatchKey,
    ),
  ),
  SubnetLeaseLost: checkData(refine(object({ ...subnets, reason: text }, subnetsOptional), subnetsMatchKey)),
  RemoteLeaseSeen: checkData(
    refine(
      object(
        { ...subnets, attrs: leaseAttrs, expiration: time, change: oneOf('appeared', 'changed') },
        { ...subnetsOptional, changes: array(text) },
      ),
      subnetsMatchKey,
    ),
  ),
  RemoteLeaseRemoved: checkData(
    refine(
      object({ ...subnets, publicIP: ipv4, reason: oneOf('removed', 'expired', 'gone', 'ours', 'refused') }, subnetsOptional),
      subnetsMatchKey,
    ),
  ),
};
