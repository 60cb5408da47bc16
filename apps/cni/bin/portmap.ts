import { main } from '../dispatch.ts';
import { portmap } from '../plugins/portmap.ts';

void main(portmap);
