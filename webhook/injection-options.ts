// The webhook's sidecar-injection flags and their checks (part of WEBHOOK_OPTIONS). Pure: the
// environment comes in as an argument, bad values are UsageErrors (exit 2).
import { DEFAULT_TOKEN_SECRET_NAME } from '../api/sidecar-contract.ts';
import { UsageError } from '../flags/errors.ts';
import type { ParsedOptions } from '../flags/options.ts';
import { checkRequirements } from './resources.ts';
import { DEFAULT_PLATFORM_NAMESPACE } from '../api/namespaces.ts';
import type { InjectionConfig } from './pod-injection/index.ts';

/** The sidecar image in --local mode, where pods run on hollow nodes and no image is pulled. */
export const LOCAL_SIDECAR_IMAGE = 'buildkit-fleet:local';

export const INJECTION_OPTIONS = {
  'sidecar-image': {
    type: 'string',
    env: 'BKF_INJECT_IMAGE',
    description: `Image of the injected sidecar: the buildkit-fleet image, normally the webhook's own (the chart sets it). Required unless --local (default there ${LOCAL_SIDECAR_IMAGE})`,
  },
  'sidecar-cpu-request': {
    type: 'string',
    env: 'BKF_INJECT_CPU_REQUEST',
    description: 'CPU request of the sidecar',
    default: '50m',
  },
  'sidecar-memory-request': {
    type: 'string',
    env: 'BKF_INJECT_MEMORY_REQUEST',
    description: 'Memory request of the sidecar',
    default: '64Mi',
  },
  'sidecar-cpu-limit': {
    type: 'string',
    env: 'BKF_INJECT_CPU_LIMIT',
    description: 'CPU limit of the sidecar (none by default: throttling would slow every build byte)',
  },
  'sidecar-memory-limit': {
    type: 'string',
    env: 'BKF_INJECT_MEMORY_LIMIT',
    description: 'Memory limit of the sidecar',
    default: '256Mi',
  },
  'sidecar-stats-port': {
    type: 'port',
    env: 'BKF_INJECT_STATS_PORT',
    description: "The sidecar's stats/health port (probes and the controller use it, never the proxy)",
    default: '9436',
  },
  'sidecar-private-port': {
    type: 'port',
    env: 'BKF_INJECT_PRIVATE_PORT',
    description:
      "buildkitd's new port on 127.0.0.1 behind the sidecar; 0: its public port - 1. A pod where it is taken is refused",
    default: '0',
  },
  'sidecar-token-secret': {
    type: 'string',
    env: 'BKF_INJECT_TOKEN_SECRET',
    description:
      "Secret (key 'token', in the pod's namespace) with the controller's fence token, mounted optional into the sidecar; without it the fence control is disabled",
    default: DEFAULT_TOKEN_SECRET_NAME,
  },
  'sidecar-grace': {
    type: 'seconds',
    env: 'BKF_INJECT_GRACE',
    description:
      "Seconds the sidecar keeps serving open connections after SIGTERM (default: the pod's terminationGracePeriodSeconds)",
  },
  'platform-namespace': {
    type: 'string',
    env: 'BKF_PLATFORM_NAMESPACE',
    description: `The platform's own namespace, whose pods are never injected (default: POD_NAMESPACE, else ${DEFAULT_PLATFORM_NAMESPACE})`,
  },
} as const;

export type InjectionOptions = ParsedOptions<typeof INJECTION_OPTIONS>;

const FLAG_OF: Record<string, string> = {
  'requests.cpu': '--sidecar-cpu-request',
  'requests.memory': '--sidecar-memory-request',
  'limits.cpu': '--sidecar-cpu-limit',
  'limits.memory': '--sidecar-memory-limit',
};

/** The injection config of the flags; throws UsageError on a missing image or bad quantities. */
export function injectionConfigFromOptions(
  options: InjectionOptions,
  local: boolean,
  env: NodeJS.ProcessEnv = process.env,
): InjectionConfig {
  const image = options['sidecar-image'] ?? (local ? LOCAL_SIDECAR_IMAGE : undefined);
  if (!image) {
    throw new UsageError(
      "--sidecar-image is required (or BKF_INJECT_IMAGE): the buildkit-fleet image the injected sidecar runs, normally the webhook's own image",
    );
  }
  const entries = (pairs: [string, string | undefined][]) =>
    Object.fromEntries(pairs.filter((p): p is [string, string] => p[1] !== undefined));
  const requests = entries([
    ['cpu', options['sidecar-cpu-request']],
    ['memory', options['sidecar-memory-request']],
  ]);
  const limits = entries([
    ['cpu', options['sidecar-cpu-limit']],
    ['memory', options['sidecar-memory-limit']],
  ]);
  const resources = {
    ...(Object.keys(requests).length ? { requests } : {}),
    ...(Object.keys(limits).length ? { limits } : {}),
  };
  const { errors } = checkRequirements('', resources, undefined);
  if (errors.length) {
    throw new UsageError(
      errors
        .map((e) => {
          const key = e.field.replace(/^\./, '');
          return `${FLAG_OF[key] ?? key} ${JSON.stringify(e.value)}: ${e.detail}`;
        })
        .join('; '),
    );
  }
  const privatePort = options['sidecar-private-port'];
  const platformNamespace =
    options['platform-namespace'] ?? (env['POD_NAMESPACE'] || DEFAULT_PLATFORM_NAMESPACE);
  checkedName(options['sidecar-token-secret'], '--sidecar-token-secret', 253);
  checkedName(platformNamespace, '--platform-namespace', 63);
  return {
    image,
    resources,
    statsPort: checkedPort(options['sidecar-stats-port'], '--sidecar-stats-port'),
    ...(privatePort ? { privatePort } : {}),
    tokenSecretName: options['sidecar-token-secret'],
    ...(options['sidecar-grace'] !== undefined ? { graceSeconds: Math.ceil(options['sidecar-grace']) } : {}),
    platformNamespace,
  };
}

function checkedPort(port: number, flag: string): number {
  if (port === 0) throw new UsageError(`${flag} must be a port 1-65535, not 0`);
  return port;
}

const DNS_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A Secret name (DNS subdomain, 253) or a namespace (DNS label, 63: no dots). */
function checkedName(name: string, flag: string, max: 63 | 253): void {
  const ok = DNS_NAME.test(name) && name.length <= max && (max === 253 || !name.includes('.'));
  if (!ok) {
    const what = max === 63 ? 'a DNS label (a namespace name)' : 'a DNS subdomain (a Secret name)';
    throw new UsageError(
      `${flag} ${JSON.stringify(name)}: must be ${what}: lowercase alphanumerics and '-', at most ${max} characters`,
    );
  }
}
