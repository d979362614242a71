// The flags of `buildkit-fleet webhook`, apart from the code that runs it: the CLI lists and parses
// every command's flags but loads only the command it runs (each component's dependencies cost memory).
import { CERT_OPTIONS } from '../flags/cert-options.ts';
import { COMMON_OPTIONS } from '../flags/common-options.ts';
import { INJECTION_OPTIONS } from './injection-options.ts';

const SERVER_OPTIONS = {
  listen: {
    type: 'hostport',
    env: 'BKF_WEBHOOK_LISTEN',
    description: 'Address of the HTTPS admission server (--local: 127.0.0.1:0, a free port, unless set)',
    default: '0.0.0.0:9443',
  },
  'tls-cert-file': {
    type: 'string',
    env: 'BKF_TLS_CERT_FILE',
    description: 'PEM serving certificate (with --tls-key-file)',
  },
  'tls-key-file': {
    type: 'string',
    env: 'BKF_TLS_KEY_FILE',
    description: 'PEM private key of the serving certificate',
  },
  local: {
    type: 'boolean',
    description:
      'Development mode: make a CA and a cert for 127.0.0.1, register the webhook configurations with the cluster pointing at this process, remove them on exit',
    default: false,
  },
  'min-idle-timeout': {
    type: 'string',
    env: 'BKF_MIN_IDLE_TIMEOUT',
    description:
      'The shortest spec.autoscaling.idleTimeout a BuildkitTemplate may set, as a duration (30s, 1m); shorter ones are refused',
    default: '30s',
  },
  'config-name': {
    type: 'string',
    env: 'BKF_WEBHOOK_CONFIG_NAME',
    description: 'Name of the Mutating/ValidatingWebhookConfiguration that --local manages',
    default: 'buildkit-fleet',
  },
  'failure-policy': {
    type: { oneOf: ['Fail', 'Ignore'] },
    env: 'BKF_WEBHOOK_FAILURE_POLICY',
    description: 'failurePolicy of the configurations --local installs',
    default: 'Fail',
  },
  'namespace-label': {
    type: 'string',
    env: 'BKF_WEBHOOK_NAMESPACE_LABEL',
    description:
      '--local: only review objects in namespaces carrying this label, as key=value (share a cluster without affecting others)',
  },
  'shutdown-grace': {
    type: 'seconds',
    env: 'BKF_SHUTDOWN_GRACE',
    description: 'On SIGTERM, seconds to let in-flight reviews finish',
    default: '10',
  },
} as const;

/**
 * The webhook's own flags, the sidecar injection's (--sidecar-image, ...) and the certificate
 * lifecycle's (--cert-mode files|self-managed, ...).
 */
export const WEBHOOK_OPTIONS = {
  ...SERVER_OPTIONS,
  ...INJECTION_OPTIONS,
  ...CERT_OPTIONS,
  ...COMMON_OPTIONS,
};
