// vitest globalSetup: build dist/ once before any test file runs, when a source is newer than the oldest
// executable (tests run the built plugins and daemons, as a runtime would). One build for the whole run, so
// parallel test files never race to rewrite the executables.

import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './cni.ts';

const SOURCES = ['core', 'adapters', 'apps', 'scripts/build.mjs', 'package.json', 'package-lock.json'];
// One executable per apps/cni/bin/<type>.ts (as scripts/build.mjs bundles them), plus the two binaries.
const OUTPUTS = [
  ...readdirSync(join(ROOT, 'apps/cni/bin'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => `dist/cni/${f.slice(0, -3)}`),
  'dist/bin/felt',
  'dist/bin/feltd',
];

const newest = (p: string): number => {
  const st = statSync(join(ROOT, p));
  return st.isDirectory() ? readdirSync(join(ROOT, p)).reduce((m, f) => Math.max(m, newest(join(p, f))), 0) : st.mtimeMs;
};

export default function setup(): void {
  const outputs = OUTPUTS.map((p) => join(ROOT, p));
  const oldest = outputs.every(existsSync) ? Math.min(...outputs.map((p) => statSync(p).mtimeMs)) : 0;
  if (oldest < Math.max(...SOURCES.map(newest))) execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
}
