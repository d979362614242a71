// Prometheus metrics of the certificate lifecycle. Created at most once per Registry, so several
// rotators or reloaders in one process (tests, or webhook plus `certs`) share the same series.
import { Counter, Gauge, Registry } from 'prom-client';

export interface CertMetrics {
  /** notAfter in Unix seconds, by cert: serving, ca, ca_next. */
  expiry: Gauge<'cert'>;
  /** Secret changes we made, by kind (create, renew-serving, rotate-ca/switch, repair/all, ...). */
  rotations: Counter<'kind'>;
  /** Certificates taken into service without a restart, by source (secret, files). */
  reloads: Counter<'source'>;
  /** Failures, by reason (secret_forbidden, ca_bundle_forbidden, invalid_secret, invalid_files, ...). */
  errors: Counter<'reason'>;
  /** caBundle patches, by configuration kind (mutating, validating). */
  caBundlePatches: Counter<'kind'>;
  /** 1 when every webhook entry we manage held our CA bundle at the last check. */
  caBundleInSync: Gauge;
}

const byRegistry = new WeakMap<Registry, CertMetrics>();

export function certMetrics(registry: Registry = new Registry()): CertMetrics {
  const existing = byRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const metrics: CertMetrics = {
    expiry: new Gauge({
      name: 'buildkit_fleet_certs_expiry_timestamp_seconds',
      help: 'When the certificate in use expires (notAfter, Unix seconds), by cert: serving, ca, ca_next.',
      labelNames: ['cert'] as const,
      registers,
    }),
    rotations: new Counter({
      name: 'buildkit_fleet_certs_rotations_total',
      help: 'Changes made to the certificate Secret, by kind: create, renew-serving, rotate-ca/add-next, rotate-ca/switch, rotate-ca/drop-previous, repair/all, repair/serving, repair/bundle.',
      labelNames: ['kind'] as const,
      registers,
    }),
    reloads: new Counter({
      name: 'buildkit_fleet_certs_reloads_total',
      help: 'New serving certificates taken into use without a restart, by source: secret, files.',
      labelNames: ['source'] as const,
      registers,
    }),
    errors: new Counter({
      name: 'buildkit_fleet_certs_errors_total',
      help: 'Certificate lifecycle failures, by reason (e.g. secret_forbidden, secret_error, ca_bundle_forbidden, ca_bundle_error, invalid_secret, invalid_files, switch_postponed, endpoints_forbidden).',
      labelNames: ['reason'] as const,
      registers,
    }),
    caBundlePatches: new Counter({
      name: 'buildkit_fleet_certs_ca_bundle_patches_total',
      help: 'Webhook configurations whose caBundle was (re)written, by kind: mutating, validating.',
      labelNames: ['kind'] as const,
      registers,
    }),
    caBundleInSync: new Gauge({
      name: 'buildkit_fleet_certs_ca_bundle_in_sync',
      help: '1 when every managed webhook entry held the current CA bundle at the last check, else 0.',
      registers,
    }),
  };
  byRegistry.set(registry, metrics);
  return metrics;
}
