// The admission server over real TLS on loopback: bad input gets a clear 4xx, the server survives.
import https from 'node:https';
import tls from 'node:tls';
import { pino } from 'pino';

import { createCa, createServingCert } from '../../../certs/index.ts';
import { createApp } from '../../../webhook/app.ts';
import { ROUTES } from '../../../webhook/configurations.ts';
import {
  mutateTemplate,
  validateBuildkitHandler,
  validateTemplateHandler,
} from '../../../webhook/handlers.ts';
import { createWebhookMetrics } from '../../../webhook/metrics.ts';
import type { WebhookServer } from '../../../webhook/server.ts';
import { createWebhookServer } from '../../../webhook/server.ts';
import type { Reply } from '../../support/admission-requests.ts';
import { postTo, reviewOf, templateRequest } from '../../support/admission-requests.ts';

const ca = createCa({ commonName: 'test CA' });
const serving = createServingCert({ ca, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
let server: WebhookServer;
let port: number;
let ready = true;
const metrics = createWebhookMetrics();

beforeAll(async () => {
  const app = createApp({
    routes: {
      [ROUTES.mutateTemplate]: mutateTemplate,
      [ROUTES.validateTemplate]: validateTemplateHandler,
      [ROUTES.validateBuildkit]: validateBuildkitHandler(async () => {
        throw new Error('boom');
      }),
    },
    logger: pino({ level: 'silent' }),
    metrics,
    isReady: () => ready,
  });
  server = createWebhookServer(app, serving, { keepAliveMs: 5000, headersMs: 1000, requestMs: 1500 });
  port = (await server.listen('127.0.0.1', 0)).port;
});
afterAll(() => server.close(100));

const post = (path: string, body: string | Buffer, contentType = 'application/json') =>
  postTo({ port, ca: ca.certPem }, path, body, contentType);

test('a review is answered as an AdmissionReview with the request uid', async () => {
  const r = await post(ROUTES.mutateTemplate, reviewOf(templateRequest({ rootless: true })));
  expect(r.status).toBe(200);
  const body = JSON.parse(r.body);
  expect(body).toMatchObject({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' });
  expect(body.response).toMatchObject({
    uid: templateRequest({}).uid,
    allowed: true,
    patchType: 'JSONPatch',
  });
});

test.each([
  ['malformed JSON', '{"apiVersion": ', 400, 'malformed JSON'],
  [
    'a wrong apiVersion',
    JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: {} }),
    400,
    'expected apiVersion admission.k8s.io/v1',
  ],
  [
    'a wrong kind',
    JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'Pod' }),
    400,
    'kind AdmissionReview',
  ],
  [
    'a missing request.uid',
    reviewOf({ ...templateRequest({}), uid: undefined }),
    400,
    'request.uid is missing',
  ],
  ['a JSON array', '[1,2]', 400, 'body must be a JSON AdmissionReview object'],
])('%s gets a clear 400', async (_name, body, status, message) => {
  const r = await post(ROUTES.validateTemplate, body);
  expect(r.status).toBe(status);
  expect(JSON.parse(r.body).error).toContain(message);
  expect(r.body).not.toMatch(/at .*\.ts:\d+/); // no stack trace
});

test('an unexpected resource gets a denied review that says why', async () => {
  const pod = { ...templateRequest({}), kind: { group: '', version: 'v1', kind: 'Pod' } };
  const r = await post(ROUTES.validateTemplate, reviewOf(pod));
  expect(r.status).toBe(200);
  expect(JSON.parse(r.body).response).toMatchObject({
    allowed: false,
    status: { code: 400, message: expect.stringContaining('not Pod.core') },
  });
});

test('a body over the limit gets 413', async () => {
  const r = await post(ROUTES.validateTemplate, Buffer.alloc(5 * 1024 * 1024, 'a'));
  expect(r.status).toBe(413);
  expect(JSON.parse(r.body).error).toContain('larger than 4mb');
});

test('a non-JSON content type gets 415, an unknown path 404', async () => {
  expect((await post(ROUTES.validateTemplate, 'x', 'text/plain')).status).toBe(415);
  expect((await post('/nope', '{}')).status).toBe(404);
});

test('a failing dependency is a denied review with the reason, not a crash', async () => {
  const r = await post(
    ROUTES.validateBuildkit,
    reviewOf({
      ...templateRequest({}),
      kind: { group: 'buildkit.seatgeek.io', version: 'v1alpha1', kind: 'Buildkit' },
      object: { metadata: { name: 'b' }, spec: { template: 't' } },
    }),
  );
  expect(JSON.parse(r.body).response.status.message).toContain('could not read BuildkitTemplate "t"');
});

test('a slow client that never finishes its headers is cut off', async () => {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, servername: 'localhost' });
  await new Promise((resolve) => socket.once('secureConnect', resolve));
  socket.write('POST /validate/buildkittemplates HTTP/1.1\r\nHost: x\r\n'); // and nothing more
  const started = Date.now();
  const reply = await new Promise<string>((resolve) => {
    let text = '';
    socket.on('data', (d) => (text += d));
    socket.on('close', () => resolve(text));
  });
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(reply).toMatch(/^HTTP\/1\.1 408/);
}, 15_000);

test('after all that, the server still serves; health, readiness and metrics answer', async () => {
  const get = (path: string) =>
    new Promise<Reply>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port, path, ca: ca.certPem }, (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode!, body: text }));
        })
        .on('error', reject);
    });
  expect((await post(ROUTES.validateTemplate, reviewOf(templateRequest({ port: 1 })))).status).toBe(200);
  expect((await get('/healthz')).status).toBe(200);
  expect((await get('/readyz')).status).toBe(200);
  ready = false;
  expect((await get('/readyz')).status).toBe(503);
  ready = true;
  const m = await get('/metrics');
  expect(m.body).toMatch(
    /buildkit_fleet_webhook_reviews_total\{route="\/validate\/buildkittemplates",result="bad_request"\} [1-9]/,
  );
  // The review's duration is machine-dependent, so only the bucket layout and the +Inf count are asserted.
  expect(m.body).toMatch(
    /buildkit_fleet_webhook_review_duration_seconds_bucket\{le="0.005",route="\/mutate\/buildkittemplates",result="patched"\} [01]\n/,
  );
  expect(m.body).toMatch(
    /buildkit_fleet_webhook_review_duration_seconds_bucket\{le="\+Inf",route="\/mutate\/buildkittemplates",result="patched"\} 1\n/,
  );
});

test('TLS below 1.2 is refused', async () => {
  const error = await new Promise<Error | undefined>((resolve) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca: ca.certPem,
      maxVersion: 'TLSv1.1',
      minVersion: 'TLSv1',
    });
    socket.on('secureConnect', () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.on('error', resolve);
  });
  expect(error).toBeDefined();
});
