// adapters/kernel/exec.ts run(): a process started from feltd's spawning helpers (spawnFromHelpers) ends as the
// same process started from this thread does: same stdout, stderr and exit code for the same argv and stdin, the
// same answer for a program that is not there, and the same rejection for an argv spawn() refuses. A helper
// killed mid-run fails only what it was running (code 127), is replaced, and turning the helpers off leaves none.

import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { run, spawnFromHelpers } from '../../adapters/kernel/exec.ts';
import { eventually } from '../support/eventually.ts';

/** This process's live child processes. */
const children = (): number[] =>
  readdirSync(`/proc/${process.pid}/task`).flatMap((t) =>
    readFileSync(`/proc/${process.pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number),
  );
const helpers = (): number[] => children().filter((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('feltd-spawn'));

const cases: { what: string; argv: string[]; input: string }[] = [
  { what: 'stdin to stdout', argv: ['cat'], input: 'line one\nline two\n' },
  { what: 'a big stdin', argv: ['wc', '-c'], input: 'x'.repeat(1 << 20) },
  { what: 'stderr and an exit code', argv: ['sh', '-c', 'echo out; echo err >&2; exit 3'], input: '' },
  { what: 'killed by a signal', argv: ['sh', '-c', 'kill -9 $$'], input: '' },
  { what: 'no such program', argv: ['/nonexistent/felt-no-such-tool', '-x'], input: 'ignored' },
  { what: 'stdin closed early', argv: ['true'], input: 'y'.repeat(1 << 20) },
  { what: 'the environment, working directory and credentials', argv: ['sh', '-c', 'env | sort; pwd; id'], input: '' },
  { what: 'a big stdout with quotes and newlines', argv: ['sh', '-c', 'for i in $(seq 3000); do echo "{\\"n\\": $i}"; done'], input: '' },
];

describe('run() from spawning helpers', () => {
  afterEach(async () => {
    await spawnFromHelpers(0);
  });

  it('gives what spawning here gives', async () => {
    const here = await Promise.all(cases.map((c) => run(c.argv, c.input)));
    await spawnFromHelpers(2);
    const helped = await Promise.all(cases.map((c) => run(c.argv, c.input)));
    expect(helped).toEqual(here);
    expect(here[0]).toEqual({ code: 0, stdout: 'line one\nline two\n', stderr: '' });
    expect(here[2]).toEqual({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(here[4]!.code).toBe(127);
  });

  it('rejects what spawn() refuses, as spawning here does', async () => {
    const bad = ['echo', 'a\0b'];
    const here = await run(bad, '').then(
      () => undefined,
      (e: Error) => e.message,
    );
    await spawnFromHelpers(1);
    const helped = await run(bad, '').then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(here).toMatch(/null bytes/);
    expect(helped).toBe(here);
  });

  it('runs many at once through the helpers, each getting its own output', async () => {
    await spawnFromHelpers(2);
    const outs = await Promise.all(Array.from({ length: 60 }, (_, i) => run(['sh', '-c', `cat; echo ${i} >&2`], `in ${i}\n`)));
    outs.forEach((r, i) => expect(r).toEqual({ code: 0, stdout: `in ${i}\n`, stderr: `${i}\n` }));
    expect(helpers()).toHaveLength(2);
  });

  it('fails only what a killed helper was running, and replaces it', async () => {
    await spawnFromHelpers(1);
    await run(['true'], '');
    const [helper] = helpers();
    expect(helper).toBeDefined();
    const running = run(['sleep', '30'], '');
    // the helper has started sleep (its child) before it is killed
    await eventually(() => readFileSync(`/proc/${helper}/task/${helper}/children`, 'utf8').trim() !== '', {
      what: 'the helper runs sleep',
    });
    const sleeper = Number(readFileSync(`/proc/${helper}/task/${helper}/children`, 'utf8').trim());
    process.kill(helper!, 'SIGKILL');
    const r = await running;
    process.kill(sleeper, 'SIGKILL');
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/spawning helper .* died/);
    expect(await run(['echo', 'after'], '')).toEqual({ code: 0, stdout: 'after\n', stderr: '' });
    expect(helpers()).toHaveLength(1);
    expect(helpers()[0]).not.toBe(helper);
  });

  it('leaves no helper once turned off', async () => {
    await spawnFromHelpers(2);
    const pending = run(['sh', '-c', 'read x; echo $x'], 'late\n');
    await spawnFromHelpers(0);
    expect(await pending).toEqual({ code: 0, stdout: 'late\n', stderr: '' });
    await eventually(() => helpers().length === 0, { what: 'the helpers exit' });
    expect(await run(['echo', 'here'], '')).toEqual({ code: 0, stdout: 'here\n', stderr: '' });
  });
});
