import { isWorkloadKey, parseTargetKey, targetKey } from '../../../../controller/autoscale/target-kinds.ts';

test('a Buildkit keeps its queue key; a workload key names its kind', () => {
  expect(targetKey({ kind: 'Buildkit', namespace: 'ci', name: 'bk' })).toBe('ci/bk');
  expect(targetKey({ kind: 'StatefulSet', namespace: 'ci', name: 'buildkitd' })).toBe(
    'StatefulSet/ci/buildkitd',
  );
  expect(parseTargetKey('ci/bk')).toEqual({ kind: 'Buildkit', namespace: 'ci', name: 'bk' });
  expect(parseTargetKey('Deployment/ci/bkd')).toEqual({ kind: 'Deployment', namespace: 'ci', name: 'bkd' });
  expect(isWorkloadKey('Deployment/ci/bkd')).toBe(true);
  expect(isWorkloadKey('ci/bk')).toBe(false);
});

test('anything else is refused, naming the key', () => {
  expect(() => parseTargetKey('DaemonSet/ci/x')).toThrow('not a target key: "DaemonSet/ci/x"');
  expect(() => parseTargetKey('a/b/c/d')).toThrow('not a target key');
  expect(() => parseTargetKey('justaname')).toThrow('not a target key');
});
