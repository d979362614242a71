// What the webhook takes from the sidecar component: only sidecar/index.ts, and that module must
// stay light, since the webhook process would otherwise load the proxy engines (and try the
// native addon) just to learn some environment names. Read from the sources, not by importing,
// so a heavy import fails here rather than slowing everything down unnoticed.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const IMPORT = /(?:^|\s)(?:import|export)\s[^'"]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g;

/** The relative imports of `file`, as paths from the repository root (type-only ones included). */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(IMPORT)]
    .map((m) => m[1] ?? m[2]!)
    .filter((spec) => spec.startsWith('.'))
    .map((spec) => relative(ROOT, resolve(ROOT, dirname(file), spec)));
}

function sourcesUnder(folder: string): string[] {
  return readdirSync(join(ROOT, folder), { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts'))
    .map((name) => join(folder, name));
}

test('the webhook imports nothing of the sidecar but sidecar/index.ts', () => {
  const reached = sourcesUnder('webhook').flatMap((file) =>
    importsOf(file)
      .filter((target) => target.startsWith('sidecar/'))
      .map((target) => `${file} -> ${target}`),
  );
  expect(reached.length).toBeGreaterThan(0);
  expect(reached.filter((edge) => !edge.endsWith(' -> sidecar/index.ts'))).toEqual([]);
});

test('sidecar/index.ts reaches no proxy engine, native addon loader or main.ts', () => {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    importsOf(file).forEach(visit);
  };
  visit('sidecar/index.ts');
  const heavy = [...seen].filter((file) =>
    /^sidecar\/(main|proxy|native-proxy|engines|tcp-handles|stats)\.ts$|^sidecar\/(js-engine|native)\//.test(
      file,
    ),
  );
  expect(heavy).toEqual([]);
  expect(seen).toContain('sidecar/process-settings.ts');
});
