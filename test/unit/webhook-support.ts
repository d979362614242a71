// Builds AdmissionReview requests shaped like the ones kube-apiserver sends (see
// test/fixtures/admission/*.json, recorded from the real API server).
import { readFileSync } from 'node:fs';

import type { AdmissionRequest } from '../../webhook/admission.ts';

export function recorded(name: string): { apiVersion: string; kind: string; request: AdmissionRequest } {
  return JSON.parse(readFileSync(new URL(`../fixtures/admission/${name}.json`, import.meta.url), 'utf8'));
}

export function templateRequest(
  spec: Record<string, unknown>,
  overrides: Partial<AdmissionRequest> & { name?: string } = {},
): AdmissionRequest {
  const name = overrides.name ?? 'builders';
  return {
    uid: 'e911857d-c318-11e8-bbad-025000000001',
    kind: { group: 'buildkit.seatgeek.io', version: 'v1alpha1', kind: 'BuildkitTemplate' },
    resource: { group: 'buildkit.seatgeek.io', version: 'v1alpha1', resource: 'buildkittemplates' },
    name,
    namespace: 'ci',
    operation: 'CREATE',
    userInfo: { username: 'admin' },
    object: {
      apiVersion: 'buildkit.seatgeek.io/v1alpha1',
      kind: 'BuildkitTemplate',
      metadata: { name, namespace: 'ci' },
      spec,
    },
    oldObject: null,
    dryRun: false,
    ...overrides,
  };
}

export function buildkitRequest(
  spec: Record<string, unknown>,
  overrides: Partial<AdmissionRequest> & { metadata?: Record<string, unknown> } = {},
): AdmissionRequest {
  const { metadata, ...rest } = overrides;
  return {
    uid: '0df28fbd-5f5f-11e8-bc74-36e6bb280816',
    kind: { group: 'buildkit.seatgeek.io', version: 'v1alpha1', kind: 'Buildkit' },
    resource: { group: 'buildkit.seatgeek.io', version: 'v1alpha1', resource: 'buildkits' },
    name: 'job-42',
    namespace: 'ci',
    operation: 'CREATE',
    object: {
      apiVersion: 'buildkit.seatgeek.io/v1alpha1',
      kind: 'Buildkit',
      metadata: { name: 'job-42', namespace: 'ci', ...metadata },
      spec,
    },
    oldObject: null,
    ...rest,
  };
}
