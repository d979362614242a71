// The YAML examples of the documents the project grew from (../shared/seeds). They must apply
// unchanged, so tests read them from there rather than from a copy that could be "fixed".
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const SEEDS_DIR = fileURLToPath(new URL('../../../shared/seeds/', import.meta.url));

export function readSeed(prefix: string): string {
  if (!existsSync(SEEDS_DIR)) {
    throw new Error(`seed documents not found at ${SEEDS_DIR}: check out shared/ beside this repository`);
  }
  const file = readdirSync(SEEDS_DIR).find((f) => f.startsWith(prefix));
  if (!file) throw new Error(`no seed ${prefix}* in ${SEEDS_DIR}`);
  return readFileSync(SEEDS_DIR + file, 'utf8');
}

/** The ```yaml blocks of a markdown document, in order. */
export function yamlBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```yaml\n([\s\S]*?)^```/gm)].map((m) => m[1]!);
}

/** The seatgeek README's BuildkitTemplate and Buildkit examples (seed 002). */
export function seatgeekExamples(): { template: string; instance: string } {
  const blocks = yamlBlocks(readSeed('002_')).filter((b) => b.includes('apiVersion: buildkit.seatgeek.io/'));
  const template = blocks.find((b) => /^kind: BuildkitTemplate$/m.test(b));
  const instance = blocks.find((b) => /^kind: Buildkit$/m.test(b));
  if (!template || !instance)
    throw new Error('seed 002 no longer has a BuildkitTemplate and a Buildkit example');
  return { template, instance };
}
