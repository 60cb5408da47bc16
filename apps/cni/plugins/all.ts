// Every plugin felt ships, by CNI type: the table `felt cni` uses to run felt's own plugins in its own process
// when CNI_PATH resolves a type to felt's executable (as bridge runs host-local). An explicit list, not a
// registry filled by imports; test/apps/plugin-table.test.ts checks that it names exactly the executables
// apps/cni/bin/ builds, each under its own type.

import type { Plugin } from '../plugin.ts';
import { bandwidth } from './bandwidth.ts';
import { bridge } from './bridge.ts';
import { dhcpIpam } from './dhcp.ts';
import { dummy } from './dummy.ts';
import { firewall } from './firewall.ts';
import { flannel } from './flannel.ts';
import { hostDevice } from './host-device.ts';
import { hostLocal } from './host-local.ts';
import { ipvlan } from './ipvlan.ts';
import { loopback } from './loopback.ts';
import { macvlan } from './macvlan.ts';
import { portmap } from './portmap.ts';
import { ptp } from './ptp.ts';
import { sbr } from './sbr.ts';
import { staticIpam } from './static.ts';
import { tap } from './tap.ts';
import { tuning } from './tuning.ts';
import { vlan } from './vlan.ts';
import { vrf } from './vrf.ts';
import { winBridge } from './win-bridge.ts';
import { winOverlay } from './win-overlay.ts';

export const FELT_PLUGINS: Readonly<Record<string, Plugin>> = {
  bandwidth,
  bridge,
  dhcp: dhcpIpam,
  dummy,
  firewall,
  flannel,
  'host-device': hostDevice,
  'host-local': hostLocal,
  ipvlan,
  loopback,
  macvlan,
  portmap,
  ptp,
  sbr,
  static: staticIpam,
  tap,
  tuning,
  vlan,
  vrf,
  'win-bridge': winBridge,
  'win-overlay': winOverlay,
};
