import { defineConfig } from 'vitest/config'

// Integration tests share one Redis (each file uses its own random namespace) and
// spawn child processes; two cores do not like more than two files at once.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    // Vitest allows a stray `.only` unless CI is set, and .ci/run does not set it:
    // a committed `it.only` would run a subset and pass.
    allowOnly: false,
  },
})
