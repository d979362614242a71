import {
  decideRouteHandback,
  serviceRouteState,
  activatorSliceName,
  allocateActivatorPort,
  buildActivatorSlice,
  sliceRoutesAs,
} from '../../../../controller/autoscale/activator-route.ts';

test('the activator slice belongs to the Service by label, names the Service port and lists the activators', () => {
  const slice = buildActivatorSlice({
    namespace: 'ci',
    serviceName: 'bk-a',
    portName: 'buildkitd',
    activatorPort: 20001,
    addresses: ['10.0.0.9', '10.0.0.2'],
  });
  expect(slice).toEqual({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: 'bk-a-bkf-activator',
      namespace: 'ci',
      labels: {
        'kubernetes.io/service-name': 'bk-a',
        'endpointslice.kubernetes.io/managed-by': 'activator.buildkit-fleet.io',
        'app.kubernetes.io/managed-by': 'buildkit-fleet',
      },
    },
    addressType: 'IPv4',
    endpoints: [
      { addresses: ['10.0.0.2'], conditions: { ready: true, serving: true, terminating: false } },
      { addresses: ['10.0.0.9'], conditions: { ready: true, serving: true, terminating: false } },
    ],
    ports: [{ name: 'buildkitd', port: 20001, protocol: 'TCP' }],
  });
});

test('an IPv6 activator gets an IPv6 slice', () => {
  expect(
    buildActivatorSlice({
      namespace: 'ci',
      serviceName: 's',
      portName: '',
      activatorPort: 1,
      addresses: ['fd00::1'],
    }).addressType,
  ).toBe('IPv6');
});

test('slice names stay within the limit', () => {
  expect(activatorSliceName('x'.repeat(253)).length).toBe(253);
});

test('sliceRoutesAs compares addresses and ports only', () => {
  const want = buildActivatorSlice({
    namespace: 'ci',
    serviceName: 's',
    portName: 'p',
    activatorPort: 20000,
    addresses: ['10.0.0.1'],
  });
  expect(sliceRoutesAs(undefined, want)).toBe(false);
  expect(sliceRoutesAs({ ...want, metadata: { name: 'other', resourceVersion: '9' } }, want)).toBe(true);
  expect(sliceRoutesAs({ ...want, ports: [{ name: 'p', port: 20001 }] }, want)).toBe(false);
  expect(sliceRoutesAs({ ...want, endpoints: [] }, want)).toBe(false);
});

test('allocateActivatorPort takes the lowest free port of the range', () => {
  expect(allocateActivatorPort({ first: 20000, last: 20002 }, new Set([20000, 20002]))).toBe(20001);
  expect(allocateActivatorPort({ first: 20000, last: 20001 }, new Set([20000, 20001]))).toBeUndefined();
});

describe("the Service's slices, for handing the route back", () => {
  const activatorSlice = buildActivatorSlice({
    namespace: 'ci',
    serviceName: 'bk',
    portName: 'buildkitd',
    activatorPort: 20000,
    addresses: ['10.0.0.1'],
  });
  const controllerSlice = (ready: boolean | undefined, ip = '10.244.0.5', ports = [{ port: 1234 }]) => ({
    metadata: { name: 'bk-abcde', labels: { 'kubernetes.io/service-name': 'bk' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ip], conditions: ready === undefined ? {} : { ready } }],
    ports,
  });

  test('the activator slice alone: routed, the pod not served', () => {
    expect(serviceRouteState([activatorSlice], ['10.244.0.5'])).toEqual({
      activatorRouted: true,
      podServed: false,
    });
  });

  test("the controller's slice listing the ready pod serves it (ready unset counts as ready)", () => {
    expect(serviceRouteState([activatorSlice, controllerSlice(true)], ['10.244.0.5']).podServed).toBe(true);
    expect(serviceRouteState([controllerSlice(undefined)], ['10.244.0.5'])).toEqual({
      activatorRouted: false,
      podServed: true,
    });
  });

  test('a not-ready endpoint, another address or a slice without ports does not serve it', () => {
    const ips = ['10.244.0.5'];
    expect(serviceRouteState([controllerSlice(false)], ips).podServed).toBe(false);
    expect(serviceRouteState([controllerSlice(true, '10.244.0.9')], ips).podServed).toBe(false);
    expect(serviceRouteState([controllerSlice(true, '10.244.0.5', [])], ips).podServed).toBe(false);
    // the activator slice lists the activators as ready; it never counts as the pod's
    expect(serviceRouteState([activatorSlice], ['10.0.0.1']).podServed).toBe(false);
  });

  const decide = (
    state: { activatorRouted: boolean; podServed: boolean },
    waitedMs = 0,
    hasSelector = true,
  ) => decideRouteHandback({ state, hasSelector, waitedMs, maxWaitMs: 30_000 });

  test('decideRouteHandback: each case with its reason', () => {
    expect(decide({ activatorRouted: false, podServed: false })).toEqual({
      action: 'none',
      reason: 'the Service routes to the pod',
    });
    expect(decide({ activatorRouted: true, podServed: true })).toEqual({
      action: 'remove',
      reason: "the Service's endpoints list the ready pod",
    });
    expect(decide({ activatorRouted: true, podServed: false })).toEqual({
      action: 'wait',
      reason: "waiting for the Service's endpoints to list the ready pod",
    });
    expect(decide({ activatorRouted: true, podServed: false }, 0, false)).toEqual({
      action: 'remove',
      reason: 'the Service has no selector: no endpoints to wait for',
    });
    expect(decide({ activatorRouted: true, podServed: false }, 30_000)).toEqual({
      action: 'remove',
      reason: "the Service's endpoints did not list the ready pod within 30s",
      gaveUp: true,
    });
  });
});
