// Every executable in dist/ says which felt it is: felt and feltd with --version, each CNI plugin (run with no
// CNI_COMMAND, as the reference plugins are) with its about text, the felt version and the CNI versions it speaks.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FELT_CNI, ROOT } from '../support/cni.ts';
import { execFile } from '../support/netns.ts';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const env = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

describe('versions', () => {
  it.each(['felt', 'feltd'])('%s --version prints the package version on stdout', async (name) => {
    const r = await execFile([join(ROOT, 'dist', 'bin', name), '--version'], { env });
    expect(r).toEqual({ code: 0, stdout: `${name} v${VERSION}\n`, stderr: '' });
  });

  it('there is a CNI plugin per apps/cni/bin entry', () => {
    expect(
      readdirSync(FELT_CNI)
        .filter((f) => !f.startsWith('.'))
        .sort(),
    ).toEqual(
      readdirSync(join(ROOT, 'apps', 'cni', 'bin'))
        .map((f) => f.replace(/\.ts$/, ''))
        .sort(),
    );
  });

  it.each(readdirSync(join(ROOT, 'apps', 'cni', 'bin')).map((f) => f.replace(/\.ts$/, '')))(
    'CNI plugin %s without CNI_COMMAND prints its about text with the felt version, and exits 0',
    async (type) => {
      const r = await execFile([join(FELT_CNI, type)], { env });
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('');
      const [about, versions, rest] = r.stderr.split('\n');
      expect(about).toMatch(new RegExp(`^felt ${type}: .+ \\(felt v${VERSION.replace(/\./g, '\\.')}\\)$`));
      expect(versions).toMatch(/^CNI protocol versions supported: (\d+\.\d+\.\d+, )*1\.1\.0$/);
      expect(rest).toBe('');
    },
  );
});
