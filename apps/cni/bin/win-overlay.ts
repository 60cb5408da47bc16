import { main } from '../dispatch.ts';
import { hostLocal } from '../plugins/host-local.ts';
import { staticIpam } from '../plugins/static.ts';
import { winOverlay } from '../plugins/win-overlay.ts';

// The IPAM plugins run in-process when CNI_PATH resolves them to felt's own executables.
void main(winOverlay, { 'host-local': hostLocal, static: staticIpam });
