// The flags of `buildkit-fleet sidecar`, apart from the code that runs it: the CLI lists and parses
// every command's flags but loads only the command it runs (each component's dependencies cost memory).
import { COMMON_OPTIONS } from '../flags/common-options.ts';

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
  engine: {
    type: { oneOf: ['auto', 'native', 'js'] },
    env: 'BKF_SIDECAR_ENGINE',
    description:
      'Data path: native (an epoll loop in C++, build/native/proxy-engine.node), js (Node net sockets, slower), or auto (native when it loads, else js with a warning)',
    default: 'auto',
  },
  grace: {
    type: 'seconds',
    env: 'BKF_SIDECAR_GRACE',
    description: 'On SIGTERM, seconds to keep serving open connections before resetting them',
    default: '900',
  },
  'handoff-linger': {
    type: 'seconds',
    env: 'BKF_SIDECAR_HANDOFF_LINGER',
    description:
      'On SIGTERM with a handoff address (POST /fence?handoff=<ip>:<port>), keep accepting and proxy each new connection to that address instead of buildkitd until none arrived for this many seconds (within --grace); without a handoff address new connections are refused at once',
    default: '5',
  },
  'log-level': { ...COMMON_OPTIONS['log-level'], env: 'BKF_SIDECAR_LOG_LEVEL' },
} as const;
