// Builds AdmissionReview requests shaped like the ones kube-apiserver sends (see
// test/unit/webhook/fixtures/admission/*.json, recorded from the real API server).
import { readFileSync } from 'node:fs';
import https from 'node:https';

import type { V1Container, V1Pod } from '@kubernetes/client-node';

import type { AdmissionRequest } from '../../webhook/admission.ts';
import type { InjectionConfig } from '../../webhook/pod-injection/index.ts';

export function recorded(name: string): { apiVersion: string; kind: string; request: AdmissionRequest } {
  return JSON.parse(
    readFileSync(new URL(`../unit/webhook/fixtures/admission/${name}.json`, import.meta.url), 'utf8'),
  );
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

export interface Reply {
  status: number;
  body: string;
}

/** POSTs `body` to the webhook server on 127.0.0.1:`port` over TLS, trusting `ca`. */
export function postTo(
  server: { port: number; ca: string },
  path: string,
  body: string | Buffer,
  contentType = 'application/json',
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: server.port,
        path,
        method: 'POST',
        ca: server.ca,
        headers: { 'content-type': contentType },
      },
      (res) => {
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export const reviewOf = (request: unknown) =>
  JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request });

/** The injection config of the sidecar injection tests. */
export const INJECTION_CONFIG: InjectionConfig = {
  image: 'ghcr.io/example/buildkit-fleet:0.1.0',
  resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
  statsPort: 9436,
  tokenSecretName: 'buildkit-fleet-sidecar-token',
  platformNamespace: 'buildkit-fleet-system',
};

/** A hand-written opted-in buildkitd pod as a StatefulSet template would give it. */
export function buildkitdPod(container: Partial<V1Container> = {}, metadata: V1Pod['metadata'] = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: 'buildkitd-',
      labels: { app: 'buildkitd', 'buildkit-fleet.io/autoscale': 'enabled' },
      ...metadata,
    },
    spec: {
      containers: [
        {
          name: 'buildkitd',
          image: 'moby/buildkit:v0.16.0',
          args: ['--addr', 'unix:///run/buildkit/buildkitd.sock', '--addr', 'tcp://0.0.0.0:1234'],
          ports: [{ name: 'grpc', containerPort: 1234 }],
          ...container,
        },
      ],
    },
  };
}

/** An AdmissionReview request for creating `pod`, as the API server sends it (no name under generateName). */
export function podRequest(pod: V1Pod, overrides: Partial<AdmissionRequest> = {}): AdmissionRequest {
  return {
    uid: '5b1a2f0e-7c3d-4e5f-8a9b-0c1d2e3f4a5b',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    resource: { group: '', version: 'v1', resource: 'pods' },
    namespace: 'ci',
    operation: 'CREATE',
    userInfo: { username: 'system:serviceaccount:kube-system:statefulset-controller' },
    object: pod as unknown as Record<string, unknown>,
    oldObject: null,
    dryRun: false,
    ...overrides,
  };
}
