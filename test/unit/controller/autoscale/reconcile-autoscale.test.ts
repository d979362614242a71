// The autoscale step around a fence that aborts: the reconciles its own writes set off must not
// fence again on the same decision (they used to, several times within 100 ms, each re-routing the
// Service); a fresh decision from the idle scaler may.
import { KubeConfig } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import type { IdleDecision } from '../../../../controller/autoscale/idle-decision.ts';
import type { IdleScaler } from '../../../../controller/autoscale/idle-scaler.ts';
import type { AutoscaleContext } from '../../../../controller/autoscale/reconcile-autoscale.ts';
import { autoscaleReconciler } from '../../../../controller/autoscale/reconcile-autoscale.ts';

const POD: V1Pod = {
  metadata: { name: 'bk-0', uid: 'u1' },
  // no sidecar stats port: the fence cannot be set, so the scale-down aborts at its first step
  status: { phase: 'Running', podIP: '10.244.0.5', conditions: [{ type: 'Ready', status: 'True' }] },
};

const decision = (): IdleDecision => ({
  scaleDown: true,
  reason: 'ScalingDown',
  message: 'idle 6s of 5s: scaling to zero',
  record: { idleSince: '2026-12-02T10:00:00.000Z', idleEvidence: [{ pod: 'bk-0', bootId: 'b', opened: 1 }] },
  lastActivity: undefined,
});

function setup() {
  let current = decision();
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: 'https://127.0.0.1:9' }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  const events: string[] = [];
  const routes: string[] = [];
  const step = autoscaleReconciler({
    kc,
    logger: pino({ level: 'silent' }),
    events: { record: (_ref, _type, reason) => events.push(reason) },
    registry: new Registry(),
    tokens: { ensure: async () => 'token' },
    routes: {
      ensure: async () => (routes.push('activators'), true),
      remove: async () => (routes.push('pod'), true),
    },
    activator: { addresses: ['10.0.0.1'], ports: { first: 20000, last: 20010 } },
    routeAddresses: () => ['10.0.0.1'],
    scaler: () => ({ decision: () => current }) as unknown as IdleScaler,
    takenPorts: () => [],
    settleMs: 0,
    requestTimeoutMs: 200,
    now: () => new Date('2026-12-02T10:00:06Z'),
  });
  const ctx: AutoscaleContext = {
    target: {
      kind: 'Buildkit',
      apiVersion: 'buildkit.seatgeek.io/v1alpha1',
      namespace: 'ci',
      name: 'bk',
      uid: 'b1',
      record: { activatorPort: 20000 },
      phase: 'Running',
      wakeRequested: false,
    },
    pods: [POD],
    service: { metadata: { name: 'bk' }, spec: { ports: [{ name: 'buildkitd', port: 1234 }] } },
    ref: { kind: 'Buildkit', namespace: 'ci', name: 'bk' },
    writes: {
      deletesPods: true,
      clearWakeRequest: async () => undefined,
      recordZero: async () => {
        throw new Error('must not be reached');
      },
    },
  };
  return { step, ctx, events, routes, renew: () => (current = decision()) };
}

test('after an abort the same decision fences no more; a fresh one may', async () => {
  const { step, ctx, events, renew } = setup();
  const first = await step.prepare(ctx);
  expect(first.scaleDown).toBe(true);
  expect(await step.scaleDown(ctx, first)).toBe(false);
  expect(events).toEqual(['ScaleDownAborted']);

  // the reconciles the abort set off (status write, route) see the same decision
  for (let i = 0; i < 3; i++) {
    const again = await step.prepare(ctx);
    expect(again.scaleDown).toBe(false);
    expect(again.condition).toMatchObject({
      reason: 'AwaitingFreshStats',
      message: 'the last scale-down was aborted: waiting for fresh sidecar readings',
    });
  }

  renew(); // the idle scaler's next reading
  expect((await step.prepare(ctx)).scaleDown).toBe(true);
});
