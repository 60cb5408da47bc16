// felt status: this node's lease, peers, last reconcile pass, feltd serving CNI (its socket, requests per
// minute), the attachments and per network the allocations and free addresses, from the log and feltd's
// reconcile.json and cni.json (core/audit/status.ts). Reads only; --json for scripts.

import * as E from 'fp-ts/lib/Either.js';
import { recordIpamConf } from '../../../core/audit/attachment.ts';
import { renderStatus, status } from '../../../core/audit/status.ts';
import { flag, str } from '../args.ts';
import { DATA_DIR_OPTION, dataDirOf, JSON_OPTION, openLog, type Subcommand } from '../common.ts';
import { loadViews, readCniRecord, readReconcile, type LogViews } from './audit.ts';

export const statusCommand: Subcommand = {
  name: 'status',
  summary: "this node's lease, peers, last reconcile and free addresses per network",
  options: [
    DATA_DIR_OPTION,
    { name: 'renew-margin', value: 'MINUTES', help: "feltd's --subnet-lease-renew-margin (default: as feltd recorded it, else 60)" },
    JSON_OPTION,
  ],
  run: (p, io) => {
    const marginText = str(p, 'renew-margin');
    const margin = marginText === undefined ? undefined : Number(marginText);
    if (margin !== undefined && !(Number.isFinite(margin) && margin >= 0)) {
      io.err(`felt status: --renew-margin: want a number of minutes >= 0, got ${JSON.stringify(marginText)}\n`);
      return 2;
    }
    const store = openLog('status', p, io);
    if (!store) return 1;
    let views: E.Either<string, LogViews>;
    try {
      views = loadViews(store);
    } finally {
      store.close();
    }
    if (E.isLeft(views)) {
      io.err(`felt status: ${views.left}\n`);
      return 1;
    }
    const v = views.right;
    // A network's ranges are in its bridge records' configs; the latest record is the one to believe.
    const confOf = (network: string) => {
      const recs = v.bridges.find((b) => b.network === network)?.records ?? [];
      for (const r of [...recs].reverse()) {
        const c = recordIpamConf(r);
        if (c) return c;
      }
      return undefined;
    };
    const st = status({
      now: new Date().toISOString(),
      nodes: v.nodes,
      reconcile: readReconcile(dataDirOf(p, io)),
      cni: readCniRecord(dataDirOf(p, io)),
      attachments: v.bridges.map((b) => ({ network: b.network, count: b.records.length })),
      ...(margin !== undefined ? { renewMarginMinutes: margin } : {}),
      ipam: v.ipam.map((i) => {
        const conf = confOf(i.network);
        return { ...i, ...(conf ? { conf } : {}) };
      }),
    });
    io.out(flag(p, 'json') ? JSON.stringify(st, null, 2) + '\n' : renderStatus(st));
    return 0;
  },
};
