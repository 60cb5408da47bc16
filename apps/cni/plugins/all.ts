// Every plugin felt ships, by CNI type: the table `felt cni` uses to run felt's own plugins in its own process
// when CNI_PATH resolves a type to felt's executable (as bridge runs host-local). An explicit list, not a
// registry filled by imports.

import type { Plugin } from '../plugin.ts';
import { bandwidth } from './bandwidth.ts';
import { bridge } from './bridge.ts';
import { dummy } from './dummy.ts';
import { firewall } from './firewall.ts';
import { flannel } from './flannel.ts';
import { hostLocal } from './host-local.ts';
import { loopback } from './loopback.ts';
import { macvlan } from './macvlan.ts';
import { portmap } from './portmap.ts';
import { ptp } from './ptp.ts';
import { staticIpam } from './static.ts';
import { tap } from './tap.ts';
import { tuning } from './tuning.ts';
import { winBridge } from './win-bridge.ts';
import { winOverlay } from './win-overlay.ts';

export const FELT_PLUGINS: Readonly<Record<string, Plugin>> = {
  bandwidth,
  bridge,
  dummy,
  firewall,
  flannel,
  'host-local': hostLocal,
  loopback,
  macvlan,
  portmap,
  ptp,
  static: staticIpam,
  tap,
  tuning,
  'win-bridge': winBridge,
  'win-overlay': winOverlay,
};
