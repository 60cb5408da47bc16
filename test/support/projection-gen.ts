// Generated command sequences for the table projections (host-local's allocations, feltd's node stream,
// bridge's attachment records), run through the real deciders over a store's view: shared by the property
// that a table always equals the fold of its log (test/core/projection-table.test.ts on the memory twin,
// test/adapters/store-tables.test.ts on SQLite).

import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { cniError, ErrCode, type CniError } from '../../core/cni/errors.ts';
import type { Event, Stored, TableProjection } from '../../core/events.ts';
import { parseIpamConf } from '../../core/ipam/config.ts';
import { decideIpam, ipamProjection, type IpamCommand } from '../../core/ipam/decider.ts';
import { parseNetConfig } from '../../core/flannel/netconf.ts';
import { decideNodeIn, nodeProjection, type NodeCommand } from '../../core/flannel/node.ts';
import type { Lease } from '../../core/flannel/types.ts';
import {
  attachmentsProjection,
  decideAttachmentsIn,
  type AttachmentCommand,
  type AttachmentRecord,
} from '../../core/bridge/attachments.ts';
import type { EventStore } from '../../adapters/store/types.ts';

export const T0 = '2030-01-01T00:00:00.000Z';

/** One step: which stream, and a transaction over the store (the real decider over the table's view). */
export interface Step {
  readonly stream: string;
  readonly projection: TableProjection<unknown, unknown, unknown, Event>;
  readonly run: (store: EventStore) => E.Either<CniError, unknown>;
  readonly label: string;
}

const tx =
  <S, H, R, Ev extends Event, C>(
    stream: string,
    p: TableProjection<S, H, R, Ev>,
    decide: (c: C, v: never) => E.Either<CniError, Ev[]>,
    cmd: C,
    time: string,
  ) =>
  (store: EventStore) =>
    store.transactRows(stream, p, (v) => decide(cmd, v as never), { time });

// ---- host-local

const ipamConf = (() => {
  const c = parseIpamConf(
    {
      cniVersion: '1.1.0',
      name: 'net',
      type: 'bridge',
      raw: { ipam: { ranges: [[{ subnet: '10.0.0.0/28' }], [{ subnet: 'fd00::/124' }]] } },
    },
    {},
  );
  if (E.isLeft(c)) throw new Error(c.left.msg);
  return c.right;
})();

const ipamStep = (cmd: IpamCommand, time: string): Step => ({
  stream: 'ipam/net',
  projection: ipamProjection as unknown as Step['projection'],
  run: tx('ipam/net', ipamProjection, decideIpam as never, cmd, time),
  label: cmd.type,
});

const ipamArb: fc.Arbitrary<(time: string) => Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ c: fc.nat(9), i: fc.nat(1) }).map(
      ({ c, i }) =>
        (time: string) =>
          ipamStep({ type: 'AllocateAddresses', data: { conf: ipamConf, containerId: `c${c}`, ifname: `eth${i}` } }, time),
    ),
  },
  {
    weight: 3,
    arbitrary: fc.record({ c: fc.nat(9), i: fc.nat(1) }).map(
      ({ c, i }) =>
        (time: string) =>
          ipamStep({ type: 'ReleaseAddresses', data: { network: 'net', containerId: `c${c}`, ifname: `eth${i}` } }, time),
    ),
  },
  {
    weight: 1,
    arbitrary: fc.array(fc.nat(19), { maxLength: 10 }).map(
      (keep) => (time: string) =>
        ipamStep(
          {
            type: 'CollectGarbage',
            data: { network: 'net', validAttachments: keep.map((n) => ({ containerId: `c${n % 10}`, ifname: `eth${n >> 4}` })) },
          },
          time,
        ),
    ),
  },
);

// ---- feltd node

const netConfigs = [
  '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}',
  '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}',
].map((t) => {
  const c = parseNetConfig(t);
  if (E.isLeft(c)) throw new Error(c.left);
  return c.right.config;
});

const lease = (n: number, flip: number, expired: boolean): Lease => ({
  subnet: `10.244.${n}.0/24`,
  attrs: {
    PublicIP: `198.51.100.${10 + n}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: `3e:00:00:00:0${flip}:0${n}` },
  },
  expiration: expired ? '2029-01-01T00:00:00.000Z' : '2031-01-01T00:00:00.000Z',
});
const leaseArb = fc
  .record({ n: fc.nat(7), flip: fc.nat(2), expired: fc.nat(4).map((x) => x === 0) })
  .map(({ n, flip, expired }) => lease(n, flip, expired));

const nodeStep = (cmd: NodeCommand): Step => ({
  stream: 'node/198.51.100.1',
  projection: nodeProjection as unknown as Step['projection'],
  run: tx(
    'node/198.51.100.1',
    nodeProjection,
    ((c: NodeCommand, v: never) => E.mapLeft((m: string) => cniError(ErrCode.Internal, m))(decideNodeIn(c, v))) as never,
    cmd,
    cmd.metadata!.time,
  ),
  label: cmd.type,
});

const nodeArb: fc.Arbitrary<(time: string) => Step> = fc.oneof(
  {
    weight: 1,
    arbitrary: fc
      .nat(1)
      .map((i) => (time: string) => nodeStep({ type: 'LoadConfig', data: { config: netConfigs[i]! }, metadata: { time } })),
  },
  {
    weight: 3,
    arbitrary: fc
      .array(leaseArb, { maxLength: 8 })
      .map(
        (leases) => (time: string) =>
          nodeStep({ type: 'ObserveLeases', data: { snapshot: { leases, revision: 1 }, own: '198.51.100.1' }, metadata: { time } }),
      ),
  },
  {
    weight: 4,
    arbitrary: fc.array(fc.record({ removed: fc.boolean(), lease: leaseArb }), { minLength: 1, maxLength: 4 }).map(
      (evs) => (time: string) =>
        nodeStep({
          type: 'ApplyLeaseEvents',
          data: {
            events: evs.map((e) => ({ type: e.removed ? ('removed' as const) : ('added' as const), lease: e.lease })),
            own: '198.51.100.1',
          },
          metadata: { time },
        }),
    ),
  },
  {
    weight: 1,
    arbitrary: leaseArb.map((l) => (time: string) => nodeStep({ type: 'RecordOwnLease', data: { lease: l }, metadata: { time } })),
  },
  { weight: 1, arbitrary: fc.constant((time: string) => nodeStep({ type: 'LoseOwnLease', data: { reason: 'test' }, metadata: { time } })) },
);

// ---- bridge attachments

const record = (c: number, i: number, v: number): AttachmentRecord => ({
  network: 'net',
  containerId: `c${c}`,
  ifname: `eth${i}`,
  netns: `/var/run/netns/p${c}`,
  hostVeth: `veth${v}`,
  dataDir: '/var/lib/felt',
});

const bridgeStep = (cmd: AttachmentCommand, time: string): Step => ({
  stream: 'bridge/net',
  projection: attachmentsProjection as unknown as Step['projection'],
  run: tx('bridge/net', attachmentsProjection, decideAttachmentsIn as never, cmd, time),
  label: cmd.type,
});

const bridgeArb: fc.Arbitrary<(time: string) => Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ c: fc.nat(5), i: fc.nat(1), v: fc.nat(11) }).map(
      ({ c, i, v }) =>
        (time: string) =>
          bridgeStep({ type: 'RecordAttachment', data: record(c, i, v) }, time),
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record({ c: fc.nat(5), i: fc.nat(1), v: fc.option(fc.nat(11), { nil: undefined }) }).map(
      ({ c, i, v }) =>
        (time: string) =>
          bridgeStep(
            {
              type: 'RemoveAttachments',
              data: {
                network: 'net',
                containerId: `c${c}`,
                ifname: `eth${i}`,
                ...(v !== undefined ? { hostVeth: `veth${v}` } : {}),
                reason: 'del',
              },
            },
            time,
          ),
    ),
  },
  {
    weight: 1,
    arbitrary: fc
      .array(fc.record({ c: fc.nat(5), i: fc.nat(1), v: fc.nat(11) }), { maxLength: 4 })
      .map(
        (rs) => (time: string) => bridgeStep({ type: 'CollectAttachments', data: { records: rs.map((r) => record(r.c, r.i, r.v)) } }, time),
      ),
  },
);

/** A sequence of steps over the three streams, interleaved, each with its own time. */
export const stepsArb = (maxLength: number): fc.Arbitrary<Step[]> =>
  fc
    .array(fc.oneof(ipamArb, nodeArb, bridgeArb), { maxLength })
    .map((fs) => fs.map((f, i) => f(new Date(Date.parse(T0) + i * 1000).toISOString())));

/** The reference: the stream's log folded one event at a time with the projection's `evolve`, as JSON. */
export const referenceFold = (p: Step['projection'], log: readonly Stored<Event>[]): unknown =>
  JSON.parse(JSON.stringify(log.reduce((s, e) => p.evolve(s, e), p.initialState())));
