import { main } from '../dispatch.ts';
import { staticIpam } from '../plugins/static.ts';

void main(staticIpam);
