// examples/ hands users seatgeek/buildkit-operator's README examples as written there; the
// integration tests apply them unchanged to a real API server. Here: they fit together and build.
import { parse } from 'yaml';

import type { Buildkit, BuildkitTemplate } from '../../../api/types.generated.ts';
import { defaultTemplateSpec } from '../../../api/defaults.ts';
import { buildPod } from '../../../controller/pod-builder.ts';
import { serverFeatures } from '../../../kube/server-features.ts';
import { validateTemplate } from '../../../webhook/template-validation.ts';
import { buildPvc } from '../../../controller/pvc-builder.ts';
import { readExample, seatgeekExamples } from '../../support/examples.ts';

const { template: templateYaml, instance: instanceYaml } = seatgeekExamples();
const template = parse(templateYaml) as BuildkitTemplate;
const instance = parse(instanceYaml) as Buildkit;
const namespace = parse(readExample('namespace.yaml')) as { kind: string; metadata: { name: string } };

test('the examples are a BuildkitTemplate and a Buildkit of it, in the example namespace', () => {
  expect(template).toMatchObject({ apiVersion: 'buildkit.seatgeek.io/v1alpha1', kind: 'BuildkitTemplate' });
  expect(instance).toMatchObject({ apiVersion: 'buildkit.seatgeek.io/v1alpha1', kind: 'Buildkit' });
  expect(instance.spec.template).toBe(template.metadata?.name);
  expect(namespace.kind).toBe('Namespace');
  expect(template.metadata?.namespace).toBe(namespace.metadata.name);
  expect(instance.metadata?.namespace).toBe(namespace.metadata.name);
});

test('the defaulted example template builds a rootless buildkitd pod on the default port', () => {
  const defaulted = {
    ...template,
    metadata: { ...template.metadata, uid: 't' },
    spec: defaultTemplateSpec(template.spec),
  };
  const pod = buildPod(
    defaulted,
    { ...instance, metadata: { ...instance.metadata, uid: 'b' } },
    serverFeatures({ major: 1, minor: 31 }),
  );
  const buildkitd = pod.spec!.containers[0]!;
  expect(buildkitd.image).toBe('moby/buildkit:rootless');
  expect(buildkitd.ports).toEqual([expect.objectContaining({ containerPort: 1234 })]);
  expect(pod.spec!.nodeSelector).toEqual({ 'kubernetes.io/arch': 'arm64', 'kubernetes.io/os': 'linux' });
});

test('the persistence example is valid and gives each Buildkit a retained claim mounted as the state directory', () => {
  const cached = parse(readExample('buildkittemplate-persistence.yaml')) as BuildkitTemplate;
  expect(cached.metadata?.namespace).toBe(namespace.metadata.name);
  const defaulted = {
    ...cached,
    metadata: { ...cached.metadata, uid: 't' },
    spec: defaultTemplateSpec(cached.spec),
  };
  expect(validateTemplate(defaulted)).toEqual({ errors: [], warnings: [] });
  const bk: Buildkit = {
    metadata: { name: 'job-1', namespace: 'some-ns', uid: 'b' },
    spec: { template: cached.metadata!.name! },
  };
  const pod = buildPod(defaulted, bk, serverFeatures({ major: 1, minor: 31 }));
  expect(pod.spec!.volumes![0]).toEqual({
    name: 'buildkitd',
    persistentVolumeClaim: { claimName: 'job-1-cache' },
  });
  expect(pod.spec!.containers[0]!.volumeMounts![0]!.mountPath).toBe('/home/user/.local/share/buildkit');
  const pvc = buildPvc(defaulted, bk)!;
  expect(pvc.spec!.resources!.requests).toEqual({ storage: '50Gi' });
  expect(pvc.metadata).not.toHaveProperty('ownerReferences');
});
