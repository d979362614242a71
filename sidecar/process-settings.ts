// How the sidecar's Node.js process runs: the webhook puts these into the injected container's
// environment (webhook/pod-injection/container.ts) and the sidecar benchmark starts the sidecar with them.
// Kept apart from sidecar/main.ts so the webhook can import them without the proxy.

/**
 * V8 heap limits for the sidecar. The proxy keeps little live data (counters and two sockets per
 * connection; an idle sidecar has little heap in use), but with Node's defaults V8 lets
 * the young generation and the old generation grow well beyond what is live before it collects.
 * A 1 MB semi-space and a 64 MB old-generation cap keep the heap near its live size and leave
 * ample room for thousands of connections; the sidecar benchmark's RSS at 1,000 idle connections
 * shows the difference (docs/benchmarks.md).
 */
export const SIDECAR_NODE_OPTIONS = '--max-semi-space-size=1 --max-old-space-size=64';

/**
 * V8 flags the sidecar sets on itself at start (v8.setFlagsFromString): Node refuses them in
 * NODE_OPTIONS, and the injected container runs `buildkit-fleet sidecar`, not `node <flags>`.
 * Without Maglev (V8's mid-tier compiler; TurboFan still optimizes the hot data path) and with
 * V8's size-over-speed heuristics, the sidecar's RSS after churn and bulk traffic is lower, while
 * ping-pong latency and connection churn did not measurably change (docs/benchmarks.md).
 */
export const SIDECAR_V8_FLAGS = ['--no-maglev', '--optimize-for-size'] as const;

/**
 * The injected container's environment for the process settings: NODE_OPTIONS above, and
 * MALLOC_ARENA_MAX bounding glibc's per-thread allocation arenas (libuv's thread pool and V8's
 * helper threads would otherwise each get one).
 */
export const SIDECAR_ENV: Readonly<Record<string, string>> = {
  NODE_OPTIONS: SIDECAR_NODE_OPTIONS,
  MALLOC_ARENA_MAX: '2',
};
