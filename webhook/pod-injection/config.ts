// What the injection is told (flags, see injection-options.ts) and what it looks at per request.
// Apart from index.ts so the parts of the injection can share these types without importing it.
import type { V1Pod, V1ResourceRequirements, V1SecurityContext } from '@kubernetes/client-node';

export interface InjectionConfig {
  image: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  resources: V1ResourceRequirements;
  /** the sidecar's plain-HTTP stats port (BKF_SIDECAR_STATS) */
  statsPort: number;
  /** buildkitd's new port on 127.0.0.1; undefined: the public port - 1 */
  privatePort?: number;
  /** Secret holding the fence token under key `token`; mounted optional */
  tokenSecretName: string;
  /** BKF_SIDECAR_GRACE; undefined: the pod's terminationGracePeriodSeconds (30 when unset) */
  graceSeconds?: number;
  /** the platform's own namespace: its pods are never injected */
  platformNamespace: string;
  /** undefined: DEFAULT_SIDECAR_SECURITY_CONTEXT */
  securityContext?: V1SecurityContext;
}

/** What the skip predicates look at. */
export interface PodContext {
  pod: V1Pod;
  /** the request's namespace (pods created through a controller may not carry it in metadata) */
  namespace: string;
  config: InjectionConfig;
}
