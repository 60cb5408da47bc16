import { main } from '../dispatch.ts';
import { sbr } from '../plugins/sbr.ts';

void main(sbr);
