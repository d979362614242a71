// Golden files live beside the test that owns them, in its `golden/` folder. Run with
// UPDATE_GOLDEN=1 to (re)write them instead of comparing, then review the diff like code.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, relative as relativePath } from 'node:path';
import { fileURLToPath } from 'node:url';

export const UPDATE_GOLDEN = process.env.UPDATE_GOLDEN === '1';

export interface GoldenDir {
  /** absolute path of the folder, with a trailing slash */
  dir: string;
  /** Compares `actual` with <dir>/<relative>, or writes it there under UPDATE_GOLDEN=1. */
  expectGolden(relative: string, actual: string): void;
}

/** The golden folder beside a test: `goldenDir(new URL('./golden/', import.meta.url))`. */
export function goldenDir(url: URL): GoldenDir {
  const dir = fileURLToPath(url);
  const shown = relativePath(process.cwd(), dir);
  return {
    dir,
    expectGolden(relative: string, actual: string): void {
      const file = dir + relative;
      if (UPDATE_GOLDEN) {
        mkdirSync(dirname(file), { recursive: true });
        writeFileSync(file, actual);
        return;
      }
      if (!existsSync(file)) {
        throw new Error(`no golden file ${shown}/${relative}: run with UPDATE_GOLDEN=1 and review it`);
      }
      expect(actual).toBe(readFileSync(file, 'utf8'));
    },
  };
}
