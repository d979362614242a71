// The flags of `buildkit-fleet controller`, apart from the code that runs it: the CLI lists and parses
// every command's flags but loads only the command it runs (each component's dependencies cost memory).
import { COMMON_OPTIONS } from '../flags/common-options.ts';

export const CONTROLLER_OPTIONS = {
  'watch-namespace': {
    type: 'string',
    env: 'BKF_WATCH_NAMESPACE',
    description: 'Only reconcile this namespace (then namespaced RBAC is enough); all namespaces when unset',
  },
  'metrics-listen': {
    type: 'hostport',
    env: 'BKF_METRICS_LISTEN',
    description: 'Plain HTTP address for /metrics, /healthz and /readyz',
    default: '0.0.0.0:8080',
  },
  workers: {
    type: 'integer',
    env: 'BKF_WORKERS',
    description: 'Keys reconciled in parallel per kind',
    default: '4',
  },
  resync: {
    type: 'seconds',
    env: 'BKF_RESYNC',
    description: 'Re-examine every object this often even without changes',
    default: '600',
  },
  'disable-leader-election': {
    type: 'boolean',
    description: 'Act without holding the Lease (only safe with a single replica)',
    default: false,
  },
  'leader-election-namespace': {
    type: 'string',
    env: 'BKF_LEADER_ELECTION_NAMESPACE',
    description: "Namespace of the Lease (default: POD_NAMESPACE, then --watch-namespace, then 'default')",
  },
  'leader-election-name': {
    type: 'string',
    env: 'BKF_LEADER_ELECTION_NAME',
    description: 'Name of the coordination.k8s.io Lease the replicas compete for',
    default: 'buildkit-fleet-controller',
  },
  'leader-election-lease-duration': {
    type: 'integer',
    description: 'Lease duration in seconds',
    default: '15',
  },
  'leader-election-renew-deadline': {
    type: 'integer',
    description: 'A leader that cannot renew within this many seconds steps down',
    default: '10',
  },
  'leader-election-retry-period': {
    type: 'integer',
    description: 'Seconds between Lease attempts',
    default: '2',
  },
  'scale-interval': {
    type: 'seconds',
    env: 'BKF_SCALE_INTERVAL',
    description: "How often the idle scaler reads every autoscaled pod's sidecar stats",
    default: '2',
  },
  'fence-settle': {
    type: 'seconds',
    env: 'BKF_FENCE_SETTLE',
    description:
      'How long a scale-down waits, fenced and routed to the activators, for kube-proxy to move new connections over before it confirms the fence',
    default: '2',
  },
  'min-idle-timeout': {
    type: 'string',
    env: 'BKF_MIN_IDLE_TIMEOUT',
    description:
      'The shortest idle timeout an annotated StatefulSet or Deployment may ask for (buildkit-fleet.io/idle-timeout), as a duration (30s, 1m); a shorter one keeps it awake with a Warning event',
    default: '30s',
  },
  'activator-address': {
    type: 'string',
    env: 'BKF_ACTIVATOR_ADDRESS',
    description:
      "Comma-separated IP addresses of this replica's activator, which Services route to while their targets are at zero (default: POD_IP); the replicas announce theirs to each other in Leases in the leader-election namespace; without one nothing scales to zero",
  },
  'activator-ports': {
    type: 'string',
    env: 'BKF_ACTIVATOR_PORTS',
    description: 'Port range the activator gives its targets, one port each (first-last)',
    default: '20000-20999',
  },
  'activator-listen-host': {
    type: 'string',
    env: 'BKF_ACTIVATOR_LISTEN_HOST',
    description: 'Address the activator listens on, on every target port',
    default: '0.0.0.0',
  },
  'activator-max-held': {
    type: 'integer',
    env: 'BKF_ACTIVATOR_MAX_HELD',
    description:
      'Connections the activator holds per target while it wakes; more are reset (logged and counted)',
    default: '1000',
  },
  'activator-hold-timeout': {
    type: 'seconds',
    env: 'BKF_ACTIVATOR_HOLD_TIMEOUT',
    description:
      'Longest the activator holds a connection for a target that does not become ready; then it is reset (logged and counted)',
    default: '300',
  },
  'activator-drain-timeout': {
    type: 'seconds',
    env: 'BKF_ACTIVATOR_DRAIN_TIMEOUT',
    description:
      'When the controller stops: how long its activator waits for the connections it still holds or splices to finish (builds running through it); then they are reset',
    default: '600',
  },
  ...COMMON_OPTIONS,
} as const;

/**
 * How to run the controller's Node.js process (the image and chart set these; the benchmark uses
 * them). Without a cap V8 grows the heap far beyond what is live. A small semi-space and a 128 MB
 * old-generation cap keep the heap near its live size; without the optimizing compilers
 * (--no-opt --no-maglev) the process maps less code, at some CPU cost that a controller, which
 * waits on the API server far more than it computes, can afford. The cap leaves room for
 * thousands of Buildkits; raise it for more (docs/benchmarks.md has the measurements).
 * MALLOC_ARENA_MAX bounds glibc's per-thread allocation arenas.
 */
export const CONTROLLER_NODE_OPTIONS =
  '--max-semi-space-size=1 --max-old-space-size=128 --no-opt --no-maglev';
export const CONTROLLER_ENV = { MALLOC_ARENA_MAX: '2' } as const;
