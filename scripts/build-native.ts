// Builds the sidecar's native data path, every sidecar/native/*.cc (epoll-loop.cc, the epoll loop,
// and napi-binding.cc, its Node-API binding, which includes epoll-loop.h), into the one addon
// build/native/proxy-engine.node with g++ against the Node-API headers of the node-api-headers
// package (Node-API is ABI-stable, so one build serves every Node 24). No node-gyp: one compiler
// call for all the sources. It is up to date when it is newer than every source and header there
// and than this script.
//
//   node scripts/build-native.ts            build (or say it is up to date); fails without g++
//   node scripts/build-native.ts --optional the same, but only warns when g++ is missing (npm ci
//                                           runs this: the sidecar then falls back to its
//                                           JavaScript data path, and says so)
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const sourceDir = `${root}sidecar/native`;
const files = readdirSync(sourceDir)
  .filter((name) => name.endsWith('.cc') || name.endsWith('.h'))
  .sort()
  .map((name) => `${sourceDir}/${name}`);
const sources = files.filter((path) => path.endsWith('.cc'));
const headers = `${root}node_modules/node-api-headers/include`;
const output = `${root}build/native/proxy-engine.node`;
const compiler = process.env['CXX'] || 'g++';
const optional = process.argv.includes('--optional');
const unknown = process.argv.slice(2).filter((arg) => arg !== '--optional');
if (unknown.length > 0) {
  process.stderr.write(`build-native: unknown argument ${unknown.join(' ')} (only --optional)\n`);
  process.exit(2);
}

const mtime = (path: string) => {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
};

if (spawnSync(compiler, ['--version'], { stdio: 'ignore' }).status !== 0) {
  const why = `${compiler} not found: the sidecar's native data path is not built (apt-get install g++)`;
  if (optional) {
    process.stderr.write(`build-native: ${why}; the sidecar will use its JavaScript data path\n`);
    process.exit(0);
  }
  process.stderr.write(`build-native: ${why}\n`);
  process.exit(1);
}
if (mtime(`${headers}/node_api.h`) === undefined) {
  process.stderr.write(`build-native: ${headers}/node_api.h missing: run npm ci first\n`);
  process.exit(1);
}
if (sources.length === 0) {
  process.stderr.write(`build-native: no .cc file in ${sourceDir}\n`);
  process.exit(1);
}
const built = mtime(output);
// the directory as well: removing a source changes nothing else
if (
  built !== undefined &&
  [sourceDir, ...files].every((path) => built >= (mtime(path) ?? Infinity)) &&
  built >= (mtime(import.meta.filename) ?? 0)
) {
  process.stdout.write(`build-native: ${output} is up to date\n`);
  process.exit(0);
}

mkdirSync(`${root}build/native`, { recursive: true });
// into a temporary file first, so a failed build leaves no half-written addon behind
const partial = `${output}.${process.pid}.tmp`;
const flags = ['-std=c++17', '-O2', '-g0', '-fPIC', '-shared', '-fvisibility=hidden', '-pthread'];
const warnings = ['-Wall', '-Wextra', '-Werror'];
try {
  execFileSync(compiler, [...flags, ...warnings, '-I', headers, ...sources, '-o', partial], {
    stdio: 'inherit',
  });
  renameSync(partial, output);
} catch {
  rmSync(partial, { force: true });
  process.stderr.write(`build-native: ${compiler} failed on ${sources.join(' ')}\n`);
  process.exit(1);
}
process.stdout.write(`build-native: built ${output}\n`);
