// felt replay --stream S [--to POSITION]: the state of a stream as it was after a given event, folded from the
// log itself (not the snapshot), so any past point can be inspected.

import * as E from 'fp-ts/lib/Either.js';
import { fold, type Projection } from '../../../core/events.ts';
import { ipamProjection } from '../../../core/ipam/decider.ts';
import { nodeProjection } from '../../../core/flannel/node.ts';
import { str } from '../args.ts';
import { DATA_DIR_OPTION, openLog, type Subcommand } from '../common.ts';

const projectionFor = (stream: string): Projection<unknown, never> | undefined =>
  (stream.startsWith('ipam/') ? ipamProjection : stream.startsWith('node/') ? nodeProjection : undefined) as Projection<unknown, never> | undefined;

export const replayCommand: Subcommand = {
  name: 'replay',
  summary: 'fold a stream (ipam/<network>, node/<ip>) up to an event and print the state as JSON',
  options: [
    { name: 'stream', value: 'STREAM', help: 'the stream to replay (see felt events)' },
    { name: 'to', value: 'POSITION', help: 'stop after this event position (default: the end)' },
    DATA_DIR_OPTION,
  ],
  run: (p, io) => {
    const stream = str(p, 'stream');
    const to = str(p, 'to');
    if (!stream) {
      io.err('felt replay: --stream is required (e.g. ipam/mynet or node/198.51.100.11)\n');
      return 2;
    }
    if (to !== undefined && !/^\d+$/.test(to)) {
      io.err(`felt replay: --to: "${to}" is not an event position\n`);
      return 2;
    }
    const projection = projectionFor(stream);
    if (!projection) {
      io.err(`felt replay: no projection for stream "${stream}" (ipam/... or node/...)\n`);
      return 2;
    }
    const store = openLog('replay', p, io);
    if (!store) return 1;
    try {
      const events = store.read({ stream });
      if (E.isLeft(events)) {
        io.err(`felt replay: ${events.left.msg}\n`);
        return 1;
      }
      const upTo = events.right.filter((e) => to === undefined || e.position <= Number(to));
      const state = fold(projection, upTo as never[]);
      io.out(JSON.stringify({ stream, position: upTo.at(-1)?.position ?? 0, events: upTo.length, state }, null, 2) + '\n');
      return 0;
    } finally {
      store.close();
    }
  },
};
