import {
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
