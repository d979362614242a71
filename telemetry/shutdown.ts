// Every long-running command stops on SIGTERM (the kubelet) and SIGINT (Ctrl-C) alike.

/**
 * Resolves with the first SIGTERM or SIGINT from now on. Call it before start-up work: from then
 * on a signal no longer kills the process outright, and the caller stops in order instead.
 */
export function shutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
