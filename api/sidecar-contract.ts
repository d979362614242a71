// What the controller and the activator need to know about an injected sidecar to talk to it:
// the names the webhook gives its container, its stats port and its fence token. The webhook
// builds the container from these; the controller finds the stats port by name.

export const SIDECAR_CONTAINER_NAME = 'buildkit-fleet-sidecar';
/** Name of the sidecar's stats port (the controller reads /stats and /fence there, probes hit /readyz). */
export const STATS_PORT_NAME = 'bkf-stats';
/** The Secret key holding the fence token. */
export const TOKEN_KEY = 'token';
/** The Secret, in each autoscaled pod's namespace, that holds the fence token (the webhook's default). */
export const DEFAULT_TOKEN_SECRET_NAME = 'buildkit-fleet-sidecar-token';
