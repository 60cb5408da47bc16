import { defineConfig } from 'vitest/config';

// The CNI end-to-end, differential, interop, crash and podman tests run twice: standalone (the forwarders
// run each call in-process) and with a `feltd --cni-only` serving the calls (test/support/cni-mode.ts).
// `npx vitest run --project standalone` (or `--project daemon`) runs one mode.
const BOTH_MODES = [
  'test/apps/bridge.test.ts',
  'test/apps/diff-*.test.ts',
  'test/apps/host-local-diff.test.ts',
  'test/apps/chains.test.ts',
  'test/apps/crash.test.ts',
  'test/apps/podman.test.ts',
  'test/apps/tap.test.ts',
  'test/apps/nft-*.test.ts',
];

export default defineConfig({
  test: {
    globalSetup: ['test/support/build.ts'],
    // Kernel tests build namespaces and spawn plugins; they are heavy, so keep parallelism modest.
    poolOptions: { forks: { maxForks: 2 } },
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: 'standalone', include: ['test/**/*.test.ts'], setupFiles: ['test/support/cni-mode.ts'] } },
      {
        extends: true,
        test: {
          name: 'daemon',
          include: BOTH_MODES,
          env: { FELT_TEST_MODE: 'daemon' },
          globalSetup: ['test/support/cni-daemon.ts'],
          setupFiles: ['test/support/cni-mode.ts'],
        },
      },
    ],
  },
});
