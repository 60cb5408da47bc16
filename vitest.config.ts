import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/build.ts'],
    // Kernel tests build namespaces and spawn plugins; they are heavy, so keep parallelism modest.
    poolOptions: { forks: { maxForks: 2 } },
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
