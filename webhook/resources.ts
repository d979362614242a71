// Checks of container resource requirements against each other and against a template maximum.
import type { V1ResourceRequirements } from '@kubernetes/client-node';

import type { Quantity } from '../api/quantity.ts';
import { compareQuantities, parseQuantity } from '../api/quantity.ts';
import type { FieldError } from './field-errors.ts';
import { invalid } from './field-errors.ts';

type QuantityMap = Record<string, string | number | undefined> | undefined;

/** Parses every value of a quantity map; bad ones become field errors. */
export function parseQuantityMap(
  field: string,
  map: QuantityMap,
  errors: FieldError[],
): Map<string, Quantity> {
  const parsed = new Map<string, Quantity>();
  for (const [name, raw] of Object.entries(map ?? {})) {
    if (raw === undefined) continue;
    const q = parseQuantity(raw);
    if (!q) {
      errors.push(invalid(`${field}.${name}`, raw, 'must be a Kubernetes quantity, e.g. 500m, 2, 8Gi'));
    } else if (q.numerator < 0n) {
      errors.push(invalid(`${field}.${name}`, raw, 'must not be negative'));
    } else {
      parsed.set(name, q);
    }
  }
  return parsed;
}

export interface ResourceFindings {
  errors: FieldError[];
  /** requests/limits above the maximum, as [field, value, maximum] */
  aboveMaximum: { field: string; value: string | number; maximum: string | number }[];
}

/** Validates `requirements` (quantities, requests <= limits) and compares them with `maximum`. */
export function checkRequirements(
  field: string,
  requirements: V1ResourceRequirements | undefined,
  maximum: QuantityMap,
): ResourceFindings {
  const errors: FieldError[] = [];
  const aboveMaximum: ResourceFindings['aboveMaximum'] = [];
  const requests = parseQuantityMap(`${field}.requests`, requirements?.requests, errors);
  const limits = parseQuantityMap(`${field}.limits`, requirements?.limits, errors);
  const max = parseQuantityMap('maximum', maximum, []);
  for (const [name, request] of requests) {
    const limit = limits.get(name);
    if (limit && compareQuantities(request, limit) > 0) {
      errors.push(
        invalid(
          `${field}.requests.${name}`,
          requirements!.requests![name],
          `must be less than or equal to ${name} limit of ${requirements!.limits![name]}`,
        ),
      );
    }
  }
  for (const [kind, values, raw] of [
    ['requests', requests, requirements?.requests],
    ['limits', limits, requirements?.limits],
  ] as const) {
    for (const [name, value] of values) {
      const cap = max.get(name);
      if (cap && compareQuantities(value, cap) > 0) {
        aboveMaximum.push({
          field: `${field}.${kind}.${name}`,
          value: raw![name]!,
          maximum: maximum![name]!,
        });
      }
    }
  }
  return { errors, aboveMaximum };
}
