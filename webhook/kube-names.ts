// Kubernetes' rules for label/annotation keys and label values (apimachinery validation), so
// a bad key is refused at apply time rather than when the controller's pod create fails.
import type { FieldError } from './field-errors.ts';
import { invalid } from './field-errors.ts';

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why `key` is not a valid qualified name (label or annotation key), or undefined when it is. */
export function qualifiedNameProblem(key: string): string | undefined {
  const parts = key.split('/');
  if (parts.length > 2) return 'a qualified name must be `name` or `prefix/name`';
  const [prefix, name] = parts.length === 2 ? parts : [undefined, parts[0]!];
  if (prefix !== undefined) {
    if (!prefix) return 'the prefix before "/" must not be empty';
    if (prefix.length > 253) return 'the prefix must be no more than 253 characters';
    if (!DNS_SUBDOMAIN.test(prefix)) return 'the prefix must be a lowercase DNS subdomain (e.g. example.com)';
  }
  if (!name) return 'the name part must not be empty';
  if (name.length > 63) return 'the name part must be no more than 63 characters';
  if (!NAME.test(name)) {
    return "the name part must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric";
  }
  return undefined;
}

/** Why `name` is not a DNS subdomain (most object names, StorageClass names), or undefined. */
export function dnsSubdomainProblem(name: string): string | undefined {
  if (name.length > 253) return 'must be no more than 253 characters';
  if (!DNS_SUBDOMAIN.test(name)) {
    return "must be a lowercase DNS subdomain: alphanumerics, '-' and '.', starting and ending with an alphanumeric (e.g. fast-ssd)";
  }
  return undefined;
}

export function labelValueProblem(value: string): string | undefined {
  if (value.length > 63) return 'must be no more than 63 characters';
  if (value && !NAME.test(value)) {
    return "must be empty or consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric";
  }
  return undefined;
}

/** Errors for every bad key (and, for labels, value) of a map field. */
export function validateKeyMap(
  field: string,
  map: Record<string, string | undefined> | undefined,
  kind: 'labels' | 'annotations',
): FieldError[] {
  const errors: FieldError[] = [];
  for (const [key, value] of Object.entries(map ?? {})) {
    const keyProblem = qualifiedNameProblem(key);
    if (keyProblem) errors.push(invalid(field, key, `invalid key: ${keyProblem}`));
    if (kind === 'labels' && typeof value === 'string') {
      const valueProblem = labelValueProblem(value);
      if (valueProblem) errors.push(invalid(`${field}[${key}]`, value, valueProblem));
    }
  }
  if (kind === 'annotations') {
    const size = Object.entries(map ?? {}).reduce((n, [k, v]) => n + k.length + (v?.length ?? 0), 0);
    if (size > 256 * 1024)
      errors.push(invalid(field, `${size} bytes`, 'annotations may total at most 256 KiB'));
  }
  return errors;
}
