import type { ServerFeatures } from '../../../kube/server-features.ts';
import {
  featuresFromVersionInfo,
  parseServerVersion,
  serverFeatures,
} from '../../../kube/server-features.ts';

describe('parseServerVersion', () => {
  test.each<[string, Parameters<typeof parseServerVersion>[0], { major: number; minor: number } | undefined]>(
    [
      [
        'the local control plane',
        { major: '1', minor: '20', gitVersion: 'v1.20.2' },
        { major: 1, minor: 20 },
      ],
      ['EKS', { major: '1', minor: '31+', gitVersion: 'v1.31.1-eks-a737599' }, { major: 1, minor: 31 }],
      ['GKE', { major: '1', minor: '30', gitVersion: 'v1.30.5-gke.1014001' }, { major: 1, minor: 30 }],
      ['k3s', { major: '1', minor: '29', gitVersion: 'v1.29.4+k3s1' }, { major: 1, minor: 29 }],
      ['a pre-release', { gitVersion: 'v1.33.0-alpha.1' }, { major: 1, minor: 33 }],
      ['no patch', { gitVersion: 'v1.28' }, { major: 1, minor: 28 }],
      ['minor with "+", no gitVersion', { major: '1', minor: '28+' }, { major: 1, minor: 28 }],
      [
        'bad gitVersion, good major/minor',
        { major: '1', minor: '27', gitVersion: 'unknown' },
        { major: 1, minor: 27 },
      ],
      ['a string', 'v1.31.1-eks-a737599', { major: 1, minor: 31 }],
      ['a string without v', '1.20.2', { major: 1, minor: 20 }],
      ['surrounding space', ' v1.24.0 ', { major: 1, minor: 24 }],
      ['nothing', undefined, undefined],
      ['empty', {}, undefined],
      ['garbage', { major: 'x', minor: 'y', gitVersion: 'z' }, undefined],
      ['no minor', { major: '1' }, undefined],
      ['a number-like word', 'v1.2x', undefined],
    ],
  )('%s', (_name, input, expected) => {
    expect(parseServerVersion(input)).toEqual(expected);
  });
});

describe('serverFeatures', () => {
  const at = (minor: number, major = 1): ServerFeatures => serverFeatures({ major, minor });

  test('1.20 (the local control plane): only the seccomp field', () => {
    expect(at(20)).toEqual({
      version: { major: 1, minor: 20 },
      grpcProbes: false,
      nativeSidecars: false,
      appArmorField: false,
      seccompField: true,
      hostUsers: false,
      hostUsersBehindGate: false,
      endpointSliceVersion: 'v1beta1',
      supported: true,
    });
  });

  test('1.31 (a current cluster): everything but user namespaces by default', () => {
    expect(at(31)).toEqual({
      version: { major: 1, minor: 31 },
      grpcProbes: true,
      nativeSidecars: true,
      appArmorField: true,
      seccompField: true,
      hostUsers: false,
      hostUsersBehindGate: true,
      endpointSliceVersion: 'v1',
      supported: true,
    });
  });

  test.each<[keyof ServerFeatures, number, number]>([
    // feature, last minor without, first minor with
    ['grpcProbes', 23, 24],
    ['nativeSidecars', 28, 29],
    ['appArmorField', 29, 30],
    ['seccompField', 18, 19],
    ['hostUsers', 32, 33],
    ['supported', 19, 20],
  ])('%s: absent in 1.%i, present in 1.%i', (feature, without, withIt) => {
    expect(at(without)[feature]).toBe(false);
    expect(at(withIt)[feature]).toBe(true);
  });

  test('hostUsers is behind a default-off gate from 1.25 to 1.32', () => {
    expect([24, 25, 32, 33].map((minor) => at(minor).hostUsersBehindGate)).toEqual([
      false,
      true,
      true,
      false,
    ]);
  });

  test('a later major version has everything', () => {
    const features = at(0, 2);
    expect(features.grpcProbes && features.appArmorField && features.hostUsers).toBe(true);
    expect(features.hostUsersBehindGate).toBe(false);
  });

  test('an unknown version gets the oldest supported server (1.20) features', () => {
    expect(serverFeatures(undefined)).toEqual(at(20));
    expect(featuresFromVersionInfo({ gitVersion: '???' })).toEqual(at(20));
  });

  test('featuresFromVersionInfo reads /version', () => {
    expect(featuresFromVersionInfo({ major: '1', minor: '31+', gitVersion: 'v1.31.1-eks-a737599' })).toEqual(
      at(31),
    );
  });
});
