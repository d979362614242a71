// Resources of the buildkitd container: the template's resources.default, overridden per resource
// name by the Buildkit's spec.resources, bounded by the template's resources.maximum. Same rules as
// seatgeek's ApplyMaximums, in this order:
//   1. merge requests and limits key by key; later layers (the instance) win;
//   2. a resource named in `maximum` without a limit gets limit = maximum: the maximum doubles as
//      the default limit (seatgeek does this and users rely on it: the README's template gets a
//      cpu limit of 8 from its maximum);
//   3. a limit above the maximum is lowered to the maximum;
//   4. a request above its limit is lowered to the limit (which step 3 capped at the maximum), so
//      a request never ends above its limit: we lower the request rather than raise the limit
//      because the limit is the bound the admin or the user set on purpose.
// Requests of resources with neither limit nor maximum stay unbounded, as in seatgeek.
//
// Differences from seatgeek, each because Kubernetes would otherwise refuse or misread the pod:
// - The result reports every change (`clamped`, `filledLimits`) instead of a bare "modified"
//   flag, so the controller can explain it in status and events rather than clamp silently.
// - Resources that cannot be overcommitted (extended resources such as nvidia.com/gpu, and
//   hugepages-*) are not filled from the maximum: for them a limit is an allocation, not a cap,
//   so filling would hand every pod a GPU. A request without a limit gets limit = request, since
//   Kubernetes requires both and equal for these resources.
// - Quantities compare exactly (api/quantity.ts), across units: 1Gi > 1G, 2 == 2000m.
// - Keys come out sorted, so equal inputs give byte-identical pods.
// - `claims` (dynamic resource allocation) is dropped: the pod has no resourceClaims to refer to.
import type { V1ResourceRequirements } from '@kubernetes/client-node';

import type { Quantity } from './quantity.ts';
import { compareQuantities, parseQuantity } from './quantity.ts';
import type { TemplateResources } from './types.generated.ts';
import { byCodePoint } from './order.ts';

/** A quantity as stored: the CRD schemas accept numbers (`cpu: 8`) as well as strings. */
type RawQuantity = string | number;
type RawList = Record<string, RawQuantity | undefined> | undefined;

/** A request or limit that came out lower than asked. */
export interface ClampedResource {
  /** `requests.<name>` or `limits.<name>` */
  field: string;
  /** the merged value before clamping */
  requested: string;
  granted: string;
  /** `maximum`: above the template maximum; `limit`: a request above its own limit */
  reason: 'maximum' | 'limit';
  /** which layer set the requested value */
  source: string;
}

/** A limit the result has although no layer set it. */
export interface FilledLimit {
  /** `limits.<name>` */
  field: string;
  granted: string;
  /** `maximum`: copied from the maximum; `request`: a non-overcommittable request's own value */
  from: 'maximum' | 'request';
}

export interface MergedResources {
  resources: V1ResourceRequirements;
  clamped: ClampedResource[];
  filledLimits: FilledLimit[];
}

/** One layer of requirements; `source` names it in reports, `path` (default: source) in errors. */
export interface ResourceLayer {
  source: string;
  path?: string;
  requirements: V1ResourceRequirements | undefined;
}

/** A value that is not a Kubernetes quantity; the pod cannot be built. */
export class ResourceQuantityError extends Error {
  readonly field: string;
  readonly value: unknown;
  constructor(field: string, value: unknown) {
    super(`${field}: ${JSON.stringify(value)} is not a Kubernetes quantity (e.g. 500m, 2, 8Gi)`);
    this.name = 'ResourceQuantityError';
    this.field = field;
    this.value = value;
  }
}

/**
 * Kubernetes' IsOvercommitAllowed: native resources (no domain, or a kubernetes.io domain) other
 * than hugepages. Extended resources and hugepages need request == limit.
 */
export function isOvercommittable(name: string): boolean {
  const native = !name.includes('/') || name.includes('kubernetes.io/');
  return native && !name.startsWith('hugepages-');
}

interface Entry {
  raw: string;
  quantity: Quantity;
  source: string;
}

function parseEntry(field: string, raw: RawQuantity, source: string): Entry {
  const quantity = parseQuantity(raw);
  if (!quantity) throw new ResourceQuantityError(field, raw);
  return { raw: String(raw), quantity, source };
}

function toList(entries: Map<string, Entry>): Record<string, string> | undefined {
  if (entries.size === 0) return undefined;
  const list: Record<string, string> = {};
  for (const key of [...entries.keys()].sort(byCodePoint)) list[key] = entries.get(key)!.raw;
  return list;
}

/**
 * Merges `layers` (later wins per resource name) and applies `maximum`. `maximumPath` names the
 * maximum in errors. Throws ResourceQuantityError on a value that is not a quantity.
 */
export function applyMaximums(
  maximum: RawList,
  layers: readonly ResourceLayer[],
  maximumPath = 'maximum',
): MergedResources {
  const limits = new Map<string, Entry>();
  const requests = new Map<string, Entry>();
  for (const { source, path = source, requirements } of layers) {
    for (const [kind, target] of [
      ['limits', limits],
      ['requests', requests],
    ] as const) {
      for (const [name, raw] of Object.entries((requirements?.[kind] ?? {}) as RawList & object)) {
        if (raw === undefined || raw === null) continue;
        target.set(name, parseEntry(`${path}.${kind}.${name}`, raw, source));
      }
    }
  }
  const max = new Map<string, Entry>();
  for (const [name, raw] of Object.entries(maximum ?? {})) {
    if (raw === undefined || raw === null) continue;
    max.set(name, parseEntry(`${maximumPath}.${name}`, raw, 'maximum'));
  }

  const clamped: ClampedResource[] = [];
  const filledLimits: FilledLimit[] = [];

  // Non-overcommittable requests without a limit: Kubernetes needs limit == request.
  for (const [name, request] of requests) {
    if (!isOvercommittable(name) && !limits.has(name)) {
      limits.set(name, request);
      filledLimits.push({ field: `limits.${name}`, granted: request.raw, from: 'request' });
    }
  }
  for (const [name, cap] of [...max].sort(([a], [b]) => byCodePoint(a, b))) {
    if (limits.has(name) || !isOvercommittable(name)) continue;
    limits.set(name, cap);
    filledLimits.push({ field: `limits.${name}`, granted: cap.raw, from: 'maximum' });
  }
  for (const [name, limit] of limits) {
    const cap = max.get(name);
    if (cap && compareQuantities(limit.quantity, cap.quantity) > 0) {
      clamped.push({
        field: `limits.${name}`,
        requested: limit.raw,
        granted: cap.raw,
        reason: 'maximum',
        source: limit.source,
      });
      limits.set(name, cap);
    }
  }
  for (const [name, request] of requests) {
    const limit = limits.get(name);
    if (limit && compareQuantities(request.quantity, limit.quantity) > 0) {
      const cap = max.get(name);
      const aboveMaximum = cap !== undefined && compareQuantities(request.quantity, cap.quantity) > 0;
      clamped.push({
        field: `requests.${name}`,
        requested: request.raw,
        granted: limit.raw,
        reason: aboveMaximum ? 'maximum' : 'limit',
        source: request.source,
      });
      requests.set(name, limit);
    }
  }

  const resources: V1ResourceRequirements = {};
  const limitList = toList(limits);
  const requestList = toList(requests);
  if (limitList) resources.limits = limitList;
  if (requestList) resources.requests = requestList;
  const order = (a: { field: string }, b: { field: string }): number => byCodePoint(a.field, b.field);
  return { resources, clamped: clamped.sort(order), filledLimits: filledLimits.sort(order) };
}

/**
 * The buildkitd container's resources: the template's resources.default, then the Buildkit's
 * spec.resources, bounded by the template's resources.maximum.
 */
export function mergeResources(
  template: TemplateResources | undefined,
  instance: V1ResourceRequirements | undefined,
): MergedResources {
  return applyMaximums(
    template?.maximum,
    [
      {
        source: 'template',
        path: 'BuildkitTemplate spec.resources.default',
        requirements: template?.default,
      },
      { source: 'instance', path: 'Buildkit spec.resources', requirements: instance },
    ],
    'BuildkitTemplate spec.resources.maximum',
  );
}
