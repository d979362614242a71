// The plain-HTTP metrics port every long-running component serves: Prometheus text format on
// /metrics, liveness on /healthz, readiness on /readyz.
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import type { Registry } from 'prom-client';

import { UsageError } from '../flags/errors.ts';
import type { HostPort } from '../flags/options.ts';

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

export async function startMetricsServer(
  listen: HostPort,
  registry: Registry,
  isReady: () => boolean,
): Promise<MetricsServer> {
  const app = express();
  app.disable('x-powered-by');
  app.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  app.get('/healthz', (_req, res) => void res.type('text/plain').send('ok'));
  app.get('/readyz', (_req, res) => {
    if (isReady()) res.type('text/plain').send('ok');
    else res.status(503).type('text/plain').send('not ready');
  });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(listen.port, listen.host, () => resolve(s));
    s.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new UsageError(
          `cannot listen on ${listen.host}:${listen.port} for metrics: ${error.code ?? error.message}`,
        ),
      ),
    );
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address.includes(':') ? `[${address}]` : address}:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
