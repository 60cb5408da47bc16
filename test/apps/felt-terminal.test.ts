// What the felt CLI prints cannot drive the terminal: control characters from its arguments and from the log
// (a plugin's error recorded by `felt cni`, an imported stream's data) come out escaped, in tables, in
// `felt why` and in messages, and a newline inside a value never makes a line (a row) of its own. In-process
// through cli(), and once through dist/bin/felt.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runtimeProjection, runtimeStream } from '../../core/cni/attachments.ts';
import { parseIpamConf } from '../../core/ipam/config.ts';
import { decide, ipamProjection, ipamStream } from '../../core/ipam/decider.ts';
import { openSqliteStore } from '../../adapters/store/sqlite.ts';
import { cli } from '../../apps/felt/cli.ts';
import { ROOT } from '../support/cni.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const ESC = '\x1b';
// ESC sequences (clear screen, set the title), 8-bit CSI, a carriage return, a bidi override.
const HOSTILE = `${ESC}[2J${ESC}]0;owned\x07 \x9b31m\rback\u202eevil\nFAKE LINE`;

/** No byte a terminal acts on but newline; and no line that starts where a value's newline was. */
function expectInert(s: string): void {
  expect(s).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]/);
  expect(s.split('\n').some((l) => l.startsWith('FAKE LINE'))).toBe(false);
}

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'felt-terminal-'));
  const s = openSqliteStore(dir);
  if (E.isLeft(s)) throw new Error(s.left.msg);
  const c = parseIpamConf({ cniVersion: '1.0.0', name: 'blue', type: 'bridge', raw: { ipam: { subnet: '10.51.0.0/24' } } }, {});
  if (E.isLeft(c)) throw new Error(c.left.msg);
  const time = '2024-01-01T00:00:00.000Z';
  s.right.transact(
    ipamStream('blue'),
    ipamProjection,
    (st) => decide({ type: 'AllocateAddresses', data: { conf: c.right, containerId: 'pod-a', ifname: 'eth0' } }, st),
    { time },
  );
  // felt cni records a plugin's error message as the plugin printed it.
  s.right.transact(
    runtimeStream('blue'),
    runtimeProjection,
    () =>
      E.right([
        {
          type: 'AttachmentAddFailed',
          data: {
            network: 'blue',
            containerId: 'pod-b',
            ifname: 'eth0',
            netns: '/run/netns/x',
            plugin: 'bridge',
            error: HOSTILE,
            tornDown: ['bridge'],
          },
        },
      ]),
    { time },
  );
  // A stream felt does not know, imported as it was: its data is printed as JSON (which leaves C1 and bidi raw).
  s.right.append([{ stream: 'other/x', type: 'Whatever', data: { note: HOSTILE }, time }]);
  // A log written before imports were checked (or by hand): a container id holding control characters.
  s.right.transact(
    ipamStream('blue'),
    ipamProjection,
    () =>
      E.right([
        { type: 'AddressAllocated', data: { network: 'blue', containerId: `pod${HOSTILE}`, ifname: 'eth0', rangeSet: 0, ip: '10.51.0.7' } },
      ]),
    { time },
  );
  s.right.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function call(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await cli(argv, {
    out: (s) => void (out += s),
    err: (s) => void (err += s),
    env: {},
    now: () => new Date('2024-01-02T00:00:00.000Z'),
  });
  return { code, out, err };
}

describe('control characters from the log and the arguments come out escaped', () => {
  it('felt events (the table): the plugin error and the foreign data are escaped, one row each', async () => {
    const r = await call(['events', '--data-dir', dir]);
    expect(r.code, r.err).toBe(0);
    expectInert(r.out);
    expect(r.out).toContain('\\u001b[2J');
    expect(r.out).toContain('\\u009b31m');
    expect(r.out.trimEnd().split('\n')).toHaveLength(5);
  });

  it('felt events --json: still one valid JSON object a line, with the same text once parsed', async () => {
    const r = await call(['events', '--data-dir', dir, '--json']);
    expectInert(r.out);
    const lines = r.out
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { data: { error?: string; note?: string } });
    expect(lines.map((l) => l.data.error ?? l.data.note).filter(Boolean)).toEqual([HOSTILE, HOSTILE]);
    expect(lines).toHaveLength(4);
  });

  it('an argument holding a control character (felt why, an unknown command, an option) is refused, shown escaped', async () => {
    for (const argv of [
      ['why', '--data-dir', dir, `10.51.0.9${HOSTILE}`],
      [`x${HOSTILE}`],
      ['events', '--data-dir', dir, `--since=${HOSTILE}`],
    ]) {
      const r = await call(argv);
      expect(r.code).toBe(2);
      expect(r.out).toBe('');
      expect(r.err).toContain('contains control characters; refused');
      expectInert(r.err);
    }
  });

  it('felt why of an address whose log entry holds control characters: each line escaped', async () => {
    const r = await call(['why', '--data-dir', dir, '10.51.0.7']);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('allocated to container pod\\u001b[2J');
    expectInert(r.out + r.err);
  });

  it('felt allocations (a table) with that container id: one row, escaped', async () => {
    const r = await call(['allocations', '--data-dir', dir]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('pod\\u001b[2J');
    expectInert(r.out);
  });

  it('dist/bin/felt events: the same on the real stdout', () => {
    const r = spawnSync(FELT, ['events', '--data-dir', dir], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expectInert(r.stdout);
  });
});
