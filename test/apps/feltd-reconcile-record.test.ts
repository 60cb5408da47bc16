// feltd's reconcile.json writer: one record per pass with running totals, written through the daemon's atomic
// write; a failing write is logged once per run of failures and never throws.

import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseReconcile } from '../../core/audit/reconcile.ts';
import { reconcileRecorder } from '../../apps/feltd/reconcile-record.ts';

const dir = mkdtempSync(join(tmpdir(), 'felt-reconcile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const node = {
  publicIP: '198.51.100.11',
  underlayDev: 'eth0',
  underlayCidr: '198.51.100.0/24',
  underlayMtu: 1500,
  vtepMac: '02:00:00:00:00:01',
  ipMasq: true,
};
const atomic = (path: string, text: string): void => {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
};

describe('reconcileRecorder', () => {
  it('writes the last pass with running totals, the node parameters, the margin and the namespace', () => {
    const errors: string[] = [];
    const pass = reconcileRecorder(dir, node, 45, atomic, { info: () => {}, debug: () => {}, error: (m) => errors.push(m) });
    pass('full', 12.34, 4, 4);
    pass('delta', 1, 2, 0);
    const rec = parseReconcile(readFileSync(join(dir, 'reconcile.json'), 'utf8'))!;
    expect(rec).toMatchObject({ kind: 'delta', ops: 2, driftRepaired: 0, passes: 2, totalDriftRepaired: 4, renewMarginMinutes: 45, node });
    expect(rec.hostNs).toMatch(/^net:\[\d+\]$/);
    expect(Date.parse(rec.time)).toBeGreaterThan(0);
    expect(errors).toEqual([]);
  });
  it('a failing write is logged once until one succeeds again', () => {
    const errors: string[] = [];
    let fail = true;
    const write = (p: string, t: string): void => {
      if (fail) throw new Error('read-only file system');
      atomic(p, t);
    };
    const pass = reconcileRecorder(join(dir, 'b'), node, 60, write, { info: () => {}, debug: () => {}, error: (m) => errors.push(m) });
    pass('full', 1, 0, 0);
    pass('full', 1, 0, 0);
    expect(errors).toEqual(['cannot write reconcile.json']);
    fail = false;
    pass('full', 1, 1, 0);
    fail = true;
    pass('full', 1, 0, 0);
    expect(errors).toHaveLength(2);
  });
});
