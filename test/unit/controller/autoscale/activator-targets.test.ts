import type { V1Pod, V1Service } from '@kubernetes/client-node';

import { activatorTargets, servicePodPort } from '../../../../controller/autoscale/activator-targets.ts';

const service: V1Service = {
  spec: { ports: [{ name: 'buildkitd', port: 1234, targetPort: 'buildkitd' as unknown as never }] },
};
const pod = (
  name: string,
  o: { ready?: boolean; ip?: string; created?: string; deleting?: boolean } = {},
): V1Pod => ({
  metadata: {
    name,
    uid: `uid-${name}`,
    creationTimestamp: new Date(o.created ?? '2026-12-01T00:00:00Z'),
    ...(o.deleting ? { deletionTimestamp: new Date() } : {}),
  },
  spec: {
    containers: [{ name: 'buildkit-fleet-sidecar', ports: [{ name: 'buildkitd', containerPort: 1234 }] }],
  },
  status: {
    phase: 'Running',
    podIP: o.ip ?? '10.0.0.5',
    conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
  },
});

test('a target forwards to its running pod once buildkitd is confirmed serving, Ready or not; otherwise it holds', () => {
  const sources = [
    { key: 'ci/a', activatorPort: 20001, pods: [pod('a-0')], service },
    { key: 'ci/b', activatorPort: 20000, pods: [pod('b-0', { ready: false })], service },
    { key: 'ci/c', activatorPort: 20002, pods: [pod('c-0')], service },
    { key: 'ci/d', activatorPort: 20003, pods: [], service },
    { key: 'ci/e', activatorPort: undefined, pods: [pod('e-0')], service },
  ];
  expect(activatorTargets(sources, new Set(['uid-a-0', 'uid-b-0']))).toEqual([
    // not Ready yet, but its buildkitd answered: the kubelet's next probe tick is not waited for
    { key: 'ci/b', port: 20000, mode: { kind: 'forward', upstream: { host: '10.0.0.5', port: 1234 } } },
    { key: 'ci/a', port: 20001, mode: { kind: 'forward', upstream: { host: '10.0.0.5', port: 1234 } } },
    { key: 'ci/c', port: 20002, mode: { kind: 'hold' } }, // ready but not confirmed yet
    { key: 'ci/d', port: 20003, mode: { kind: 'hold' } },
  ]);
  // a pod without an address is held for, confirmed or not
  const pending = { ...pod('p-0'), status: { phase: 'Pending' } };
  expect(
    activatorTargets([{ key: 'ci/p', activatorPort: 20009, pods: [pending], service }], new Set(['uid-p-0'])),
  ).toEqual([{ key: 'ci/p', port: 20009, mode: { kind: 'hold' } }]);
  // Pending with an address (the kubelet reports it before the containers run): once its
  // buildkitd answers it is forwarded to; an ended pod never is
  const addressed = { ...pod('q-0'), status: { phase: 'Pending', podIP: '10.0.0.8' } };
  const ended = { ...pod('r-0'), status: { phase: 'Failed', podIP: '10.0.0.9' } };
  expect(
    activatorTargets(
      [
        { key: 'ci/q', activatorPort: 20010, pods: [addressed], service },
        { key: 'ci/r', activatorPort: 20011, pods: [ended], service },
      ],
      new Set(['uid-q-0', 'uid-r-0']),
    ),
  ).toEqual([
    { key: 'ci/q', port: 20010, mode: { kind: 'forward', upstream: { host: '10.0.0.8', port: 1234 } } },
    { key: 'ci/r', port: 20011, mode: { kind: 'hold' } },
  ]);
});

test('a terminating pod is never forwarded to; a Ready pod goes first, then the older one', () => {
  const sources = [
    {
      key: 'ci/a',
      activatorPort: 20000,
      pods: [pod('a-1', { created: '2026-12-01T01:00:00Z', ip: '10.0.0.7' }), pod('a-0', { ip: '10.0.0.6' })],
      service,
    },
    { key: 'ci/b', activatorPort: 20001, pods: [pod('b-0', { deleting: true })], service },
    {
      key: 'ci/c',
      activatorPort: 20002,
      pods: [
        pod('c-0', { ready: false, ip: '10.0.0.8' }),
        pod('c-1', { created: '2026-12-01T02:00:00Z', ip: '10.0.0.9' }),
      ],
      service,
    },
  ];
  expect(activatorTargets(sources, new Set(['uid-a-0', 'uid-a-1', 'uid-b-0', 'uid-c-0', 'uid-c-1']))).toEqual(
    [
      { key: 'ci/a', port: 20000, mode: { kind: 'forward', upstream: { host: '10.0.0.6', port: 1234 } } },
      { key: 'ci/b', port: 20001, mode: { kind: 'hold' } },
      { key: 'ci/c', port: 20002, mode: { kind: 'forward', upstream: { host: '10.0.0.9', port: 1234 } } },
    ],
  );
});

test('two targets claiming one port: the first keeps it, so the set stays valid', () => {
  const sources = [
    { key: 'ci/a', activatorPort: 20000, pods: [], service },
    { key: 'ci/b', activatorPort: 20000, pods: [], service },
  ];
  expect(activatorTargets(sources, new Set()).map((t) => t.key)).toEqual(['ci/a']);
});

test('servicePodPort takes a numeric targetPort as it is', () => {
  expect(
    servicePodPort({ spec: { ports: [{ port: 80, targetPort: 8080 as unknown as never }] } }, pod('x')),
  ).toBe(8080);
  expect(servicePodPort({ spec: { ports: [{ port: 80 }] } }, pod('x'))).toBe(80);
});
