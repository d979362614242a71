// The CRDs and the TypeScript types are generated from api/schema.ts; these tests fail when a
// committed generated file drifts from the schema, and check the rules the schema must follow.
import { readFileSync } from 'node:fs';

import { buildkitCrd, buildkitTemplateCrd } from '../../../api/crds.ts';
import { renderCrdYaml, renderK8sSchemasModule, renderTypes } from '../../../api/codegen/render.ts';
import { buildkitSchema, buildkitTemplateSchema } from '../../../api/schema.ts';
import type { JsonSchema } from '../../../api/schema-dsl.ts';

const committed = (path: string): string =>
  readFileSync(new URL(`../../../${path}`, import.meta.url), 'utf8');

function walk(schema: JsonSchema, path: string, visit: (node: JsonSchema, path: string) => void): void {
  visit(schema, path);
  for (const [name, child] of Object.entries(schema.properties ?? {})) walk(child, `${path}.${name}`, visit);
  if (schema.items) walk(schema.items, `${path}[]`, visit);
  if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
    walk(schema.additionalProperties, `${path}{}`, visit);
  }
}

function at(schema: JsonSchema, path: string): JsonSchema | undefined {
  let node: JsonSchema | undefined = schema;
  for (const part of path.split('.')) {
    if (part.endsWith('[]')) node = node?.properties?.[part.slice(0, -2)]?.items;
    else node = node?.properties?.[part];
  }
  return node;
}

describe('generated files agree with api/schema.ts', () => {
  test('api/generated/k8s-schemas.ts', () => {
    expect(committed('api/generated/k8s-schemas.ts')).toBe(renderK8sSchemasModule());
  });
  test('api/crds/*.yaml', () => {
    expect(committed('api/crds/buildkittemplates.yaml')).toBe(renderCrdYaml(buildkitTemplateCrd()));
    expect(committed('api/crds/buildkits.yaml')).toBe(renderCrdYaml(buildkitCrd()));
  });
  test('api/types.generated.ts', async () => {
    const types = await renderTypes({ BuildkitTemplate: buildkitTemplateSchema, Buildkit: buildkitSchema });
    expect(committed('api/types.generated.ts')).toBe(types);
  });
});

describe.each([
  ['BuildkitTemplate', buildkitTemplateCrd()],
  ['Buildkit', buildkitCrd()],
])('%s CRD', (_kind, crd) => {
  const root = crd.spec.versions[0]!.schema!.openAPIV3Schema as JsonSchema;

  test('every field has a description, so kubectl explain teaches the API', () => {
    const missing: string[] = [];
    walk(root, '', (node, path) => {
      // the API server allows nothing but `type: object` on metadata
      if (path.endsWith('{}') || path.endsWith('[]') || path === '.metadata') return;
      if (!node.description?.trim()) missing.push(path || '(root)');
    });
    expect(missing).toEqual([]);
  });

  test('is structural: every node has a type, codegen-only keys are stripped', () => {
    const problems: string[] = [];
    walk(root, '', (node, path) => {
      if (
        !node.type &&
        !node['x-kubernetes-int-or-string'] &&
        !node['x-kubernetes-preserve-unknown-fields']
      ) {
        problems.push(`${path}: no type`);
      }
      if ('tsType' in node || 'title' in node) problems.push(`${path}: codegen key left in CRD`);
      if (path === '.metadata' && Object.keys(node).join() !== 'type')
        problems.push('.metadata: only type allowed');
      if (node.properties && node.additionalProperties)
        problems.push(`${path}: properties and additionalProperties`);
    });
    expect(problems).toEqual([]);
  });

  test('has a status subresource, short name and printer columns', () => {
    const version = crd.spec.versions[0]!;
    expect(version.subresources?.status).toEqual({});
    expect(crd.spec.names.shortNames?.length).toBe(1);
    expect(version.additionalPrinterColumns?.map((c) => c.name).at(-1)).toBe('Age');
  });
});

describe('BuildkitTemplate schema', () => {
  const spec = buildkitTemplateSchema.properties!.spec!;

  test('has every seatgeek/buildkit-operator field with the same type', () => {
    // the BuildkitTemplateSpec fields of seatgeek/buildkit-operator v1alpha1 and their JSON types
    const seatgeek: Record<string, string> = {
      podLabels: 'object',
      podAnnotations: 'object',
      rootless: 'boolean',
      port: 'integer',
      buildkitdToml: 'string',
      image: 'string',
      imagePullPolicy: 'string',
      'resources.default': 'object',
      'resources.maximum': 'object',
      command: 'array',
      serviceAccountName: 'string',
      'scheduling.nodeSelector': 'object',
      'scheduling.tolerations': 'array',
      'scheduling.affinity': 'object',
      'scheduling.priorityClassName': 'string',
      'scheduling.topologySpreadConstraints': 'array',
      'lifecycle.requireOwner': 'boolean',
      'lifecycle.restartPolicy': 'string',
      'lifecycle.terminationGracePeriodSeconds': 'integer',
      'lifecycle.activeDeadlineSeconds': 'integer',
      'lifecycle.preStopScript': 'boolean',
      'observability.debugLogging': 'boolean',
      'observability.otlp.serviceName': 'string',
      'observability.otlp.resourceAttributes': 'object',
      hostUsers: 'boolean',
    };
    const actual = Object.fromEntries(Object.keys(seatgeek).map((p) => [p, at(spec, p)?.type]));
    expect(actual).toEqual(seatgeek);
    expect(at(spec, 'observability.otlp')?.required).toEqual(['serviceName']);
  });

  test('has the autoscaling addition with its defaults', () => {
    expect(at(spec, 'autoscaling.enabled')).toMatchObject({ type: 'boolean', default: false });
    expect(at(spec, 'autoscaling.idleTimeout')).toMatchObject({ type: 'string', default: '5m' });
    expect(at(spec, 'autoscaling')?.default).toEqual({});
  });

  test('keeps seatgeek defaults that do not depend on other fields', () => {
    expect(at(spec, 'port')?.default).toBe(1234);
    expect(at(spec, 'imagePullPolicy')?.default).toBe('IfNotPresent');
    expect(at(spec, 'lifecycle.terminationGracePeriodSeconds')?.default).toBe(900);
    expect(at(spec, 'lifecycle.requireOwner')?.default).toBe(false);
    expect(at(spec, 'hostUsers')?.default).toBe(true);
  });

  test('has no schema default on image, whose default depends on rootless', () => {
    expect(at(spec, 'image')).not.toHaveProperty('default');
  });

  test('idleTimeout pattern accepts Go durations and refuses other strings', () => {
    const pattern = new RegExp(at(spec, 'autoscaling.idleTimeout')!.pattern!);
    for (const ok of ['5m', '90s', '1h30m', '1.5h', '250ms']) expect(ok).toMatch(pattern);
    for (const bad of ['5', 'five minutes', '-5m', '5 m', '', 'm']) expect(bad).not.toMatch(pattern);
  });

  test('embeds real Kubernetes schemas for scheduling and resources', () => {
    expect(at(spec, 'scheduling.tolerations[].effect')?.type).toBe('string');
    expect(
      at(spec, 'scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution'),
    ).toMatchObject({
      type: 'object',
      required: ['nodeSelectorTerms'],
    });
    const requests = at(spec, 'resources.default.requests');
    expect(requests?.additionalProperties).toMatchObject({ 'x-kubernetes-int-or-string': true });
  });
});

describe('Buildkit schema', () => {
  const spec = buildkitSchema.properties!.spec!;
  const status = buildkitSchema.properties!.status!;

  test('has every seatgeek/buildkit-operator field', () => {
    expect(spec.required).toEqual(['template']);
    expect(Object.keys(spec.properties!).sort()).toEqual(['annotations', 'labels', 'resources', 'template']);
    expect(status.properties).toHaveProperty('endpoint');
    expect(status.properties).toHaveProperty('conditions');
    expect(status.properties).toHaveProperty('resourceRefs');
  });

  test('has phase, lastActivityTime and conditions with observedGeneration', () => {
    expect(status.properties!.phase!.enum).toEqual([
      'Pending',
      'Running',
      'ScaledToZero',
      'Waking',
      'Failed',
    ]);
    expect(status.properties!.lastActivityTime).toMatchObject({ type: 'string', format: 'date-time' });
    expect(status.properties!.conditions!.items!.properties).toHaveProperty('observedGeneration');
    expect(status.properties!.conditions!['x-kubernetes-list-map-keys']).toEqual(['type']);
  });
});

test('webhook/manifests/webhook-configurations.yaml agrees with webhook/configurations.ts', async () => {
  const { renderWebhookManifests } = await import('../../../webhook/manifests.ts');
  expect(committed('webhook/manifests/webhook-configurations.yaml')).toBe(renderWebhookManifests());
});
