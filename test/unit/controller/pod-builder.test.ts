// Golden files of buildPod, buildService and buildPvc: one YAML per scenario and server shape under
// test/unit/controller/golden/pods/<scenario>.<shape>.yaml (and test/unit/controller/golden/services/<scenario>.yaml,
// test/unit/controller/golden/pvcs/<scenario>.yaml). The test renders each one and compares it with the committed file.
//
//   UPDATE_GOLDEN=1 npm run test:unit -- test/unit/controller/pod-builder.test.ts
//
// rewrites the files instead; review the diff like code before committing it.
//
// Shapes: `modern` is a 1.31 API server (what users run), `legacy` a 1.20 one (the local control
// plane). A scenario may add shapes (e.g. v1.33 for user namespaces). When the builder refuses a
// scenario on a shape, the golden file holds the error instead of a pod.
import { readFileSync } from 'node:fs';

import * as k8s from '@kubernetes/client-node';
import type { V1Pod, V1ResourceRequirements } from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';

import type {
  Buildkit,
  BuildkitSpec,
  BuildkitTemplate,
  BuildkitTemplateSpec,
} from '../../../api/types.generated.ts';
import {
  INSTANCE_LABEL,
  MANAGED_BY_LABEL,
  NAME_LABEL,
  SPEC_HASH_ANNOTATION,
  TEMPLATE_LABEL,
} from '../../../api/labels.ts';
import { PRESTOP_SCRIPT_PATH } from '../../../api/group.ts';
import { BuildError, claimNameFor } from '../../../controller/meta.ts';
import { buildPod, buildService, renderPod } from '../../../controller/pod-builder.ts';
import { PRESTOP_SCRIPT_KEY } from '../../../controller/prestop.ts';
import { buildPvc } from '../../../controller/pvc-builder.ts';
import type { ServerFeatures } from '../../../kube/server-features.ts';
import { serverFeatures } from '../../../kube/server-features.ts';
import { goldenDir } from '../../support/golden.ts';

const { dir: GOLDEN_DIR, expectGolden } = goldenDir(new URL('./golden/', import.meta.url));

const NAMESPACE = 'test-ns';
const TEMPLATE_UID = '0c2d4e6f-1111-4000-8000-000000000001';
const BUILDKIT_UID = '7a9b1c3d-2222-4000-8000-000000000002';

const SHAPES: Record<string, ServerFeatures> = {
  modern: serverFeatures({ major: 1, minor: 31 }),
  legacy: serverFeatures({ major: 1, minor: 20 }),
};
const V1_33 = serverFeatures({ major: 1, minor: 33 });

const template = (spec: BuildkitTemplateSpec, name = 'test-template'): BuildkitTemplate => ({
  apiVersion: 'buildkit.seatgeek.io/v1alpha1',
  kind: 'BuildkitTemplate',
  metadata: { name, namespace: NAMESPACE, uid: TEMPLATE_UID },
  spec,
});

const buildkit = (spec: Partial<BuildkitSpec> = {}, name = 'test-buildkit'): Buildkit => ({
  apiVersion: 'buildkit.seatgeek.io/v1alpha1',
  kind: 'Buildkit',
  metadata: { name, namespace: NAMESPACE, uid: BUILDKIT_UID },
  spec: { template: 'test-template', ...spec },
});

const example = <T>(file: string): T =>
  parse(readFileSync(new URL(`../../../examples/${file}`, import.meta.url), 'utf8')) as T;

/** The seatgeek README example (examples/, kept equal to the seed by examples.test.ts). */
function seedExample(): { template: BuildkitTemplate; buildkit: Buildkit } {
  const t = example<BuildkitTemplate>('buildkittemplate.yaml');
  const b = example<Buildkit>('buildkit.yaml');
  t.metadata = { ...t.metadata, uid: TEMPLATE_UID };
  b.metadata = { ...b.metadata, uid: BUILDKIT_UID };
  return { template: t, buildkit: b };
}

const resources = (
  requests?: Record<string, string>,
  limits?: Record<string, string>,
): V1ResourceRequirements => ({
  ...(requests ? { requests } : {}),
  ...(limits ? { limits } : {}),
});

interface Scenario {
  template: BuildkitTemplate;
  buildkit: Buildkit;
  /** extra shapes beyond modern and legacy */
  extraShapes?: Record<string, ServerFeatures>;
}

const SCENARIOS: Record<string, Scenario> = {
  simple: {
    template: template({ port: 1234, image: 'moby/buildkit:latest' }),
    buildkit: buildkit(),
  },
  rootless: {
    template: template({ port: 1234, image: 'moby/buildkit:rootless', rootless: true }),
    buildkit: buildkit(),
  },
  'seed-readme': seedExample(),
  'labels-annotations': {
    template: template({
      podLabels: { foo: '123', 'app.kubernetes.io/name': 'template-buildkit' },
      podAnnotations: { bar: '456', 'buildkit-fleet.io/spec-hash': 'forged' },
    }),
    buildkit: buildkit({
      labels: {
        foo: 'foo',
        bar: 'bar',
        'app.kubernetes.io/managed-by': 'someone-else',
        'buildkit.seatgeek.io/instance': 'another-buildkit',
        'buildkit-fleet.io/autoscale': 'enabled',
      },
      annotations: { foo: 'foo', bar: 'bar', 'buildkit-fleet.io/idle-timeout': '1s' },
    }),
  },
  observability: {
    template: template({
      observability: {
        debugLogging: true,
        otlp: {
          serviceName: 'buildkit-service',
          resourceAttributes: {
            'deployment.environment': 'ci',
            team: 'build,infra',
            'cloud.region': 'eu-west-1',
            'service.name': 'ignored: OTEL_SERVICE_NAME wins',
          },
        },
      },
    }),
    buildkit: buildkit(),
  },
  toml: {
    template: template({ buildkitdToml: '[worker.oci]\n  enabled = true\n' }),
    buildkit: buildkit(),
  },
  'host-users-false': {
    template: template({ hostUsers: false }),
    buildkit: buildkit(),
    extraShapes: { 'v1.33': V1_33 },
  },
  'full-customization': {
    // seatgeek's "full customization" golden, with the preStop script
    template: template({
      podLabels: { 'app.kubernetes.io/name': 'template-buildkit', 'app.kubernetes.io/component': 'builder' },
      podAnnotations: { 'template.example.com/config': 'enabled' },
      rootless: true,
      port: 4567,
      buildkitdToml: '[worker.oci]\n  enabled = true\n',
      image: 'moby/buildkit:latest',
      imagePullPolicy: 'Always',
      resources: {
        maximum: { cpu: '2000m', memory: '4Gi' },
        default: resources({ cpu: '100m', memory: '128Mi' }, { cpu: '1000m', memory: '1Gi' }),
      },
      command: ['rootlesskit', 'buildkitd'],
      serviceAccountName: 'test-sa',
      lifecycle: {
        requireOwner: true,
        preStopScript: true,
        restartPolicy: 'OnFailure',
        terminationGracePeriodSeconds: 111,
        activeDeadlineSeconds: 222,
      },
      scheduling: {
        nodeSelector: { 'kubernetes.io/arch': 'amd64' },
        tolerations: [{ key: 'node-role.kubernetes.io/master', operator: 'Exists', effect: 'NoSchedule' }],
        affinity: {
          podAntiAffinity: {
            requiredDuringSchedulingIgnoredDuringExecution: [
              {
                labelSelector: { matchLabels: { 'app.kubernetes.io/name': 'custom-buildkit' } },
                topologyKey: 'kubernetes.io/hostname',
              },
            ],
          },
        },
        priorityClassName: 'test-pc',
        topologySpreadConstraints: [
          {
            maxSkew: 1,
            topologyKey: 'kubernetes.io/hostname',
            whenUnsatisfiable: 'DoNotSchedule',
            labelSelector: { matchLabels: { 'app.kubernetes.io/name': 'custom-buildkit' } },
          },
        ],
      },
      observability: {
        debugLogging: true,
        otlp: {
          serviceName: 'custom-buildkit-service',
          resourceAttributes: { 'deployment.environment': 'ci' },
        },
      },
    }),
    buildkit: buildkit({
      resources: resources({ cpu: '200m', memory: '256Mi' }, { cpu: '500m', memory: '512Mi' }),
      labels: { 'app.kubernetes.io/name': 'custom-buildkit', 'app.kubernetes.io/version': 'v1.0.0' },
      annotations: { 'example.com/custom': 'value' },
    }),
  },
  'resources-clamped': {
    template: template({
      resources: {
        default: resources({ cpu: '500m', memory: '8Gi' }, { memory: '8Gi' }),
        maximum: { cpu: 8, memory: '16Gi', 'nvidia.com/gpu': 1 },
      },
    }),
    buildkit: buildkit({
      resources: resources({ cpu: '12', memory: '32Gi' }, { memory: '64Gi', 'nvidia.com/gpu': '2' }),
    }),
  },
  autoscaling: {
    template: template({ autoscaling: { enabled: true, idleTimeout: '90s' } }),
    buildkit: buildkit(),
  },
  prestop: {
    template: template({ port: 8372, lifecycle: { preStopScript: true } }),
    buildkit: buildkit(),
  },
  'long-name': {
    template: template({ rootless: true }),
    buildkit: buildkit({}, 'ci.example.com.a-very-long-buildkit-instance-name-for-pipeline-job-1234567890'),
  },
  // spec.persistence: the claim replaces the state emptyDir and is buildkitd's --root
  persistence: {
    template: template({ persistence: { enabled: true } }),
    buildkit: buildkit(),
  },
  'persistence-rootless': {
    template: template({
      rootless: true,
      image: 'moby/buildkit:rootless',
      persistence: {
        enabled: true,
        size: '50Gi',
        storageClassName: 'fast-ssd',
        accessModes: ['ReadWriteOncePod'],
      },
    }),
    buildkit: buildkit(),
  },
  'persistence-retain': {
    template: template({
      buildkitdToml: '[worker.oci]\n  enabled = true\n',
      lifecycle: { preStopScript: true },
      persistence: {
        enabled: true,
        whenDeleted: 'Retain',
        mountPath: '/cache',
        accessModes: ['ReadWriteMany'],
      },
    }),
    buildkit: buildkit(),
  },
};

const PERSISTENCE_SCENARIOS = ['persistence', 'persistence-rootless', 'persistence-retain'];

/** What the golden file holds: the pod, or the error the builder refuses with. */
function render(scenario: Scenario, features: ServerFeatures): { pod?: V1Pod; text: string } {
  const yaml = (value: unknown) => stringify(value, { sortMapEntries: true, lineWidth: 0 });
  try {
    const pod = buildPod(scenario.template, scenario.buildkit, features);
    return { pod, text: yaml(pod) };
  } catch (error) {
    if (!(error instanceof BuildError)) throw error;
    return { text: yaml({ error: { reason: error.reason, message: error.message } }) };
  }
}

const header = (scenario: string, shape: string, features: ServerFeatures) =>
  `# buildPod golden file: scenario "${scenario}", ${shape} shape (Kubernetes ${features.version.major}.${features.version.minor}).\n` +
  '# Written by UPDATE_GOLDEN=1 npm run test:unit -- test/unit/controller/pod-builder.test.ts; review changes.\n';

const shapesOf = (scenario: Scenario) => Object.entries({ ...SHAPES, ...scenario.extraShapes });

const cases = Object.entries(SCENARIOS).flatMap(([name, scenario]) =>
  shapesOf(scenario).map(([shape, features]) => [name, shape, scenario, features] as const),
);

describe('buildPod golden files', () => {
  test.each(cases)('%s (%s)', (name, shape, scenario, features) => {
    expectGolden(
      `pods/${name}.${shape}.yaml`,
      header(name, shape, features) + render(scenario, features).text,
    );
  });
});

describe('buildPvc golden files', () => {
  test.each([...PERSISTENCE_SCENARIOS, 'long-name-persistence'])('%s', (name) => {
    const scenario =
      name === 'long-name-persistence'
        ? {
            ...SCENARIOS['long-name']!,
            template: template({ rootless: true, persistence: { enabled: true } }),
          }
        : SCENARIOS[name]!;
    expectGolden(
      `pvcs/${name}.yaml`,
      `# buildPvc golden file: scenario "${name}". UPDATE_GOLDEN=1 rewrites it; review changes.\n` +
        stringify(buildPvc(scenario.template, scenario.buildkit), { sortMapEntries: true, lineWidth: 0 }),
    );
  });
});

describe('buildService golden files', () => {
  test.each(['simple', 'prestop', 'long-name'])('%s', (name) => {
    const scenario = SCENARIOS[name]!;
    const service = buildService(scenario.template, scenario.buildkit);
    expectGolden(
      `services/${name}.yaml`,
      `# buildService golden file: scenario "${name}". UPDATE_GOLDEN=1 rewrites it; review changes.\n` +
        stringify(service, { sortMapEntries: true, lineWidth: 0 }),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Which fields a server knows.

type FieldCheck = (value: unknown, type: string, path: string) => string[];

/** Fields of `value` that the Kubernetes 1.20 OpenAPI schema does not have. */
function unknownTo120(): FieldCheck {
  const schema = JSON.parse(readFileSync(`${GOLDEN_DIR}k8s-1.20/core-v1-fields.json`, 'utf8')) as {
    definitions: Record<string, Record<string, string> | string>;
  };
  const check: FieldCheck = (value, type, path) => {
    if (type.startsWith('[]')) {
      return (value as unknown[]).flatMap((item, i) => check(item, type.slice(2), `${path}[${i}]`));
    }
    if (type.startsWith('map[')) {
      return Object.entries(value as object).flatMap(([k, v]) => check(v, type.slice(4, -1), `${path}.${k}`));
    }
    const definition = schema.definitions[type];
    if (definition === undefined || typeof definition === 'string') return [];
    return Object.entries(value as object).flatMap(([key, v]) =>
      key in definition ? check(v, definition[key]!, `${path}.${key}`) : [`${path}.${key}`],
    );
  };
  return check;
}

/** Fields of `value` that client-node's models (the newest Kubernetes) do not have: typos. */
const unknownToClientNode: FieldCheck = (value, type, path) => {
  const array = /^Array<(.+)>$/.exec(type);
  if (array)
    return (value as unknown[]).flatMap((v, i) => unknownToClientNode(v, array[1]!, `${path}[${i}]`));
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    return Object.entries(value as object).flatMap(([k, v]) =>
      unknownToClientNode(v, map[1]!, `${path}.${k}`),
    );
  }
  const model = (k8s as unknown as Record<string, { attributeTypeMap?: { name: string; type: string }[] }>)[
    type
  ];
  if (!model?.attributeTypeMap) return [];
  const fields = new Map(model.attributeTypeMap.map((a) => [a.name, a.type]));
  return Object.entries(value as object).flatMap(([key, v]) =>
    fields.has(key) ? unknownToClientNode(v, fields.get(key)!, `${path}.${key}`) : [`${path}.${key}`],
  );
};

describe('fields the server knows', () => {
  const built = cases
    .map(([name, shape, scenario, features]) => ({ name, shape, pod: render(scenario, features).pod }))
    .filter((c): c is { name: string; shape: string; pod: V1Pod } => c.pod !== undefined);
  const check120 = unknownTo120();

  test.each(built.filter((c) => c.shape === 'legacy').map((c) => [c.name, c.pod] as const))(
    'legacy %s uses only fields Kubernetes 1.20 knows',
    (_name, pod) => {
      expect(check120(pod, 'io.k8s.api.core.v1.Pod', 'pod')).toEqual([]);
    },
  );

  test('the 1.20 check catches the newer fields of the modern shape', () => {
    const rootless = render(SCENARIOS.rootless!, SHAPES.modern!).pod!;
    expect(check120(rootless, 'io.k8s.api.core.v1.Pod', 'pod')).toEqual([
      'pod.spec.containers[0].startupProbe.grpc',
      'pod.spec.containers[0].readinessProbe.grpc',
      'pod.spec.containers[0].livenessProbe.grpc',
      'pod.spec.containers[0].securityContext.appArmorProfile',
    ]);
    const userns = render(SCENARIOS['host-users-false']!, V1_33).pod!;
    expect(check120(userns, 'io.k8s.api.core.v1.Pod', 'pod')).toContain('pod.spec.hostUsers');
  });

  test.each(built.map((c) => [c.name, c.shape, c.pod] as const))(
    '%s (%s) has no field unknown to client-node (no typos)',
    (_name, _shape, pod) => {
      expect(unknownToClientNode(pod, 'V1Pod', 'pod')).toEqual([]);
    },
  );

  test.each(Object.keys(SCENARIOS))('the %s Service uses only fields Kubernetes 1.20 knows', (name) => {
    const service = buildService(SCENARIOS[name]!.template, SCENARIOS[name]!.buildkit);
    expect(check120(service, 'io.k8s.api.core.v1.Service', 'service')).toEqual([]);
    expect(unknownToClientNode(service, 'V1Service', 'service')).toEqual([]);
  });

  test.each(PERSISTENCE_SCENARIOS)('the %s claim uses only fields Kubernetes 1.20 knows', (name) => {
    const pvc = buildPvc(SCENARIOS[name]!.template, SCENARIOS[name]!.buildkit)!;
    expect(check120(pvc.spec, 'io.k8s.api.core.v1.PersistentVolumeClaimSpec', 'pvc.spec')).toEqual([]);
    expect(check120(pvc.metadata, 'io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta', 'pvc.metadata')).toEqual(
      [],
    );
    expect(unknownToClientNode(pvc, 'V1PersistentVolumeClaim', 'pvc')).toEqual([]);
  });

  test('legacy shapes never carry hostUsers, gRPC probes or the AppArmor field', () => {
    for (const { shape, pod } of built) {
      if (shape !== 'legacy') continue;
      const text = JSON.stringify(pod);
      expect(text).not.toMatch(/"hostUsers"|"grpc"|"appArmorProfile"/);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Properties of every build.

/** A copy of `value` with the keys of every object in reverse order. */
function reversedKeys<T>(value: T): T {
  if (Array.isArray(value)) return value.map(reversedKeys) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .reverse()
        .map(([k, v]) => [k, reversedKeys(v)]),
    ) as T;
  }
  return value;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

describe('buildPod', () => {
  const pods = cases
    .map(([name, shape, scenario, features]) => ({ name, shape, scenario, features }))
    .filter((c) => render(c.scenario, c.features).pod !== undefined);

  test.each(pods.map((c) => [c.name, c.shape, c] as const))(
    '%s (%s): building twice, or from reordered maps, gives identical output',
    (_name, _shape, { scenario, features }) => {
      const first = render(scenario, features).text;
      expect(render(scenario, features).text).toBe(first);
      const reordered = {
        template: reversedKeys(scenario.template),
        buildkit: reversedKeys(scenario.buildkit),
      };
      expect(render(reordered, features).text).toBe(first);
    },
  );

  test.each(pods.map((c) => [c.name, c.shape, c] as const))(
    '%s (%s): does not modify its inputs',
    (_name, _shape, { scenario, features }) => {
      const frozen = deepFreeze(structuredClone(scenario));
      expect(render(frozen, features).text).toBe(render(scenario, features).text);
    },
  );

  test.each(pods.map((c) => [c.name, c.shape, c] as const))(
    '%s (%s): the Service selects the pod, and the platform labels are intact',
    (_name, _shape, { scenario, features }) => {
      const pod = buildPod(scenario.template, scenario.buildkit, features);
      const service = buildService(scenario.template, scenario.buildkit);
      expect(pod.metadata!.labels).toMatchObject(service.spec!.selector!);
      const { [NAME_LABEL]: _nameLabel, ...platform } = service.metadata!.labels!;
      expect(pod.metadata!.labels).toMatchObject(platform);
      expect(pod.metadata!.labels![MANAGED_BY_LABEL]).toBe('buildkit-fleet');
      expect(pod.metadata!.ownerReferences).toEqual(service.metadata!.ownerReferences);
    },
  );

  test('user labels and annotations cannot take over platform keys', () => {
    const { template: t, buildkit: b } = SCENARIOS['labels-annotations']!;
    const pod = buildPod(t, b, SHAPES.modern!);
    expect(pod.metadata!.labels).toEqual({
      'app.kubernetes.io/managed-by': 'buildkit-fleet',
      'app.kubernetes.io/name': 'template-buildkit',
      bar: 'bar',
      'buildkit.seatgeek.io/instance': 'test-buildkit',
      'buildkit.seatgeek.io/template': 'test-template',
      foo: '123',
    });
    expect(pod.metadata!.annotations).toEqual({
      bar: '456',
      foo: 'foo',
      [SPEC_HASH_ANNOTATION]: expect.stringMatching(/^sha256:[0-9a-f]{16}$/),
    });
  });

  test('a rootless pod on an old server carries the AppArmor annotation, even against a user value', () => {
    const t = template({
      rootless: true,
      podAnnotations: { 'container.apparmor.security.beta.kubernetes.io/buildkit': 'runtime/default' },
    });
    expect(buildPod(t, buildkit(), SHAPES.legacy!).metadata!.annotations).toMatchObject({
      'container.apparmor.security.beta.kubernetes.io/buildkit': 'unconfined',
    });
    const modern = buildPod(t, buildkit(), SHAPES.modern!);
    expect(modern.metadata!.annotations).not.toHaveProperty(
      'container.apparmor.security.beta.kubernetes.io/buildkit',
    );
    expect(modern.spec!.containers[0]!.securityContext!.appArmorProfile).toEqual({ type: 'Unconfined' });
  });

  test('a server without the seccomp field gets the seccomp annotation', () => {
    const pod = buildPod(template({ rootless: true }), buildkit(), serverFeatures({ major: 1, minor: 18 }));
    expect(pod.metadata!.annotations).toMatchObject({
      'container.seccomp.security.alpha.kubernetes.io/buildkit': 'unconfined',
    });
    expect(pod.spec!.containers[0]!.securityContext).not.toHaveProperty('seccompProfile');
  });

  test('hostUsers: false is refused where the server would drop it, sent where it keeps it', () => {
    const t = template({ hostUsers: false });
    for (const minor of [20, 24, 25, 31, 32]) {
      expect(() => buildPod(t, buildkit(), serverFeatures({ major: 1, minor }))).toThrow(BuildError);
    }
    expect(buildPod(t, buildkit(), V1_33).spec!.hostUsers).toBe(false);
    // a caller that found the gate enabled (e.g. by a dry-run create) may say so
    const gateOn = { ...SHAPES.modern!, hostUsers: true };
    expect(buildPod(t, buildkit(), gateOn).spec!.hostUsers).toBe(false);
  });

  test('hostUsers: true (the default) is never sent', () => {
    for (const features of [SHAPES.modern!, SHAPES.legacy!, V1_33]) {
      expect(buildPod(template({ hostUsers: true }), buildkit(), features).spec).not.toHaveProperty(
        'hostUsers',
      );
    }
  });

  test('renderPod reports what was clamped', () => {
    const { template: t, buildkit: b } = SCENARIOS['resources-clamped']!;
    const { resources: merged } = renderPod(t, b, SHAPES.modern!);
    expect(merged.clamped).toEqual([
      { field: 'limits.memory', requested: '64Gi', granted: '16Gi', reason: 'maximum', source: 'instance' },
      { field: 'limits.nvidia.com/gpu', requested: '2', granted: '1', reason: 'maximum', source: 'instance' },
      { field: 'requests.cpu', requested: '12', granted: '8', reason: 'maximum', source: 'instance' },
      { field: 'requests.memory', requested: '32Gi', granted: '16Gi', reason: 'maximum', source: 'instance' },
    ]);
    expect(merged.filledLimits).toEqual([{ field: 'limits.cpu', granted: '8', from: 'maximum' }]);
  });

  test('the spec hash follows the TOML, which the pod spec only names', () => {
    const a = buildPod(template({ buildkitdToml: 'a = 1' }), buildkit(), SHAPES.modern!);
    const b = buildPod(template({ buildkitdToml: 'a = 2' }), buildkit(), SHAPES.modern!);
    expect(a.spec).toEqual(b.spec);
    expect(a.metadata!.annotations![SPEC_HASH_ANNOTATION]).not.toBe(
      b.metadata!.annotations![SPEC_HASH_ANNOTATION],
    );
  });

  test('a long or dotted Buildkit name gets label-safe values and a valid Service name', () => {
    const { template: t, buildkit: b } = SCENARIOS['long-name']!;
    const pod = buildPod(t, b, SHAPES.modern!);
    const service = buildService(t, b);
    const instance = pod.metadata!.labels![INSTANCE_LABEL]!;
    expect(instance.length).toBeLessThanOrEqual(63);
    expect(instance).toMatch(/^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$/);
    expect(service.metadata!.name!.length).toBeLessThanOrEqual(63);
    expect(service.metadata!.name).toMatch(/^[a-z]([-a-z0-9]*[a-z0-9])?$/);
    expect(pod.metadata!.generateName).toBe(`${b.metadata!.name}-`);
    expect(pod.metadata!.labels![TEMPLATE_LABEL]).toBe('test-template');
  });

  test('refuses a template that is not the one the Buildkit names, or lives elsewhere', () => {
    expect(() => buildPod(template({}, 'other'), buildkit(), SHAPES.modern!)).toThrow(
      expect.objectContaining({ reason: 'TemplateMismatch' }),
    );
    const elsewhere = template({});
    elsewhere.metadata!.namespace = 'other-ns';
    expect(() => buildPod(elsewhere, buildkit(), SHAPES.modern!)).toThrow(
      expect.objectContaining({ reason: 'TemplateMismatch' }),
    );
  });

  test('refuses a Buildkit without uid (it could not own the pod)', () => {
    const b = buildkit();
    delete b.metadata!.uid;
    expect(() => buildPod(template({}), b, SHAPES.modern!)).toThrow(
      expect.objectContaining({ reason: 'MissingMetadata' }),
    );
  });

  test('builds from the defaulted spec, so a template the webhook never saw gives the same pod', () => {
    const raw = template({ rootless: true });
    const defaulted = template({
      rootless: true,
      port: 1234,
      image: 'moby/buildkit:rootless',
      imagePullPolicy: 'IfNotPresent',
      hostUsers: true,
      lifecycle: { requireOwner: false, terminationGracePeriodSeconds: 900 },
      autoscaling: { enabled: false, idleTimeout: '5m' },
    });
    expect(buildPod(raw, buildkit(), SHAPES.modern!)).toEqual(
      buildPod(defaulted, buildkit(), SHAPES.modern!),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// spec.persistence

describe('persistence', () => {
  const modern = SHAPES.modern!;
  const buildkitd = (pod: V1Pod) => pod.spec!.containers[0]!;

  test('off (the default): no claim, the state emptyDir as before', () => {
    for (const spec of [
      {},
      { persistence: { enabled: false, mountPath: '/cache' } },
    ] as BuildkitTemplateSpec[]) {
      expect(buildPvc(template(spec), buildkit())).toBeUndefined();
      const pod = buildPod(template(spec), buildkit(), modern);
      expect(pod.spec!.volumes).toEqual([{ name: 'buildkitd', emptyDir: {} }]);
      expect(buildkitd(pod).args).not.toContain('--root');
      expect(pod.spec!.securityContext).toBeUndefined();
    }
  });

  test.each([
    ['rootful', false, '/var/lib/buildkit'],
    ['rootless', true, '/home/user/.local/share/buildkit'],
  ])('%s: the claim is mounted at the defaulted mountPath, which is --root', (_name, rootless, path) => {
    const pod = buildPod(template({ rootless, persistence: { enabled: true } }), buildkit(), modern);
    expect(pod.spec!.volumes).toEqual([
      { name: 'buildkitd', persistentVolumeClaim: { claimName: 'test-buildkit-cache' } },
    ]);
    expect(buildkitd(pod).volumeMounts).toEqual([{ name: 'buildkitd', mountPath: path }]);
    const args = buildkitd(pod).args!;
    expect(args[args.indexOf('--root') + 1]).toBe(path);
  });

  test('rootless: the volume is made group-writable for uid 1000 (fsGroup), without a chown at every start', () => {
    const pod = buildPod(template({ rootless: true, persistence: { enabled: true } }), buildkit(), modern);
    expect(pod.spec!.securityContext).toEqual({ fsGroup: 1000, fsGroupChangePolicy: 'OnRootMismatch' });
    const rootful = buildPod(template({ persistence: { enabled: true } }), buildkit(), modern);
    expect(rootful.spec!.securityContext).toBeUndefined();
  });

  test('the pod and its claim agree on the name; the spec hash tells persistence apart', () => {
    for (const name of PERSISTENCE_SCENARIOS) {
      const { template: t, buildkit: b } = SCENARIOS[name]!;
      const pod = buildPod(t, b, modern);
      const pvc = buildPvc(t, b)!;
      expect(pod.spec!.volumes![0]!.persistentVolumeClaim!.claimName).toBe(pvc.metadata!.name);
      expect(pvc.metadata!.namespace).toBe(pod.metadata!.namespace);
    }
    const hash = (t: BuildkitTemplate) =>
      buildPod(t, buildkit(), modern).metadata!.annotations![SPEC_HASH_ANNOTATION];
    expect(hash(template({ persistence: { enabled: true } }))).not.toBe(hash(template({})));
  });

  test('the claim carries the platform labels; it is owned by the Buildkit only with whenDeleted: Delete', () => {
    const { template: t, buildkit: b } = SCENARIOS.persistence!;
    const pvc = buildPvc(t, b)!;
    const service = buildService(t, b);
    expect(pvc.metadata!.labels).toEqual(service.metadata!.labels);
    expect(pvc.metadata!.ownerReferences).toEqual(service.metadata!.ownerReferences);
    expect(pvc.metadata!.ownerReferences![0]).toMatchObject({
      kind: 'Buildkit',
      uid: BUILDKIT_UID,
      controller: true,
    });
    const retained = buildPvc(SCENARIOS['persistence-retain']!.template, b)!;
    expect(retained.metadata).not.toHaveProperty('ownerReferences');
    expect(retained.metadata!.labels![INSTANCE_LABEL]).toBe('test-buildkit');
  });

  test('size, class and access modes come from the template; an empty class is left unset (the default class)', () => {
    const pvc = buildPvc(SCENARIOS['persistence-rootless']!.template, buildkit())!;
    expect(pvc.spec).toEqual({
      accessModes: ['ReadWriteOncePod'],
      resources: { requests: { storage: '50Gi' } },
      storageClassName: 'fast-ssd',
    });
    const defaults = buildPvc(
      template({ persistence: { enabled: true, storageClassName: '' } }),
      buildkit(),
    )!;
    expect(defaults.spec).toEqual({
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: '20Gi' } },
    });
    expect(
      buildPvc(template({ persistence: { enabled: true, size: 1073741824 } }), buildkit())!.spec!.resources,
    ).toEqual({ requests: { storage: '1073741824' } });
  });

  test('buildPvc is deterministic and does not modify its inputs', () => {
    for (const name of PERSISTENCE_SCENARIOS) {
      const frozen = deepFreeze(structuredClone(SCENARIOS[name]!));
      expect(buildPvc(frozen.template, frozen.buildkit)).toEqual(
        buildPvc(SCENARIOS[name]!.template, SCENARIOS[name]!.buildkit),
      );
    }
  });

  test('buildPvc refuses what buildPod refuses: another template, a Buildkit without uid', () => {
    const on = { persistence: { enabled: true } };
    expect(() => buildPvc(template(on, 'other'), buildkit())).toThrow(
      expect.objectContaining({ reason: 'TemplateMismatch' }),
    );
    const b = buildkit();
    delete b.metadata!.uid;
    expect(() => buildPvc(template(on), b)).toThrow(expect.objectContaining({ reason: 'MissingMetadata' }));
    // Retain needs no owner reference, but the claim is still refused with the pod
    expect(() =>
      buildPod(template({ persistence: { enabled: true, whenDeleted: 'Retain' } }), b, modern),
    ).toThrow(BuildError);
  });

  test('claim names: <buildkit>-cache, valid and distinct for names of any length', () => {
    expect(claimNameFor('test-buildkit')).toBe('test-buildkit-cache');
    expect(claimNameFor('ci.example.com.job-1')).toBe('ci.example.com.job-1-cache');
    const subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
    const longest = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}-x.yz`.slice(
      0,
      253,
    );
    for (const name of [
      longest,
      `${'a'.repeat(246)}.bcdef-`.slice(0, 253).replace(/-$/, 'g'),
      'a'.repeat(247),
    ]) {
      const claim = claimNameFor(name);
      expect(claim.length).toBeLessThanOrEqual(253);
      expect(claim).toMatch(subdomain);
      expect(claim.endsWith('-cache')).toBe(true);
    }
    expect(claimNameFor('a'.repeat(247))).toBe(`${'a'.repeat(247)}-cache`);
    expect(claimNameFor('a'.repeat(248))).not.toBe(claimNameFor(`${'a'.repeat(247)}b`));
  });

  test('the preStop script path is where the scripts ConfigMap key is mounted', () => {
    expect(PRESTOP_SCRIPT_PATH.endsWith(`/${PRESTOP_SCRIPT_KEY}`)).toBe(true);
  });
});
