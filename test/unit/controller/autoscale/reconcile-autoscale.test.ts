// The autoscale step around a fence that aborts: the reconciles its own writes set off must not
// fence again on the same decision (they used to, several times within 100 ms, each re-routing the
// Service); a fresh decision from the idle scaler may. And the route back to a ready pod: not
// before the Service's own endpoints list it (taking the route away earlier left kube-proxy with
// no endpoint, and it refused connections).
import { KubeConfig } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import type { IdleDecision } from '../../../../controller/autoscale/idle-decision.ts';
import type { IdleScaler } from '../../../../controller/autoscale/idle-scaler.ts';
import type { ServiceRouteState } from '../../../../controller/autoscale/activator-route.ts';
import type { AutoscaleContext } from '../../../../controller/autoscale/reconcile-autoscale.ts';
import {
  ROUTE_HANDBACK_MAX_MS,
  autoscaleReconciler,
} from '../../../../controller/autoscale/reconcile-autoscale.ts';

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

const awake = (): IdleDecision => ({
  scaleDown: false,
  reason: 'OpenConnections',
  message: '1 open connection',
  record: {},
  lastActivity: undefined,
});

function setup(make: () => IdleDecision = decision) {
  let current = make();
  let nowMs = Date.parse('2026-12-02T10:00:06Z');
  const routeState: ServiceRouteState = { activatorRouted: true, podServed: false };
  const asked: string[][] = [];
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
      state: async (_ns, _svc, podIPs) => (asked.push(podIPs), { ...routeState }),
    },
    activator: { addresses: ['10.0.0.1'], ports: { first: 20000, last: 20010 } },
    routeAddresses: () => ['10.0.0.1'],
    scaler: () => ({ decision: () => current }) as unknown as IdleScaler,
    takenPorts: () => [],
    settleMs: 0,
    requestTimeoutMs: 200,
    now: () => new Date(nowMs),
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
    service: {
      metadata: { name: 'bk' },
      spec: { selector: { app: 'bk' }, ports: [{ name: 'buildkitd', port: 1234 }] },
    },
    ref: { kind: 'Buildkit', namespace: 'ci', name: 'bk' },
    writes: {
      deletesPods: true,
      clearWakeRequest: async () => undefined,
      recordZero: async () => {
        throw new Error('must not be reached');
      },
    },
  };
  return {
    step,
    ctx,
    events,
    routes,
    routeState,
    asked,
    renew: () => (current = make()),
    advance: (ms: number) => (nowMs += ms),
  };
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

describe('the route back to a ready pod', () => {
  test("stays until the Service's endpoints list the pod, then goes once", async () => {
    const { step, ctx, routes, routeState, asked } = setup(awake);
    const waiting = await step.prepare(ctx);
    expect(waiting.routeToActivator).toBe(false);
    expect(waiting.routeWaiting).toBe("waiting for the Service's endpoints to list the ready pod");
    expect(routes).toEqual([]);
    expect(asked).toEqual([['10.244.0.5']]);

    routeState.podServed = true;
    const served = await step.prepare(ctx);
    expect(served.routeWaiting).toBeUndefined();
    expect(routes).toEqual(['pod']);

    await step.prepare(ctx); // routed to the pod already: nothing to look up or remove
    expect(routes).toEqual(['pod']);
    expect(asked).toHaveLength(2);
  });

  test('no route in place: nothing removed, nothing waited for', async () => {
    const { step, ctx, routes, routeState } = setup(awake);
    routeState.activatorRouted = false;
    const plan = await step.prepare(ctx);
    expect(plan.routeWaiting).toBeUndefined();
    expect(routes).toEqual([]);
  });

  test('a Service without a selector has no endpoints to wait for', async () => {
    const { step, ctx, routes } = setup(awake);
    delete ctx.service!.spec!.selector;
    expect((await step.prepare(ctx)).routeWaiting).toBeUndefined();
    expect(routes).toEqual(['pod']);
  });

  test('a wait that outlasts its bound ends with the route removed', async () => {
    const { step, ctx, routes, advance } = setup(awake);
    expect((await step.prepare(ctx)).routeWaiting).toBeDefined();
    advance(ROUTE_HANDBACK_MAX_MS - 1);
    expect((await step.prepare(ctx)).routeWaiting).toBeDefined();
    expect(routes).toEqual([]);
    advance(1);
    expect((await step.prepare(ctx)).routeWaiting).toBeUndefined();
    expect(routes).toEqual(['pod']);
  });

  test('a pod that is not ready yet keeps the route without asking', async () => {
    const { step, ctx, routes, asked } = setup(awake);
    ctx.pods = [{ ...POD, status: { ...POD.status, conditions: [{ type: 'Ready', status: 'False' }] } }];
    ctx.target.phase = 'Waking';
    const plan = await step.prepare(ctx);
    expect(plan.routeToActivator).toBe(true);
    expect(routes).toEqual(['activators']);
    expect(asked).toEqual([]);
  });
});
