import { main } from '../dispatch.ts';
import { hostLocal } from '../plugins/host-local.ts';
import { ipvlan } from '../plugins/ipvlan.ts';
import { staticIpam } from '../plugins/static.ts';

// The IPAM plugins run in-process when CNI_PATH resolves them to felt's own executables.
void main(ipvlan, { 'host-local': hostLocal, static: staticIpam });
