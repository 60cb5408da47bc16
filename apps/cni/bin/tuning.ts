import { main } from '../dispatch.ts';
import { tuning } from '../plugins/tuning.ts';

void main(tuning);
