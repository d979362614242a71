export {
  CLOCK_SKEW_MS,
  DEFAULT_CA_VALIDITY_DAYS,
  DEFAULT_SERVING_VALIDITY_DAYS,
  SERIAL_BYTES,
  createCa,
  createServingCert,
  generateKeyPem,
  serviceDnsNames,
} from './generate.ts';
export type {
  CertKeyPair,
  CreateCaOptions,
  CreateServingCertOptions,
  GenerationSources,
} from './generate.ts';
export { describeCert, expiresWithin, keyMatchesCert, verifyChain } from './inspect.ts';
export type { CertDescription } from './inspect.ts';
export { CertificateError } from './parse.ts';

// Lifecycle: decisions, Secret storage, caBundle injection, rotation and file reload.
export { DEFAULT_VALIDITY, decide, decisionKind, validatePolicy } from './rotation-policy.ts';
export type { CertPolicy, Decision, RotateStep } from './rotation-policy.ts';
export { SECRET_KEYS, inspectSecret, servingProblem } from './secret-inspection.ts';
export type { CertSecretData, RepairProblem } from './secret-inspection.ts';
export { formatCertDuration, parseCertDuration } from './duration.ts';
export { applyDecision, planCertificates, unservableReason } from './material.ts';
export type { CertFactory, Plan, PlanOptions } from './material.ts';
export {
  SECRET_TYPE_TLS,
  SecretAccessError,
  SecretConflictError,
  kubeSecretStore,
  kubeSecretWatchCalls,
  memorySecretStore,
  reconcileSecret,
} from './secret-store.ts';
export type { SecretStore, StoredSecret } from './secret-store.ts';
export {
  WebhookConfigAccessError,
  bundleBase64,
  caBundlePatch,
  failurePolicyChanges,
  failurePolicyWaits,
  intendedFailurePolicy,
  createCaBundleInjector,
  serviceKey,
  servicesAwaited,
  kubeWebhookConfigClient,
} from './ca-bundle.ts';
export type {
  CaBundleInjector,
  CaBundleSyncReport,
  ServingCheck,
  WebhookConfigClient,
  WebhookServiceRef,
  WebhookConfigWatcher,
  WebhookKind,
  WebhookTargets,
} from './ca-bundle.ts';
export { keepWatching } from './watch.ts';
export type { KeepWatchingOptions, KeptWatch, WatchCalls, WatchEventType, WatchSelector } from './watch.ts';
export { certMetrics } from './metrics.ts';
export type { CertMetrics } from './metrics.ts';
export {
  CERT_ANNOTATIONS,
  DEFAULT_CHECK_INTERVAL_MS,
  rotatorPolicy,
  startSelfManagedCerts,
} from './rotator.ts';
export type {
  CertSource,
  CheckResult,
  SelfManagedCerts,
  SelfManagedCertsOptions,
  ServingMaterial,
} from './rotator.ts';
export { startFileReloader, validateServingPair } from './file-reloader.ts';
export type { CertFileReloader, FileReloaderOptions } from './file-reloader.ts';
export { CERT_OPTIONS, certConfigFromOptions, startCertSource } from './options.ts';
export type { CertConfig, CertOptions } from './options.ts';
