// The YAML examples users get in examples/: seatgeek/buildkit-operator's README examples, kept
// exactly as that README writes them, so the tests prove they apply unchanged.
import { readFileSync } from 'node:fs';

const EXAMPLES = new URL('../../examples/', import.meta.url);

/** An example file without its leading comment lines (where the file says where it comes from). */
export function readExample(name: string): string {
  return readFileSync(new URL(name, EXAMPLES), 'utf8').replace(/^(#.*\n)+/, '');
}

/** The seatgeek README's BuildkitTemplate and Buildkit examples. */
export function seatgeekExamples(): { template: string; instance: string } {
  return { template: readExample('buildkittemplate.yaml'), instance: readExample('buildkit.yaml') };
}
