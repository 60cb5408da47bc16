import { main } from '../dispatch.ts';
import { loopback } from '../plugins/loopback.ts';

void main(loopback);
