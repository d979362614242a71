// The flags of `buildkit-fleet sidecar`, apart from the code that runs it: the CLI lists and parses
// every command's flags but loads only the command it runs (each component's dependencies cost memory).

export const SIDECAR_OPTIONS = {
  listen: {
    type: 'hostport',
    env: 'BKF_SIDECAR_LISTEN',
    description: "Public address clients connect to (buildkitd's original port)",
    default: '0.0.0.0:1234',
  },
  upstream: {
    type: 'hostport',
    env: 'BKF_SIDECAR_UPSTREAM',
    description: 'Address of buildkitd on its private port, e.g. 127.0.0.1:1233 (required)',
  },
  stats: {
    type: 'hostport',
    env: 'BKF_SIDECAR_STATS',
    description: 'Plain-HTTP stats port: /stats, /metrics, /healthz, /readyz, /drained, /fence',
    default: '0.0.0.0:9436',
  },
  'token-file': {
    type: 'string',
    env: 'BKF_SIDECAR_TOKEN_FILE',
    description:
      'File holding the bearer token the controller presents to POST /fence and /unfence (a mounted Secret; re-read on every request). Without it the fence control is disabled',
  },
  grace: {
    type: 'seconds',
    env: 'BKF_SIDECAR_GRACE',
    description: 'On SIGTERM, seconds to keep serving open connections before resetting them',
    default: '900',
  },
  // the same spec as COMMON_OPTIONS['log-level'], written out: cli/common.ts imports
  // @kubernetes/client-node, which the sidecar never uses and which cost it ~80 MiB of RSS and a
  // larger heap for every major GC to mark (measured with test/bench/sidecar.ts)
  'log-level': {
    type: { oneOf: ['trace', 'debug', 'info', 'warn', 'error'] },
    env: 'BKF_SIDECAR_LOG_LEVEL',
    description: 'Log level',
    default: 'info',
  },
} as const;
