// Run a CNI plugin executable the way a runtime does: inside a "host" network namespace made by the test,
// with CNI_NETNS pointing at a pod namespace, the config on stdin, and the result or error JSON on stdout.

import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FELT_CNI = join(ROOT, 'dist', 'cni');
export const REF_CNI = '/usr/lib/cni';

export interface CniCall {
  /** Directory holding the plugins (CNI_PATH); the plugin run is `<dir>/<type>`. */
  readonly dir: string;
  readonly type: string;
  readonly command: 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION';
  /** Name of the namespace the plugin runs in (the pod's "host"); undefined runs it where the test runs. */
  readonly hostNs?: string;
  readonly containerId?: string;
  readonly netns?: string;
  readonly ifname?: string;
  readonly args?: string;
  readonly config: unknown;
  readonly env?: Readonly<Record<string, string>>;
}

export interface CniOutcome {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout parsed as JSON, when it is. */
  readonly json: any;
  readonly ms: number;
}

export function runCni(c: CniCall): Promise<CniOutcome> {
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: c.command,
    CNI_PATH: c.dir,
    // The mode's socket (test/support/cni-mode.ts): empty standalone, the run's feltd in the daemon project.
    FELT_CNI_SOCKET: process.env['FELT_CNI_SOCKET'] ?? '',
    ...(c.containerId !== undefined ? { CNI_CONTAINERID: c.containerId } : {}),
    ...(c.netns !== undefined ? { CNI_NETNS: c.netns } : {}),
    ...(c.ifname !== undefined ? { CNI_IFNAME: c.ifname } : {}),
    ...(c.args !== undefined ? { CNI_ARGS: c.args } : {}),
    ...(c.env ?? {}),
  };
  const exe = join(c.dir, c.type);
  const argv = c.hostNs ? ['ip', 'netns', 'exec', c.hostNs, exe] : [exe];
  const stdin = typeof c.config === 'string' ? c.config : JSON.stringify(c.config);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString();
      let json: unknown;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ code: code ?? -1, stdout, stderr: Buffer.concat(err).toString(), json, ms: performance.now() - t0 });
    });
    child.stdin.on('error', () => undefined); // a plugin that exits without reading stdin is an answer too
    child.stdin.end(stdin);
  });
}
