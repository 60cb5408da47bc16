// AttachmentReady: the end of a successful bridge ADD and how long it took (feltd's
// felt_cni_add_duration_seconds). It is recorded only for an attachment still recorded and changes no state.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { attachmentsProjection, decideAttachments, type AttachmentEvent, type AttachmentRecord } from '../../core/bridge/attachments.ts';
import { fold, stamp } from '../../core/events.ts';

const T = '2024-01-01T00:00:00.000Z';
const a: AttachmentRecord = {
  network: 'blue',
  containerId: 'pod-a',
  ifname: 'eth0',
  netns: '/run/netns/a',
  hostVeth: 'veth000000aa',
  dataDir: '/d',
};
const given = (events: readonly AttachmentEvent[]) => fold(attachmentsProjection, stamp('bridge/blue', events, T, 1));
const ready = (durationMs: number, over: Partial<AttachmentRecord> = {}) =>
  ({
    type: 'RecordAttachmentReady',
    data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0', hostVeth: 'veth000000aa', durationMs, ...over },
  }) as const;

describe('AttachmentReady', () => {
  it('is recorded for a recorded attachment, with its duration, and changes no state', () => {
    const st = given([{ type: 'AttachmentRecorded', data: a }]);
    const out = decideAttachments(ready(42.5), st);
    expect(out).toEqual(E.right([{ type: 'AttachmentReady', data: { ...ready(42.5).data } }]));
    const after = fold(attachmentsProjection, stamp('bridge/blue', E.isRight(out) ? out.right : [], T, 2), st);
    expect(after).toEqual(st);
  });

  it('is not recorded for an attachment a DEL already removed, nor for another container', () => {
    const removed: AttachmentEvent = {
      type: 'AttachmentRemoved',
      data: { network: 'blue', containerId: 'pod-a', ifname: 'eth0', hostVeth: 'veth000000aa', reason: 'del' },
    };
    expect(decideAttachments(ready(1), given([{ type: 'AttachmentRecorded', data: a }, removed]))).toEqual(E.right([]));
    expect(decideAttachments(ready(1, { containerId: 'pod-b' }), given([{ type: 'AttachmentRecorded', data: a }]))).toEqual(E.right([]));
  });

  it('refuses a duration that is not a number >= 0, naming the field', () => {
    for (const d of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      const out = decideAttachments(ready(d), given([{ type: 'AttachmentRecorded', data: a }]));
      expect(E.isLeft(out) && out.left.msg).toMatch(/durationMs/);
    }
  });
});
