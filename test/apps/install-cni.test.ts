// felt install-cni through the built dist/bin/felt into temporary directories: links to felt's plugins and the
// stock flannel conflist; a second run changes nothing; a foreign plugin and a different conflist are left
// and named (exit 3) unless --force; the installed links run as the plugins themselves.

import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FLANNEL_CONFLIST } from '../../apps/felt/commands/install-cni.ts';
import { FELT_CNI, ROOT } from '../support/cni.ts';
import { exec, Sandbox } from '../support/ns.ts';

const FELT = join(ROOT, 'dist', 'bin', 'felt');
const sb = new Sandbox();
afterAll(() => sb.cleanup());

describe('felt install-cni', () => {
  it('links every plugin and writes the flannel conflist; again: nothing to do', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const conf = join(d, 'net.d');
    const r = await exec([FELT, 'install-cni', '--cni-bin-dir', bin, '--cni-conf-dir', conf]);
    expect(r.code, r.stderr).toBe(0);
    for (const type of ['bridge', 'flannel', 'host-local', 'portmap', 'loopback']) {
      expect(lstatSync(join(bin, type)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(bin, type))).toBe(join(realpathSync(FELT_CNI), type));
    }
    expect(JSON.parse(readFileSync(join(conf, '10-flannel.conflist'), 'utf8'))).toEqual(FLANNEL_CONFLIST);
    const again = await exec([FELT, 'install-cni', '--cni-bin-dir', bin, '--cni-conf-dir', conf]);
    expect(again).toMatchObject({ code: 0, stdout: '' });
    // An installed link runs as the plugin (no CNI_COMMAND: its about text and version).
    const about = await exec([join(bin, 'bridge')]);
    expect(about.stderr).toMatch(/^felt bridge: .*\(felt v\d+\.\d+\.\d+\)/);
  });

  it('leaves a foreign plugin and a different conflist alone (exit 3) unless --force', async () => {
    const d = sb.dir();
    const bin = join(d, 'bin');
    const conf = join(d, 'net.d');
    mkdirSync(bin, { recursive: true });
    mkdirSync(conf, { recursive: true });
    writeFileSync(join(bin, 'bridge'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(conf, '10-flannel.conflist'), '{"name":"mine"}\n');
    const r = await exec([FELT, 'install-cni', '--cni-bin-dir', bin, '--cni-conf-dir', conf]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`left ${join(bin, 'bridge')} alone`);
    expect(r.stderr).toContain(`left ${join(conf, '10-flannel.conflist')} alone`);
    expect(lstatSync(join(bin, 'bridge')).isSymbolicLink()).toBe(false);
    expect(existsSync(join(bin, 'portmap'))).toBe(true);
    const forced = await exec([FELT, 'install-cni', '--cni-bin-dir', bin, '--cni-conf-dir', conf, '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(lstatSync(join(bin, 'bridge')).isSymbolicLink()).toBe(true);
    expect(JSON.parse(readFileSync(join(conf, '10-flannel.conflist'), 'utf8'))).toEqual(FLANNEL_CONFLIST);
  });
});
