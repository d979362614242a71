import type { V1Pod } from '@kubernetes/client-node';

import type { BuildkitObservation } from '../../../controller/buildkit-plan.ts';
import { planBuildkit } from '../../../controller/buildkit-plan.ts';
import { mergeConditions, sameConditions } from '../../../controller/conditions.ts';
import type { DesiredCondition } from '../../../controller/conditions.ts';
import { CONDITION, REASON } from '../../../api/conditions.ts';
import { buildkit, service, template } from '../../support/controller-objects.ts';

function pod(
  name: string,
  state: Partial<{
    phase: string;
    ready: boolean;
    created: string;
    reason: string;
    deleting: boolean;
    hash: string;
  }> = {},
): V1Pod {
  return {
    metadata: {
      name,
      creationTimestamp: new Date(state.created ?? '2026-01-01T00:00:00Z'),
      annotations: { 'buildkit-fleet.io/spec-hash': state.hash ?? 'h1' },
      ...(state.deleting ? { deletionTimestamp: new Date() } : {}),
    },
    status: {
      phase: state.phase ?? 'Running',
      ...(state.reason ? { reason: state.reason, message: `${state.reason} happened` } : {}),
      conditions: [{ type: 'Ready', status: state.ready ? 'True' : 'False' }],
      containerStatuses: [
        { name: 'buildkit', ready: Boolean(state.ready), image: 'x', imageID: '', restartCount: 0 },
      ],
    },
  };
}

const plan = (o: Partial<BuildkitObservation>) =>
  planBuildkit({ buildkit, template, pods: [], service, desiredSpecHash: 'h1', ...o });
const ready = (p: ReturnType<typeof plan>) => p.conditions.find((c) => c.type === 'Ready')!;

test('no pod: create one; not ready yet, no endpoint', () => {
  const p = plan({});
  expect(p).toMatchObject({
    createPod: true,
    deletePods: [],
    createService: false,
    phase: 'Pending',
    endpoint: undefined,
  });
  expect(ready(p).reason).toBe('PodCreating');
});

test('a ready pod: Running with the Service endpoint', () => {
  const p = plan({ pods: [pod('a', { ready: true })] });
  expect(p).toMatchObject({ createPod: false, phase: 'Running', endpoint: 'tcp://10.96.0.10:1234' });
  expect(ready(p)).toMatchObject({ status: 'True', reason: 'Running' });
});

test('a running but unready pod: ContainerNotReady, no endpoint', () => {
  const p = plan({ pods: [pod('a')] });
  expect(ready(p)).toMatchObject({ status: 'False', reason: 'ContainerNotReady' });
  expect(p.endpoint).toBeUndefined();
});

test('a pending pod that cannot be scheduled says why', () => {
  const pending = pod('a', { phase: 'Pending' });
  pending.status!.conditions = [
    {
      type: 'PodScheduled',
      status: 'False',
      message: "0/1 nodes are available: 1 node(s) didn't match node selector.",
    },
  ];
  expect(ready(plan({ pods: [pending] }))).toMatchObject({
    reason: 'PodUnschedulable',
    message: expect.stringContaining("didn't match node selector"),
  });
});

test('extra pods are deleted, keeping the ready one even if it is younger', () => {
  const p = plan({
    pods: [
      pod('old', { created: '2026-01-01T00:00:00Z' }),
      pod('young', { ready: true, created: '2026-01-02T00:00:00Z' }),
    ],
  });
  expect(p.deletePods).toEqual([{ name: 'old', reason: 'ExtraPod' }]);
  expect(p.phase).toBe('Running');
});

test('a terminating pod is ignored (a new one is created, nothing is deleted twice)', () => {
  const p = plan({ pods: [pod('going', { deleting: true, ready: true })] });
  expect(p).toMatchObject({ createPod: true, deletePods: [] });
});

test('an evicted pod under restartPolicy Always is replaced', () => {
  const p = plan({ pods: [pod('e', { phase: 'Failed', reason: 'Evicted' })] });
  expect(p).toMatchObject({ createPod: true, deletePods: [{ name: 'e', reason: 'ReplacedEndedPod' }] });
  expect(ready(p).message).toContain('pod e failed: Evicted happened; replacing it');
});

test('a pod that hit activeDeadlineSeconds is not replaced: Failed/DeadlineExceeded', () => {
  const p = plan({ pods: [pod('d', { phase: 'Failed', reason: 'DeadlineExceeded' })] });
  expect(p).toMatchObject({ createPod: false, deletePods: [], phase: 'Failed' });
  expect(ready(p).reason).toBe('DeadlineExceeded');
});

test.each(['Never', 'OnFailure'] as const)(
  'restartPolicy %s: an ended pod is not replaced',
  (restartPolicy) => {
    const oneShot = { ...template, spec: { lifecycle: { restartPolicy } } };
    const p = plan({ template: oneShot, pods: [pod('s', { phase: 'Succeeded' })] });
    expect(p).toMatchObject({ createPod: false, phase: 'Failed' });
    expect(ready(p).message).toContain(`not replaced (lifecycle.restartPolicy is ${restartPolicy})`);
  },
);

test('a missing template: TemplateNotFound, nothing created, a running pod is left alone', () => {
  const none = plan({ template: undefined, service: undefined });
  expect(none).toMatchObject({ createPod: false, createService: false });
  expect(none.conditions[0]).toMatchObject({
    type: 'TemplateResolved',
    status: 'False',
    reason: 'TemplateNotFound',
  });
  expect(ready(none).reason).toBe('TemplateNotFound');
  const running = plan({ template: undefined, pods: [pod('a', { ready: true })] });
  expect(running).toMatchObject({ deletePods: [], phase: 'Running' });
});

test('a missing Service is created; a foreign one is a conflict', () => {
  expect(plan({ service: undefined }).createService).toBe(true);
  const conflict = plan({ service: undefined, serviceConflict: true, pods: [pod('a', { ready: true })] });
  expect(conflict).toMatchObject({ createService: false, phase: 'Pending' });
  expect(ready(conflict).reason).toBe('ServiceConflict');
});

test('a pod built from an older template is reported, not restarted', () => {
  const p = plan({ pods: [pod('a', { ready: true, hash: 'old' })], desiredSpecHash: 'new' });
  expect(p.deletePods).toEqual([]);
  expect(p.conditions.find((c) => c.type === 'TemplateCurrent')).toMatchObject({
    status: 'False',
    reason: 'TemplateChanged',
  });
});

test("a pod that cannot be built is reported with the builder's reason", () => {
  const p = plan({
    buildError: { reason: 'UnsupportedField', message: 'hostUsers: false needs Kubernetes 1.33' },
  });
  expect(p).toMatchObject({ createPod: false, phase: 'Failed' });
  expect(ready(p)).toMatchObject({
    reason: 'UnsupportedField',
    message: 'hostUsers: false needs Kubernetes 1.33',
  });
});

test('an IPv6 service address is bracketed', () => {
  const v6 = { ...service, spec: { clusterIP: 'fd00::10', ports: [{ port: 1234 }] } };
  expect(plan({ service: v6, pods: [pod('a', { ready: true })] }).endpoint).toBe('tcp://[fd00::10]:1234');
});

describe('conditions', () => {
  const t0 = new Date('2026-01-01T00:00:00Z');
  const t1 = new Date('2026-01-01T00:05:00Z');
  const desired: DesiredCondition[] = [
    { type: CONDITION.Ready, status: 'False', reason: REASON.PodPending, message: 'waiting' },
  ];

  test('transition time moves only when the status changes', () => {
    const first = mergeConditions(undefined, desired, 1, t0);
    const sameStatus = mergeConditions(first, [{ ...desired[0]!, reason: REASON.ContainerNotReady }], 2, t1);
    expect(sameStatus[0]).toMatchObject({
      lastTransitionTime: t0.toISOString(),
      reason: 'ContainerNotReady',
      observedGeneration: 2,
    });
    const flipped = mergeConditions(first, [{ ...desired[0]!, status: 'True' }], 2, t1);
    expect(flipped[0]!.lastTransitionTime).toBe(t1.toISOString());
  });

  test('sameConditions ignores times', () => {
    expect(
      sameConditions(mergeConditions(undefined, desired, 1, t0), mergeConditions(undefined, desired, 1, t1)),
    ).toBe(true);
    expect(
      sameConditions(mergeConditions(undefined, desired, 1, t0), mergeConditions(undefined, desired, 2, t0)),
    ).toBe(false);
  });
});
