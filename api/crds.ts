// Builds the two CustomResourceDefinitions from the schemas in schema.ts (pure: no I/O).
import type { V1CustomResourceDefinition } from '@kubernetes/client-node';

import { BUILDKIT, BUILDKIT_TEMPLATE, GROUP, VERSION } from './group.ts';
import { buildkitSchema, buildkitTemplateSchema } from './schema.ts';
import type { JsonSchema } from './schema-dsl.ts';
import { toCrdSchema } from './schema-dsl.ts';

interface Names {
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  shortNames: readonly string[];
}

interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description: string;
  priority?: number;
}

function crd(names: Names, schema: JsonSchema, columns: PrinterColumn[]): V1CustomResourceDefinition {
  const { title: _title, tsType: _tsType, ...root } = toCrdSchema(schema);
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${names.plural}.${GROUP}`,
      labels: { 'app.kubernetes.io/part-of': 'buildkit-fleet' },
    },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: { ...names, shortNames: [...names.shortNames] },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: columns,
          schema: { openAPIV3Schema: root as never },
        },
      ],
    },
  };
}

export function buildkitTemplateCrd(): V1CustomResourceDefinition {
  return crd(BUILDKIT_TEMPLATE, buildkitTemplateSchema, [
    { name: 'Image', type: 'string', jsonPath: '.spec.image', description: 'buildkitd image' },
    { name: 'Rootless', type: 'boolean', jsonPath: '.spec.rootless', description: 'Runs rootless' },
    {
      name: 'Autoscaling',
      type: 'boolean',
      jsonPath: '.spec.autoscaling.enabled',
      description: 'Idle instances scale to zero',
    },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age' },
  ]);
}

export function buildkitCrd(): V1CustomResourceDefinition {
  return crd(BUILDKIT, buildkitSchema, [
    { name: 'Template', type: 'string', jsonPath: '.spec.template', description: 'BuildkitTemplate name' },
    { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Lifecycle phase' },
    { name: 'Endpoint', type: 'string', jsonPath: '.status.endpoint', description: 'Where clients connect' },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Age' },
  ]);
}

export function allCrds(): V1CustomResourceDefinition[] {
  return [buildkitTemplateCrd(), buildkitCrd()];
}
