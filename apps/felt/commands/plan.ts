// felt plan [--node | --network N]: a dry run. The desired kernel state, computed from the log alone (feltd's
// overlay from the node stream; every recorded bridge attachment from its record and host-local's
// allocations), against the kernel now; what differs, grouped by object, in words. Exit 0 in sync, 2 on
// drift; --json for scripts. Nothing is changed.

import * as E from 'fp-ts/lib/Either.js';
import { findings } from '../../../core/audit/diff.ts';
import { group, planExit, renderPlan, report, uncheckedOf, type Group, type Unchecked } from '../../../core/audit/report.ts';
import { union } from '../../../core/audit/attachment.ts';
import { HOST, type KernelState } from '../../../core/kernel/model.ts';
import { routesOfAnyTable } from '../../../core/kernel/keys.ts';
import { existsSync } from 'node:fs';
import { flag, str } from '../args.ts';
import { DATA_DIR_OPTION, dataDirOf, JSON_OPTION, openLog, type IO, type Subcommand } from '../common.ts';
import {
  attachmentCases,
  attachmentWanted,
  loadViews,
  locate,
  observe,
  overlayOf,
  readReconcile,
  type AttachmentCase,
  type LogViews,
  type Observed,
} from './audit.ts';

export const NETNS_OPTION = {
  name: 'netns',
  value: 'PATH',
  help: "the node's (host) network namespace, e.g. /run/netns/node1 (default: where each attachment was made, else this one)",
};

const fail = (io: IO, msg: string): number => (io.err(`felt plan: ${msg}\n`), 1);

export const planCommand: Subcommand = {
  name: 'plan',
  summary: 'dry run: what differs between the kernel and the log (exit 0 in sync, 2 on drift)',
  options: [
    DATA_DIR_OPTION,
    { name: 'node', help: "only feltd's overlay (routes, neighbours, fdb entries, vxlan device, flannel chains)" },
    { name: 'network', value: 'NAME', help: 'only the CNI attachments of this network' },
    NETNS_OPTION,
    JSON_OPTION,
  ],
  run: async (p, io) => {
    const onlyNode = flag(p, 'node');
    const network = str(p, 'network');
    if (onlyNode && network !== undefined) {
      io.err('felt plan: --node and --network: choose one (or neither, for everything)\n');
      return 2;
    }
    const netns = str(p, 'netns');
    if (netns !== undefined && !existsSync(netns)) {
      io.err(`felt plan: --netns: no network namespace at ${netns}\n`);
      return 2;
    }
    const store = openLog('plan', p, io);
    if (!store) return 1;
    let views: E.Either<string, LogViews>;
    try {
      views = loadViews(store);
    } finally {
      store.close();
    }
    if (E.isLeft(views)) return fail(io, views.left);
    const v = views.right;
    if (onlyNode && v.nodes.length === 0)
      return fail(io, `--node: no feltd node in the log at ${dataDirOf(p, io)} (feltd's --state-dir is its data dir)`);
    if (
      network !== undefined &&
      !v.bridges.some((b) => b.network === network) &&
      !v.ipam.some((i) => i.network === network) &&
      !v.runtimes.some((r) => r.network === network)
    ) {
      return fail(io, `--network: nothing recorded for network "${network}" in ${dataDirOf(p, io)}`);
    }

    const groups: Group[] = [];
    const unchecked: Unchecked[] = [];
    if (network === undefined) await checkOverlays(v, readReconcile(dataDirOf(p, io)), dataDirOf(p, io), netns, groups, unchecked);
    if (!onlyNode) {
      await checkAttachments(attachmentCases(v, netns, network), groups, unchecked, chainedAfter(v));
      const only = <T extends { network: string }>(xs: readonly T[]): T[] =>
        xs.filter((x) => network === undefined || x.network === network);
      unchecked.push(...uncheckedOf(only(v.ipam), only(v.bridges), only(v.runtimes)));
    }
    const r = report(groups, unchecked);
    io.out(flag(p, 'json') ? JSON.stringify(r, null, 2) + '\n' : renderPlan(r));
    return planExit(r);
  },
};

async function checkOverlays(
  v: LogViews,
  rec: ReturnType<typeof readReconcile>,
  dataDir: string,
  netns: string | undefined,
  groups: Group[],
  unchecked: Unchecked[],
): Promise<void> {
  for (const node of v.nodes) {
    const id = `overlay ${node.stream.slice('node/'.length)}`;
    const c = overlayOf(node, rec, dataDir);
    if (E.isLeft(c)) {
      unchecked.push({ what: id, why: c.left });
      continue;
    }
    const own = node.state.ownLease!;
    const title = `${node.state.config?.backend.type ?? '?'} overlay${netnsNote(rec, netns)} for ${[own.subnet, own.ipv6Subnet].filter(Boolean).join(' + ')}, ${Object.keys(node.state.remotes).length} remote lease(s)`;
    const host = locate(typeof rec === 'object' ? rec.hostNs : undefined, netns, 'feltd runs');
    if ('why' in host) {
      unchecked.push({ what: id, why: host.why });
      continue;
    }
    const seen = await observe(host.hostNetns, {
      namespaces: [HOST],
      desired: c.right.desired,
      scope: c.right.scope,
      iptables: c.right.iptables,
      fdb: c.right.fdb,
    });
    const notes = c.right.ignored.map((i) => `ignored as feltd does: ${i}`);
    groups.push(
      seen.ok
        ? group({ kind: 'overlay', id, title }, findings(c.right.desired, seen.state, c.right.scope), notes)
        : group({ kind: 'overlay', id, title }, [], notes, `cannot read the kernel: ${seen.why}`),
    );
  }
}

const netnsNote = (rec: ReturnType<typeof readReconcile>, netns: string | undefined): string => {
  const h = locate(typeof rec === 'object' ? rec.hostNs : undefined, netns, '');
  return 'hostNetns' in h && h.hostNetns ? ` (in ${h.hostNetns})` : '';
};

const attachmentId = (c: AttachmentCase): string => `attachment ${c.network} ${c.record.containerId}/${c.record.ifname}`;

/** Plugins that `felt cni` ran after bridge (or flannel) for an attachment, and that change what bridge made. */
const MODIFIERS: ReadonlySet<string> = new Set(['tuning', 'sbr', 'bandwidth', 'vrf']);
const chainedAfter =
  (v: LogViews) =>
  (network: string, containerId: string, ifname: string): string[] => {
    const a = v.runtimes.find((r) => r.network === network)?.state.attachments[`${containerId}/${ifname}`];
    return a ? a.plugins.filter((x) => MODIFIERS.has(x)) : [];
  };

async function checkAttachments(
  cases: readonly AttachmentCase[],
  groups: Group[],
  unchecked: Unchecked[],
  chained: (network: string, containerId: string, ifname: string) => string[],
): Promise<void> {
  // By host side: one read of the host and of every pod namespace there.
  const byHost = new Map<string, AttachmentCase[]>();
  for (const c of cases) {
    if (E.isLeft(c.desired)) {
      unchecked.push({ what: attachmentId(c), why: c.desired.left });
      continue;
    }
    if ('why' in c.host) {
      unchecked.push({ what: attachmentId(c), why: c.host.why });
      continue;
    }
    const k = c.host.hostNetns ?? '';
    byHost.set(k, [...(byHost.get(k) ?? []), c]);
  }
  for (const [host, list] of byHost) {
    const hostNetns = host === '' ? undefined : host;
    const all = await observe(hostNetns, attachmentWanted(list));
    // One namespace that cannot be read must not hide the others: read each attachment on its own then.
    const seenFor = async (c: AttachmentCase): Promise<Observed> => (all.ok ? all : observe(hostNetns, attachmentWanted([c])));
    const where = hostNetns ? ` (host side in ${hostNetns})` : '';

    const networks = [...new Set(list.map((c) => c.network))];
    for (const net of networks) {
      const mine = list.filter((c) => c.network === net);
      const desired = mine.flatMap((c) => (E.isRight(c.desired) ? [c.desired.right] : []));
      const shared: KernelState = union(desired.map((d) => d.shared));
      const scope = { links: shared.links.map((l) => ({ ns: l.ns, name: l.name })), devices: [], chains: [], ruleMarkers: [] };
      const bridge = desired[0]?.bridge ?? '?';
      const base = {
        kind: 'network' as const,
        id: `network ${net}`,
        title: `bridge ${bridge}${where}, shared by ${mine.length} attachment(s)`,
        network: net,
      };
      const seen = all.ok ? all : await observe(hostNetns, { namespaces: [HOST], desired: shared, scope });
      groups.push(
        seen.ok ? group(base, findings(shared, seen.state, scope)) : group(base, [], [], `cannot read the host namespace: ${seen.why}`),
      );

      for (const c of mine) {
        const d = E.isRight(c.desired) ? c.desired.right : undefined;
        if (!d) continue;
        const r = c.record;
        const after = chained(c.network, r.containerId, r.ifname);
        const notes = after.length
          ? [
              ...d.notes,
              `felt cni ran ${after.join(', ')} after bridge here: a difference in MTU, MAC, sysctls, routes or qdiscs may be ${after.length === 1 ? 'its' : 'their'} doing, not drift`,
            ]
          : d.notes;
        const a = {
          kind: 'attachment' as const,
          id: attachmentId(c),
          title: `veth ${r.hostVeth} on ${d.bridge}${where} to ${r.ifname} in ${r.netns}`,
          network: c.network,
          containerId: r.containerId,
          ifname: r.ifname,
          netns: r.netns,
          hostVeth: r.hostVeth,
        };
        if (!existsSync(r.netns)) {
          groups.push(
            group(a, [], notes, `the pod's network namespace ${r.netns} is gone, and its veth pair with it (the runtime never ran DEL?)`),
          );
          continue;
        }
        const s = await seenFor(c);
        if (!s.ok) {
          groups.push(group(a, [], notes, `cannot read its namespaces: ${s.why}`));
          continue;
        }
        // A plugin chained after bridge (sbr) may have moved the pod's routes into a table of its own.
        groups.push(group(a, findings(d.own, routesOfAnyTable(s.state, d.own, r.netns), d.scope), notes));
      }
    }
  }
}
