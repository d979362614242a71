import type { V1ResourceRequirements } from '@kubernetes/client-node';

import type { ResourceLayer } from '../../../api/resources.ts';
import {
  applyMaximums,
  isOvercommittable,
  mergeResources,
  ResourceQuantityError,
} from '../../../api/resources.ts';

type List = Record<string, string | number>;
const req = (requests?: List, limits?: List): V1ResourceRequirements =>
  ({
    ...(requests ? { requests } : {}),
    ...(limits ? { limits } : {}),
  }) as V1ResourceRequirements;
const layers = (...desired: V1ResourceRequirements[]): ResourceLayer[] =>
  desired.map((requirements, i) => ({ source: `layer${i}`, requirements }));

// seatgeek's TestApplyMaximums table (internal/controllers/buildkit/resources/merge_test.go),
// re-expressed: `modified` is "anything clamped or filled".
describe('applyMaximums: seatgeek ApplyMaximums cases', () => {
  test.each<[string, List, V1ResourceRequirements[], V1ResourceRequirements, boolean]>([
    ['nil desired requirements', {}, [], {}, false],
    ['empty desired requirements', {}, [{}], {}, false],
    [
      'single desired within limits',
      { cpu: '2', memory: '4Gi' },
      [req({ cpu: '500m', memory: '1Gi' }, { cpu: '1', memory: '2Gi' })],
      req({ cpu: '500m', memory: '1Gi' }, { cpu: '1', memory: '2Gi' }),
      false,
    ],
    [
      'limits exceed maximum - reduced',
      { cpu: '2', memory: '4Gi' },
      [req({ cpu: '500m', memory: '1Gi' }, { cpu: '4', memory: '8Gi' })],
      req({ cpu: '500m', memory: '1Gi' }, { cpu: '2', memory: '4Gi' }),
      true,
    ],
    [
      'requests exceed maximum - reduced',
      { cpu: '2', memory: '4Gi' },
      [req({ cpu: '3', memory: '6Gi' }, { cpu: '4', memory: '8Gi' })],
      req({ cpu: '2', memory: '4Gi' }, { cpu: '2', memory: '4Gi' }),
      true,
    ],
    [
      'missing limits filled with maximum',
      { cpu: '2', memory: '4Gi' },
      [req({ cpu: '500m' }, { cpu: '1' })],
      req({ cpu: '500m' }, { cpu: '1', memory: '4Gi' }),
      true,
    ],
    [
      'nil limits and requests in desired',
      { cpu: '2', memory: '4Gi' },
      [{}],
      req(undefined, { cpu: '2', memory: '4Gi' }),
      true,
    ],
    [
      'multiple desired - later takes precedence',
      { cpu: '4', memory: '8Gi' },
      [
        req({ cpu: '500m', memory: '1Gi' }, { cpu: '1', memory: '2Gi' }),
        req({ cpu: '1' }, { cpu: '2' }),
        req({ memory: '1.5Gi' }, { memory: '3Gi' }),
      ],
      req({ cpu: '1', memory: '1.5Gi' }, { cpu: '2', memory: '3Gi' }),
      false,
    ],
    [
      'multiple desired with some exceeding limits',
      { cpu: '2', memory: '4Gi' },
      [req(undefined, { cpu: '1' }), req({ cpu: '3', memory: '1Gi' }, { cpu: '4', memory: '2Gi' })],
      req({ cpu: '2', memory: '1Gi' }, { cpu: '2', memory: '2Gi' }),
      true,
    ],
    [
      'partial overlap between maximum and desired resources',
      { cpu: '2', 'ephemeral-storage': '100Gi' },
      [req({ cpu: '500m', memory: '2Gi' }, { cpu: '1', memory: '4Gi' })],
      req({ cpu: '500m', memory: '2Gi' }, { cpu: '1', 'ephemeral-storage': '100Gi', memory: '4Gi' }),
      true,
    ],
    [
      'requests exceeding limits reduced to limits',
      {},
      [req({ cpu: '2', memory: '4Gi' }, { cpu: '1', memory: '2Gi' })],
      req({ cpu: '1', memory: '2Gi' }, { cpu: '1', memory: '2Gi' }),
      true,
    ],
  ])('%s', (_name, maximum, desired, want, modified) => {
    const result = applyMaximums(maximum, layers(...desired));
    expect(result.resources).toEqual(want);
    expect(result.clamped.length + result.filledLimits.length > 0).toBe(modified);
  });
});

describe('applyMaximums: units', () => {
  test.each<[string, List, List, string, boolean]>([
    // [what, maximum, limits, granted limit, clamped]
    ['1G is below 1Gi', { memory: '1Gi' }, { memory: '1G' }, '1G', false],
    ['1100M is above 1Gi', { memory: '1Gi' }, { memory: '1100M' }, '1Gi', true],
    ['1024Mi equals 1Gi', { memory: '1Gi' }, { memory: '1024Mi' }, '1024Mi', false],
    ['1.5Gi is above 1536M', { memory: '1536M' }, { memory: '1.5Gi' }, '1536M', true],
    ['2000m equals 2', { cpu: '2' }, { cpu: '2000m' }, '2000m', false],
    ['2001m is above 2', { cpu: '2' }, { cpu: '2001m' }, '2', true],
    ['0.5 equals 500m', { cpu: '500m' }, { cpu: '0.5' }, '0.5', false],
    ['a number maximum', { cpu: 8 }, { cpu: '9' }, '8', true],
    ['a number limit', { cpu: '8' }, { cpu: 4 }, '4', false],
    ['an exponent', { memory: '1e9' }, { memory: '1G' }, '1G', false],
    ['1Ki is above 1k', { memory: '1k' }, { memory: '1Ki' }, '1k', true],
  ])('%s', (_what, maximum, limits, granted, clamped) => {
    const name = Object.keys(limits)[0]!;
    const result = applyMaximums(maximum, layers(req(undefined, limits)));
    expect(result.resources.limits?.[name]).toBe(granted);
    expect(result.clamped.length > 0).toBe(clamped);
  });

  test('requests compare exactly with their limits across units', () => {
    const result = applyMaximums(
      {},
      layers(req({ memory: '1025Mi', cpu: '1' }, { memory: '1Gi', cpu: '1000m' })),
    );
    expect(result.resources.requests).toEqual({ cpu: '1', memory: '1Gi' });
    expect(result.clamped).toEqual([
      { field: 'requests.memory', requested: '1025Mi', granted: '1Gi', reason: 'limit', source: 'layer0' },
    ]);
  });
});

describe('mergeResources (template default + instance, template maximum)', () => {
  test("the seed README template: the maximum's cpu becomes the cpu limit", () => {
    const result = mergeResources(
      {
        default: req({ cpu: '500m', memory: '8Gi' }, { memory: '8Gi' }),
        maximum: { cpu: 8, memory: '16Gi' },
      },
      undefined,
    );
    expect(result).toEqual({
      resources: req({ cpu: '500m', memory: '8Gi' }, { cpu: '8', memory: '8Gi' }),
      clamped: [],
      filledLimits: [{ field: 'limits.cpu', granted: '8', from: 'maximum' }],
    });
  });

  test("seatgeek's full customization: the instance wins within the maximum", () => {
    const result = mergeResources(
      {
        default: req({ cpu: '100m', memory: '128Mi' }, { cpu: '1000m', memory: '1Gi' }),
        maximum: { cpu: '2000m', memory: '4Gi' },
      },
      req({ cpu: '200m', memory: '256Mi' }, { cpu: '500m', memory: '512Mi' }),
    );
    expect(result.resources).toEqual(req({ cpu: '200m', memory: '256Mi' }, { cpu: '500m', memory: '512Mi' }));
    expect(result.clamped).toEqual([]);
    expect(result.filledLimits).toEqual([]);
  });

  test('without a maximum the instance gets what it asks (seatgeek)', () => {
    const result = mergeResources(
      { default: req({ cpu: '1000m', memory: '2Gi' }, { cpu: '3000m', memory: '6Gi' }) },
      req({ cpu: '2000m', memory: '4Gi' }, { cpu: '4000m', memory: '8Gi' }),
    );
    expect(result.resources).toEqual(req({ cpu: '2000m', memory: '4Gi' }, { cpu: '4000m', memory: '8Gi' }));
    expect(result.clamped).toEqual([]);
  });

  test('without a default the instance is bounded by the maximum', () => {
    const result = mergeResources(
      { maximum: { cpu: '2', memory: '4Gi' } },
      req({ cpu: '4' }, { memory: '8Gi' }),
    );
    expect(result.resources).toEqual(req({ cpu: '2' }, { cpu: '2', memory: '4Gi' }));
    expect(result.clamped).toEqual([
      { field: 'limits.memory', requested: '8Gi', granted: '4Gi', reason: 'maximum', source: 'instance' },
      { field: 'requests.cpu', requested: '4', granted: '2', reason: 'maximum', source: 'instance' },
    ]);
    expect(result.filledLimits).toEqual([{ field: 'limits.cpu', granted: '2', from: 'maximum' }]);
  });

  test('nothing anywhere gives empty requirements', () => {
    expect(mergeResources(undefined, undefined)).toEqual({ resources: {}, clamped: [], filledLimits: [] });
    expect(mergeResources({}, {})).toEqual({ resources: {}, clamped: [], filledLimits: [] });
  });

  test('a request above the default limit is lowered to that limit, not the limit raised', () => {
    const result = mergeResources(
      { default: req({ memory: '8Gi' }, { memory: '8Gi' }), maximum: { memory: '16Gi' } },
      req({ memory: '12Gi' }),
    );
    expect(result.resources).toEqual(req({ memory: '8Gi' }, { memory: '8Gi' }));
    expect(result.clamped).toEqual([
      { field: 'requests.memory', requested: '12Gi', granted: '8Gi', reason: 'limit', source: 'instance' },
    ]);
  });

  test('a default request above an instance limit is lowered and blamed on the template', () => {
    const result = mergeResources({ default: req({ memory: '8Gi' }) }, req(undefined, { memory: '4Gi' }));
    expect(result.resources).toEqual(req({ memory: '4Gi' }, { memory: '4Gi' }));
    expect(result.clamped).toEqual([
      { field: 'requests.memory', requested: '8Gi', granted: '4Gi', reason: 'limit', source: 'template' },
    ]);
  });

  test('a request above the maximum without a limit is capped through the filled limit', () => {
    const result = mergeResources({ maximum: { cpu: '2' } }, req({ cpu: '3' }));
    expect(result.resources).toEqual(req({ cpu: '2' }, { cpu: '2' }));
    expect(result.clamped).toEqual([
      { field: 'requests.cpu', requested: '3', granted: '2', reason: 'maximum', source: 'instance' },
    ]);
  });

  test('requests of resources with neither limit nor maximum stay unbounded (seatgeek)', () => {
    const result = mergeResources({ maximum: { cpu: '2' } }, req({ memory: '512Gi' }));
    expect(result.resources).toEqual(req({ memory: '512Gi' }, { cpu: '2' }));
  });

  test('output keys are sorted whatever the input order', () => {
    const result = mergeResources(
      { maximum: { memory: '4Gi', cpu: '2', 'ephemeral-storage': '10Gi' } },
      req({ memory: '1Gi', cpu: '1' }),
    );
    expect(Object.keys(result.resources.limits!)).toEqual(['cpu', 'ephemeral-storage', 'memory']);
    expect(Object.keys(result.resources.requests!)).toEqual(['cpu', 'memory']);
  });

  test('claims are dropped and the inputs are not changed', () => {
    const template = Object.freeze({
      default: Object.freeze(req({ cpu: '1' })),
      maximum: Object.freeze({ cpu: '500m' }),
    });
    const instance = { claims: [{ name: 'gpu' }], limits: { cpu: '4' } } as V1ResourceRequirements;
    const copy = structuredClone(instance);
    const result = mergeResources(template, instance);
    expect(result.resources).toEqual(req({ cpu: '500m' }, { cpu: '500m' }));
    expect(instance).toEqual(copy);
  });
});

describe('resources that cannot be overcommitted', () => {
  test.each([
    ['cpu', true],
    ['memory', true],
    ['ephemeral-storage', true],
    ['example.kubernetes.io/thing', true],
    ['nvidia.com/gpu', false],
    ['hugepages-2Mi', false],
  ])('%s overcommittable: %p', (name, expected) => {
    expect(isOvercommittable(name)).toBe(expected);
  });

  test('a maximum on an extended resource is a cap, not a grant: no limit is filled', () => {
    const result = mergeResources({ maximum: { 'nvidia.com/gpu': 1, memory: '8Gi' } }, undefined);
    expect(result.resources).toEqual(req(undefined, { memory: '8Gi' }));
  });

  test('a GPU request without limit gets limit = request (Kubernetes needs both, equal)', () => {
    const result = mergeResources({ maximum: { 'nvidia.com/gpu': 2 } }, req({ 'nvidia.com/gpu': '1' }));
    expect(result.resources).toEqual(req({ 'nvidia.com/gpu': '1' }, { 'nvidia.com/gpu': '1' }));
    expect(result.filledLimits).toEqual([{ field: 'limits.nvidia.com/gpu', granted: '1', from: 'request' }]);
    expect(result.clamped).toEqual([]);
  });

  test('a GPU request above the maximum brings request and limit down together', () => {
    const result = mergeResources({ maximum: { 'nvidia.com/gpu': 2 } }, req({ 'nvidia.com/gpu': '4' }));
    expect(result.resources).toEqual(req({ 'nvidia.com/gpu': '2' }, { 'nvidia.com/gpu': '2' }));
    expect(result.clamped.map((c) => [c.field, c.reason])).toEqual([
      ['limits.nvidia.com/gpu', 'maximum'],
      ['requests.nvidia.com/gpu', 'maximum'],
    ]);
  });

  test('a GPU limit alone above the maximum is capped (Kubernetes defaults the request to it)', () => {
    const result = mergeResources(
      { maximum: { 'nvidia.com/gpu': 1 } },
      req(undefined, { 'nvidia.com/gpu': 3 }),
    );
    expect(result.resources).toEqual(req(undefined, { 'nvidia.com/gpu': '1' }));
  });

  test('hugepages are not filled from the maximum either', () => {
    const result = mergeResources({ maximum: { 'hugepages-2Mi': '1Gi' } }, undefined);
    expect(result.resources).toEqual({});
  });
});

describe('bad quantities', () => {
  test.each<[string, () => unknown, string]>([
    [
      'instance',
      () => mergeResources(undefined, req(undefined, { memory: '8 GB' })),
      'Buildkit spec.resources.limits.memory',
    ],
    [
      'template default',
      () => mergeResources({ default: req({ cpu: 'lots' }) }, undefined),
      'BuildkitTemplate spec.resources.default.requests.cpu',
    ],
    [
      'maximum',
      () => mergeResources({ maximum: { cpu: 'x' } }, undefined),
      'BuildkitTemplate spec.resources.maximum.cpu',
    ],
  ])('a bad %s value names its field', (_what, run, field) => {
    expect(run).toThrow(ResourceQuantityError);
    expect(run).toThrow(`${field}: `);
  });
});
