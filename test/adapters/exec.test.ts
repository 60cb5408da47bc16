// adapters/kernel/exec.ts run(): a process started from feltd's spawning helpers (spawnFromHelpers) ends as the
// same process started from this thread does: same stdout, stderr and exit code for the same argv and stdin, the
// same answer for a program that is not there, and the same rejection for an argv spawn() refuses. A helper
// killed mid-run fails only what it was running (code 127), is replaced, and turning the helpers off leaves none.
// A process started ahead (startAhead) waits for the next run of its argv, and ends unused when released.

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { aheadStats, run, spawnFromHelpers, startAhead } from '../../adapters/kernel/exec.ts';
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

// run()'s doneWhen: a tool that says it is done before it exits (iptables-restore's sentinel line, whose process
// then waits in the kernel to close its netlink socket) is answered at that line, here and from the helpers.
describe('run() with doneWhen', () => {
  afterEach(async () => {
    await spawnFromHelpers(0);
  });
  // Prints its PID, then the line, then goes on running (until the test kills it).
  const argv = ['sh', '-c', 'echo "pid $$" >&2; echo "all done" >&2; exec sleep 600'];

  it.each([0, 1])('answers at the line with what came before it, the process still running (%i helpers)', async (n) => {
    await spawnFromHelpers(n);
    const r = await run(argv, '', {}, { on: 'stderr', line: /^all done\n/m });
    const pid = Number(/pid (\d+)/.exec(r.stderr)?.[1]);
    try {
      expect(r).toEqual({ code: 0, stdout: '', stderr: `pid ${pid}\n` });
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toMatch(/^(sh|sleep)\0/);
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });

  it.each([0, 1])('on stdout: answers with stdout up to the line (%i helpers)', async (n) => {
    await spawnFromHelpers(n);
    const r = await run(
      ['sh', '-c', 'echo "pid $$"; echo "# Completed"; exec sleep 600'],
      '',
      {},
      { on: 'stdout', line: /^# Completed\n/m },
    );
    const pid = Number(/pid (\d+)/.exec(r.stdout)?.[1]);
    try {
      expect(r.stdout).toBe(`pid ${pid}\n# Completed\n`);
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toMatch(/^(sh|sleep)\0/);
    } finally {
      process.kill(pid, 'SIGKILL');
    }
  });

  it.each([0, 1])('without the line, the exit is the answer (%i helpers)', async (n) => {
    await spawnFromHelpers(n);
    expect(await run(['sh', '-c', 'echo nope >&2; exit 4'], '', {}, { on: 'stderr', line: /^all done$/m })).toEqual({
      code: 4,
      stdout: '',
      stderr: 'nope\n',
    });
    // The line and the exit together: done.
    expect(await run(['sh', '-c', 'echo "all done" >&2; exit 1'], '', {}, { on: 'stderr', line: /^all done$/m })).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
  });
});

describe('startAhead: a process started before its input', () => {
  afterEach(async () => {
    await spawnFromHelpers(0);
  });

  const alive = (pid: number): boolean => {
    try {
      return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
    } catch {
      return false;
    }
  };
  // Writes its pid to `file` as it starts, prints it, then what it reads.
  const echoing = (file: string): string[] => ['sh', '-c', 'echo $$ > "$1"; echo "pid $$"; exec cat', 'ahead', file];
  const pidOf = (out: string): number => Number(/^pid (\d+)\n/.exec(out)?.[1]);

  it.each([0, 1])('the next run of its argv gives it its input; another argv starts its own (%i helpers)', async (n) => {
    await spawnFromHelpers(n);
    const before = { ...aheadStats };
    const dir = mkdtempSync(join(tmpdir(), 'felt-ahead-'));
    try {
      const argv = echoing(join(dir, 'pid'));
      const end = startAhead(argv);
      // It runs before any input is there.
      const pid = await eventually(() => Number(readFileSync(join(dir, 'pid'), 'utf8')) || false, { what: 'it starts' });
      const other = await run(echoing(join(dir, 'other')), 'b\n');
      const r = await run(argv, 'a\n');
      expect(r).toEqual({ code: 0, stdout: `pid ${pid}\na\n`, stderr: '' });
      expect(pidOf(other.stdout)).not.toBe(pid);
      expect(aheadStats.used).toBe(before.used + 1);
      // Taken: ending it does nothing; the next run of its argv starts a process of its own.
      end();
      const again = await run(argv, 'c\n');
      expect(again.stdout).toMatch(/^pid \d+\nc\n$/);
      expect(pidOf(again.stdout)).not.toBe(pid);
      expect(aheadStats.unused).toBe(before.unused);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([0, 1])(
    'unused, it ends when its caller is done; one that ended on its own answers as a new one would (%i helpers)',
    async (n) => {
      await spawnFromHelpers(n);
      const before = { ...aheadStats };
      const dir = mkdtempSync(join(tmpdir(), 'felt-ahead-'));
      try {
        const argv = ['sh', '-c', 'echo $$ > "$1"; exec cat', 'ahead', join(dir, 'pid')];
        const end = startAhead(argv);
        const pid = await eventually(() => Number(readFileSync(join(dir, 'pid'), 'utf8')) || false, { what: 'its pid' });
        expect(alive(pid)).toBe(true);
        end();
        await eventually(() => !alive(pid), { what: 'the unused process ends' });
        expect(aheadStats.unused).toBe(before.unused + 1);
        // A process that ended before its input came.
        const gone = ['sh', '-c', 'echo $$ > "$1"; echo early; exit 3', 'gone', join(dir, 'gone')];
        const end2 = startAhead(gone);
        const gonePid = await eventually(() => Number(readFileSync(join(dir, 'gone'), 'utf8')) || false, { what: 'it starts' });
        await eventually(() => !alive(gonePid), { what: 'it ends on its own' });
        // Whether the run takes it (its end not seen yet) or starts its own, the answer is the same.
        expect(await run(gone, '')).toEqual({ code: 3, stdout: 'early\n', stderr: '' });
        end2();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
