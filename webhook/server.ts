// The HTTPS server around the webhook app: TLS 1.2+, timeouts that tolerate the API server's
// connection reuse but not slow clients, certificate swap without restart, graceful shutdown.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { RequestListener } from 'node:http';
import { listenOn } from '../telemetry/listen.ts';

export interface TlsMaterial {
  certPem: string;
  keyPem: string;
}

export interface ServerTimeouts {
  /** idle keep-alive sockets stay this long; above the API server's reuse window (pepr#3056) */
  keepAliveMs: number;
  /** a client must send all headers within this */
  headersMs: number;
  /** a whole request (headers + body) must arrive within this; the API server gives up at 30 s */
  requestMs: number;
}

export const DEFAULT_TIMEOUTS: ServerTimeouts = { keepAliveMs: 90_000, headersMs: 32_000, requestMs: 30_000 };

export interface WebhookServer {
  server: https.Server;
  listen(host: string, port: number): Promise<AddressInfo>;
  /** Serves `tls` to new connections from now on; open connections keep theirs. */
  setCertificate(tls: TlsMaterial): void;
  /** Stops accepting, lets in-flight reviews finish, then closes; forces after `graceMs`. */
  close(graceMs?: number): Promise<void>;
}

export function createWebhookServer(
  app: RequestListener,
  tls: TlsMaterial,
  timeouts: ServerTimeouts = DEFAULT_TIMEOUTS,
): WebhookServer {
  const server = https.createServer(
    {
      cert: tls.certPem,
      key: tls.keyPem,
      minVersion: 'TLSv1.2',
      // Node enforces headersTimeout/requestTimeout only on this sweep (30 s by default).
      connectionsCheckingInterval: Math.min(1000, timeouts.headersMs),
    },
    app,
  );
  server.keepAliveTimeout = timeouts.keepAliveMs;
  server.headersTimeout = timeouts.headersMs;
  server.requestTimeout = timeouts.requestMs;
  // A TLS handshake that never completes must not hold a socket forever.
  server.on('tlsClientError', (_error, socket) => socket.destroy());

  return {
    server,
    listen: (host, port) => listenOn(server, host, port),
    setCertificate(next) {
      server.setSecureContext({ cert: next.certPem, key: next.keyPem, minVersion: 'TLSv1.2' });
    },
    close(graceMs = 10_000) {
      return new Promise((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), graceMs);
        force.unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
}
