// Flags of the certificate lifecycle (--cert-mode files|self-managed, the Secret, validities, ...).
// Two commands take them, `webhook` and `certs`, so they sit in the shared flag layer; the code
// that acts on them is the certs component's (certs/options.ts).

const DURATION_HINT = 'a duration such as 3650d, 90d, 12h, 30s';

export const CERT_OPTIONS = {
  'cert-mode': {
    type: { oneOf: ['files', 'self-managed'] },
    env: 'BKF_CERT_MODE',
    description:
      'files: serve --tls-cert-file/--tls-key-file and reload them when they change (cert-manager or any mounted Secret); self-managed: keep a CA and serving certificate in --cert-secret, publish the CA in caBundle, renew and rotate them',
    default: 'files',
  },
  'cert-secret': {
    type: 'string',
    env: 'BKF_CERT_SECRET',
    description:
      'self-managed: Secret (kubernetes.io/tls with tls.crt, tls.key, ca.crt, ca.key and during a CA rotation ca-next.key)',
    default: 'buildkit-fleet-webhook-tls',
  },
  'cert-namespace': {
    type: 'string',
    env: 'BKF_CERT_NAMESPACE',
    description: "self-managed: namespace of the Secret and the Service (default: the pod's own namespace)",
  },
  'service-name': {
    type: 'string',
    env: 'BKF_SERVICE_NAME',
    description:
      'self-managed: Service of the webhook; the certificate covers <svc>, <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.<cluster-domain>',
    default: 'buildkit-fleet-webhook',
  },
  'cluster-domain': {
    type: 'string',
    env: 'BKF_CLUSTER_DOMAIN',
    description: 'self-managed: DNS domain of the cluster',
    default: 'cluster.local',
  },
  'cert-dns-names': {
    type: 'string',
    env: 'BKF_CERT_DNS_NAMES',
    description: 'self-managed: more DNS names for the certificate, comma-separated',
  },
  'cert-ip-addresses': {
    type: 'string',
    env: 'BKF_CERT_IP_ADDRESSES',
    description:
      'self-managed: IP addresses for the certificate, comma-separated (e.g. 127.0.0.1 when the API server dials a URL)',
  },
  'ca-validity': {
    type: 'string',
    env: 'BKF_CA_VALIDITY',
    description: `self-managed: lifetime of a new CA, ${DURATION_HINT}`,
    default: '3650d',
  },
  'serving-validity': {
    type: 'string',
    env: 'BKF_SERVING_VALIDITY',
    description: 'self-managed: lifetime of a new serving certificate (never beyond its CA)',
    default: '365d',
  },
  'renew-before': {
    type: 'string',
    env: 'BKF_RENEW_BEFORE',
    description:
      'self-managed: renew the serving certificate this long before it expires; the CA rotation starts renew-before + 2 x ca-overlap before the CA expires',
    default: '90d',
  },
  'ca-overlap': {
    type: 'string',
    env: 'BKF_CA_OVERLAP',
    description:
      'self-managed: during a CA rotation caBundle holds old and new CA this long before the switch, and again after it; at least 2 x check-interval',
    default: '30d',
  },
  'check-interval': {
    type: 'string',
    env: 'BKF_CERT_CHECK_INTERVAL',
    description:
      'self-managed: how often the Secret is re-checked (renewal, rotation, repair, changes by other replicas)',
    default: '12h',
  },
  'webhook-configurations': {
    type: 'string',
    env: 'BKF_WEBHOOK_CONFIGURATIONS',
    description:
      'self-managed: names of our Mutating/ValidatingWebhookConfigurations whose caBundle is kept, comma-separated',
    default: 'buildkit-fleet',
  },
  'webhook-configuration-selector': {
    type: 'string',
    env: 'BKF_WEBHOOK_CONFIGURATION_SELECTOR',
    description: 'self-managed: also keep caBundle of the configurations matching this label selector',
  },
  'ca-bundle-check-interval': {
    type: 'string',
    env: 'BKF_CA_BUNDLE_CHECK_INTERVAL',
    description: 'self-managed: how often caBundle is checked and restored besides watching it',
    default: '60s',
  },
  'cert-reload-interval': {
    type: 'string',
    env: 'BKF_CERT_RELOAD_INTERVAL',
    description: 'files: re-read the certificate files this often besides watching their directory',
    default: '60s',
  },
} as const;
