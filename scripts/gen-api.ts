// Regenerates api/generated/k8s-schemas.ts, api/crds/*.yaml, api/types.generated.ts, the webhook
// manifests, the chart's CRD and webhook configuration templates, and docs/cli.md.
// `--check` writes nothing and exits 1 when a committed file is out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const check = process.argv.includes('--check');
let stale = 0;

function emit(path: string, content: string): void {
  const full = root + path;
  let current = '';
  try {
    current = readFileSync(full, 'utf8');
  } catch {
    // missing counts as stale
  }
  if (current === content) return;
  stale++;
  if (check) {
    console.error(`out of date: ${path} (run npm run gen)`);
  } else {
    writeFileSync(full, content);
    console.log(`wrote ${path}`);
  }
}

// The embedded Kubernetes schemas first: schema.ts imports them, so it is loaded only afterwards.
const { renderK8sSchemasModule } = await import('../api/codegen/render.ts');
emit('api/generated/k8s-schemas.ts', renderK8sSchemasModule());

const { renderCrdYaml, renderTypes } = await import('../api/codegen/render.ts');
const { buildkitTemplateCrd, buildkitCrd } = await import('../api/crds.ts');
const { buildkitTemplateSchema, buildkitSchema } = await import('../api/schema.ts');
emit('api/crds/buildkittemplates.yaml', renderCrdYaml(buildkitTemplateCrd()));
emit('api/crds/buildkits.yaml', renderCrdYaml(buildkitCrd()));
emit(
  'api/types.generated.ts',
  await renderTypes({ BuildkitTemplate: buildkitTemplateSchema, Buildkit: buildkitSchema }),
);

const { renderWebhookManifests } = await import('../webhook/manifests.ts');
emit('webhook/manifests/webhook-configurations.yaml', renderWebhookManifests());

const { renderChartCrd, renderChartWebhookConfigurations } = await import('./chart-templates.ts');
emit('charts/buildkit-fleet/templates/crds/buildkittemplates.yaml', renderChartCrd(buildkitTemplateCrd()));
emit('charts/buildkit-fleet/templates/crds/buildkits.yaml', renderChartCrd(buildkitCrd()));
emit('charts/buildkit-fleet/templates/webhook/configurations.yaml', renderChartWebhookConfigurations());

// docs/cli.md is the --help output of every command (test/unit/cli/reference.test.ts checks it).
const { cliReference } = await import('../cli/reference.ts');
emit('docs/cli.md', await cliReference());

if (check && stale) process.exit(1);
