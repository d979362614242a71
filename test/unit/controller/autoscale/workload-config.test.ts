import type { V1Service } from '@kubernetes/client-node';

import type { Workload } from '../../../../controller/autoscale/workload-config.ts';
import {
  clientService,
  isOptedIn,
  readWorkloadState,
  replicasOnWake,
  workloadSettings,
  writeWorkloadState,
} from '../../../../controller/autoscale/workload-config.ts';

const POD_LABELS = { app: 'buildkitd', 'buildkit-fleet.io/autoscale': 'enabled' };

const workload = (
  o: { annotations?: Record<string, string>; podAnnotations?: Record<string, string> } = {},
): Workload => ({
  kind: 'StatefulSet',
  metadata: {
    name: 'stack-buildkitd',
    namespace: 'ci',
    ...(o.annotations ? { annotations: o.annotations } : {}),
  },
  spec: {
    replicas: 1,
    selector: { matchLabels: { app: 'buildkitd' } },
    template: {
      metadata: { labels: POD_LABELS, ...(o.podAnnotations ? { annotations: o.podAnnotations } : {}) },
    },
  },
});

const service = (
  name: string,
  selector: Record<string, string> | undefined,
  clusterIP = '10.96.0.10',
): V1Service => ({
  metadata: { name },
  spec: { clusterIP, ...(selector ? { selector } : {}), ports: [{ name: 'buildkitd', port: 1234 }] },
});
const headless = service('stack-buildkitd-headless', { app: 'buildkitd' }, 'None');
const client = service('stack-buildkitd', { app: 'buildkitd' });
const MIN = 30_000;

test('opted in by the pod template label; the inject opt-out or no label is not', () => {
  expect(isOptedIn(workload())).toBe(true);
  expect(isOptedIn(workload({ podAnnotations: { 'buildkit-fleet.io/inject': 'disabled' } }))).toBe(false);
  const plain = workload();
  plain.spec!.template!.metadata!.labels = { app: 'buildkitd' };
  expect(isOptedIn(plain)).toBe(false);
});

test('defaults: 5m idle, the one non-headless Service that selects the pods, replicas from before', () => {
  const r = workloadSettings(workload(), [headless, client, service('other', { app: 'web' })], MIN);
  expect(r).toEqual({
    ok: true,
    settings: {
      idleTimeoutMs: 300_000,
      idleTimeout: '5m',
      serviceName: 'stack-buildkitd',
      service: client,
      wakeReplicas: undefined,
    },
  });
});

test('knobs on the workload win over the pod template', () => {
  const w = workload({
    annotations: { 'buildkit-fleet.io/idle-timeout': '90s', 'buildkit-fleet.io/wake-replicas': '2' },
    podAnnotations: { 'buildkit-fleet.io/idle-timeout': '10m' },
  });
  const r = workloadSettings(w, [client], MIN);
  expect(r.ok && r.settings).toMatchObject({ idleTimeoutMs: 90_000, wakeReplicas: 2 });
  const fromPod = workloadSettings(
    workload({ podAnnotations: { 'buildkit-fleet.io/idle-timeout': '10m' } }),
    [client],
    MIN,
  );
  expect(fromPod.ok && fromPod.settings.idleTimeoutMs).toBe(600_000);
});

test.each([
  [
    { 'buildkit-fleet.io/idle-timeout': 'soon' },
    'annotation buildkit-fleet.io/idle-timeout: "soon" is not a duration',
  ],
  [{ 'buildkit-fleet.io/idle-timeout': '5s' }, '5s is shorter than the minimum of 30s'],
  [
    { 'buildkit-fleet.io/wake-replicas': '0' },
    'annotation buildkit-fleet.io/wake-replicas: "0" is not a whole number from 1 to 1000',
  ],
  [{ 'buildkit-fleet.io/wake-replicas': '1.5' }, 'is not a whole number'],
  [{ 'buildkit-fleet.io/service': 'missing' }, 'Service "missing" does not exist'],
  [
    { 'buildkit-fleet.io/service': 'stack-buildkitd-headless' },
    'is headless, so kube-proxy does not route it',
  ],
  [
    { 'buildkit-fleet.io/service': 'other' },
    'Service other does not select the pods of StatefulSet stack-buildkitd',
  ],
])('a bad knob %j is refused: %s', (annotations, message) => {
  const r = workloadSettings(
    workload({ annotations }),
    [headless, client, service('other', { app: 'web' })],
    MIN,
  );
  expect(r.ok).toBe(false);
  expect(!r.ok && r.error).toContain(message);
});

test('the client Service must have exactly one port', () => {
  const twoPorts: V1Service = {
    metadata: { name: 'stack-buildkitd' },
    spec: {
      clusterIP: '10.96.0.11',
      selector: { app: 'buildkitd' },
      ports: [
        { name: 'metrics', port: 9090 },
        { name: 'buildkitd', port: 8372 },
      ],
    },
  };
  const message =
    "Service stack-buildkitd has 2 ports; the client Service of an autoscaled workload must have exactly one (buildkitd's)";
  expect(clientService(workload(), [twoPorts])).toEqual({ error: message });
  expect(
    clientService(workload({ annotations: { 'buildkit-fleet.io/service': 'stack-buildkitd' } }), [twoPorts]),
  ).toEqual({
    error: message,
  });
});

test('no Service or several: the error says to name one', () => {
  expect(clientService(workload(), [headless])).toEqual({
    error:
      'no Service (other than headless ones) selects the pods of StatefulSet stack-buildkitd; name the client Service with annotation buildkit-fleet.io/service',
  });
  const two = clientService(workload(), [client, service('second', { app: 'buildkitd' })]);
  expect(two).toEqual({
    error:
      'several Services select the pods of StatefulSet stack-buildkitd (second, stack-buildkitd); name the client Service with annotation buildkit-fleet.io/service',
  });
  // a Service without a selector selects nothing
  expect('error' in clientService(workload(), [service('manual', undefined)])).toBe(true);
  expect(
    clientService(workload({ annotations: { 'buildkit-fleet.io/service': 'second' } }), [
      client,
      service('second', { app: 'buildkitd' }),
    ]),
  ).toMatchObject({
    service: { metadata: { name: 'second' } },
  });
});

test('the state annotation round-trips, in a fixed key order', () => {
  const state = {
    wakeStartTime: '2026-12-02T10:05:00.000Z',
    phase: 'Running' as const,
    activatorPort: 20001,
    replicas: 1,
    service: 'stack-buildkitd',
    idleSince: '2026-12-02T10:00:00.000Z',
    idleEvidence: [{ pod: 'stack-buildkitd-0', bootId: 'b1', opened: 3 }],
    scaledToZeroTime: '2026-12-02T09:00:00.000Z',
  };
  const text = writeWorkloadState(state);
  expect(text.indexOf('"phase"')).toBe(1);
  const w = workload({ annotations: { 'buildkit-fleet.io/autoscaling-state': text } });
  expect(readWorkloadState(w)).toEqual({ state });
  expect(writeWorkloadState({ ...state })).toBe(text);
});

test('a hand-edited state: bad fields are dropped, bad JSON starts afresh, both say so', () => {
  const edited = workload({
    annotations: {
      'buildkit-fleet.io/autoscaling-state': JSON.stringify({
        phase: 'Sleeping',
        activatorPort: 70000,
        idleSince: 'yesterday',
        replicas: -1,
        idleEvidence: [{ pod: 'p', bootId: 'b' }],
        scaledToZeroTime: '2026-12-02T09:00:00.000Z',
      }),
    },
  });
  expect(readWorkloadState(edited)).toEqual({ state: { scaledToZeroTime: '2026-12-02T09:00:00.000Z' } });
  const broken = workload({ annotations: { 'buildkit-fleet.io/autoscaling-state': '{not json' } });
  expect(readWorkloadState(broken)).toEqual({
    state: {},
    error: 'annotation buildkit-fleet.io/autoscaling-state is not JSON; starting afresh',
  });
  const array = workload({ annotations: { 'buildkit-fleet.io/autoscaling-state': '[]' } });
  expect(readWorkloadState(array).error).toContain('not a JSON object');
});

test('a wake restores the annotation replicas, else those before the scale-down, else 1', () => {
  const settings = {
    idleTimeoutMs: 1,
    idleTimeout: '1s',
    serviceName: 's',
    service: client,
    wakeReplicas: 3,
  };
  expect(replicasOnWake(settings, { replicas: 2 })).toBe(3);
  expect(replicasOnWake({ ...settings, wakeReplicas: undefined }, { replicas: 2 })).toBe(2);
  expect(replicasOnWake(undefined, {})).toBe(1);
});
