// Copies the files modules read at run time next to themselves (<folder>/assets/*, e.g. the preStop
// drain script) into dist/, since tsc emits only JavaScript and the compiled modules resolve
// `./assets/` relative to their own URL. The folders are the ones tsconfig.build.json compiles, so
// a new component's assets need no change here.
//
//   node scripts/copy-assets.ts
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const build = JSON.parse(readFileSync(`${root}tsconfig.build.json`, 'utf8')) as { include: string[] };
// tsconfig.json's outDir, which tsconfig.build.json inherits
const outDir = `${root}dist`;

let copied = 0;
for (const folder of build.include) {
  const from = `${root}${folder}/assets`;
  if (!existsSync(from)) continue;
  const to = `${outDir}/${folder}/assets`;
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    copyFileSync(`${from}/${entry.name}`, `${to}/${entry.name}`);
    copied++;
  }
}
process.stdout.write(`copy-assets: ${copied} file(s) into ${outDir}\n`);
