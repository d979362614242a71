// Jest's 5 s default timeout is for pure code. Every integration test (and hook) talks to a real
// API server, and on a loaded machine tests that take 2 s here ran past 5 s. Tests that need
// longer still say so. (`testTimeout` in a project's config is ignored: jest-circus reads only
// the global one, so the integration project sets it here.)
import { jest } from '@jest/globals';

jest.setTimeout(60_000);
