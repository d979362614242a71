// Builds the sidecar's native data path, sidecar/native/proxy-engine.cc, into
// build/native/proxy-engine.node with g++ against the Node-API headers of the node-api-headers
// package (Node-API is ABI-stable, so one build serves every Node 24). No node-gyp: one source
// file, one compiler call.
//
//   node scripts/build-native.ts            build (or say it is up to date); fails without g++
//   node scripts/build-native.ts --optional the same, but only warns when g++ is missing (npm ci
//                                           runs this: the sidecar then falls back to its
//                                           JavaScript data path, and says so)
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const source = `${root}sidecar/native/proxy-engine.cc`;
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
const built = mtime(output);
if (
  built !== undefined &&
  built >= (mtime(source) ?? Infinity) &&
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
  execFileSync(compiler, [...flags, ...warnings, '-I', headers, source, '-o', partial], { stdio: 'inherit' });
  renameSync(partial, output);
} catch {
  rmSync(partial, { force: true });
  process.stderr.write(`build-native: ${compiler} failed on ${source}\n`);
  process.exit(1);
}
process.stdout.write(`build-native: built ${output}\n`);
