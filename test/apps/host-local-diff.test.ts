// Differential test: the same configs and the same sequence of ADD/DEL/CHECK through the reference
// host-local (/usr/lib/cni, v1.1.1) and felt's, each with its own temp dataDir. Same addresses in the same
// order, same gateways, routes and dns; both succeed or both fail.
//
// Deliberate differences (normalized or avoided here):
// - the reference prints `"dns":{}` when there is no dns; felt omits it;
// - the reference rejects cniVersion 1.1.0 (felt accepts it) and answers every error with code 999;
// - after a failed ADD the reference may have moved its round-robin cursor (a requested address that fit
//   no range set); felt's failed ADD changes nothing, so no sequence here fails that way before an ADD.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FELT_CNI, REF_CNI, runCni, type CniOutcome } from '../support/cni.ts';

const root = mkdtempSync(join(tmpdir(), 'felt-diff-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const resolv = join(root, 'resolv.conf');
writeFileSync(resolv, 'nameserver 10.96.0.10\nnameserver fd00::10\nsearch svc.cluster.local cluster.local\noptions ndots:5\n');

interface Op {
  readonly command: 'ADD' | 'DEL' | 'CHECK';
  readonly id: string;
  readonly args?: string;
  /** Top-level keys added to the config for this call (args, runtimeConfig). */
  readonly extra?: Record<string, unknown>;
}

const add = (id: string, more: Partial<Op> = {}): Op => ({ command: 'ADD', id, ...more });
const del = (id: string): Op => ({ command: 'DEL', id });
const check = (id: string): Op => ({ command: 'CHECK', id });

/** ADD three, free the middle one, ADD more (round robin must skip past it), re-ADD it, then clean up. */
const churn = (withCheck: boolean): Op[] => [
  add('c1'),
  add('c2'),
  add('c3'),
  del('c2'),
  add('c4'),
  add('c2'),
  ...(withCheck ? [check('c1'), check('c9')] : []),
  add('c5'),
  add('c6'),
  del('c1'),
  add('c7'),
  ...['c2', 'c3', 'c4', 'c5', 'c6', 'c7'].map(del),
  add('c8'),
];

const cases: [string, string, Record<string, unknown>, Record<string, unknown>, Op[]][] = [
  [
    'IPv4, small range (exhausts), routes',
    '1.0.0',
    { ranges: [[{ subnet: '10.30.0.0/29' }]], routes: [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.30.0.6' }] },
    {},
    churn(true),
  ],
  ['IPv6 only', '0.4.0', { ranges: [[{ subnet: 'fd30::/125' }]] }, {}, churn(true)],
  [
    'dual stack',
    '0.3.1',
    { ranges: [[{ subnet: '10.31.0.0/24' }], [{ subnet: 'fd31::/64' }]], routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }] },
    {},
    churn(false),
  ],
  [
    'multiple range sets, a set of two ranges, gateway inside a range',
    '1.0.0',
    {
      ranges: [
        [{ subnet: '10.32.0.0/30' }, { subnet: '10.32.1.0/29', rangeStart: '10.32.1.2', rangeEnd: '10.32.1.4' }],
        [{ subnet: '10.33.0.0/28', rangeStart: '10.33.0.3', rangeEnd: '10.33.0.7', gateway: '10.33.0.5' }],
      ],
    },
    {},
    churn(true),
  ],
  [
    'legacy subnet with rangeStart/rangeEnd/gateway, 0.2.0',
    '0.2.0',
    {
      subnet: '10.34.0.0/24',
      rangeStart: '10.34.0.100',
      rangeEnd: '10.34.0.104',
      gateway: '10.34.0.254',
      ranges: [[{ subnet: 'fd34::/64' }]],
    },
    {},
    churn(false),
  ],
  ['legacy subnet, 0.1.0 (no cniVersion)', '', { subnet: '10.44.0.0/29' }, {}, churn(false)],
  [
    'requested addresses: CNI_ARGS IP, args.cni.ips, runtimeConfig.ips',
    '1.0.0',
    { ranges: [[{ subnet: '10.35.0.0/24' }], [{ subnet: 'fd35::/64' }]] },
    {},
    [
      add('c1', { args: 'IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.35.0.9' }),
      add('c2'),
      add('c3', { extra: { args: { cni: { ips: ['10.35.0.20', 'fd35::20'] } } } }),
      add('c4', { extra: { runtimeConfig: { ips: ['fd35::7/64'] } } }),
      add('c5'),
      add('c6', { args: 'IP=10.35.0.9' }),
      del('c1'),
      add('c6', { args: 'IP=10.35.0.9' }),
      add('c7'),
    ],
  ],
  [
    'runtimeConfig.ipRanges is prepended',
    '1.0.0',
    { ranges: [[{ subnet: '10.36.0.0/24' }]] },
    { runtimeConfig: { ipRanges: [[{ subnet: '10.37.0.0/29' }]] } },
    churn(true),
  ],
  [
    'resolvConf',
    '0.4.0',
    { ranges: [[{ subnet: '10.38.0.0/24' }]], resolvConf: resolv },
    {},
    [add('c1'), add('c2'), check('c2'), del('c1'), add('c3')],
  ],
  [
    '1.0.0 with IPv6 routes and gateway',
    '1.0.0',
    { ranges: [[{ subnet: 'fd39::/120', gateway: 'fd39::fe' }]], routes: [{ dst: 'fd00::/8', gw: 'fd39::fe' }] },
    {},
    churn(true),
  ],
];

/** What must match: success or failure, and on success the result with the reference's empty dns dropped. */
const normalize = (o: CniOutcome): unknown => {
  if (o.code !== 0) return { failed: true };
  if (!o.json) return { ok: true };
  const r = { ...o.json };
  if (r.dns && Object.keys(r.dns).length === 0) delete r.dns;
  return r;
};

describe('host-local: felt vs the reference plugin', () => {
  it.each(cases)(
    '%s',
    async (name, cniVersion, ipam, extra, ops) => {
      const slug = name.replace(/[^a-z0-9]+/gi, '-').slice(0, 40);
      const run = (dir: string, dataDir: string, op: Op) =>
        runCni({
          dir,
          type: 'host-local',
          command: op.command,
          containerId: op.id,
          netns: '/var/run/netns/felt-diff-none',
          ifname: 'eth0',
          ...(op.args !== undefined ? { args: op.args } : {}),
          config: {
            ...(cniVersion ? { cniVersion } : {}),
            name: `diff-${slug}`,
            type: 'bridge',
            ...extra,
            ...op.extra,
            ipam: { type: 'host-local', dataDir, ...ipam },
          },
        });
      const refDir = join(root, `ref-${slug}`);
      const feltDir = join(root, `felt-${slug}`);
      const transcript: { op: string; ref: unknown; felt: unknown }[] = [];
      for (const op of ops) {
        const [ref, felt] = [await run(REF_CNI, refDir, op), await run(FELT_CNI, feltDir, op)];
        transcript.push({ op: `${op.command} ${op.id}${op.args ? ` ${op.args}` : ''}`, ref: normalize(ref), felt: normalize(felt) });
      }
      // Compare whole transcripts, so a failure shows every step side by side.
      expect(transcript.map((t) => ({ op: t.op, result: t.felt }))).toEqual(transcript.map((t) => ({ op: t.op, result: t.ref })));
      // And the sequences did exercise allocation.
      expect(transcript.filter((t) => t.op.startsWith('ADD') && !(t.ref as { failed?: boolean }).failed).length).toBeGreaterThan(2);
    },
    60_000,
  );

  it('felt accepts 1.1.0 where the reference refuses it', async () => {
    const config = {
      cniVersion: '1.1.0',
      name: 'diff-v11',
      type: 'bridge',
      ipam: { type: 'host-local', dataDir: join(root, 'v11'), subnet: '10.40.0.0/24' },
    };
    const call = (dir: string) =>
      runCni({ dir, type: 'host-local', command: 'ADD', containerId: 'c1', netns: '/x', ifname: 'eth0', config });
    expect((await call(REF_CNI)).json).toMatchObject({ code: 1 });
    expect((await call(FELT_CNI)).json).toEqual({ cniVersion: '1.1.0', ips: [{ address: '10.40.0.2/24', gateway: '10.40.0.1' }] });
  });
});
