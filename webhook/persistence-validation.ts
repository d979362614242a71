// Validation of BuildkitTemplate spec.persistence: what the schema cannot say, checked here so a
// bad value is refused at `kubectl apply` rather than when the controller creates the claim or the
// pod. Checked whether or not persistence is enabled: the fields are stored either way.
import { posix } from 'node:path';

import {
  CONFIG_DIR,
  PRESTOP_SCRIPT_PATH,
  ROOTLESS_CONFIG_DIR,
  ROOTLESS_SOCKET_PATH,
  SOCKET_PATH,
} from '../api/group.ts';
import { parseQuantity } from '../api/quantity.ts';
import type { BuildkitTemplateSpec } from '../api/types.generated.ts';
import type { FieldError } from './field-errors.ts';
import { invalid } from './field-errors.ts';
import { dnsSubdomainProblem } from './kube-names.ts';

const FIELD = 'spec.persistence';

/**
 * Paths in the buildkitd container that the claim must not be mounted at, over or under: what the
 * pod builder mounts, buildkitd's socket directory, and what the kubelet and the kernel provide.
 */
export function reservedPaths(rootless: boolean): { path: string; what: string }[] {
  return [
    { path: rootless ? ROOTLESS_CONFIG_DIR : CONFIG_DIR, what: 'the buildkitd.toml mount' },
    { path: PRESTOP_SCRIPT_PATH, what: 'the preStop script mount' },
    {
      path: posix.dirname(rootless ? ROOTLESS_SOCKET_PATH : SOCKET_PATH),
      what: "buildkitd's socket directory",
    },
    { path: '/var/run/secrets/kubernetes.io/serviceaccount', what: 'the service account token mount' },
    ...['/etc/hosts', '/etc/hostname', '/etc/resolv.conf'].map((path) => ({
      path,
      what: 'a file the kubelet mounts',
    })),
    ...['/proc', '/sys', '/dev'].map((path) => ({ path, what: 'a kernel filesystem' })),
  ];
}

const within = (inner: string, outer: string) => inner === outer || inner.startsWith(`${outer}/`);

/** Why `mountPath` cannot hold buildkitd's state, or undefined when it can. */
export function mountPathProblem(mountPath: string, rootless: boolean): string | undefined {
  if (!mountPath.startsWith('/')) return 'must be an absolute path';
  if (mountPath.split('/').includes('..')) return "must not contain '..'";
  if (mountPath === '/') return 'must not be / (the claim would hide the whole image)';
  if (posix.normalize(mountPath) !== mountPath || mountPath.endsWith('/')) {
    return `must be normalized (no "//", "." or trailing "/"; e.g. ${posix.normalize(mountPath).replace(/(.)\/$/, '$1')})`;
  }
  for (const { path, what } of reservedPaths(rootless)) {
    if (within(mountPath, path) || within(path, mountPath)) {
      return `must not be, contain or lie inside ${path} (${what})`;
    }
  }
  return undefined;
}

export function validatePersistence(spec: BuildkitTemplateSpec): FieldError[] {
  const persistence = spec.persistence;
  if (!persistence) return [];
  const errors: FieldError[] = [];
  const { size, storageClassName, mountPath, accessModes } = persistence;

  if (size !== undefined) {
    const quantity = parseQuantity(size);
    if (!quantity) {
      errors.push(invalid(`${FIELD}.size`, size, 'must be a Kubernetes quantity, e.g. 20Gi'));
    } else if (quantity.numerator <= 0n) {
      errors.push(invalid(`${FIELD}.size`, size, 'must be greater than zero'));
    }
  }
  if (storageClassName) {
    const problem = dnsSubdomainProblem(storageClassName);
    if (problem) errors.push(invalid(`${FIELD}.storageClassName`, storageClassName, problem));
  }
  if (mountPath !== undefined) {
    const problem = mountPathProblem(mountPath, spec.rootless === true);
    if (problem) errors.push(invalid(`${FIELD}.mountPath`, mountPath, problem));
  }
  const seen = new Set<string>();
  (accessModes ?? []).forEach((mode, i) => {
    if (seen.has(mode)) {
      errors.push({
        field: `${FIELD}.accessModes[${i}]`,
        type: 'Duplicate',
        value: mode,
        detail: 'listed twice',
      });
    }
    seen.add(mode);
  });
  // the API server refuses such a claim (ReadWriteOncePod excludes every other mode)
  if (seen.has('ReadWriteOncePod') && seen.size > 1) {
    errors.push(
      invalid(
        `${FIELD}.accessModes`,
        accessModes,
        'ReadWriteOncePod may not be combined with other access modes',
      ),
    );
  }
  return errors;
}
