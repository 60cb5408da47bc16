// recordedVethMismatch: DEL and GC delete a recorded host veth only when the link of that name is that veth
// (a veth, the recorded MAC, a port of the attachment's bridge or of nothing); otherwise they say why.

import { describe, expect, it } from 'vitest';
import { recordedVethMismatch, type AttachmentRecord } from '../../core/bridge/attachments.ts';
import { HOST, type Link } from '../../core/kernel/model.ts';

const rec = (extra: Partial<AttachmentRecord> = {}): AttachmentRecord => ({
  network: 'n',
  containerId: 'c1',
  ifname: 'eth0',
  netns: '/run/netns/p',
  hostVeth: 'veth0a0b0c0d',
  dataDir: '/var/lib/felt',
  hostVethMac: '0a:00:00:00:00:01',
  ...extra,
});
const link = (extra: Partial<Link> = {}): Link => ({
  ns: HOST,
  name: 'veth0a0b0c0d',
  kind: 'veth',
  mac: '0a:00:00:00:00:01',
  master: 'br0',
  ...extra,
});

describe('recordedVethMismatch', () => {
  it('the recorded veth (on the bridge, or on nothing after a killed ADD) is it; no link of the name is nothing to check', () => {
    expect(recordedVethMismatch(rec(), [link()], 'br0')).toBeUndefined();
    expect(recordedVethMismatch(rec(), [link({ master: null })], 'br0')).toBeUndefined();
    expect(recordedVethMismatch(rec(), [link({ mac: '0A:00:00:00:00:01' })], 'br0')).toBeUndefined();
    expect(recordedVethMismatch(rec(), [], 'br0')).toBeUndefined();
    expect(recordedVethMismatch(rec(), [link({ ns: '/run/netns/other' })], 'br0')).toBeUndefined();
    // ptp: no master.
    expect(recordedVethMismatch(rec(), [link({ master: null })], null)).toBeUndefined();
  });

  it('another kind, another MAC or another master is not it, and the reason names the link', () => {
    expect(recordedVethMismatch(rec(), [link({ kind: 'bridge', master: null })], 'br0')).toMatch(/veth0a0b0c0d is a bridge/);
    expect(recordedVethMismatch(rec(), [link({ mac: '0a:00:00:00:00:02', master: null })], 'br0')).toMatch(
      /MAC 0a:00:00:00:00:02, not 0a:00:00:00:00:01/,
    );
    expect(recordedVethMismatch(rec(), [link({ master: 'br1' })], 'br0')).toMatch(/port of br1/);
    expect(recordedVethMismatch(rec(), [link()], null)).toMatch(/port of br0, not of nothing/);
    // A record without a MAC: only a port of the bridge is taken for it.
    expect(recordedVethMismatch(rec({ hostVethMac: undefined }), [link({ mac: 'aa:bb:cc:dd:ee:ff' })], 'br0')).toBeUndefined();
    expect(recordedVethMismatch(rec({ hostVethMac: undefined }), [link({ master: null })], 'br0')).toMatch(/no MAC to tell/);
  });
});
