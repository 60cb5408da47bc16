import { main } from '../dispatch.ts';
import { bandwidth } from '../plugins/bandwidth.ts';

void main(bandwidth);
