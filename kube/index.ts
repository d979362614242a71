// The controller runtime: informers that keep themselves alive, a rate-limited work queue and
// leader election on a Lease. Reconcilers build on these; nothing here knows about Buildkits
// except the sources that name their resources.
export { ManualClock, realClock, sleep } from './clock.ts';
export type { Clock, Timer } from './clock.ts';
export { ExponentialBackoff, TokenBucket, WorkQueue, keyFields } from './queue.ts';
export type { WorkQueueOptions, WorkResult, Worker } from './queue.ts';
export { Informer, InformerStoppedError, kubeWatchFn } from './informer.ts';
export {
  apiErrorText,
  errorMessage,
  errorReason,
  errorStatus,
  isConflict,
  isForbidden,
  isNotFound,
} from './errors.ts';
export type { InformerHandlers, InformerOptions, ListWatchSource, WatchFn } from './informer.ts';
export {
  buildkitSource,
  buildkitTemplateSource,
  configMapSource,
  customObjectSource,
  podSource,
  pvcSource,
  serviceSource,
  workloadSource,
} from './sources.ts';
export type { CustomResource, Scope } from './sources.ts';
export type { SlimWorkload } from './slim.ts';
export { LeaderElector, defaultIdentity, kubeLeaseClient } from './leader.ts';
export type { LeaderElectorOptions, LeaseClient } from './leader.ts';
