// The activator component's public face, the whole of it: the data path of scale-to-zero. While a
// target is at zero or waking its Service routes to the activator, which holds every connection,
// asks for a wake once, and splices the held connections to the target (in arrival order, bytes
// intact) once told it is ready. The Kubernetes side (which targets exist, wakes, readiness)
// drives it through createActivator() and setTargets(); see docs/activator.md.
export { createActivator } from './activator.ts';
export { ListenError } from './types.ts';
export type {
  Activator,
  ActivatorOptions,
  ActivatorStats,
  ActivatorTarget,
  DrainResult,
  ListenFailure,
  TargetMode,
  TargetStats,
  Upstream,
} from './types.ts';
