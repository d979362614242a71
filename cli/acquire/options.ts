// The flags of `buildkit-fleet acquire` and `buildkit-fleet release`, apart from the code that acts
// on them, so the CLI lists and parses them without loading the Kubernetes client.
import { COMMON_OPTIONS } from '../../flags/common-options.ts';

const namespace = (what: string) =>
  ({
    type: 'string',
    description: `Namespace of ${what} (default: the kubeconfig context's namespace; in a pod, its own; else default)`,
  }) as const;

export const ACQUIRE_OPTIONS = {
  template: {
    type: 'string',
    description: 'BuildkitTemplate to make the Buildkit from (required)',
  },
  namespace: namespace('the template, the Buildkit and --owner-pod'),
  name: {
    type: 'string',
    description:
      'Name of the Buildkit (default: <template>-<random>). An existing one made from the same template is used as it is: woken if at zero, never deleted by acquire',
  },
  'owner-pod': {
    type: 'string',
    description:
      "Pod in the same namespace (the CI job's own, e.g. $HOSTNAME) that owns the new Buildkit, so it is garbage-collected with the job",
  },
  wait: {
    type: 'string',
    description:
      'How long to wait for the Buildkit to be Ready, as a duration (90s, 5m, 1h); past it, acquire deletes what it created and fails',
    default: '5m',
  },
  kubeconfig: COMMON_OPTIONS.kubeconfig,
} as const;

export const RELEASE_OPTIONS = {
  namespace: namespace('the Buildkit'),
  kubeconfig: COMMON_OPTIONS.kubeconfig,
} as const;
