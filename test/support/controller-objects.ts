// The Buildkit, template and Service the buildkit-plan tests observe.
import type { V1Service } from '@kubernetes/client-node';

import type { Buildkit, BuildkitTemplate } from '../../api/types.generated.ts';

export const buildkit: Buildkit = {
  metadata: { name: 'bk', namespace: 'ci', uid: 'u1', generation: 1 },
  spec: { template: 't' },
};
export const template: BuildkitTemplate = { metadata: { name: 't', namespace: 'ci' }, spec: {} };
export const service: V1Service = {
  metadata: { name: 'bk' },
  spec: { clusterIP: '10.96.0.10', ports: [{ port: 1234 }] },
};
