// felt allocations: who holds which address, from the IPAM snapshots (not a scan of the log).

import * as E from 'fp-ts/lib/Either.js';
import { ipamProjection, ipamStream, type Allocation } from '../../../core/ipam/decider.ts';
import { cmpIP, parseIP } from '../../../core/ip/ip.ts';
import { flag, str } from '../args.ts';
import { DATA_DIR_OPTION, JSON_OPTION, NETWORK_OPTION, openLog, type Subcommand } from '../common.ts';
import { table } from '../table.ts';

type Row = Allocation & { readonly network: string };

const byAddress = (a: Row, b: Row): number => {
  if (a.network !== b.network) return a.network < b.network ? -1 : 1;
  const x = parseIP(a.ip);
  const y = parseIP(b.ip);
  return x && y ? cmpIP(x, y) : a.ip.localeCompare(b.ip);
};

export const allocationsCommand: Subcommand = {
  name: 'allocations',
  summary: 'show who holds which address (network, ip, container, ifname, since)',
  options: [NETWORK_OPTION, DATA_DIR_OPTION, JSON_OPTION],
  run: (p, io) => {
    const store = openLog('allocations', p, io);
    if (!store) return 1;
    try {
      const network = str(p, 'network');
      const streams = network !== undefined ? E.right([ipamStream(network)]) : store.streams('ipam/');
      if (E.isLeft(streams)) {
        io.err(`felt allocations: ${streams.left.msg}\n`);
        return 1;
      }
      const rows: Row[] = [];
      for (const stream of streams.right) {
        const loaded = store.load(stream, ipamProjection);
        if (E.isLeft(loaded)) {
          io.err(`felt allocations: ${loaded.left.msg}\n`);
          return 1;
        }
        const net = stream.slice('ipam/'.length);
        for (const a of Object.values(loaded.right.state.allocations)) rows.push({ network: net, ...a });
      }
      rows.sort(byAddress);
      if (flag(p, 'json')) {
        io.out(
          JSON.stringify(
            rows.map((r) => ({
              network: r.network,
              ip: r.ip,
              containerId: r.containerId,
              ifname: r.ifname,
              rangeSet: r.rangeSet,
              since: r.since,
              position: r.position,
            })),
            null,
            2,
          ) + '\n',
        );
      } else {
        io.out(
          table(
            ['NETWORK', 'IP', 'CONTAINER', 'IFNAME', 'SINCE'],
            rows.map((r) => [r.network, r.ip, r.containerId, r.ifname, r.since]),
          ),
        );
      }
      return 0;
    } finally {
      store.close();
    }
  },
};
