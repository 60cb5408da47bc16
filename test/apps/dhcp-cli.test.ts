// `felt dhcp-daemon` arguments, in-process (no daemon is started: every call here is refused before it
// listens), the hidden `dhcp-client`, and the reference's flag spelling.

import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, usage, type IO } from '../../apps/felt/cli.ts';
import { parseDuration } from '../../apps/felt/commands/dhcp-daemon.ts';

const dir = mkdtempSync(join(tmpdir(), 'felt-dhcp-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: IO = { out: (s) => void (out += s), err: (s) => void (err += s), env: {} };
  const code = await cli(argv, io);
  return { code, out, err };
}

describe('felt dhcp-daemon', () => {
  it('is listed; dhcp-client is not', () => {
    expect(usage()).toContain('dhcp-daemon');
    expect(usage()).not.toContain('dhcp-client');
  });

  it.each([
    [['--socket-path', 'rel.sock'], '--socket-path: "rel.sock" is not an absolute path'],
    [['-socketpath', 'rel.sock'], '--socket-path: "rel.sock" is not an absolute path'],
    [['-socketpath'], '-socketpath needs a value'],
    [['-socketpath=rel.sock'], '--socket-path: "rel.sock" is not an absolute path'],
    [['-other', 'x'], 'unexpected argument "-other"'],
    [['--timeout', 'soon'], '--timeout: "soon" is not a duration'],
    [['--retry-min', '-1s'], '--retry-min: "-1s" is not a duration'],
    [['--pidfile', 'x.pid', '--socket-path', '/tmp/x.sock'], '--pidfile: "x.pid" is not an absolute path'],
  ])('%j: exit 2, naming the flag', async (argv, msg) => {
    const r = await run(['dhcp-daemon', ...argv]);
    expect(r.code).toBe(2);
    expect(r.err).toContain(msg);
  });

  it('refuses a socket another daemon listens on', async () => {
    const path = join(dir, 'busy.sock');
    const server = await new Promise<net.Server>((resolve) => {
      const s = net.createServer(() => undefined);
      s.listen(path, () => resolve(s));
    });
    try {
      const r = await run(['dhcp-daemon', '-socketpath', path]);
      expect(r.code).toBe(2);
      expect(r.err).toContain(`another daemon is listening on ${path}`);
    } finally {
      server.close();
    }
  });

  it('durations as the reference flags take them', () => {
    expect([parseDuration('10s'), parseDuration('1m'), parseDuration('250ms'), parseDuration('3'), parseDuration('x')]).toEqual([
      10_000,
      60_000,
      250,
      3000,
      undefined,
    ]);
  });
});
