import { main } from '../dispatch.ts';
import { hostLocal } from '../plugins/host-local.ts';
import { staticIpam } from '../plugins/static.ts';
import { winBridge } from '../plugins/win-bridge.ts';

// The IPAM plugins run in-process when CNI_PATH resolves them to felt's own executables.
void main(winBridge, { 'host-local': hostLocal, static: staticIpam });
