import { main } from '../dispatch.ts';
import { bridge } from '../plugins/bridge.ts';
import { flannel } from '../plugins/flannel.ts';
import { hostLocal } from '../plugins/host-local.ts';

// bridge and host-local are bundled: when CNI_PATH resolves them to felt's own executables, the whole
// flannel -> bridge -> host-local chain runs in this one process.
void main(flannel, { bridge, 'host-local': hostLocal });
