// The KubeConfig every command loads reuses TLS connections across API calls (client-node 2.0
// alone opens a new connection, with a full handshake, for every request).
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';

import { createCa, createServingCert } from '../../../certs/index.ts';
import { PooledKubeConfig } from '../../../kube/kube-config.ts';
import { StartupError } from '../../../flags/errors.ts';
import { readServerVersion } from '../../../kube/server-version.ts';
import pino from 'pino';

let server: https.Server;
let url: string;
let caPem: string;
let handshakes = 0;
let versionCalls = 0;
let failVersionCalls = 0;

beforeAll(async () => {
  const ca = createCa({ commonName: 'test-ca' });
  caPem = ca.certPem;
  const serving = createServingCert({ ca, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  server = https.createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url?.replace(/\/$/, '') === '/version') {
      versionCalls++;
      if (versionCalls <= failVersionCalls) {
        res.statusCode = 503;
        res.end(JSON.stringify({ kind: 'Status', code: 503, message: 'starting' }));
        return;
      }
      res.end(JSON.stringify({ major: '1', minor: '31', gitVersion: 'v1.31.0' }));
      return;
    }
    const name = req.url?.split('/').pop() ?? '';
    res.end(
      JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'default' } }),
    );
  });
  server.on('secureConnection', () => handshakes++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** `kc` loaded with one cluster at `server` (the test server by default), trusting `ca`. */
function configured<K extends KubeConfig>(kc: K, server = url, ca = caPem): K {
  kc.loadFromOptions({
    clusters: [{ name: 'c', server, caData: Buffer.from(ca).toString('base64') }],
    users: [{ name: 'u', token: 'secret-token' }],
    contexts: [{ name: 'ctx', cluster: 'c', user: 'u' }],
    currentContext: 'ctx',
  });
  return kc;
}

const coreApi = (kc: KubeConfig) => kc.makeApiClient(CoreV1Api);

async function handshakesFor(api: CoreV1Api, calls: number): Promise<number> {
  const before = handshakes;
  for (let i = 0; i < calls; i++) {
    const cm = await api.readNamespacedConfigMap({ namespace: 'default', name: `cm${i}` });
    expect(cm.metadata?.name).toBe(`cm${i}`);
  }
  return handshakes - before;
}

describe('PooledKubeConfig', () => {
  it('makes ten sequential API calls over at most two TLS connections', async () => {
    // undici sometimes opens a second connection when a request is dispatched just as the
    // previous response completes; both are then reused
    expect(await handshakesFor(coreApi(configured(new PooledKubeConfig())), 10)).toBeLessThanOrEqual(2);
  });

  it('is needed: plain client-node opens a connection per call (drop the workaround when this fails)', async () => {
    expect(await handshakesFor(coreApi(configured(new KubeConfig())), 10)).toBe(10);
  });

  it('still verifies the server against the configured CA', async () => {
    const other = createCa({ commonName: 'other-ca' });
    const kc = configured(new PooledKubeConfig(), url, other.certPem);
    await expect(coreApi(kc).readNamespacedConfigMap({ namespace: 'default', name: 'x' })).rejects.toThrow();
  });
});

describe('readServerVersion', () => {
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => logs.push(JSON.parse(line)) });

  it('retries while the API server is not answering, then returns its version', async () => {
    versionCalls = 0;
    failVersionCalls = 2;
    logs.length = 0;
    const version = await readServerVersion(configured(new PooledKubeConfig()), logger, [5, 5, 5]);
    expect(version.gitVersion).toBe('v1.31.0');
    expect(versionCalls).toBe(3);
    expect(logs.map((l) => l['msg'])).toEqual(['API server unreachable', 'API server unreachable']);
  });

  it('gives up with a clear message naming the server and the cause, not a stack trace', async () => {
    const closed = https.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const attempt = readServerVersion(
      configured(new PooledKubeConfig(), `https://127.0.0.1:${port}`),
      logger,
      [5, 5],
    );
    await expect(attempt).rejects.toThrow(StartupError);
    await expect(attempt).rejects.toThrow(
      new RegExp(
        `^cannot reach the API server at https://127.0.0.1:${port} \\(GET /version, 3 attempts\\): .*ECONNREFUSED`,
      ),
    );
  });
});
