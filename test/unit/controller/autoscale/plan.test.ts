import type { V1Pod } from '@kubernetes/client-node';

import type { Condition } from '../../../../api/types.generated.ts';

import { CONDITION, REASON } from '../../../../api/conditions.ts';
import type { AutoscaleObservation } from '../../../../controller/autoscale/plan.ts';
import { isAtZero, planAutoscale, zeroConditions } from '../../../../controller/autoscale/plan.ts';
import { decideIdle } from '../../../../controller/autoscale/idle-decision.ts';

const NOW = Date.parse('2026-12-01T12:00:00Z');
const pod: V1Pod = { metadata: { name: 'bk-0' } };

const observe = (o: Partial<AutoscaleObservation> = {}): AutoscaleObservation => ({
  nowMs: NOW,
  record: { activatorPort: 20000 },
  phase: 'Running',
  wakeRequested: false,
  pods: [pod],
  ready: true,
  decision: undefined,
  activatorPort: 20000,
  ...o,
});

const zero = { activatorPort: 20000, scaledToZeroTime: '2026-12-01T11:00:00.000Z' };

test('at zero and nobody asks: no pod, ScaledToZero, Service routed to the activators', () => {
  const p = planAutoscale(observe({ record: zero, phase: 'ScaledToZero', pods: [], ready: false }));
  expect(p).toMatchObject({
    state: 'zero',
    phase: 'ScaledToZero',
    mayHavePod: false,
    routeToActivator: true,
    scaleDown: false,
  });
  expect(p.condition).toEqual({
    type: CONDITION.Active,
    status: 'False',
    reason: REASON.ScaledToZero,
    message: 'scaled to zero at 2026-12-01T11:00:00.000Z; a client connecting to the endpoint wakes it',
  });
});

test('a wake request at zero starts one wake: the pod may come back, clients stay with the activators', () => {
  const p = planAutoscale(
    observe({ record: zero, phase: 'ScaledToZero', pods: [], ready: false, wakeRequested: true }),
  );
  expect(p).toMatchObject({
    state: 'waking',
    phase: 'Waking',
    mayHavePod: true,
    routeToActivator: true,
    wakeStarts: true,
  });
  expect(p.record.wakeStartTime).toBe('2026-12-01T12:00:00.000Z');
  expect(isAtZero(p.record)).toBe(false);
  // the next reconcile, pod not ready yet: still waking, no second wake
  const next = planAutoscale(
    observe({ record: p.record, phase: 'Waking', pods: [pod], ready: false, wakeRequested: true }),
  );
  expect(next).toMatchObject({ state: 'waking', phase: 'Waking', wakeStarts: false, routeToActivator: true });
  // ready: awake, the Service goes back to the pod, the request is cleared
  const up = planAutoscale(observe({ record: p.record, phase: 'Waking', wakeRequested: true }));
  expect(up).toMatchObject({ state: 'awake', routeToActivator: false, clearWakeRequest: true });
  expect(up.phase).toBeUndefined();
});

test('a pod that outlived an interrupted scale-down ends the zero state instead of being ignored', () => {
  const p = planAutoscale(observe({ record: zero, phase: 'ScaledToZero' }));
  expect(p).toMatchObject({ state: 'waking', phase: 'Running', mayHavePod: true, wakeStarts: true });
  expect(p.condition.message).toBe('waking: a pod still runs after an interrupted scale-down');
});

test('awake: the idle decision is the Active condition and the record; it scales down only with a ready pod', () => {
  const decision = decideIdle({
    nowMs: NOW,
    idleTimeoutMs: 0,
    pods: ['bk-0'],
    readings: new Map([
      ['bk-0', { ok: true, readAtMs: NOW, stats: { bootId: 'b', open: 0, opened: 1, lastActivity: null } }],
    ]),
    maxReadingAgeMs: 1000,
    record: undefined,
  });
  const p = planAutoscale(observe({ decision }));
  expect(p).toMatchObject({ state: 'awake', scaleDown: true, routeToActivator: false });
  expect(p.record).toMatchObject({ activatorPort: 20000, idleSince: '2026-12-01T12:00:00.000Z' });
  expect(p.condition).toMatchObject({ status: 'True', reason: REASON.ScalingDown });
  expect(planAutoscale(observe({ decision, ready: false })).scaleDown).toBe(false);
  // a decision about another pod (made before a wake) never scales the new one down
  expect(planAutoscale(observe({ decision, pods: [{ metadata: { name: 'bk-1' } }] })).scaleDown).toBe(false);
});

test('awake without a ready pod holds clients at the activators; without a reading it waits', () => {
  const p = planAutoscale(observe({ ready: false, pods: [] }));
  expect(p).toMatchObject({ routeToActivator: true, scaleDown: false });
  expect(p.condition).toMatchObject({ reason: REASON.AwaitingFreshStats });
});

test('the scale-down records Ready and Active as scaled to zero, keeping the other conditions in place', () => {
  const previous: Condition[] = [
    { type: 'TemplateResolved', status: 'True', reason: 'TemplateFound', message: 't' },
    { type: 'Ready', status: 'True', reason: 'Running', message: 'r' },
    { type: 'Active', status: 'True', reason: 'ScalingDown', message: 'a' },
  ];
  const message = 'scaled to zero at 2026-12-01T12:00:00.000Z; a client connecting to the endpoint wakes it';
  expect(zeroConditions(previous, '2026-12-01T12:00:00.000Z')).toEqual([
    { type: 'TemplateResolved', status: 'True', reason: 'TemplateFound', message: 't' },
    { type: 'Ready', status: 'False', reason: 'ScaledToZero', message },
    { type: 'Active', status: 'False', reason: 'ScaledToZero', message },
  ]);
  expect(zeroConditions([], 'T').map((c) => c.type)).toEqual(['Active']);
});

test('a wake whose status write the cache has not shown yet stays Waking, not Pending', () => {
  // the leader's own record (wake after zero) merged over a cached status that still says ScaledToZero
  const woken = { ...zero, wakeStartTime: '2026-12-01T11:59:59.000Z' };
  const p = planAutoscale(observe({ record: woken, phase: 'ScaledToZero', pods: [pod], ready: false }));
  expect(p).toMatchObject({ state: 'waking', phase: 'Waking', wakeStarts: false, routeToActivator: true });
  // once the pod is ready it is awake, and the reconcile records Woke (the phase it leaves is Waking)
  const ready = planAutoscale(observe({ record: woken, phase: 'Waking', pods: [pod], ready: true }));
  expect(ready.state).toBe('awake');
});
