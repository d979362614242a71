// The certificate Secret on the API server: read, create-if-absent, update with optimistic
// concurrency. Several replicas share one Secret; the API server's 409 answers decide races:
// a losing create or a stale update re-reads and decides again on what the winner wrote.
//
// RBAC this needs in the Secret's namespace: get and update on the one Secret (resourceNames),
// create on secrets (create cannot be limited by name); list and watch on it for prompt hot reload
// (the watch is an informer: it lists, then watches from the list's resourceVersion; both select
// the Secret by a `metadata.name=` field selector, which Kubernetes authorizes against
// resourceNames, so both can be limited to the one Secret too).
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig, V1Secret } from '@kubernetes/client-node';

import { apiErrorText, errorStatus, isNotFound } from '../kube/errors.ts';
import { kubeWatchFn } from '../kube/informer.ts';
import type { CertSecretData } from './secret-inspection.ts';
import type { WatchCalls } from './watch.ts';

export const SECRET_TYPE_TLS = 'kubernetes.io/tls';

export interface StoredSecret {
  data: CertSecretData;
  resourceVersion: string;
  type: string | undefined;
  /** Labels and annotations, kept when updating. */
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface SecretWrite {
  data: CertSecretData;
  /** Merged into the existing annotations. */
  annotations?: Record<string, string>;
}

export interface SecretStore {
  /** "namespace/name", for logs. */
  readonly ref: string;
  /** undefined when the Secret does not exist. */
  read(): Promise<StoredSecret | undefined>;
  /** Throws SecretConflictError when it already exists. */
  create(write: SecretWrite): Promise<StoredSecret>;
  /** Throws SecretConflictError when `resourceVersion` is stale (or the Secret is gone). */
  update(write: SecretWrite, previous: StoredSecret): Promise<StoredSecret>;
}

/** Someone else wrote first: re-read and decide again. */
export class SecretConflictError extends Error {
  override name = 'SecretConflictError';
}

/** The API server refused or failed a Secret call; `status` is its HTTP status (403 for RBAC). */
export class SecretAccessError extends Error {
  override name = 'SecretAccessError';
  readonly status: number | undefined;
  readonly verb: string;
  constructor(message: string, verb: string, status: number | undefined, options?: ErrorOptions) {
    super(message, options);
    this.verb = verb;
    this.status = status;
  }
  get forbidden(): boolean {
    return this.status === 403;
  }
}

export function encodeData(data: CertSecretData): Record<string, string> {
  return Object.fromEntries(
    Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'utf8').toString('base64')]),
  );
}

export function decodeData(data: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(
    Object.entries(data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
  );
}

export interface KubeSecretStoreOptions {
  namespace: string;
  name: string;
  /** Labels put on a Secret this store creates. */
  labels?: Record<string, string>;
}

export function kubeSecretStore(kc: KubeConfig, options: KubeSecretStoreOptions): SecretStore {
  const api = kc.makeApiClient(CoreV1Api);
  const { namespace, name } = options;
  const ref = `${namespace}/${name}`;
  const fail = (verb: string, error: unknown): never => {
    const status = errorStatus(error);
    if (status === 409) throw new SecretConflictError(`${verb} Secret ${ref}: ${apiErrorText(error)}`);
    const hint =
      status === 403
        ? ` (RBAC: the service account needs "${verb}" on secrets${verb === 'create' ? '' : ` named ${name}`} in namespace ${namespace})`
        : '';
    throw new SecretAccessError(
      `cannot ${verb} Secret ${ref}: ${status ?? 'no answer'} ${apiErrorText(error)}${hint}`,
      verb,
      status,
      { cause: error },
    );
  };
  const toStored = (secret: V1Secret): StoredSecret => ({
    data: decodeData(secret.data),
    resourceVersion: secret.metadata?.resourceVersion ?? '',
    type: secret.type,
    labels: { ...secret.metadata?.labels },
    annotations: { ...secret.metadata?.annotations },
  });
  return {
    ref,
    async read() {
      try {
        return toStored(await api.readNamespacedSecret({ name, namespace }));
      } catch (error) {
        if (isNotFound(error)) return undefined;
        return fail('get', error);
      }
    },
    async create(write) {
      const body: V1Secret = {
        apiVersion: 'v1',
        kind: 'Secret',
        type: SECRET_TYPE_TLS,
        metadata: {
          name,
          namespace,
          ...(options.labels ? { labels: options.labels } : {}),
          ...(write.annotations ? { annotations: write.annotations } : {}),
        },
        data: encodeData(write.data),
      };
      try {
        return toStored(await api.createNamespacedSecret({ namespace, body }));
      } catch (error) {
        return fail('create', error);
      }
    },
    async update(write, previous) {
      const body: V1Secret = {
        apiVersion: 'v1',
        kind: 'Secret',
        // The type is immutable; a Secret someone made as Opaque stays Opaque (the rotator warns).
        ...(previous.type ? { type: previous.type } : {}),
        metadata: {
          name,
          namespace,
          // The precondition that makes concurrent replicas safe: a stale version gets 409.
          resourceVersion: previous.resourceVersion,
          labels: previous.labels,
          annotations: { ...previous.annotations, ...write.annotations },
        },
        data: encodeData(write.data),
      };
      try {
        return toStored(await api.replaceNamespacedSecret({ name, namespace, body }));
      } catch (error) {
        // 404: deleted since we read it; deciding again will create it.
        if (isNotFound(error)) throw new SecretConflictError(`Secret ${ref} was deleted meanwhile`);
        return fail('update', error);
      }
    },
  };
}

/** The API calls of the rotator's Secret watch: secrets in `namespace`, by the watch's selector. */
export function kubeSecretWatchCalls(kc: KubeConfig, namespace: string): WatchCalls<V1Secret> {
  const api = kc.makeApiClient(CoreV1Api);
  return {
    list: (selector) => api.listNamespacedSecret({ namespace, ...selector }),
    watch: kubeWatchFn(kc),
  };
}

/**
 * An in-memory store with the API server's semantics (409 on create-if-exists and on a stale
 * resourceVersion), for unit tests and dry runs. `fail` lets a test inject errors per call.
 */
export function memorySecretStore(
  initial?: CertSecretData,
  hooks: { fail?: (verb: 'get' | 'create' | 'update') => Error | undefined } = {},
): SecretStore & { snapshot(): StoredSecret | undefined; put(data: CertSecretData | undefined): void } {
  let version = 0;
  let stored: StoredSecret | undefined;
  const put = (data: CertSecretData | undefined, annotations: Record<string, string> = {}) => {
    stored =
      data === undefined
        ? undefined
        : {
            data: { ...data },
            resourceVersion: String(++version),
            type: SECRET_TYPE_TLS,
            labels: {},
            annotations: { ...stored?.annotations, ...annotations },
          };
  };
  put(initial);
  const copy = (s: StoredSecret | undefined) => (s ? { ...s, data: { ...s.data } } : undefined);
  return {
    ref: 'memory/certs',
    async read() {
      const error = hooks.fail?.('get');
      if (error) throw error;
      return copy(stored);
    },
    async create(write) {
      const error = hooks.fail?.('create');
      if (error) throw error;
      if (stored) throw new SecretConflictError('already exists');
      put(write.data, write.annotations);
      return copy(stored)!;
    },
    async update(write, previous) {
      const error = hooks.fail?.('update');
      if (error) throw error;
      if (!stored || stored.resourceVersion !== previous.resourceVersion) {
        throw new SecretConflictError('resourceVersion is stale');
      }
      put(write.data, write.annotations);
      return copy(stored)!;
    },
    snapshot: () => copy(stored),
    put: (data) => put(data),
  };
}

export interface ReconcileResult {
  secret: StoredSecret;
  /** The Secret as written by us in this call, false when reused (or adopted from a winner). */
  wrote: boolean;
  attempts: number;
}

/**
 * Read, let `next` decide what to write, write it; on a conflict read again and let `next` decide
 * again on the newer data. `next` returns undefined to keep what is stored.
 */
export async function reconcileSecret(
  store: SecretStore,
  next: (current: StoredSecret | undefined) => Promise<SecretWrite | undefined> | SecretWrite | undefined,
  options: { attempts?: number; backoffMs?: number; onConflict?: (error: SecretConflictError) => void } = {},
): Promise<ReconcileResult> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    const current = await store.read();
    const write = await next(current);
    if (!write) {
      if (!current)
        throw new Error(`internal error: nothing to write, but Secret ${store.ref} does not exist`);
      return { secret: current, wrote: false, attempts: attempt };
    }
    try {
      const secret = current ? await store.update(write, current) : await store.create(write);
      return { secret, wrote: true, attempts: attempt };
    } catch (error) {
      if (!(error instanceof SecretConflictError) || attempt >= attempts) throw error;
      options.onConflict?.(error);
      // Jitter spreads replicas that collided so they do not collide again.
      const backoff = options.backoffMs ?? 50;
      await new Promise((resolve) => setTimeout(resolve, backoff * attempt * (0.5 + Math.random())));
    }
  }
}
