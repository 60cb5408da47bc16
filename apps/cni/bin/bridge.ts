import { main } from '../dispatch.ts';
import { bridge } from '../plugins/bridge.ts';
import { hostLocal } from '../plugins/host-local.ts';

// host-local is bundled so that, when CNI_PATH resolves it to felt's own executable, IPAM runs in-process.
void main(bridge, { 'host-local': hostLocal });
