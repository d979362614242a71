// `npm run image`: the platform image as an OCI image layout tar, without Docker. See HELP.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { writeEntries } from './image/files.ts';
import { normalizeReference, writeImage } from './image/oci-layout.ts';
import {
  NATIVE_ADDON,
  PLATFORM_REFERENCE,
  checkBuilt,
  platformImage,
  readPackageJson,
  systemLayer,
} from './image/platform.ts';
import { REPO_ROOT, runtimeLayer } from './image/runtime.ts';

const LOCAL = path.resolve(process.env.BKF_LOCAL_DIR ?? path.join(REPO_ROOT, '.local'));
const DEFAULT_OUT = path.join(LOCAL, 'images', 'buildkit-fleet.oci.tar');
const rel = (p: string) =>
  path.relative(process.cwd(), p).startsWith('..') ? p : path.relative(process.cwd(), p);

const HELP = `Usage: npm run image [-- options]
       node scripts/image.ts [options]

Builds the buildkit-fleet image (webhook, certs, controller, sidecar) as an OCI image layout tar
without Docker: node 24 from the npm package and the libraries it loads from this host, /app
with package.json, dist/, ${NATIVE_ADDON} and the production node_modules (from
package-lock.json, copied from node_modules), user 65532:65532, entrypoint buildkit-fleet. It
runs \`npm run build\` first, so the image has the current source. Import it with
  ctr -n k8s.io images import <tar>
The same tar comes out of the same inputs (layers are sorted, dated 1970, owned by number).

Options:
  --tag <ref>          image reference (default ${PLATFORM_REFERENCE}); stored fully qualified,
                       e.g. docker.io/library/${PLATFORM_REFERENCE}, the name containerd's CRI finds
  --out <file>         where to write the tar (default ${rel(DEFAULT_OUT)})
  --no-build           use dist/ and ${NATIVE_ADDON} as they are; fails if they are missing
  --runtime-dir <dir>  write only the runtime files (node, libraries, /usr/bin/env, users, the
                       bin link) into <dir> instead of an image: the Dockerfile's final stage
                       copies them from there, so both images get the same runtime
  -h, --help           show this help

Exit status: 0 built, 1 the build failed, 2 bad usage. BKF_LOCAL_DIR moves .local.
`;

function usage(message: string): never {
  process.stderr.write(`image: ${message}\nRun node scripts/image.ts --help for the options.\n`);
  process.exit(2);
}

function fail(message: string): never {
  process.stderr.write(`image: ${message}\n`);
  process.exit(1);
}

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        tag: { type: 'string' },
        out: { type: 'string' },
        'no-build': { type: 'boolean' },
        'runtime-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    return usage((error as Error).message);
  }
})();

if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const reference = values.tag ?? PLATFORM_REFERENCE;
try {
  normalizeReference(reference);
} catch (error) {
  usage(`--tag: ${(error as Error).message}`);
}
if (values['runtime-dir'] !== undefined && (values.tag !== undefined || values.out !== undefined)) {
  usage('--runtime-dir writes a folder, not an image: it takes no --tag or --out');
}

if (!values['no-build']) {
  // npm sets npm_execpath to its own CLI when it runs this script
  const npm = process.env.npm_execpath;
  const build = npm
    ? spawnSync(process.execPath, [npm, 'run', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' })
    : spawnSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
  if (build.status !== 0) fail(`npm run build failed (${build.error?.message ?? `exit ${build.status}`})`);
}

try {
  if (values['runtime-dir'] !== undefined) {
    checkBuilt(REPO_ROOT);
    const dir = path.resolve(values['runtime-dir']);
    const layers = [
      runtimeLayer([path.join(REPO_ROOT, NATIVE_ADDON)]),
      systemLayer(readPackageJson(REPO_ROOT)),
    ];
    writeEntries(
      layers.flatMap((l) => l.entries),
      dir,
    );
    process.stdout.write(`image: runtime files in ${dir}\n`);
  } else {
    const out = path.resolve(values.out ?? DEFAULT_OUT);
    const written = await writeImage(platformImage(REPO_ROOT, reference), out);
    const size = written.layers.reduce((sum, l) => sum + l.size, 0);
    process.stdout.write(
      `image: ${written.reference} (manifest ${written.manifest.digest}, ${(size / 1024 / 1024).toFixed(1)} MiB)\n` +
        `  ${rel(out)}\n  import: ctr -n k8s.io images import ${rel(out)}\n`,
    );
  }
} catch (error) {
  fail((error as Error).message);
}
