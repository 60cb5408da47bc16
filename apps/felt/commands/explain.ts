// felt explain <ip|prefix|mac>: why a kernel object exists, from the event log (allocations and leases).

import * as E from 'fp-ts/lib/Either.js';
import { explain, type Views } from '../../../core/explain.ts';
import { ipamProjection } from '../../../core/ipam/decider.ts';
import { nodeProjection } from '../../../core/flannel/node.ts';
import { DATA_DIR_OPTION, openLog, type Subcommand } from '../common.ts';

export const explainCommand: Subcommand = {
  name: 'explain',
  summary: 'say why an address, route, neighbour or fdb entry exists (e.g. felt explain 10.244.2.0/24)',
  options: [DATA_DIR_OPTION],
  positional: 'OBJECT',
  run: (p, io) => {
    const object = p.positionals[0];
    if (!object) {
      io.err('felt explain: name an IP address, a prefix or a MAC address\n');
      return 2;
    }
    const store = openLog('explain', p, io);
    if (!store) return 1;
    try {
      const streams = store.streams();
      const history = store.read();
      if (E.isLeft(streams) || E.isLeft(history)) {
        io.err(`felt explain: ${E.isLeft(streams) ? streams.left.msg : E.isLeft(history) ? history.left.msg : ''}\n`);
        return 1;
      }
      const views: { ipam: Views['ipam'][number][]; nodes: Views['nodes'][number][] } = { ipam: [], nodes: [] };
      for (const s of streams.right) {
        if (s.startsWith('ipam/')) {
          const l = store.load(s, ipamProjection);
          if (E.isRight(l)) views.ipam.push({ network: s.slice('ipam/'.length), state: l.right.state });
        } else if (s.startsWith('node/')) {
          const l = store.load(s, nodeProjection);
          if (E.isRight(l)) views.nodes.push({ stream: s, state: l.right.state });
        }
      }
      io.out(explain(object, views, history.right).join('\n') + '\n');
      return 0;
    } finally {
      store.close();
    }
  },
};
