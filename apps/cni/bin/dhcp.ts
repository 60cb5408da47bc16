import { main } from '../dispatch.ts';
import { dhcpIpam } from '../plugins/dhcp.ts';

void main(dhcpIpam);
