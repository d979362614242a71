// How the platform reads client-node's errors (kube/errors.ts): the shapes below are the ones
// client-node 2.x throws (ApiException: .code and a JSON body; Watch: .statusCode; fetch: a cause).
import { ApiException } from '@kubernetes/client-node';

import {
  apiErrorText,
  errorMessage,
  errorReason,
  errorStatus,
  isConflict,
  isForbidden,
  isNotFound,
} from '../../../kube/errors.ts';

const apiError = (code: number, message: string) =>
  new ApiException(
    code,
    `HTTP-Code: ${code}\nMessage: ...\nBody: ...`,
    JSON.stringify({ kind: 'Status', message }),
    {},
  );

test('the HTTP status comes from an ApiException or a watch error, never from a Node error code', () => {
  expect(errorStatus(apiError(404, 'x'))).toBe(404);
  expect(errorStatus(Object.assign(new Error('watch'), { statusCode: 410 }))).toBe(410);
  expect(errorStatus(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))).toBeUndefined();
  expect(errorStatus(undefined)).toBeUndefined();
  expect([
    isNotFound(apiError(404, 'x')),
    isConflict(apiError(409, 'x')),
    isForbidden(apiError(403, 'x')),
  ]).toEqual([true, true, true]);
  expect(isNotFound(apiError(409, 'x'))).toBe(false);
});

test.each([
  [apiError(503, 'x'), 'http_503'],
  [Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), 'ECONNREFUSED'],
  [
    new TypeError('fetch failed', { cause: Object.assign(new Error('reset'), { code: 'ECONNRESET' }) }),
    'ECONNRESET',
  ],
  [new TypeError('boom'), 'TypeError'],
  ['a string', 'error'],
])('a metric reason of low cardinality: %s is %s', (error, reason) => {
  expect(errorReason(error)).toBe(reason);
});

test("apiErrorText is the API server's own message, else the first line of the error", () => {
  expect(
    apiErrorText(apiError(403, 'secrets "x" is forbidden: User "u" cannot get resource "secrets"')),
  ).toBe('secrets "x" is forbidden: User "u" cannot get resource "secrets"');
  expect(apiErrorText(new Error('first line\nsecond line'))).toBe('first line');
  expect(apiErrorText(Object.assign(new Error('not json'), { body: '<html>' }))).toBe('not json');
});

test('errorMessage adds the cause and reads the plain objects node-forge throws', () => {
  expect(errorMessage(new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED') }))).toBe(
    'fetch failed: connect ECONNREFUSED',
  );
  expect(errorMessage({ message: 'Invalid PEM formatted message.' })).toBe('Invalid PEM formatted message.');
  const quoted = new Error('tls.crt: malformed PEM (Invalid PEM formatted message.)', {
    cause: { message: 'Invalid PEM formatted message.' },
  });
  expect(errorMessage(quoted)).toBe('tls.crt: malformed PEM (Invalid PEM formatted message.)');
  expect(errorMessage(42)).toBe('42');
});
