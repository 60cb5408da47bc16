// win-overlay: a container on an HNS Overlay (VXLAN) network (core/win-overlay/config.ts), through the shared
// Windows flow (win-common.ts). Has not run on Windows: see docs/cni.md.

import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode } from '../../../core/cni/errors.ts';
import {
  parseWinOverlayConf,
  winOverlayHcnEndpoint,
  winOverlayHnsEndpoint,
  WIN_OVERLAY_NETWORK_TYPES,
  type WinOverlayConf,
} from '../../../core/win-overlay/config.ts';
import type { Plugin } from '../plugin.ts';
import { makeWinPlugin, platformHns, type HnsFor } from './win-common.ts';

/** The plugin on an HNS of the caller's choosing (tests pass the twin). */
export const makeWinOverlay = (hns: HnsFor = platformHns): Plugin =>
  makeWinPlugin<WinOverlayConf>(
    {
      type: 'win-overlay',
      about: 'felt win-overlay: an HNS endpoint on an Overlay network per container (Windows)',
      parse: parseWinOverlayConf,
      hnsTypes: WIN_OVERLAY_NETWORK_TYPES,
      hcnTypes: WIN_OVERLAY_NETWORK_TYPES,
      hnsRequest: winOverlayHnsEndpoint,
      hcnRequest: (c, net, v1, a) =>
        v1 ? winOverlayHcnEndpoint(c, v1, net.Id, a) : E.left(cniError(ErrCode.Kernel, `network ${c.name} not found through HNS v1`)),
      hcnNeedsHnsNetwork: true,
    },
    hns,
  );

export const winOverlay: Plugin = makeWinOverlay();
