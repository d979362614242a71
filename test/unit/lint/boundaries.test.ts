// The layering is enforced by `npm run lint` (eslint.config.js, eslint-plugin-boundaries). Planted
// imports, linted as if they were files of the tree, show that a violation fails and that the
// allowed paths pass.
import { fileURLToPath } from 'node:url';

import { ESLint } from 'eslint';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const eslint = new ESLint({ cwd: root });

async function boundaryErrors(file: string, source: string): Promise<string[]> {
  const [result] = await eslint.lintText(source, { filePath: `${root}${file}` });
  return result!.messages.filter((m) => m.ruleId?.startsWith('boundaries/')).map((m) => m.message);
}

const use = (names: string[]) => `export const used = [${names.join(', ')}];\n`;

test.each([
  [
    'a component reaching into another one',
    'webhook/planted.ts',
    "import { buildPod } from '../controller/pod-builder.ts';",
    'webhook/ may not import controller/pod-builder.ts',
  ],
  [
    'a nested file reaching into another component',
    'webhook/pod-injection/planted.ts',
    "import { buildPod } from '../../controller/pod-builder.ts';",
    'may not import controller/pod-builder.ts',
  ],
  [
    'the contract importing a component',
    'api/planted.ts',
    "import { buildPod } from '../controller/pod-builder.ts';",
    'api/ may not import controller/pod-builder.ts',
  ],
  [
    'the contract importing a shared layer',
    'api/planted.ts',
    "import { errorStatus } from '../kube/errors.ts';",
    'api/ may not import kube/errors.ts',
  ],
  [
    'a shared layer importing a component, even its index.ts',
    'kube/planted.ts',
    "import { createCa } from '../certs/index.ts';",
    'kube/ may not import certs/index.ts',
  ],
  [
    'a component importing the CLI',
    'controller/planted.ts',
    "import { COMMANDS } from '../cli/commands.ts';",
    'controller/ may not import cli/commands.ts',
  ],
])('%s fails lint', async (_what, file, line, message) => {
  const errors = await boundaryErrors(file, `${line}\n${use([line.match(/\{ (\w+) \}/)![1]!])}`);
  expect(errors).toHaveLength(1);
  expect(errors[0]).toContain(message);
});

test('a component importing the test tree or the dev cluster fails lint', async () => {
  const errors = await boundaryErrors(
    'controller/planted.ts',
    `import { waitFor } from '../test/support/wait.ts';\n${use(['waitFor'])}`,
  );
  expect(errors).toEqual(['Dependencies to unknown elements and files are not allowed']);
});

test('the allowed paths pass: api, shared layers, own files, another component through index.ts', async () => {
  const source = [
    "import { GROUP } from '../api/group.ts';",
    "import { errorStatus } from '../kube/errors.ts';",
    "import { createLogger } from '../telemetry/logger.ts';",
    "import { UsageError } from '../flags/errors.ts';",
    "import { createCa } from '../certs/index.ts';",
    "import { defaultTemplateSpec } from '../api/defaults.ts';",
    "import { createApp } from './app.ts';",
    use([
      'GROUP',
      'errorStatus',
      'createLogger',
      'UsageError',
      'createCa',
      'defaultTemplateSpec',
      'createApp',
    ]),
  ].join('\n');
  expect(await boundaryErrors('webhook/planted.ts', source)).toEqual([]);
});

test.each([
  [
    'a type-only import',
    "import type { BuildError } from '../controller/meta.ts';\nexport type Planted = BuildError;\n",
  ],
  ['a dynamic import', "export const planted = () => import('../controller/meta.ts');\n"],
  ['a re-export', "export { buildPod } from '../controller/pod-builder.ts';\n"],
])('%s of another component’s internals fails lint too', async (_what, source) => {
  const errors = await boundaryErrors('webhook/planted.ts', source);
  expect(errors).toHaveLength(1);
  expect(errors[0]).toContain('webhook/ may not import controller/');
});
