// The flags of `buildkit-fleet certs`, apart from the code that runs it: the CLI lists and parses
// every command's flags but loads only the command it runs (each component's dependencies cost memory).
import { CERT_OPTIONS } from '../flags/cert-options.ts';
import { COMMON_OPTIONS } from '../flags/common-options.ts';

const { 'cert-mode': _mode, 'cert-reload-interval': _reload, ...LIFECYCLE_OPTIONS } = CERT_OPTIONS;

export const CERTS_COMMAND_OPTIONS = {
  ...LIFECYCLE_OPTIONS,
  ...COMMON_OPTIONS,
  once: {
    type: 'boolean',
    description: 'Ensure the Secret and caBundle once, then exit (0 when both are in place)',
    default: false,
  },
} as const;
