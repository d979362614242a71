// Flags every long-running command shares. Apart from the code that acts on them, so the CLI can
// list and parse every command's flags without loading what the command runs.
export const COMMON_OPTIONS = {
  kubeconfig: {
    type: 'string',
    env: 'KUBECONFIG',
    description: 'kubeconfig file; in-cluster config when unset',
  },
  'log-level': {
    type: { oneOf: ['trace', 'debug', 'info', 'warn', 'error'] },
    env: 'BKF_LOG_LEVEL',
    description: 'Log level',
    default: 'info',
  },
} as const;
