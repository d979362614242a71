import js from '@eslint/js';
import boundaries from 'eslint-plugin-boundaries';
import tseslint from 'typescript-eslint';

/** The components: each may reach another only through that one's index.ts. */
const COMPONENTS = ['webhook', 'controller', 'sidecar', 'certs', 'activator'];

export default tseslint.config(
  {
    ignores: [
      'api/generated/',
      'api/types.generated.ts',
      'dist/',
      'node_modules/',
      '.local/',
      'coverage/',
      'charts/**/*.yaml',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': ['error', { allow: ['error'] }],
    },
  },
  // The layering (docs/architecture.md): api/ is the contract and imports nothing of the project;
  // the shared layers (kube/, telemetry/, flags/) import api/ and each other; a component imports
  // api/, the shared layers, and of another component only its public index.ts; nothing but the
  // CLI imports the CLI. test/unit/lint/boundaries.test.ts plants violations to keep this honest.
  {
    files: [
      'api/**/*.ts',
      'kube/**/*.ts',
      'telemetry/**/*.ts',
      'flags/**/*.ts',
      'cli/**/*.ts',
      ...COMPONENTS.map((c) => `${c}/**/*.ts`),
    ],
    plugins: { boundaries },
    settings: {
      'boundaries/elements': [
        { type: 'api', pattern: 'api' },
        { type: 'shared', pattern: '(kube|telemetry|flags)', capture: ['layer'] },
        { type: 'component', pattern: `(${COMPONENTS.join('|')})`, capture: ['name'] },
        { type: 'cli', pattern: 'cli' },
      ],
    },
    rules: {
      'boundaries/dependencies': [
        'error',
        {
          default: 'disallow',
          message:
            '{{from.elementPath}}/ may not import {{to.elementPath}}/{{to.internalPath}}: components reach api/, kube/, telemetry/, flags/ and only the index.ts of another component; api/ imports nothing of the project (docs/architecture.md)',
          policies: [
            { from: { element: { type: 'api' } }, allow: { to: { element: { type: 'api' } } } },
            {
              from: { element: { type: 'shared' } },
              allow: { to: { element: { type: ['api', 'shared'] } } },
            },
            {
              from: { element: { type: 'component' } },
              allow: [
                { to: { element: { type: ['api', 'shared'] } } },
                {
                  to: {
                    element: { type: 'component', captured: { name: '{{from.element.captured.name}}' } },
                  },
                },
                { to: { element: { type: 'component', internalPath: 'index.ts' } } },
              ],
            },
            {
              from: { element: { type: 'cli' } },
              allow: { to: { element: { type: ['api', 'shared', 'component', 'cli'] } } },
            },
          ],
        },
      ],
      'boundaries/no-unknown-dependencies': 'error',
    },
  },
  {
    files: ['test/**', 'scripts/**', 'hack/**'],
    rules: { 'no-console': 'off' },
  },
);
