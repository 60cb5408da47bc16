import { main } from '../dispatch.ts';
import { firewall } from '../plugins/firewall.ts';

void main(firewall);
