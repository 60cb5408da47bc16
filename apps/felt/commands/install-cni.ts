// felt install-cni: put felt's plugins where a runtime looks for them and write the stock flannel conflist, as
// kube-flannel's init containers do (install-cni-plugin, install-cni). The plugins are symbolic links to this
// felt's dist/cni executables (a bundle loads its native modules from next to its real path, so a copy would
// not run); the conflist is written atomically. Nothing foreign is overwritten unless --force: a plugin of
// the same name that is not felt's, or a different 10-flannel.conflist, is left and named.

import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { flag, str } from '../args.ts';
import type { Subcommand } from '../common.ts';

/** The conflist kube-flannel installs (its cni-conf.json), with felt's plugins behind the same types. */
export const FLANNEL_CONFLIST = {
  name: 'cbr0',
  cniVersion: '0.3.1',
  plugins: [
    { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

const CONF_FILE = '10-flannel.conflist';

/** dist/cni next to the running dist/bin/felt. */
function ownCniDir(): string | undefined {
  const self = process.argv[1];
  if (!self) return undefined;
  try {
    const d = join(dirname(realpathSync(self)), '..', 'cni');
    return existsSync(d) ? realpathSync(d) : undefined;
  } catch {
    return undefined;
  }
}

/** What `path` is now: nothing, a link to `target`, or something else. */
function state(path: string, target: string): 'absent' | 'ours' | 'foreign' {
  try {
    const st = lstatSync(path);
    if (!st.isSymbolicLink()) return 'foreign';
    return resolve(dirname(path), readlinkSync(path)) === target ? 'ours' : 'foreign';
  } catch {
    return 'absent';
  }
}

/** Replace `path` by a link to `target` in one rename (a runtime never sees it missing). */
function linkAtomically(path: string, target: string): void {
  const tmp = `${path}.felt-${process.pid}`;
  rmSync(tmp, { force: true });
  symlinkSync(target, tmp);
  renameSync(tmp, path);
}

export const installCniCommand: Subcommand = {
  name: 'install-cni',
  summary: "install felt's CNI plugins (links to dist/cni) and the flannel conflist, as flannel's init containers do",
  options: [
    { name: 'cni-bin-dir', value: 'DIR', help: 'where runtimes find plugins (default /opt/cni/bin)' },
    { name: 'cni-conf-dir', value: 'DIR', help: 'where runtimes find network configs (default /etc/cni/net.d)' },
    { name: 'no-conf', help: 'install the plugins only, no conflist' },
    { name: 'force', help: 'replace plugins of the same name and a different 10-flannel.conflist' },
  ],
  run: (p, io) => {
    const src = ownCniDir();
    if (!src) {
      io.err('felt install-cni: cannot find the dist/cni directory next to this felt executable\n');
      return 1;
    }
    const bin = resolve(str(p, 'cni-bin-dir') ?? '/opt/cni/bin');
    const confDir = resolve(str(p, 'cni-conf-dir') ?? '/etc/cni/net.d');
    const force = flag(p, 'force');
    let left = 0;
    try {
      mkdirSync(bin, { recursive: true });
      for (const type of readdirSync(src).sort()) {
        const target = join(src, type);
        const path = join(bin, type);
        const now = state(path, target);
        if (now === 'ours') continue;
        if (now === 'foreign' && !force) {
          io.err(`felt install-cni: left ${path} alone (not felt's; --force replaces it)\n`);
          left++;
          continue;
        }
        linkAtomically(path, target);
        io.out(`${path} -> ${target}\n`);
      }
      if (!flag(p, 'no-conf')) {
        mkdirSync(confDir, { recursive: true });
        const file = join(confDir, CONF_FILE);
        const text = `${JSON.stringify(FLANNEL_CONFLIST, null, 2)}\n`;
        const have = existsSync(file) ? readFileSync(file, 'utf8') : undefined;
        if (have !== text) {
          if (have !== undefined && !force) {
            io.err(`felt install-cni: left ${file} alone (it differs from flannel's; --force replaces it)\n`);
            left++;
          } else {
            const tmp = `${file}.felt-${process.pid}`;
            writeFileSync(tmp, text, { mode: 0o644 });
            renameSync(tmp, file);
            io.out(`wrote ${file}\n`);
          }
        }
      }
    } catch (e) {
      io.err(`felt install-cni: ${(e as Error).message}\n`);
      return 1;
    }
    return left ? 3 : 0;
  },
};
