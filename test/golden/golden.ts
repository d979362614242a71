// Golden-file helper of the controller tests (test/unit/controller-*.test.ts). Run with UPDATE_GOLDEN=1 to (re)write the files
// under test/golden/ instead of comparing, then review the diff like code.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const GOLDEN_DIR = fileURLToPath(new URL('./', import.meta.url));
export const UPDATE_GOLDEN = process.env.UPDATE_GOLDEN === '1';

/** Compares `actual` with test/golden/<relative>, or writes it there under UPDATE_GOLDEN=1. */
export function expectGolden(relative: string, actual: string): void {
  const file = GOLDEN_DIR + relative;
  if (UPDATE_GOLDEN) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, actual);
    return;
  }
  if (!existsSync(file)) {
    throw new Error(`no golden file test/golden/${relative}: run with UPDATE_GOLDEN=1 and review it`);
  }
  expect(actual).toBe(readFileSync(file, 'utf8'));
}
