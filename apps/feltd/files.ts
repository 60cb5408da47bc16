// Files feltd writes and reads itself: atomic writes (tmp file + rename, so no reader sees half a file), the
// VtepMAC kept across restarts, and reads that may find nothing.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { macFromBytes } from '../../core/ip/mac.ts';

export function writeAtomic(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** The VtepMAC (of flannel.<VNI>, or of flannel-v6.<VNI>) survives restarts so that remote nodes' fdb entries stay right. */
export function stableVtepMac(stateDir: string, vni: number, family: 4 | 6 = 4): string {
  const path = join(stateDir, family === 4 ? `vtep-mac.${vni}` : `vtep-mac-v6.${vni}`);
  if (existsSync(path)) {
    const mac = readFileSync(path, 'utf8').trim();
    if (mac) return mac;
  }
  const mac = macFromBytes(randomBytes(6));
  writeAtomic(path, mac + '\n');
  return mac;
}

export function readFileSafe(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
