// Bundle every executable: dist/cni/<type> (one per CNI plugin), dist/bin/felt, dist/bin/feltd.
// Each is one minified CommonJS file with a shebang, so a plugin call loads one file and only the code it uses.
// A CNI plugin is two files: dist/cni/<type>, the forwarder (apps/cni/forwarder/forwarder.c, compiled here with
// the system's cc, once per type) that sends the call to feltd, and dist/cni/.felt/<type>, the node bundle it
// executes when no feltd serves CNI (the call then runs in-process, as before the daemon existed).
import { build } from 'esbuild';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { basename, dirname, join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
// NODE_EXTRA_CA_CERTS makes every node start load a certificate bundle (~40 ms); no plugin talks TLS
// except feltd to etcd, which gets its CA from --etcd-cafile. `env -S -u` drops it before node starts.
const banner = '#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node\n';

// A plugin's second line names it as felt's (`// felt-cni <type>`): felt install-cni and in-process
// delegation (apps/cni/dispatch.ts isFeltPlugin) tell felt's executables from foreign ones of the same name by it.
const entries = [];
const cniDir = join(root, 'apps/cni/bin');
for (const f of readdirSync(cniDir).filter((f) => f.endsWith('.ts'))) {
  const type = basename(f, '.ts');
  entries.push({ in: join(cniDir, f), out: join(root, 'dist/cni/.felt', type), cni: true, type, mark: `// felt-cni ${type}` });
}
// feltd is long-lived, and V8 sizes its young generation for throughput: under a steady stream of CNI calls
// each semi-space grows to 16 MB (32 MB resident, ~30 % of feltd's resident set) although what survives a
// scavenge is a few hundred kB. 1 MB semi-spaces keep feltd's resident set ~25 MB smaller for the same work
// (docs/benchmarks.md, bench:cni-rss: measured side by side, including feltd's CPU per call).
const daemonBanner = banner.replace(/node\n$/, 'node --max-semi-space-size=1\n');
for (const [name, src, head] of [
  ['felt', 'apps/felt/main.ts', banner],
  ['feltd', 'apps/feltd/main.ts', daemonBanner],
]) {
  if (existsSync(join(root, src))) entries.push({ in: join(root, src), out: join(root, 'dist/bin', name), banner: head });
}

mkdirSync(join(root, 'dist/cni/.felt'), { recursive: true });
mkdirSync(join(root, 'dist/bin'), { recursive: true });
// The bundles are CommonJS; this keeps node from reading them as ESM under the root "type": "module".
writeFileSync(join(root, 'dist/package.json'), '{ "type": "commonjs" }\n');

// fp-ts's CommonJS build (fp-ts/lib) cannot be tree-shaken: bundle its ES module build instead, so a plugin
// carries the few functions it uses rather than all of fp-ts (-70 KB, ~10 ms of start-up per call).
const fpTsEs6 = {
  name: 'fp-ts-es6',
  setup(b) {
    b.onResolve({ filter: /^fp-ts\/lib\// }, (args) =>
      b.resolve(args.path.replace('fp-ts/lib/', 'fp-ts/es6/'), { kind: args.kind, resolveDir: args.resolveDir }),
    );
  },
};

// apps/version.ts reads package.json at run time; the bundles get the version written in instead.
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const feltVersion = {
  name: 'felt-version',
  setup(b) {
    b.onLoad({ filter: /[\\/]apps[\\/]version\.ts$/ }, () => ({
      contents: `export const VERSION = ${JSON.stringify(version)};\n`,
      loader: 'ts',
    }));
  },
};

// better-sqlite3's JavaScript (a dozen small CommonJS files, ~6 ms of module loading per call) is bundled;
// only its native addon stays in node_modules. Its loader asks `bindings` to search for the addon on every
// start (more files, stats); the bundle requires the addon npm built, by package path, instead. A layout
// without build/Release keeps better-sqlite3 external and its own search.
const addon = 'better-sqlite3/build/Release/better_sqlite3.node';
const bundleSqlite = existsSync(join(root, 'node_modules', addon));
const sqliteAddon = {
  name: 'better-sqlite3-addon',
  setup(b) {
    b.onLoad({ filter: /[\\/]better-sqlite3[\\/]lib[\\/]database\.js$/ }, (args) => {
      const src = readFileSync(args.path, 'utf8');
      const find = "require('bindings')('better_sqlite3.node')";
      if (!src.includes(find)) throw new Error(`${args.path}: no ${find} to replace (better-sqlite3 changed; update scripts/build.mjs)`);
      return { contents: src.replace(find, `require(${JSON.stringify(addon)})`), loader: 'js' };
    });
  },
};

// A CNI plugin starts for every call, and V8 compiling its ~130 KB bundle costs several milliseconds of it.
// So a plugin executable is a small loader holding the bundle as a string and V8's code cache for it, made
// here by a node like the one that runs it (compiled, then run once as `<plugin>` without CNI_COMMAND).
// The loader compiles the bundle with that cache; a node whose V8 rejects it (another version, other flags)
// just compiles, as without a cache. One file per plugin still: `felt install-cni` links files, not dirs.
const WRAP = ['(function (exports, require, module, __filename, __dirname) {', '\n})'];
function withCodeCache(out, bundle, mark) {
  // vm.Script has no module loader: a dynamic import() in the bundle would fail at run time.
  if (/\bimport\(/.test(bundle)) throw new Error(`${out}: the bundle holds a dynamic import(), which the code-cache loader cannot run`);
  const producer = `
const vm = require('vm');
const src = require('fs').readFileSync(0, 'utf8');
const script = new vm.Script(${JSON.stringify(WRAP[0])} + src + ${JSON.stringify(WRAP[1])}, { filename: ${JSON.stringify(out)} });
const m = { exports: {} };
script.runInThisContext()(m.exports, require, m, ${JSON.stringify(out)}, ${JSON.stringify(dirname(out))});
process.on('exit', () => process.stdout.write(script.createCachedData().toString('base64')));
`;
  const env = { ...process.env };
  delete env['CNI_COMMAND'];
  delete env['NODE_OPTIONS'];
  const r = spawnSync(process.execPath, ['-e', producer], { input: bundle, env, maxBuffer: 64 << 20, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${out}: making the code cache failed (exit ${r.status}): ${r.stderr}`);
  const loader =
    // The second line is felt's plugin mark (apps/cni/dispatch.ts isFeltPlugin: delegation runs felt's own
    // plugins in-process, a foreign one of the same name is executed).
    `${banner}${mark}\n'use strict';\n` +
    `const src = ${JSON.stringify(bundle)};\n` +
    `const cachedData = Buffer.from(${JSON.stringify(r.stdout.trim())}, 'base64');\n` +
    `new (require('vm').Script)(${JSON.stringify(WRAP[0])} + src + ${JSON.stringify(WRAP[1])}, { filename: __filename, cachedData })` +
    `.runInThisContext()(exports, require, module, __filename, __dirname);\n`;
  writeFileSync(out, loader);
}

// The forwarders: the project's only C, a few hundred lines holding no logic (every decision is the daemon's or
// the bundle's). `cc` is the system compiler (scripts/setup.sh installs gcc); the type is compiled in.
const forwarder = join(root, 'apps/cni/forwarder/forwarder.c');
const cc = process.env['CC'] || 'cc';
const forwarders = entries
  .filter((e) => e.cni)
  .map((e) =>
    promisify(execFile)(cc, [
      '-O2',
      '-s',
      '-Wall',
      '-Wextra',
      '-Werror',
      `-DFELT_TYPE="${e.type}"`,
      '-o',
      join(root, 'dist/cni', e.type),
      forwarder,
    ]).catch((err) => {
      throw new Error(`compiling the ${e.type} forwarder with ${cc} failed (scripts/setup.sh installs gcc): ${err.stderr || err.message}`);
    }),
  );

await Promise.all([
  ...forwarders,
  ...entries.map((e) =>
    build({
      entryPoints: [e.in],
      outfile: e.out,
      write: false,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      minify: true,
      legalComments: 'none',
      ...(e.cni ? {} : { banner: { js: e.banner.trimEnd() } }),
      // The native addon and the etcd client (grpc) stay in node_modules, loaded only by code paths that use them.
      external: [bundleSqlite ? addon : 'better-sqlite3', 'etcd3', '@grpc/*'],
      logLevel: 'warning',
      plugins: [fpTsEs6, feltVersion, ...(bundleSqlite ? [sqliteAddon] : [])],
    }).then((r) => {
      const text = r.outputFiles[0].text;
      if (e.cni) withCodeCache(e.out, text, e.mark);
      else writeFileSync(e.out, text);
      chmodSync(e.out, 0o755);
    }),
  ),
]);
console.log(
  `built ${entries.length} executables and ${forwarders.length} forwarders: ${entries.map((e) => e.out.slice(root.length)).join(' ')}`,
);
