// win-bridge: a container on an HNS L2Bridge/L2Tunnel network (core/win-bridge/config.ts), through the shared
// Windows flow (win-common.ts). Has not run on Windows: see docs/cni.md.

import {
  parseWinBridgeConf,
  winBridgeHcnEndpoint,
  winBridgeHnsEndpoint,
  WIN_BRIDGE_NETWORK_TYPES,
  type WinBridgeConf,
} from '../../../core/win-bridge/config.ts';
import type { Plugin } from '../plugin.ts';
import { makeWinPlugin, platformHns, type HnsFor } from './win-common.ts';

/** The plugin on an HNS of the caller's choosing (tests pass the twin). */
export const makeWinBridge = (hns: HnsFor = platformHns): Plugin =>
  makeWinPlugin<WinBridgeConf>(
    {
      type: 'win-bridge',
      about: 'felt win-bridge: an HNS endpoint on an L2Bridge network per container (Windows)',
      parse: parseWinBridgeConf,
      hnsTypes: WIN_BRIDGE_NETWORK_TYPES,
      hcnTypes: WIN_BRIDGE_NETWORK_TYPES,
      hnsRequest: (c, _net, a) => winBridgeHnsEndpoint(c, a),
      hcnRequest: (c, _net, _v1, a) => winBridgeHcnEndpoint(c, a),
      hcnNeedsHnsNetwork: false,
    },
    hns,
  );

export const winBridge: Plugin = makeWinBridge();
