import { main } from '../dispatch.ts';
import { bridge } from '../plugins/bridge.ts';
import { hostLocal } from '../plugins/host-local.ts';
import { staticIpam } from '../plugins/static.ts';

// host-local and static are bundled so that, when CNI_PATH resolves them to felt's own executables, IPAM runs
// in-process.
void main(bridge, { 'host-local': hostLocal, static: staticIpam });
