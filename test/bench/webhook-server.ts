// Child process of the webhook benchmark: serves either the real webhook or a bare HTTPS server
// that answers every POST with a fixed, precomputed AdmissionReview (the baseline). Prints its port.
import https from 'node:https';
import { createLogger } from '../../telemetry/logger.ts';

import { createApp } from '../../webhook/app.ts';
import { ROUTES } from '../../webhook/configurations.ts';
import { mutateTemplate, validateBuildkitHandler, validateTemplateHandler } from '../../webhook/handlers.ts';
import { createWebhookMetrics } from '../../webhook/metrics.ts';
import { createWebhookServer } from '../../webhook/server.ts';

const [mode, certB64, keyB64, fixedB64] = process.argv.slice(2);
const tls = {
  certPem: Buffer.from(certB64!, 'base64').toString(),
  keyPem: Buffer.from(keyB64!, 'base64').toString(),
};

if (mode === 'webhook') {
  const app = createApp({
    routes: {
      [ROUTES.mutateTemplate]: mutateTemplate,
      [ROUTES.validateTemplate]: validateTemplateHandler,
      [ROUTES.validateBuildkit]: validateBuildkitHandler(async () => undefined),
    },
    // production logs one line per review; keep that cost in the measurement
    logger: createLogger({ level: 'info', component: 'webhook', destination: '/dev/null' }),
    metrics: createWebhookMetrics(),
    isReady: () => true,
  });
  const server = createWebhookServer(app, tls);
  const { port } = await server.listen('127.0.0.1', 0);
  process.stdout.write(`${port}\n`);
  process.on('SIGINT', () => process.exit(0));
} else {
  const fixed = Buffer.from(fixedB64!, 'base64');
  const server = https.createServer(
    { cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2' },
    (req, res) => {
      req.on('data', () => {});
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': fixed.length });
        res.end(fixed);
      });
    },
  );
  server.keepAliveTimeout = 90_000;
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${(server.address() as { port: number }).port}\n`);
  });
}
