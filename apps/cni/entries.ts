// Every CNI executable felt builds, by type: its plugin and the plugins bundled with it (those a delegation
// runs in-process when CNI_PATH resolves them to felt's own executables). The same lists as apps/cni/bin/*.ts
// (test/apps/cni-daemon.test.ts checks that every bin has its entry): feltd serving CNI
// (apps/feltd/cni-service.ts) runs a forwarded call with exactly what the executable would have run.

import type { Bundled } from './dispatch.ts';
import type { Plugin } from './plugin.ts';
import { bandwidth } from './plugins/bandwidth.ts';
import { bridge } from './plugins/bridge.ts';
import { dhcpIpam } from './plugins/dhcp.ts';
import { firewall } from './plugins/firewall.ts';
import { flannel } from './plugins/flannel.ts';
import { hostDevice } from './plugins/host-device.ts';
import { hostLocal } from './plugins/host-local.ts';
import { ipvlan } from './plugins/ipvlan.ts';
import { loopback } from './plugins/loopback.ts';
import { macvlan } from './plugins/macvlan.ts';
import { portmap } from './plugins/portmap.ts';
import { ptp } from './plugins/ptp.ts';
import { sbr } from './plugins/sbr.ts';
import { staticIpam } from './plugins/static.ts';
import { tap } from './plugins/tap.ts';
import { dummy } from './plugins/dummy.ts';
import { tuning } from './plugins/tuning.ts';
import { winBridge } from './plugins/win-bridge.ts';
import { winOverlay } from './plugins/win-overlay.ts';
import { vlan } from './plugins/vlan.ts';
import { vrf } from './plugins/vrf.ts';

export interface CniEntry {
  readonly plugin: Plugin;
  /** The executable's bundled plugins, itself included. */
  readonly bundled: Bundled;
}

const ipam = { 'host-local': hostLocal, static: staticIpam };
const entry = (plugin: Plugin, bundled: Bundled = {}): CniEntry => ({ plugin, bundled: { ...bundled, [plugin.type]: plugin } });

export const CNI_ENTRIES: Readonly<Record<string, CniEntry>> = {
  bandwidth: entry(bandwidth),
  bridge: entry(bridge, ipam),
  dhcp: entry(dhcpIpam),
  dummy: entry(dummy, ipam),
  firewall: entry(firewall),
  flannel: entry(flannel, { bridge, ptp, macvlan, 'host-local': hostLocal }),
  'host-device': entry(hostDevice, ipam),
  'host-local': entry(hostLocal),
  ipvlan: entry(ipvlan, ipam),
  loopback: entry(loopback),
  macvlan: entry(macvlan, ipam),
  portmap: entry(portmap),
  ptp: entry(ptp, ipam),
  sbr: entry(sbr),
  static: entry(staticIpam),
  tap: entry(tap, ipam),
  tuning: entry(tuning),
  vlan: entry(vlan, ipam),
  vrf: entry(vrf),
  'win-bridge': entry(winBridge, ipam),
  'win-overlay': entry(winOverlay, ipam),
};
