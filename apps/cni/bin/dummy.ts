import { main } from '../dispatch.ts';
import { dummy } from '../plugins/dummy.ts';
import { hostLocal } from '../plugins/host-local.ts';
import { staticIpam } from '../plugins/static.ts';

// The IPAM plugins run in-process when CNI_PATH resolves them to felt's own executables.
void main(dummy, { 'host-local': hostLocal, static: staticIpam });
