// The express application of the admission webhook: review routes, health, readiness, metrics.
// Separate from the TLS server so tests and the benchmark can mount it anywhere.
import express from 'express';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';

import type { AdmissionRequest, AdmissionResponse } from './admission.ts';
import { BadReviewError, parseAdmissionReview, review } from './admission.ts';
import type { Handler } from './handlers.ts';
import type { WebhookMetrics } from './metrics.ts';

/** AdmissionReviews carry the object and oldObject; etcd caps an object at 1.5 MiB. */
export const BODY_LIMIT = '4mb';

export interface AppOptions {
  routes: Record<string, Handler>;
  logger: Logger;
  metrics: WebhookMetrics;
  isReady: () => boolean;
  /** sees every parsed review body (scripts/record-admission-fixtures.ts records them) */
  onReview?: (route: string, body: unknown) => void;
}

function resultOf(response: AdmissionResponse): string {
  if (!response.allowed) return 'denied';
  return response.patch ? 'patched' : 'allowed';
}

function logReview(
  logger: Logger,
  route: string,
  request: AdmissionRequest,
  response: AdmissionResponse,
  reason: string,
  ms: number,
): void {
  const object = request.object ?? request.oldObject;
  const metadata = (object?.['metadata'] ?? {}) as { name?: string; generateName?: string };
  logger.info(
    {
      route,
      uid: request.uid,
      kind: request.kind.kind,
      namespace: request.namespace,
      name: request.name || metadata.name || (metadata.generateName ? `${metadata.generateName}*` : ''),
      operation: request.operation,
      dryRun: request.dryRun === true,
      user: request.userInfo?.username,
      decision: resultOf(response),
      reason,
      warnings: response.warnings?.length ?? 0,
      durationMs: Number(ms.toFixed(3)),
    },
    'admission review',
  );
}

export function createApp(options: AppOptions): express.Express {
  const { routes, logger, metrics, isReady } = options;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.get('/healthz', (_req, res) => {
    res.type('text/plain').send('ok');
  });
  app.get('/readyz', (_req, res) => {
    if (isReady()) res.type('text/plain').send('ok');
    else res.status(503).type('text/plain').send('certificate not loaded');
  });
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  // express.raw + one JSON.parse: body-parser's json type adds charset decoding and checks that
  // showed up in a review's CPU profile, while the API server always sends UTF-8 JSON.
  const rawBody = express.raw({ limit: BODY_LIMIT, type: () => true });
  for (const [path, handler] of Object.entries(routes)) {
    app.post(
      path,
      (req, res, next) => {
        if (!req.is('application/json')) {
          res.status(415).json({ error: 'Content-Type must be application/json (an AdmissionReview)' });
          metrics.reviews.inc({ route: path, result: 'bad_request' });
          return;
        }
        next();
      },
      rawBody,
      async (req: Request, res: Response) => {
        const start = process.hrtime.bigint();
        let request: AdmissionRequest;
        let body: unknown;
        try {
          body = JSON.parse((req.body as Buffer).toString('utf8'));
        } catch (error) {
          metrics.reviews.inc({ route: path, result: 'bad_request' });
          res.status(400).json({ error: `malformed JSON: ${(error as Error).message}` });
          return;
        }
        options.onReview?.(path, body);
        try {
          request = parseAdmissionReview(body);
        } catch (error) {
          if (!(error instanceof BadReviewError)) throw error;
          metrics.reviews.inc({ route: path, result: 'bad_request' });
          logger.warn({ route: path, reason: error.message }, 'bad admission request');
          res.status(400).json({ error: error.message });
          return;
        }
        const { response, reason } = await handler(request);
        // one Buffer write: no second stringify/charset pass in res.json
        res.setHeader('content-type', 'application/json');
        res.end(Buffer.from(JSON.stringify(review(response))));
        const ms = Number(process.hrtime.bigint() - start) / 1e6;
        const result = resultOf(response);
        const series = metrics.series(path, result);
        series.reviews.inc();
        series.latency.observe(ms / 1000);
        logReview(logger, path, request, response, reason, ms);
      },
    );
  }

  app.use((req, res) => {
    res.status(404).json({ error: `no route ${req.method} ${req.path}` });
  });
  // Every error ends here: a clear status and message, never a stack trace to the client.
  app.use(
    (error: Error & { status?: number; type?: string }, req: Request, res: Response, _next: NextFunction) => {
      const route = req.path;
      if (error.type === 'entity.too.large') {
        metrics.reviews.inc({ route, result: 'bad_request' });
        res.status(413).json({ error: `request body larger than ${BODY_LIMIT}` });
      } else if (error.type === 'entity.parse.failed') {
        metrics.reviews.inc({ route, result: 'bad_request' });
        res.status(400).json({ error: `malformed JSON: ${error.message}` });
      } else if (error.status && error.status >= 400 && error.status < 500) {
        metrics.reviews.inc({ route, result: 'bad_request' });
        res.status(error.status).json({ error: error.message });
      } else {
        metrics.reviews.inc({ route, result: 'error' });
        logger.error({ route, err: error }, 'webhook handler failed');
        res
          .status(500)
          .json({ error: 'internal error while handling the admission review (see webhook logs)' });
      }
    },
  );
  return app;
}
