// felt why <address|prefix|mac|chain|rule|container>: the chain of events that put the object into the
// desired state (allocations, attachments, leases; core/explain.ts), and whether the kernel has it now (the
// namespace it lives in is read; when it cannot be, the answer says so). `felt explain` is the same command.

import { existsSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import { union } from '../../../core/audit/attachment.ts';
import { explain, matchObjects, presence, type Source, type Views } from '../../../core/explain.ts';
import { HOST, type KernelState } from '../../../core/kernel/model.ts';
import { emptyScope } from '../../../core/kernel/scope.ts';
import { str, type Parsed } from '../args.ts';
import { DATA_DIR_OPTION, dataDirOf, openLog, type IO, type Subcommand } from '../common.ts';
import type { StoredEvent } from '../../../core/events.ts';
import { attachmentCases, loadViews, type LogViews, locate, observe, overlayOf, readHistory, readReconcile } from './audit.ts';
import { NETNS_OPTION } from './plan.ts';
import { cell } from '../terminal.ts';

const namespacesOf = (k: KernelState): string[] => [
  ...new Set([...k.links, ...k.addresses, ...k.routes, ...k.neighbours, ...k.fdb, ...k.chains, ...k.rules].map((o) => o.ns)),
];

/** The kernel's side of the answer: each desired object the argument names, there now or not. */
async function kernelLines(
  object: string,
  views: Views,
  sources: readonly (Source & { host: { hostNetns: string | undefined } | { why: string } })[],
): Promise<string[]> {
  const out: string[] = [];
  for (const m of matchObjects(object, views, sources)) {
    const host = sources.find((s) => s.id === m.id)!.host;
    if ('why' in host) {
      out.push(`${m.id}: cannot tell whether the kernel has it: ${host.why}`);
      continue;
    }
    const gone = namespacesOf(m.state).filter((ns) => ns !== HOST && !existsSync(ns));
    if (gone.length) {
      out.push(`${m.id}: the namespace ${gone.join(', ')} is gone, so the kernel does not have what felt put there`);
      continue;
    }
    const seen = await observe(host.hostNetns, {
      namespaces: namespacesOf(m.state),
      desired: m.state,
      scope: emptyScope(),
      fdb: m.state.fdb.length > 0,
    });
    if (!seen.ok) {
      out.push(`${m.id}: cannot read the kernel to tell whether it has it now: ${seen.why}`);
      continue;
    }
    out.push(...presence(m.state, seen.state).map((l) => `${m.id}: ${l}${host.hostNetns ? ` [host side: ${host.hostNetns}]` : ''}`));
  }
  return out;
}

export const whyRun =
  (name: string) =>
  async (p: Parsed, io: IO): Promise<number> => {
    const object = p.positionals[0];
    if (!object) {
      io.err(`felt ${name}: name an IP address, a prefix, a MAC address, an iptables chain or rule, or a container id\n`);
      return 2;
    }
    const netns = str(p, 'netns');
    if (netns !== undefined && !existsSync(netns)) {
      io.err(`felt ${name}: --netns: no network namespace at ${netns}\n`);
      return 2;
    }
    const store = openLog(name, p, io);
    if (!store) return 1;
    let loaded: { v: LogViews; history: readonly StoredEvent[] };
    try {
      const v = loadViews(store);
      const h = readHistory(store);
      if (E.isLeft(v) || E.isLeft(h)) {
        io.err(`felt ${name}: ${E.isLeft(v) ? v.left : E.isLeft(h) ? h.left : ''}\n`);
        return 1;
      }
      loaded = { v: v.right, history: h.right };
    } finally {
      store.close();
    }
    const { v, history } = loaded;
    const dataDir = dataDirOf(p, io);
    const rec = readReconcile(dataDir);
    const cases = attachmentCases(v, netns);
    const overlays = v.nodes.flatMap((n) => {
      const c = overlayOf(n, rec, dataDir);
      return E.isRight(c) ? [{ stream: n.stream, desired: c.right.desired }] : [];
    });
    const views: Views = {
      ipam: v.ipam,
      nodes: v.nodes,
      attachments: cases.map((c) => ({
        network: c.network,
        record: c.record,
        ...(E.isRight(c.desired) ? { desired: c.desired.right } : {}),
      })),
      overlays,
    };
    const overlayHost = locate(typeof rec === 'object' ? rec.hostNs : undefined, netns, 'feltd runs');
    const sources = [
      ...overlays.map((o) => ({ id: `overlay ${o.stream.slice('node/'.length)}`, state: o.desired, host: overlayHost })),
      ...cases.flatMap((c) =>
        E.isRight(c.desired)
          ? [
              {
                id: `attachment ${c.network} ${c.record.containerId}/${c.record.ifname}`,
                state: union([c.desired.right.own, c.desired.right.shared]),
                host: c.host,
              },
            ]
          : [],
      ),
    ];
    const lines = explain(object, views, history);
    const kernel = await kernelLines(object, views, sources);
    const at = lines.indexOf('history:');
    const body = at < 0 ? lines : lines.slice(0, at);
    const tail = at < 0 ? [] : lines.slice(at);
    // One line per entry: a newline inside one (from the argument or the log) is escaped, not a line of its own.
    io.out(
      [...body, ...(kernel.length ? ['in the kernel now:', ...kernel.map((l) => `  ${l}`)] : []), ...tail].map(cell).join('\n') + '\n',
    );
    return 0;
  };

export const whyCommand: Subcommand = {
  name: 'why',
  summary: 'why an address, route, MAC, iptables rule or attachment exists, and whether the kernel has it now',
  options: [DATA_DIR_OPTION, NETNS_OPTION],
  positional: 'OBJECT',
  run: whyRun('why'),
};
