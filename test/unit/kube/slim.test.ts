// The controller caches slim pods and Services (kube/slim.ts): the buildkit plan must
// come out the same from a slim pod as from the full one, however the pod arrived (a typed list
// gives Date timestamps, a watch event raw JSON), and the slim form must actually be small.
import { readFileSync } from 'node:fs';
import type { V1ObjectMeta, V1Pod, V1Service } from '@kubernetes/client-node';
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { parse } from 'yaml';

import { planBuildkit } from '../../../controller/buildkit-plan.ts';
import { slimPod, slimService, slimWorkload, withoutManagedFields } from '../../../kube/slim.ts';
import type { SlimWorkload } from '../../../kube/slim.ts';
import { buildkit, service, template } from '../../support/controller-objects.ts';

const golden = parse(
  readFileSync(new URL('../controller/golden/pods/seed-readme.legacy.yaml', import.meta.url), 'utf8'),
) as Record<string, unknown>;

const managedFields = [
  {
    manager: 'kubelet',
    operation: 'Update',
    apiVersion: 'v1',
    time: '2026-11-22T01:00:02Z',
    fieldsType: 'FieldsV1',
    fieldsV1: { 'f:status': { 'f:conditions': { 'k:{"type":"Ready"}': { '.': {}, 'f:status': {} } } } },
  },
];

/** A pod as a watch event delivers it: raw JSON, string timestamps, managedFields. */
function rawPod(
  status: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const metadata = golden['metadata'] as Record<string, unknown>;
  return {
    ...golden,
    metadata: {
      ...metadata,
      name: 'bk-abcde',
      uid: 'pod-uid',
      resourceVersion: '123',
      creationTimestamp: '2026-11-22T01:00:00Z',
      ownerReferences: [
        {
          apiVersion: 'buildkit.seatgeek.io/v1alpha1',
          kind: 'Buildkit',
          name: 'bk',
          uid: 'u1',
          controller: true,
        },
      ],
      managedFields,
      ...extra,
    },
    spec: { ...(golden['spec'] as object), nodeName: 'hollow-0' },
    status,
  };
}

const container = (ready: boolean, state: Record<string, unknown>) => ({
  name: 'buildkitd',
  ready,
  restartCount: 0,
  image: 'moby/buildkit:master-rootless',
  imageID: 'docker-pullable://moby/buildkit@sha256:0',
  containerID: 'docker://abc',
  started: ready,
  state,
  lastState: {},
});

const states: Record<string, Record<string, unknown>> = {
  unschedulable: {
    phase: 'Pending',
    conditions: [
      {
        type: 'PodScheduled',
        status: 'False',
        reason: 'Unschedulable',
        message: '0/1 nodes are available: 1 Insufficient memory.',
        lastProbeTime: null,
        lastTransitionTime: '2026-11-22T01:00:01Z',
      },
    ],
    qosClass: 'Burstable',
  },
  creating: {
    phase: 'Pending',
    hostIP: '10.0.0.1',
    startTime: '2026-11-22T01:00:01Z',
    conditions: [{ type: 'PodScheduled', status: 'True', lastTransitionTime: '2026-11-22T01:00:01Z' }],
    containerStatuses: [container(false, { waiting: { reason: 'ContainerCreating' } })],
  },
  notReady: {
    phase: 'Running',
    podIP: '10.244.0.7',
    conditions: [
      {
        type: 'Ready',
        status: 'False',
        reason: 'ContainersNotReady',
        message: 'containers with unready status: [buildkitd]',
      },
    ],
    containerStatuses: [container(false, { running: { startedAt: '2026-11-22T01:00:03Z' } })],
  },
  ready: {
    phase: 'Running',
    podIP: '10.244.0.7',
    conditions: [
      { type: 'Initialized', status: 'True' },
      { type: 'Ready', status: 'True', lastTransitionTime: '2026-11-22T01:00:05Z' },
    ],
    containerStatuses: [container(true, { running: { startedAt: '2026-11-22T01:00:03Z' } })],
  },
  evicted: { phase: 'Failed', reason: 'Evicted', message: 'The node was low on resource: memory.' },
};

const typed = (raw: unknown) => ObjectSerializer.deserialize(raw, 'V1Pod', '') as V1Pod;
const plan = (pods: V1Pod[]) => planBuildkit({ buildkit, template, pods, service, desiredSpecHash: 'h1' });

describe.each(Object.keys(states))('a %s pod', (name) => {
  const raw = rawPod(states[name]!);

  it('gives the same plan slim as in full', () => {
    expect(plan([slimPod(typed(raw))])).toEqual(plan([typed(raw)]));
  });

  it('has one shape whether listed (typed) or watched (raw JSON)', () => {
    expect(slimPod(raw as V1Pod)).toEqual(slimPod(typed(raw)));
    expect(slimPod(raw as V1Pod).metadata?.creationTimestamp).toBeInstanceOf(Date);
  });

  it('keeps no managedFields and is a fraction of the full size', () => {
    const slim = slimPod(raw as V1Pod);
    expect(slim.metadata?.managedFields).toBeUndefined();
    // this fixture lacks the server's defaults and real managedFields, which make stored pods
    // several times larger; even so the spec and container details go
    expect(JSON.stringify(slim).length).toBeLessThan(JSON.stringify(raw).length / 2);
  });
});

test('a terminating pod keeps its deletionTimestamp (as a Date), so the plan waits for it', () => {
  const raw = rawPod(states['ready']!, { deletionTimestamp: '2026-11-22T02:00:00Z' });
  const slim = slimPod(raw as V1Pod);
  expect(slim.metadata?.deletionTimestamp).toEqual(new Date('2026-11-22T02:00:00Z'));
  expect(plan([slim])).toEqual(plan([typed(raw)]));
});

test('the pod plan sees the owner, labels and spec-hash annotation it needs', () => {
  const slim = slimPod(rawPod(states['ready']!) as V1Pod);
  expect(slim.metadata?.ownerReferences?.[0]?.uid).toBe('u1');
  expect(slim.metadata?.labels).toEqual((golden['metadata'] as { labels: object }).labels);
  expect(slim.metadata?.annotations?.['buildkit-fleet.io/spec-hash']).toBeDefined();
  // of the spec only the node and the named container ports (how the sidecar is found)
  expect(Object.keys(slim.spec ?? {}).sort()).toEqual(['containers', 'nodeName']);
  expect(slim.spec?.nodeName).toBe('hollow-0');
  const full = (
    golden['spec'] as { containers: { name: string; ports?: { name?: string; containerPort: number }[] }[] }
  ).containers;
  expect(slim.spec?.containers).toEqual(
    full
      .filter((c) => c.ports?.some((p) => p.name))
      .map((c) => ({
        name: c.name,
        ports: c.ports!.filter((p) => p.name).map((p) => ({ name: p.name, containerPort: p.containerPort })),
      })),
  );
});

test('the sidecar as a native sidecar (an init container) keeps its named ports too', () => {
  const raw = rawPod(states['ready']!);
  (raw['spec'] as Record<string, unknown>)['initContainers'] = [
    {
      name: 'buildkit-fleet-sidecar',
      image: 'x',
      ports: [{ name: 'bkf-stats', containerPort: 9436 }, { containerPort: 1 }],
    },
  ];
  expect(slimPod(raw as V1Pod).spec?.initContainers).toEqual([
    { name: 'buildkit-fleet-sidecar', ports: [{ name: 'bkf-stats', containerPort: 9436 }] },
  ]);
});

test('a slim Service keeps its address, ports and selector, not its managedFields', () => {
  const raw = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: 'bk',
      namespace: 'ci',
      managedFields,
      creationTimestamp: '2026-11-22T01:00:00Z',
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"kind":"Service"}' },
    },
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.0.10',
      ports: [{ name: 'buildkitd', port: 1234, protocol: 'TCP', targetPort: 1234 }],
      selector: { a: 'b' },
      sessionAffinity: 'None',
    },
  };
  expect(slimService(raw as unknown as V1Service)).toEqual({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'bk', namespace: 'ci', creationTimestamp: new Date('2026-11-22T01:00:00Z') },
    spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', ports: raw.spec.ports, selector: { a: 'b' } },
  });
});

test('a slim workload keeps replicas, selector and the pod template metadata, not the pod spec', () => {
  const raw = {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: {
      name: 'stack',
      namespace: 'ci',
      managedFields,
      annotations: {
        'buildkit-fleet.io/idle-timeout': '5m',
        'kubectl.kubernetes.io/last-applied-configuration': '{}',
      },
    },
    spec: {
      replicas: 1,
      serviceName: 'stack-headless',
      selector: { matchLabels: { app: 'buildkitd' } },
      template: {
        metadata: { labels: { app: 'buildkitd' }, annotations: { 'buildkit-fleet.io/service': 's', b: '2' } },
        spec: { containers: [{ name: 'buildkitd', image: 'moby/buildkit' }] },
      },
      volumeClaimTemplates: [{ metadata: { name: 'cache' } }],
    },
    status: { replicas: 1 },
  };
  expect(slimWorkload(raw as unknown as SlimWorkload)).toEqual({
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: { name: 'stack', namespace: 'ci', annotations: { 'buildkit-fleet.io/idle-timeout': '5m' } },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: 'buildkitd' } },
      template: {
        metadata: { labels: { app: 'buildkitd' }, annotations: { 'buildkit-fleet.io/service': 's' } },
      },
    },
  });
});

test('custom resources keep everything but managedFields', () => {
  const bk = {
    metadata: { name: 'bk', managedFields: managedFields as unknown as V1ObjectMeta['managedFields'] },
    spec: { template: 't' },
    status: { phase: 'Running' },
  };
  expect(withoutManagedFields(bk)).toEqual({
    metadata: { name: 'bk' },
    spec: { template: 't' },
    status: { phase: 'Running' },
  });
  const plain = { metadata: { name: 'x' } };
  expect(withoutManagedFields(plain)).toBe(plain);
});
