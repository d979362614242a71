// The upstream connect timeout of the JavaScript data path: one timer for every connect in
// progress, running only while there are some, instead of a timer per connection (most connects
// to buildkitd on the pod's loopback complete at once, and an idle proxy should not wake up).
// A connect gives up between timeoutMs and timeoutMs plus one tick (a quarter of it, 10 ms to 1 s).

export interface PendingConnect {
  /** epoch ms when the connect started */
  readonly started: number;
  failUpstream(reason: string): void;
}

/** `watch()` after adding to `connecting`; the timer stops by itself when the set is empty. */
export function connectTimeouts(
  connecting: ReadonlySet<PendingConnect>,
  timeoutMs: number,
): { watch(): void } {
  const tickMs = Math.min(1000, Math.max(10, timeoutMs / 4));
  let timer: NodeJS.Timeout | undefined;
  const sweep = () => {
    const now = Date.now();
    for (const connection of connecting) {
      if (now - connection.started >= timeoutMs) connection.failUpstream('upstream connect timeout');
    }
    if (connecting.size === 0) {
      clearInterval(timer);
      timer = undefined;
    }
  };
  return {
    watch() {
      if (connecting.size > 0 && !timer) timer = setInterval(sweep, tickMs);
    },
  };
}
