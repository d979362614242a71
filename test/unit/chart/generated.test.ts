// The chart's CRD and webhook configuration templates are generated from the code (npm run gen);
// these fail when a committed template drifts from what the code says.
import { readFileSync } from 'node:fs';

import { buildkitCrd, buildkitTemplateCrd } from '../../../api/crds.ts';
import { renderChartCrd, renderChartWebhookConfigurations } from '../../../scripts/chart-templates.ts';

const chart = (file: string) =>
  readFileSync(new URL(`../../../charts/buildkit-fleet/templates/${file}`, import.meta.url), 'utf8');

test('templates/crds/*.yaml are the CRDs of api/crds.ts', () => {
  expect(chart('crds/buildkittemplates.yaml')).toBe(renderChartCrd(buildkitTemplateCrd()));
  expect(chart('crds/buildkits.yaml')).toBe(renderChartCrd(buildkitCrd()));
});

test('templates/webhook/configurations.yaml is webhook/configurations.ts', () => {
  expect(chart('webhook/configurations.yaml')).toBe(renderChartWebhookConfigurations());
});

test('no placeholder survives into a template', () => {
  for (const text of [renderChartCrd(buildkitCrd()), renderChartWebhookConfigurations()]) {
    expect(text).not.toMatch(/bkfPlaceholder/);
  }
});

test('the CRDs are kept on uninstall unless crds.keep=false, and skipped with crds.install=false', () => {
  const text = renderChartCrd(buildkitCrd());
  expect(text).toMatch(/^\{\{- if \.Values\.crds\.install \}\}$/m);
  expect(text).toMatch(/\{\{- if \.Values\.crds\.keep \}\}\n {4}helm\.sh\/resource-policy: keep\n/);
});
