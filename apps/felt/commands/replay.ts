// felt replay [--stream S] [--to POSITION | --at TIME] [--desired]: the state of a stream (or of every
// stream) as it was after a given event or at a given time, folded from the log itself (not the snapshots),
// so any past point can be inspected. --desired prints what that state means for the network: allocations
// (ipam/), leases (node/) and, given the node's underlay, the kernel state feltd wants; attachments (bridge/,
// host-device/, tuning/, cni/).

import * as E from 'fp-ts/lib/Either.js';
import { desiredOverlay, type OverlayNode } from '../../../core/flannel/desired.ts';
import type { NodeState } from '../../../core/flannel/node.ts';
import { parseCIDR, parseIP } from '../../../core/ip/ip.ts';
import { parseMac } from '../../../core/ip/mac.ts';
import { STREAM_KINDS, streamKindOf, streamPrefixes, type StreamKind } from '../../../core/projections.ts';
import { replayStreams, type Folder, type Replayed } from '../../../adapters/store/replay.ts';
import { flag, str, type Parsed } from '../args.ts';
import { DATA_DIR_OPTION, openLog, type Subcommand } from '../common.ts';
import { parseTime } from './events.ts';

/** One Folder per stream kind, made once. */
const FOLDERS = new Map<StreamKind, Folder>(STREAM_KINDS.map((k) => [k, { projection: k.projection, types: new Set(k.types) }]));
const folderOf = (stream: string): Folder | undefined => {
  const k = streamKindOf(stream);
  return k ? FOLDERS.get(k) : undefined;
};

const UNDERLAY_FLAGS = ['underlay-dev', 'underlay-cidr', 'underlay-mtu'] as const;

/**
 * What feltd's overlay needs besides the log: the underlay interface, its address and MTU are found on the
 * machine at start and never recorded; the public IP and VtepMAC are in the node's own lease (flags override).
 */
function overlayNodeOf(p: Parsed, state: NodeState): OverlayNode | { missing: string } | Error {
  const given = UNDERLAY_FLAGS.filter((f) => str(p, f) !== undefined);
  if (given.length === 0) {
    return {
      missing:
        'the kernel state needs the underlay, which the log does not record: pass --underlay-dev, --underlay-cidr and --underlay-mtu (as feltd found them)',
    };
  }
  const absent = UNDERLAY_FLAGS.filter((f) => str(p, f) === undefined);
  if (absent.length) return new Error(`--${absent[0]} is required with ${given.map((f) => `--${f}`).join(', ')}`);
  const dev = str(p, 'underlay-dev')!;
  if (!/^[^\s/]{1,15}$/.test(dev)) return new Error(`--underlay-dev: "${dev}" is not an interface name`);
  const cidr = str(p, 'underlay-cidr')!;
  if (!parseCIDR(cidr) || !cidr.includes('/'))
    return new Error(`--underlay-cidr: "${cidr}" is not an address with its prefix (e.g. 198.51.100.1/24)`);
  const mtuText = str(p, 'underlay-mtu')!;
  const mtu = /^\d+$/.test(mtuText) ? Number(mtuText) : NaN;
  if (!(mtu >= 68 && mtu <= 65535)) return new Error(`--underlay-mtu: "${mtuText}" is not an MTU (68-65535)`);
  const publicIP = str(p, 'public-ip') ?? state.ownLease?.publicIP;
  if (publicIP === undefined) return new Error('--public-ip is required: the log holds no lease of this node at that point');
  if (!parseIP(publicIP)) return new Error(`--public-ip: "${publicIP}" is not an IP address`);
  const vtepMac = str(p, 'vtep-mac') ?? state.ownLease?.vtepMac ?? '';
  if (str(p, 'vtep-mac') !== undefined && !parseMac(vtepMac)) return new Error(`--vtep-mac: "${vtepMac}" is not a MAC address`);
  return { publicIP, underlayDev: dev, underlayCidr: cidr, underlayMtu: mtu, vtepMac, ipMasq: flag(p, 'ip-masq') };
}

/** The --desired view of one replayed stream. */
function desiredOf(p: Parsed, stream: string, r: Replayed<unknown>): Record<string, unknown> | Error {
  const k = streamKindOf(stream)!;
  const view = k.view(r.state);
  if (k.prefix !== 'node/') return view;
  const state = r.state as NodeState;
  const node = overlayNodeOf(p, state);
  if (node instanceof Error) return node;
  if ('missing' in node) return { ...view, kernel: null, missing: node.missing };
  const d = desiredOverlay(state, node);
  if (E.isLeft(d)) return { ...view, kernel: null, missing: d.left };
  return {
    ...view,
    kernel: d.right.kernel,
    scope: d.right.scope,
    subnetEnv: d.right.subnetEnv,
    mtu: d.right.mtu,
    ignored: d.right.ignored,
  };
}

export const replayCommand: Subcommand = {
  name: 'replay',
  summary: 'fold a stream (or every stream) from the log up to an event or a time and print the state as JSON',
  options: [
    { name: 'stream', value: 'STREAM', help: `the stream to replay (${streamPrefixes()}; default: every stream)` },
    { name: 'to', value: 'POSITION', help: 'stop after this event position (default: the end)' },
    { name: 'at', value: 'TIME', help: 'the state as of TIME: the events recorded at or before it (ISO 8601, or 10m, 2h ago)' },
    { name: 'desired', help: 'print what the state means: allocations, leases and kernel state, attachments' },
    { name: 'underlay-dev', value: 'NAME', help: 'with --desired, node/ streams: the underlay interface feltd used' },
    { name: 'underlay-cidr', value: 'CIDR', help: 'with --desired: its address and prefix (e.g. 198.51.100.1/24)' },
    { name: 'underlay-mtu', value: 'N', help: 'with --desired: its MTU' },
    { name: 'public-ip', value: 'IP', help: "with --desired: the public IP (default: the one in the node's lease)" },
    { name: 'vtep-mac', value: 'MAC', help: "with --desired: the VtepMAC (default: the one in the node's lease)" },
    { name: 'ip-masq', help: 'with --desired: feltd ran with --ip-masq' },
    DATA_DIR_OPTION,
  ],
  run: (p, io) => {
    const fail = (msg: string): number => {
      io.err(`felt replay: ${msg}\n`);
      return 2;
    };
    const stream = str(p, 'stream');
    const to = str(p, 'to');
    const atText = str(p, 'at');
    if (stream !== undefined && !streamKindOf(stream)) return fail(`--stream: no projection for stream "${stream}" (${streamPrefixes()})`);
    if (to !== undefined && !/^\d+$/.test(to)) return fail(`--to: "${to}" is not an event position`);
    const at = atText === undefined ? undefined : parseTime(atText, io.now ? io.now() : new Date(), 'at');
    if (at instanceof Error) return fail(at.message);
    const desired = flag(p, 'desired');
    const store = openLog('replay', p, io);
    if (!store) return 1;
    try {
      const r = replayStreams(store, stream !== undefined ? { stream } : {}, folderOf, {
        ...(to !== undefined ? { toPosition: Number(to) } : {}),
        ...(at !== undefined ? { at } : {}),
      });
      if (E.isLeft(r)) {
        io.err(`felt replay: ${r.left.msg}\n`);
        return 1;
      }
      const show = (name: string, x: Replayed<unknown>): Record<string, unknown> | Error => {
        if (!desired) return { position: x.position, events: x.events, state: x.state };
        const d = desiredOf(p, name, x);
        return d instanceof Error ? d : { position: x.position, events: x.events, ...d };
      };
      if (stream !== undefined) {
        const x = r.right.streams.get(stream) ?? { state: streamKindOf(stream)!.projection.initialState(), position: 0, events: 0 };
        const shown = show(stream, x);
        if (shown instanceof Error) return fail(shown.message);
        io.out(JSON.stringify({ stream, ...(at !== undefined ? { at } : {}), ...shown }, null, 2) + '\n');
        return 0;
      }
      const streams: Record<string, unknown> = {};
      let position = 0;
      let events = 0;
      for (const [name, x] of r.right.streams) {
        const shown = show(name, x);
        if (shown instanceof Error) return fail(`${name}: ${shown.message}`);
        streams[name] = shown;
        position = Math.max(position, x.position);
        events += x.events;
      }
      const unknown = Object.fromEntries(r.right.unknown);
      io.out(
        JSON.stringify(
          { ...(at !== undefined ? { at } : {}), position, events, streams, ...(r.right.unknown.size ? { unknownStreams: unknown } : {}) },
          null,
          2,
        ) + '\n',
      );
      return 0;
    } finally {
      store.close();
    }
  },
};
