import { main } from '../dispatch.ts';
import { bridge } from '../plugins/bridge.ts';
import { flannel } from '../plugins/flannel.ts';
import { hostLocal } from '../plugins/host-local.ts';
import { macvlan } from '../plugins/macvlan.ts';
import { ptp } from '../plugins/ptp.ts';

// The delegates flannel renders (bridge by default, or `delegate.type`) and host-local are bundled: when
// CNI_PATH resolves them to felt's own executables, the whole flannel -> delegate -> host-local chain runs in
// this one process.
void main(flannel, { bridge, ptp, macvlan, 'host-local': hostLocal });
