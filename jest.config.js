// Jest runs in ESM mode (client-node 2.x is ESM-only): `node --experimental-vm-modules`.
// Three projects: `unit` needs nothing, `integration` shares one real local control plane
// that its globalSetup starts and its globalTeardown stops, and `node` (the real-node tier)
// starts its own cluster with the machine's one real node (root on Debian; elsewhere its tests
// are reported as not run).
const tsJest = {
  '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }],
};
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  transform: tsJest,
  testEnvironment: 'node',
  // tsc rewrites our `.ts` import specifiers to `.js` on emit; map them back for jest's resolver.
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
};

export default {
  reporters: ['default', '<rootDir>/test/jest/summary-reporter.js'],
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      setupFilesAfterEnv: ['<rootDir>/test/jest/integration-timeout.ts'],
      globalSetup: '<rootDir>/test/jest/global-setup.ts',
      globalTeardown: '<rootDir>/test/jest/global-teardown.ts',
    },
    {
      ...common,
      displayName: 'node',
      testMatch: ['<rootDir>/test/node/**/*.test.ts'],
      setupFilesAfterEnv: ['<rootDir>/test/jest/integration-timeout.ts'],
    },
  ],
};
