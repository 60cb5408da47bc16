// felt install-cni: put felt's plugins where a runtime looks for them and write the stock flannel conflist, as
// kube-flannel's init containers do (install-cni-plugin copies the flannel binary, install-cni the conflist).
//
// A felt plugin is a small forwarder (dist/cni/<type>, compiled C) that sends the call to feltd's CNI socket
// and, when no feltd serves it, executes the plugin's node bundle (dist/cni/.felt/<type>), an esbuild bundle
// run by node that loads better-sqlite3 (its JavaScript and its native addon) at run time; so a bare copy would
// not run away from the source tree. What is installed:
//
//   <bin>/<type>                        a copy of the forwarder dist/cni/<type>
//   <bin>/.felt/<type>                  a copy of the bundle dist/cni/.felt/<type> whose first line points at what follows:
//                                       #!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS NODE_PATH=<support>/node_modules <node>
//   <bin>/.felt/<hash>/node_modules/    better-sqlite3 (lib/, the addon) and what it requires (bindings, file-uri-to-path)
//   <bin>/.felt/<hash>/node             with --with-node: the node running felt (for hosts without Node.js)
//
// <hash> is the hash of the support files, so an unchanged install writes nothing and an upgrade makes a new
// directory in one rename, points every bundle at it and then puts each forwarder in place (one rename each: a
// runtime never sees a plugin missing or half written) and only then removes the old one. Without --with-node
// the plugins run the node that ran install-cni, by its absolute path (a runtime's PATH may not have it).
// Nothing foreign is overwritten unless --force: a file of a plugin's name that is not a felt plugin (neither
// felt's forwarder of that type nor an older felt bundle), or a different 10-flannel.conflist, is left and
// named, and the exit code is 3. A link planted where felt writes is never followed: files are written under
// a fresh name (O_EXCL) and renamed over the link; a `.felt` or support directory that is a link is refused.
// --conflist FILE installs FILE (as kube-flannel's install-cni copies its ConfigMap's cni-conf.json) after
// checking it parses as a conflist.

import { createHash } from 'node:crypto';
import {
  chmodSync,
  constants as fsConstants,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { parseConfList } from '../../../core/cni/conflist.ts';
import { isFeltPlugin } from '../../cni/dispatch.ts';
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
/** Where the support files live inside the bin dir (a runtime only runs files named by a plugin type). */
export const SUPPORT_DIR = '.felt';
/** Linux reads at most 256 bytes of a `#!` line (BINPRM_BUF_SIZE), the newline included. */
const MAX_SHEBANG = 255;

/**
 * The packages a plugin loads at run time and the files of each it needs (not the sqlite sources, the build
 * tree or install-time tools): better-sqlite3 loads its addon through `bindings`, which uses file-uri-to-path.
 */
const RUNTIME_PACKAGES: readonly { readonly name: string; readonly from?: string; readonly files: readonly string[] }[] = [
  { name: 'better-sqlite3', files: ['package.json', 'LICENSE', 'lib', 'build/Release/better_sqlite3.node'] },
  { name: 'bindings', from: 'better-sqlite3', files: ['package.json', 'LICENSE.md', 'bindings.js'] },
  { name: 'file-uri-to-path', from: 'bindings', files: ['package.json', 'LICENSE', 'index.js'] },
];

interface SupportFile {
  /** Path inside the support directory. */
  readonly rel: string;
  readonly src: string;
  readonly mode: number;
}

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

const walk = (abs: string, rel: string, out: SupportFile[]): void => {
  const st = statSync(abs);
  if (st.isDirectory()) {
    for (const f of readdirSync(abs).sort()) walk(join(abs, f), `${rel}/${f}`, out);
  } else {
    out.push({ rel, src: abs, mode: st.mode & 0o111 ? 0o755 : 0o644 });
  }
};

/** The files the plugins need at run time, resolved as the running felt resolves them. */
function supportFiles(withNode: boolean): SupportFile[] {
  const out: SupportFile[] = [];
  const dirs = new Map<string, string>();
  const base = createRequire(realpathSync(process.argv[1]!));
  for (const pkg of RUNTIME_PACKAGES) {
    const req = pkg.from ? createRequire(join(dirs.get(pkg.from)!, 'package.json')) : base;
    const dir = dirname(req.resolve(`${pkg.name}/package.json`));
    dirs.set(pkg.name, dir);
    for (const f of pkg.files) {
      const abs = join(dir, f);
      if (f.startsWith('LICENSE') && !existsSync(abs)) continue;
      walk(abs, `node_modules/${pkg.name}/${f}`, out);
    }
  }
  if (withNode) out.push({ rel: 'node', src: realpathSync(process.execPath), mode: 0o755 });
  return out;
}

function hashOf(files: readonly SupportFile[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.rel}\0${f.mode}\0`).update(readFileSync(f.src)).update('\0');
  return h.digest('hex').slice(0, 12);
}

/** Write `data` to `path` in one rename: a reader sees the old file or the new one, never a partial one. */
function writeAtomically(path: string, data: string | Buffer, mode: number): void {
  const tmp = join(dirname(path), `.${basename(path)}.felt-${process.pid}`);
  rmSync(tmp, { force: true });
  // O_EXCL: a link planted at the temporary name since the rm is not followed.
  writeFileSync(tmp, data, { mode, flag: 'wx' });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/**
 * A directory felt owns (`<bin>/.felt`, `<bin>/.felt/<hash>`), made when absent. One that is a symbolic link,
 * or not a directory, was not made by felt: writing through it would put files (or the plugins' node_modules)
 * wherever it points, so it is refused, named. Returns whether it was there.
 */
function ownDir(path: string, make: boolean): boolean {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    if (make) mkdirSync(path);
    return false;
  }
  if (st.isSymbolicLink())
    throw new Error(
      `${path} is a symbolic link, not a directory felt made: refusing to write through it (remove it and run install-cni again)`,
    );
  if (!st.isDirectory()) throw new Error(`${path} is not a directory: refusing to use it (remove it and run install-cni again)`);
  return true;
}

/** Make `<bin>/.felt/<hash>` with the support files unless it is there (it is complete: made in one rename). */
function installSupport(root: string, hash: string, files: readonly SupportFile[]): boolean {
  const dir = join(root, hash);
  if (ownDir(dir, false)) return false;
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  for (const f of files) {
    const to = join(tmp, f.rel);
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(f.src, to, fsConstants.COPYFILE_EXCL);
    chmodSync(to, f.mode);
  }
  renameSync(tmp, dir);
  return true;
}

const isLink = (p: string): boolean => {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
};

/** A bin dir or node path `env -S` would split or expand is refused: it cannot stand in the `#!` line. */
const unsafeInShebang = (p: string): boolean => /[\s\\$"'#]/.test(p);

/** What stands at a plugin's path now: nothing, exactly `want`, an older felt plugin of that type, or something else. */
function state(path: string, type: string, want: Buffer): 'absent' | 'same' | 'ours' | 'foreign' {
  try {
    lstatSync(path);
  } catch {
    return 'absent';
  }
  // A dangling link or anything without felt's mark (isFeltPlugin reads through links) is foreign.
  if (!isFeltPlugin(path, type)) return 'foreign';
  return !lstatSync(path).isSymbolicLink() && readFileSync(path).equals(want) ? 'same' : 'ours';
}

export const installCniCommand: Subcommand = {
  name: 'install-cni',
  summary: "install felt's CNI plugins (copies that run without the source tree) and the flannel conflist, as flannel's init containers do",
  options: [
    { name: 'cni-bin-dir', value: 'DIR', help: 'where runtimes find plugins (default /opt/cni/bin)' },
    { name: 'cni-conf-dir', value: 'DIR', help: 'where runtimes find network configs (default /etc/cni/net.d)' },
    { name: 'with-node', help: 'also copy the node running felt into the bin dir, for hosts without Node.js' },
    { name: 'conflist', value: 'FILE', help: "write this conflist (checked) as 10-flannel.conflist instead of flannel's stock one" },
    { name: 'no-conf', help: 'install the plugins only, no conflist' },
    { name: 'force', help: 'replace foreign plugins of the same names and a different 10-flannel.conflist' },
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
    const withNode = flag(p, 'with-node');
    if (unsafeInShebang(bin)) {
      io.err(
        `felt install-cni: --cni-bin-dir: ${JSON.stringify(bin)} has a space, quote, '#', '$' or '\\' (it goes into each plugin's #! line)\n`,
      );
      return 1;
    }
    if (!withNode && unsafeInShebang(process.execPath)) {
      io.err(
        `felt install-cni: the node running felt (${JSON.stringify(process.execPath)}) has a space, quote, '#', '$' or '\\' in its path; use --with-node\n`,
      );
      return 1;
    }
    let conflist = `${JSON.stringify(FLANNEL_CONFLIST, null, 2)}\n`;
    const confFrom = str(p, 'conflist');
    if (confFrom !== undefined) {
      let text: string;
      try {
        text = readFileSync(confFrom, 'utf8');
      } catch (e) {
        io.err(`felt install-cni: --conflist: cannot read ${confFrom}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
        return 1;
      }
      const parsed = parseConfList(text, true);
      if (E.isLeft(parsed)) {
        io.err(`felt install-cni: --conflist: ${confFrom}: ${parsed.left}\n`);
        return 1;
      }
      conflist = text.endsWith('\n') ? text : `${text}\n`;
    }
    let left = 0;
    try {
      // The forwarders, each with its bundle beside it.
      const types = readdirSync(src)
        .filter((t) => isFeltPlugin(join(src, t), t) && isFeltPlugin(join(src, SUPPORT_DIR, t), t))
        .sort();
      if (types.length === 0) {
        io.err(`felt install-cni: no felt plugins in ${src} (run npm run build)\n`);
        return 1;
      }
      const files = supportFiles(withNode);
      const hash = hashOf(files);
      const root = join(bin, SUPPORT_DIR);
      const support = join(root, hash);
      const node = withNode ? join(support, 'node') : process.execPath;
      const shebang = `#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS NODE_PATH=${join(support, 'node_modules')} ${node}`;
      if (Buffer.byteLength(shebang) + 1 > MAX_SHEBANG) {
        io.err(
          `felt install-cni: --cni-bin-dir: ${JSON.stringify(bin)} is too long for a #! line (${Buffer.byteLength(shebang)} bytes, the kernel reads ${MAX_SHEBANG - 1})\n`,
        );
        return 1;
      }
      mkdirSync(bin, { recursive: true });
      ownDir(root, true);
      if (installSupport(root, hash, files)) io.out(`installed ${support}\n`);

      // Every bundle first (felt's own files in felt's directory), then the forwarders that run them.
      for (const type of types) {
        const text = readFileSync(join(src, SUPPORT_DIR, type));
        const nl = text.indexOf(0x0a);
        const want = Buffer.concat([Buffer.from(shebang), text.subarray(nl)]);
        const path = join(root, type);
        if (!isLink(path) && existsSync(path) && readFileSync(path).equals(want)) continue;
        writeAtomically(path, want, 0o755);
      }
      for (const type of types) {
        const want = readFileSync(join(src, type));
        const path = join(bin, type);
        const now = state(path, type, want);
        if (now === 'same') continue;
        if (now === 'foreign' && !force) {
          io.err(`felt install-cni: left ${path} alone (not a felt plugin; --force replaces it)\n`);
          left++;
          continue;
        }
        // A link (an older felt install-cni made them) is replaced by the file, not written through.
        writeAtomically(path, want, 0o755);
        io.out(`installed ${path}\n`);
      }
      // Every felt plugin now points at `support`: older support directories are unused.
      for (const d of readdirSync(root)) {
        if (d !== hash && /^[0-9a-f]{12}(?:\.tmp-\d+)?$/.test(d)) rmSync(join(root, d), { recursive: true, force: true });
      }

      if (!flag(p, 'no-conf')) {
        mkdirSync(confDir, { recursive: true });
        const file = join(confDir, CONF_FILE);
        const text = conflist;
        const have = existsSync(file) ? readFileSync(file, 'utf8') : undefined;
        if (have !== text) {
          if (have !== undefined && !force) {
            io.err(`felt install-cni: left ${file} alone (it differs from flannel's; --force replaces it)\n`);
            left++;
          } else {
            writeAtomically(file, text, 0o644);
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
