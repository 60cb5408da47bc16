// vitest globalSetup of the daemon project (vitest.config.ts): one `feltd --cni-only` for the whole run, on a
// socket in a temporary directory, which the project's test files' plugins forward to
// (test/support/cni-mode.ts). Its log is printed when the run ends, if it logged any error.

import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { parseCniRecord } from '../../core/audit/cni.ts';
import build from './build.ts';
import { ROOT } from './cni.ts';

const connects = (path: string): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  build();
  const dir = mkdtempSync(join(tmpdir(), 'felt-cni-daemon-'));
  const socket = join(dir, 'cni.sock');
  const logFile = join(dir, 'feltd.log');
  const out = openSync(logFile, 'a');
  const state = join(dir, 'state');
  const feltd = spawn(join(ROOT, 'dist/bin/feltd'), ['--cni-only', `--cni-socket=${socket}`, `--state-dir=${state}`], {
    stdio: ['ignore', out, out],
  });
  const exited = new Promise<number | null>((resolve) => feltd.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 30_000;
  while (!(await connects(socket))) {
    if (feltd.exitCode !== null || Date.now() > deadline) {
      throw new Error(`feltd --cni-only did not serve ${socket}: ${readFileSync(logFile, 'utf8')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  project.provide('feltCniSocket', socket);
  return async () => {
    feltd.kill('SIGTERM');
    await exited;
    const log = readFileSync(logFile, 'utf8');
    if (/"level":"error"/.test(log)) process.stderr.write(`feltd --cni-only logged errors during the run:\n${log}`);
    // The calls did reach feltd (its cni.json, written as it stopped): a harness that forwards nothing fails here.
    const served = parseCniRecord(readFileSync(join(state, 'cni.json'), 'utf8'))?.requestsTotal ?? 0;
    rmSync(dir, { recursive: true, force: true });
    if (served === 0) throw new Error('the daemon project ran, but its feltd --cni-only served no call: the plugins did not forward to it');
    process.stderr.write(`feltd --cni-only served ${served} CNI calls for the daemon project\n`);
  };
}
