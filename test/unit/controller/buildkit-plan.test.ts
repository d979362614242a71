import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';

import type { BuildkitObservation } from '../../../controller/buildkit-plan.ts';
import { judgeClaim, planBuildkit } from '../../../controller/buildkit-plan.ts';
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

describe('persistence: the claim', () => {
  const labels = {
    'app.kubernetes.io/managed-by': 'buildkit-fleet',
    'buildkit.seatgeek.io/instance': 'bk',
  };
  const owner = (uid: string, name = 'bk', kind = 'Buildkit') => ({
    apiVersion: 'buildkit.seatgeek.io/v1alpha1',
    kind,
    name,
    uid,
    controller: true,
  });
  const claim = (meta: V1PersistentVolumeClaim['metadata'] = {}): V1PersistentVolumeClaim => ({
    metadata: { name: 'bk-cache', labels, ownerReferences: [owner('u1')], ...meta },
  });
  const withClaim = (found: V1PersistentVolumeClaim | undefined, o: Partial<BuildkitObservation> = {}) =>
    plan({ claim: { name: 'bk-cache', found }, ...o });

  test('no persistence: no claim in the plan, nothing changes', () => {
    expect(plan({}).claim).toBeUndefined();
  });

  test('missing: created first, with the pod; the summary says so', () => {
    const p = withClaim(undefined);
    expect(p).toMatchObject({ createPod: true, claim: { name: 'bk-cache', create: true } });
    expect(p.summary).toBe('Pending/PodCreating: create claim bk-cache, create pod');
  });

  test('owned by this Buildkit: mounted, listed, not created again', () => {
    expect(withClaim(claim())).toMatchObject({ createPod: true, claim: { name: 'bk-cache', create: false } });
    const running = withClaim(claim(), { pods: [pod('a', { ready: true })] });
    expect(running).toMatchObject({ createPod: false, phase: 'Running', claim: { create: false } });
  });

  test('retained (no owner, labelled for this Buildkit): re-adopted, i.e. mounted again', () => {
    const retained = claim({ ownerReferences: undefined });
    expect(withClaim(retained)).toMatchObject({
      createPod: true,
      claim: { name: 'bk-cache', create: false },
    });
    expect(judgeClaim({ name: 'bk-cache', found: retained }, buildkit)).toEqual({ usable: true });
    // a non-controller owner reference does not make it somebody else's
    const extra = claim({ ownerReferences: [{ ...owner('x', 'job', 'Pod'), controller: false }] });
    expect(judgeClaim({ name: 'bk-cache', found: extra }, buildkit).usable).toBe(true);
  });

  test.each([
    ['no labels at all (a user claim)', claim({ labels: undefined, ownerReferences: undefined })],
    [
      'labelled for another Buildkit',
      claim({ labels: { ...labels, 'buildkit.seatgeek.io/instance': 'other' }, ownerReferences: undefined }),
    ],
    [
      'not managed by buildkit-fleet',
      claim({ labels: { 'buildkit.seatgeek.io/instance': 'bk' }, ownerReferences: undefined }),
    ],
  ])('%s: a conflict; no pod is created and nothing is adopted', (_name, found) => {
    const p = withClaim(found);
    expect(p).toMatchObject({ createPod: false, phase: 'Pending', claim: undefined });
    expect(ready(p)).toEqual({
      type: 'Ready',
      status: 'False',
      reason: 'ClaimConflict',
      message:
        'PersistentVolumeClaim bk-cache exists and is not labelled for this Buildkit; delete or rename it',
    });
  });

  test('controlled by something else: a conflict that names it', () => {
    const p = withClaim(claim({ ownerReferences: [owner('s1', 'db', 'StatefulSet')] }));
    expect(p.createPod).toBe(false);
    expect(ready(p)).toMatchObject({
      reason: 'ClaimConflict',
      message:
        'PersistentVolumeClaim bk-cache is controlled by StatefulSet db, not this Buildkit; delete or rename it',
    });
  });

  test("an earlier Buildkit of the same name (another uid) still owns it: wait for Kubernetes' garbage collector", () => {
    const p = withClaim(claim({ ownerReferences: [owner('u0')] }));
    expect(p.createPod).toBe(false);
    expect(ready(p)).toMatchObject({
      reason: 'ClaimConflict',
      message: expect.stringContaining(
        'belongs to an earlier Buildkit of this name (uid u0); waiting for Kubernetes',
      ),
    });
  });

  test('being deleted: wait for it to go, then a new one is created', () => {
    const p = withClaim(claim({ deletionTimestamp: new Date() }));
    expect(p).toMatchObject({ createPod: false, claim: undefined });
    expect(ready(p)).toMatchObject({ reason: 'ClaimTerminating' });
  });

  test('refused by the API server: ClaimFailed with its message, no pod', () => {
    const p = plan({
      claim: { name: 'bk-cache', found: undefined, createError: 'persistentvolumeclaims is forbidden' },
    });
    expect(p).toMatchObject({ createPod: false, claim: undefined });
    expect(ready(p)).toMatchObject({
      reason: 'ClaimFailed',
      message: 'cannot create PersistentVolumeClaim bk-cache: persistentvolumeclaims is forbidden',
    });
  });

  test('a blocked claim never touches a running pod', () => {
    const p = withClaim(claim({ labels: undefined, ownerReferences: undefined }), {
      pods: [pod('a', { ready: true })],
    });
    expect(p).toMatchObject({ createPod: false, deletePods: [], phase: 'Running' });
    expect(ready(p).reason).toBe('Running');
  });

  test('no claim is created while there is nothing to mount it (missing template, build error)', () => {
    expect(withClaim(undefined, { template: undefined }).claim).toBeUndefined();
    const failed = withClaim(undefined, { buildError: { reason: 'UnsupportedField', message: 'x' } });
    expect(failed).toMatchObject({ createPod: false, claim: undefined });
  });
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
