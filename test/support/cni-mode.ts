// The CNI test mode: `standalone` (felt's forwarders find no daemon and run each call in-process, as without
// feltd) or `daemon` (they send it to a `feltd --cni-only` that vitest's daemon project started for the run,
// test/support/cni-daemon.ts). vitest.config.ts runs every test file in the standalone project and the CNI
// end-to-end, differential, interop, crash and podman files again in the daemon project.
//
// This file is a setupFile of both projects: it sets FELT_CNI_SOCKET in the test process's environment, so
// that every plugin a test runs (runCni, a direct spawn, podman's own exec) inherits the mode; the standalone
// mode sets it empty, so that a feltd serving CNI on this machine is never asked.

import { inject } from 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The socket of the run's `feltd --cni-only` (the daemon project only). */
    feltCniSocket: string;
  }
}

export type CniMode = 'standalone' | 'daemon';
export const CNI_MODE: CniMode = process.env['FELT_TEST_MODE'] === 'daemon' ? 'daemon' : 'standalone';

process.env['FELT_CNI_SOCKET'] = CNI_MODE === 'daemon' ? inject('feltCniSocket') : '';
