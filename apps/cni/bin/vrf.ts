import { main } from '../dispatch.ts';
import { vrf } from '../plugins/vrf.ts';

void main(vrf);
