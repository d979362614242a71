// The skip predicates of the sidecar injection, one table each: a pod and namespace in, the reason
// it is left alone (or undefined) out. pod-injection.test.ts covers them again through
// injectSidecar, with their order.
import type { V1ObjectMeta } from '@kubernetes/client-node';

import type { PodContext } from '../../../webhook/pod-injection/config.ts';
import type { SkipPredicate } from '../../../webhook/pod-injection/skip-predicates.ts';
import {
  SKIP_PREDICATES,
  alreadyInjected,
  notOptedIn,
  optedOut,
  platformNamespace,
  skipReason,
  systemNamespace,
} from '../../../webhook/pod-injection/skip-predicates.ts';
import { INJECTION_CONFIG } from '../../support/admission-requests.ts';

const OPTED_IN = { 'buildkit-fleet.io/autoscale': 'enabled' };

/** A pod with `metadata` (opted in unless the labels say otherwise) in `namespace`. */
const ctx = (metadata: V1ObjectMeta = { labels: OPTED_IN }, namespace = 'ci'): PodContext => ({
  pod: { metadata, spec: { containers: [{ name: 'buildkitd', image: 'moby/buildkit' }] } },
  namespace,
  config: INJECTION_CONFIG, // platform namespace buildkit-fleet-system
});

const table = (predicate: SkipPredicate, rows: [string, PodContext, string | undefined][]) =>
  test.each(rows)('%s', (_name, input, reason) => expect(predicate(input)).toBe(reason));

describe('platformNamespace', () => {
  table(platformNamespace, [
    [
      'the platform namespace',
      ctx(undefined, 'buildkit-fleet-system'),
      "namespace buildkit-fleet-system is the platform's own",
    ],
    ['another namespace', ctx(undefined, 'ci'), undefined],
    ['a system namespace is not the platform', ctx(undefined, 'kube-system'), undefined],
    [
      'the configured namespace, not the default',
      { ...ctx(undefined, 'platform'), config: { ...INJECTION_CONFIG, platformNamespace: 'platform' } },
      "namespace platform is the platform's own",
    ],
  ]);
});

describe('systemNamespace', () => {
  table(systemNamespace, [
    ['kube-system', ctx(undefined, 'kube-system'), 'namespace kube-system is a system namespace'],
    ['kube-public', ctx(undefined, 'kube-public'), 'namespace kube-public is a system namespace'],
    ['kube-node-lease', ctx(undefined, 'kube-node-lease'), 'namespace kube-node-lease is a system namespace'],
    ['a namespace named like one, but not one', ctx(undefined, 'kube-systems'), undefined],
    ['the platform namespace is not a system one', ctx(undefined, 'buildkit-fleet-system'), undefined],
  ]);
});

describe('notOptedIn', () => {
  const reason = 'not opted in (label buildkit-fleet.io/autoscale is not "enabled")';
  table(notOptedIn, [
    ['the label is "enabled"', ctx({ labels: OPTED_IN }), undefined],
    ['no labels', ctx({}), reason],
    ['no metadata at all', { ...ctx(), pod: { spec: { containers: [] } } }, reason],
    ['other labels only', ctx({ labels: { app: 'buildkitd' } }), reason],
    ['the label with another value', ctx({ labels: { 'buildkit-fleet.io/autoscale': 'true' } }), reason],
    ['the key as an annotation, not a label', ctx({ annotations: OPTED_IN }), reason],
  ]);
});

describe('optedOut', () => {
  table(optedOut, [
    [
      'inject: disabled',
      ctx({ labels: OPTED_IN, annotations: { 'buildkit-fleet.io/inject': 'disabled' } }),
      'opted out (annotation buildkit-fleet.io/inject: "disabled")',
    ],
    ['no annotations', ctx({ labels: OPTED_IN }), undefined],
    [
      'inject: enabled',
      ctx({ labels: OPTED_IN, annotations: { 'buildkit-fleet.io/inject': 'enabled' } }),
      undefined,
    ],
    // another value is the injection's refusal to make, not a skip
    ['inject: off', ctx({ labels: OPTED_IN, annotations: { 'buildkit-fleet.io/inject': 'off' } }), undefined],
    [
      'disabled as a label, not an annotation',
      ctx({ labels: { ...OPTED_IN, 'buildkit-fleet.io/inject': 'disabled' } }),
      undefined,
    ],
  ]);
});

describe('alreadyInjected', () => {
  const marked = (value: string) =>
    ctx({ labels: OPTED_IN, annotations: { 'buildkit-fleet.io/sidecar-injected': value } });
  table(alreadyInjected, [
    [
      'the marker annotation',
      marked('sha256:0123456789abcdef'),
      'already injected (buildkit-fleet.io/sidecar-injected: sha256:0123456789abcdef)',
    ],
    [
      'any marker value counts, even an empty one',
      marked(''),
      'already injected (buildkit-fleet.io/sidecar-injected: )',
    ],
    ['no marker', ctx({ labels: OPTED_IN, annotations: { other: 'x' } }), undefined],
  ]);
});

describe('SKIP_PREDICATES and skipReason', () => {
  test('the namespaces first, then the opt-in, the opt-out and the marker', () => {
    expect(SKIP_PREDICATES).toEqual([
      platformNamespace,
      systemNamespace,
      notOptedIn,
      optedOut,
      alreadyInjected,
    ]);
  });

  test.each<[string, PodContext, string | undefined]>([
    ['an opted-in pod in a user namespace goes on', ctx(), undefined],
    [
      'a system pod is skipped for its namespace, whatever its labels',
      ctx({}, 'kube-system'),
      'namespace kube-system is a system namespace',
    ],
    [
      'a pod neither opted in nor out is skipped as not opted in',
      ctx({ annotations: { 'buildkit-fleet.io/inject': 'disabled' } }),
      'not opted in (label buildkit-fleet.io/autoscale is not "enabled")',
    ],
    [
      'opted out wins over an injection marker',
      ctx({
        labels: OPTED_IN,
        annotations: { 'buildkit-fleet.io/inject': 'disabled', 'buildkit-fleet.io/sidecar-injected': 'x' },
      }),
      'opted out (annotation buildkit-fleet.io/inject: "disabled")',
    ],
  ])('%s', (_name, input, reason) => expect(skipReason(input)).toBe(reason));
});
