// The bridge's attachment records as a Decider: given events, when a command, then events (and the state the
// store would keep).

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import {
  attachmentsProjection,
  decideAttachments,
  outsideValid,
  recordsOf,
  type AttachmentCommand,
  type AttachmentEvent,
  type AttachmentRecord,
} from '../../core/bridge/attachments.ts';
import { fold, stamp } from '../../core/events.ts';

const T = '2024-01-01T00:00:00.000Z';
const rec = (containerId: string, hostVeth: string, ifname = 'eth0'): AttachmentRecord => ({
  network: 'blue',
  containerId,
  ifname,
  netns: `/run/netns/${containerId}`,
  hostVeth,
  dataDir: '/d',
});
const recorded = (r: AttachmentRecord): AttachmentEvent => ({ type: 'AttachmentRecorded', data: r });

const given = (events: readonly AttachmentEvent[]) => fold(attachmentsProjection, stamp('bridge/blue', events, T, 1));
const when = (events: readonly AttachmentEvent[], c: AttachmentCommand) => {
  const out = decideAttachments(c, given(events));
  if (E.isLeft(out)) throw new Error(out.left.msg);
  return out.right;
};

describe('bridge attachment records', () => {
  const a = rec('pod-a', 'veth000000aa');
  const a2 = rec('pod-a', 'veth000000a2');
  const b = rec('pod-b', 'veth000000bb');

  it('records an attachment once; a second ADD of the same container keeps both records', () => {
    expect(when([], { type: 'RecordAttachment', data: a })).toEqual([recorded(a)]);
    expect(when([recorded(a)], { type: 'RecordAttachment', data: a })).toEqual([]);
    expect(recordsOf(given([recorded(a), recorded(a2)]), 'pod-a', 'eth0')).toEqual([a, a2]);
  });

  it('a rollback removes only its own host veth; DEL removes every record of (container, ifname)', () => {
    expect(
      when([recorded(a), recorded(a2)], {
        type: 'RemoveAttachments',
        data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0', hostVeth: a2.hostVeth, reason: 'rollback' },
      }),
    ).toEqual([
      {
        type: 'AttachmentRemoved',
        data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0', hostVeth: a2.hostVeth, reason: 'rollback' },
      },
    ]);
    const del = when([recorded(a), recorded(a2), recorded(b)], {
      type: 'RemoveAttachments',
      data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0', reason: 'del' },
    });
    expect(del.map((e) => e.data.hostVeth)).toEqual([a.hostVeth, a2.hostVeth]);
    expect(Object.values(given([recorded(a), recorded(a2), recorded(b), ...del]).attachments)).toEqual([b]);
    // Nothing recorded: nothing to say.
    expect(when([], { type: 'RemoveAttachments', data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0', reason: 'del' } })).toEqual(
      [],
    );
  });

  it('GC: the records outside the valid set, by (container, ifname); collecting twice emits once', () => {
    const net1 = rec('pod-a', 'veth000000a1', 'net1');
    const state = given([recorded(a), recorded(b), recorded(net1)]);
    expect(outsideValid(state, [{ containerId: 'pod-a', ifname: 'eth0' }])).toEqual([b, net1]);
    expect(outsideValid(state, [])).toEqual([a, b, net1]);
    const events = when([recorded(a), recorded(b)], { type: 'CollectAttachments', data: { records: [b] } });
    expect(events).toEqual([
      { type: 'AttachmentRemoved', data: { network: 'blue', containerId: 'pod-b', ifname: 'eth0', hostVeth: b.hostVeth, reason: 'gc' } },
    ]);
    expect(when([recorded(a), recorded(b), ...events], { type: 'CollectAttachments', data: { records: [b] } })).toEqual([]);
  });
});
