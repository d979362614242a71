// admission.k8s.io/v1 AdmissionReview: checking what arrives and building what goes back.
// Pure functions; the HTTP server and the handlers sit on top.
import type { Operation } from 'fast-json-patch';

import type { FieldError } from './field-errors.ts';
import { fieldErrorBody, invalidMessage } from './field-errors.ts';

export interface GroupVersionKind {
  group: string;
  version: string;
  kind: string;
}

export interface AdmissionRequest {
  uid: string;
  kind: GroupVersionKind;
  resource: { group: string; version: string; resource: string };
  subResource?: string;
  name?: string;
  namespace?: string;
  operation: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  userInfo?: { username?: string };
  object?: Record<string, unknown> | null;
  oldObject?: Record<string, unknown> | null;
  dryRun?: boolean;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: {
    code: number;
    message: string;
    reason?: string;
    details?: {
      name?: string;
      group?: string;
      kind?: string;
      causes?: { field: string; message: string; reason: string }[];
    };
  };
  warnings?: string[];
  patchType?: 'JSONPatch';
  patch?: string;
}

export interface AdmissionReview {
  apiVersion: 'admission.k8s.io/v1';
  kind: 'AdmissionReview';
  response: AdmissionResponse;
}

/** A request body that is not a usable AdmissionReview: answered with HTTP 400 and this message. */
export class BadReviewError extends Error {}

const OPERATIONS = new Set(['CREATE', 'UPDATE', 'DELETE', 'CONNECT']);
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

export function parseAdmissionReview(body: unknown): AdmissionRequest {
  if (!isObject(body)) throw new BadReviewError('body must be a JSON AdmissionReview object');
  if (body['apiVersion'] !== 'admission.k8s.io/v1' || body['kind'] !== 'AdmissionReview') {
    throw new BadReviewError(
      `expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got ${JSON.stringify(body['apiVersion'])}, ${JSON.stringify(body['kind'])} (register the webhook with admissionReviewVersions: [v1])`,
    );
  }
  const request = body['request'];
  if (!isObject(request)) throw new BadReviewError('AdmissionReview has no request');
  if (typeof request['uid'] !== 'string' || !request['uid'])
    throw new BadReviewError('request.uid is missing');
  const kind = request['kind'];
  if (!isObject(kind) || typeof kind['kind'] !== 'string' || typeof kind['group'] !== 'string') {
    throw new BadReviewError('request.kind is missing or malformed');
  }
  if (typeof request['operation'] !== 'string' || !OPERATIONS.has(request['operation'])) {
    throw new BadReviewError(
      `request.operation ${JSON.stringify(request['operation'])} is not one of CREATE, UPDATE, DELETE, CONNECT`,
    );
  }
  for (const key of ['object', 'oldObject'] as const) {
    if (request[key] !== undefined && request[key] !== null && !isObject(request[key])) {
      throw new BadReviewError(`request.${key} must be an object`);
    }
  }
  return request as unknown as AdmissionRequest;
}

export function review(response: AdmissionResponse): AdmissionReview {
  return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response };
}

const withWarnings = (warnings: string[]): { warnings?: string[] } => (warnings.length ? { warnings } : {});

export function allow(uid: string, warnings: string[] = []): AdmissionResponse {
  return { uid, allowed: true, ...withWarnings(warnings) };
}

export function allowWithPatch(uid: string, patch: Operation[], warnings: string[] = []): AdmissionResponse {
  if (!patch.length) return allow(uid, warnings);
  return {
    uid,
    allowed: true,
    patchType: 'JSONPatch',
    patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
    ...withWarnings(warnings),
  };
}

/** Denies with every field error, worded and structured like the API server's 422 Invalid. */
export function denyInvalid(
  request: AdmissionRequest,
  errors: FieldError[],
  warnings: string[] = [],
): AdmissionResponse {
  const name =
    request.name ||
    String((request.object?.['metadata'] as Record<string, unknown> | undefined)?.['name'] ?? '');
  const group = request.kind.group;
  return {
    uid: request.uid,
    allowed: false,
    status: {
      code: 422,
      reason: 'Invalid',
      message: invalidMessage(request.kind.kind, group, name, errors),
      details: {
        name,
        group,
        kind: request.kind.kind,
        // kubectl prints `<field>: <message>` per cause, so the message carries type and value too
        causes: errors.map((e) => ({ field: e.field, message: fieldErrorBody(e), reason: `Field${e.type}` })),
      },
    },
    ...withWarnings(warnings),
  };
}

export function deny(uid: string, code: number, message: string): AdmissionResponse {
  return { uid, allowed: false, status: { code, message } };
}
