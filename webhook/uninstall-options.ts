// The flags of `buildkit-fleet remove-webhook-configurations` (the chart's pre-delete hook).
import { COMMON_OPTIONS } from '../flags/common-options.ts';

export const REMOVE_CONFIGURATIONS_OPTIONS = {
  name: {
    type: 'string',
    env: 'BKF_WEBHOOK_CONFIG_NAME',
    description: 'Name of the Mutating/ValidatingWebhookConfiguration pair to remove',
    default: 'buildkit-fleet',
  },
  kubeconfig: COMMON_OPTIONS.kubeconfig,
} as const;
