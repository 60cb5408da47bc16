import { main } from '../dispatch.ts';
import { hostLocal } from '../plugins/host-local.ts';

void main(hostLocal);
