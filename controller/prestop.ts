// The preStop drain script of buildkitd pods. buildkitd aborts running builds on SIGTERM
// (moby/buildkit#4090); the kubelet runs the preStop hook first and sends SIGTERM only when it
// returns, so the script waits until no client has been connected for a quiet period. The pod's
// terminationGracePeriodSeconds (default 900) bounds the wait.
//
// In the spirit of seatgeek/buildkit-prestop-script, with these differences:
// - Connections are counted from /proc/net/tcp and /proc/net/tcp6 with shell builtins only, instead
//   of `netstat -tnp | grep buildkitd`: no dependency on netstat, and no need for -p, which cannot
//   see other users' sockets. Only ESTABLISHED sockets whose local port is buildkitd's count, i.e.
//   clients connected to it (buildkitd's own outgoing connections to registries have other local
//   ports).
// - The port comes from the first argument (the pod passes the port it was built with), the
//   template's port is only the default: the ConfigMap follows the template, and a restarted
//   container of an older pod re-reads it, possibly after the template's port changed.
// - Sleeps with busybox `usleep`, falling back to `sleep 0.5` (coreutils, busybox with fractional
//   sleep), then `sleep 1`, so it runs in moby/buildkit images (Alpine, busybox sh) and elsewhere.
// - Logs one JSON object per line to PID 1's stderr, so it appears in `kubectl logs` (the output
//   of a hook is otherwise discarded); BUILDKIT_PRESTOP_LOG redirects it (tests).
//
// The script itself is controller/assets/buildkit-prestop.sh, so it is edited and reviewed as
// shell rather than as a TypeScript string. Its parameters are `{{NAME}}` placeholders filled in
// here rather than environment variables: the ConfigMap keeps carrying a script with its values
// written out (what a reader of the mounted file sees is what it does), byte for byte as before,
// so existing ConfigMaps do not change.
import { readFileSync } from 'node:fs';

export const PRESTOP_SCRIPT_KEY = 'buildkit-prestop.sh';

// Read once at load: a pod build must not fail on I/O, and a missing asset should stop the
// controller at start, not at the first pod.
const TEMPLATE = readFileSync(new URL('./assets/buildkit-prestop.sh', import.meta.url), 'utf8');

export interface PrestopOptions {
  /** Seconds without any client connection before buildkitd may stop. Default 10 (seatgeek's). */
  quietSeconds?: number;
  /** How often to look, in milliseconds. Default 500 (seatgeek's). */
  intervalMs?: number;
}

function positiveInteger(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new RangeError(`${name} must be an integer from 1 to ${max}, got ${value}`);
  }
  return value;
}

/** The placeholders of the asset and their values. */
function parameters(port: number, options: PrestopOptions): Record<string, string> {
  const defaultPort = positiveInteger('port', port, 65535);
  const quietSeconds = positiveInteger('quietSeconds', options.quietSeconds ?? 10);
  const intervalMs = positiveInteger('intervalMs', options.intervalMs ?? 500, 60_000);
  return {
    DEFAULT_PORT: String(defaultPort),
    QUIET_SECONDS: String(quietSeconds),
    INTERVAL_MS: String(intervalMs),
    // usleep takes microseconds, sleep (coreutils, busybox) fractional seconds
    INTERVAL_US: String(intervalMs * 1000),
    INTERVAL_SECONDS: (intervalMs / 1000).toString(),
    REQUIRED_CHECKS: String(Math.max(1, Math.ceil((quietSeconds * 1000) / intervalMs))),
    HEARTBEAT_CHECKS: String(Math.max(1, Math.round(60_000 / intervalMs))),
  };
}

/** Fills in every `{{NAME}}` of `template`; a name without a value is a bug in this module. */
function fillPlaceholders(template: string, values: Readonly<Record<string, string>>): string {
  return template.replace(/\{\{([A-Z_]+)\}\}/g, (_, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`buildkit-prestop.sh: no value for {{${name}}}`);
    return value;
  });
}

/** The drain script for buildkitd listening on `port`. */
export function prestopScript(port: number, options: PrestopOptions = {}): string {
  return fillPlaceholders(TEMPLATE, parameters(port, options));
}
