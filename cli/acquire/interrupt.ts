// A CI job that is cancelled gets SIGTERM (Ctrl-C: SIGINT). While acquire waits, either aborts the
// wait instead of killing the process, so it deletes the Buildkit it created before it exits.
export async function untilInterrupted<T>(run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const abort = () => controller.abort();
  process.once('SIGINT', abort);
  process.once('SIGTERM', abort);
  try {
    return await run(controller.signal);
  } finally {
    process.removeListener('SIGINT', abort);
    process.removeListener('SIGTERM', abort);
  }
}
