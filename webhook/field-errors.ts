// Field errors in the shape and wording of Kubernetes' own validation, so a denied
// `kubectl apply` reads like any other API error: `spec.port: Invalid value: 70000: must be ...`.

export type FieldErrorType =
  'Invalid' | 'Required' | 'NotFound' | 'TooLong' | 'Forbidden' | 'NotSupported' | 'Duplicate';

export interface FieldError {
  field: string;
  type: FieldErrorType;
  /** the offending value, shown for Invalid/NotSupported/TooLong/NotFound/Duplicate */
  value?: unknown;
  detail: string;
}

const LABEL: Record<FieldErrorType, string> = {
  Invalid: 'Invalid value',
  Required: 'Required value',
  NotFound: 'Not found',
  TooLong: 'Too long',
  Forbidden: 'Forbidden',
  NotSupported: 'Unsupported value',
  Duplicate: 'Duplicate value',
};

const shown = (value: unknown): string => {
  const text = typeof value === 'string' ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
};

/** `Invalid value: 70000: must be ...`: the part after the field, as apimachinery's ErrorBody(). */
export function fieldErrorBody(e: FieldError): string {
  const withValue = e.value !== undefined && e.type !== 'Required' && e.type !== 'Forbidden';
  return `${LABEL[e.type]}${withValue ? `: ${shown(e.value)}` : ''}: ${e.detail}`;
}

export function formatFieldError(e: FieldError): string {
  return `${e.field}: ${fieldErrorBody(e)}`;
}

/** `<Kind>.<group> "<name>" is invalid: [a, b]`, as the API server words an Invalid status. */
export function invalidMessage(kind: string, group: string, name: string, errors: FieldError[]): string {
  const list = errors.map(formatFieldError);
  const body = list.length === 1 ? list[0] : `[${list.join(', ')}]`;
  return `${kind}.${group} "${name}" is invalid: ${body}`;
}

export const invalid = (field: string, value: unknown, detail: string): FieldError => ({
  field,
  type: 'Invalid',
  value,
  detail,
});
export const required = (field: string, detail: string): FieldError => ({ field, type: 'Required', detail });
export const forbidden = (field: string, detail: string): FieldError => ({
  field,
  type: 'Forbidden',
  detail,
});
