// file-reloader.ts on real files: a directory laid out the way the kubelet projects a Secret volume
// (tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>, swapped with one atomic rename), invalid
// content that must not replace a good certificate, the periodic re-read, and an HTTPS server
// that changes certificate while requests keep succeeding.
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import {
  CertificateError,
  createCa,
  createServingCert,
  generateKeyPem,
  startFileReloader,
} from '../../../certs/index.ts';
import type { CertFileReloader, CertKeyPair, ServingMaterial } from '../../../certs/index.ts';
import { createWebhookServer } from '../../../webhook/server.ts';

const DAY = 24 * 60 * 60 * 1000;
let ca: CertKeyPair;
let keys: string[];
let dir: string;
let reloader: CertFileReloader | undefined;

beforeAll(() => {
  keys = [generateKeyPem(), generateKeyPem(), generateKeyPem()];
  ca = createCa({ commonName: 'files test CA', now: new Date(Date.now() - 30 * DAY) });
});
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bkf-certs-'));
});
afterEach(async () => {
  await reloader?.stop();
  reloader = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

const serving = (key: number, now = new Date(), validityDays = 30) =>
  createServingCert({
    ca,
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
    keyPem: keys[key]!,
    now,
    validityDays,
  });
const serial = (pem: string) => new X509Certificate(pem).serialNumber.toLowerCase();

/** Writes files the way the kubelet's AtomicWriter does: new dir, symlink ..data_tmp, rename over ..data. */
let generation = 0;
function project(files: Record<string, string>): void {
  const stamp = `..2030_01_01_00_00_00.${++generation}`;
  fs.mkdirSync(path.join(dir, stamp));
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, stamp, name), content);
  const old = fs.existsSync(path.join(dir, '..data')) ? fs.readlinkSync(path.join(dir, '..data')) : undefined;
  fs.symlinkSync(stamp, path.join(dir, '..data_tmp'));
  fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  for (const name of Object.keys(files)) {
    if (!fs.existsSync(path.join(dir, name))) fs.symlinkSync(path.join('..data', name), path.join(dir, name));
  }
  if (old) fs.rmSync(path.join(dir, old), { recursive: true });
}

const pair = (p: CertKeyPair) => ({ 'tls.crt': p.certPem, 'tls.key': p.keyPem, 'ca.crt': ca.certPem });

function capture() {
  const lines: Record<string, unknown>[] = [];
  return {
    lines,
    logger: pino({ level: 'debug' }, { write: (l: string) => void lines.push(JSON.parse(l)) }),
  };
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function metric(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = registry.getSingleMetric(name);
  const values = m ? (await m.get()).values : [];
  return values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value ?? 0;
}

function start(options: Partial<Parameters<typeof startFileReloader>[0]> = {}) {
  reloader = startFileReloader({
    certFile: path.join(dir, 'tls.crt'),
    keyFile: path.join(dir, 'tls.key'),
    caFile: path.join(dir, 'ca.crt'),
    // An hour: anything picked up within the test came from the directory watch.
    pollIntervalMs: 3_600_000,
    debounceMs: 50,
    logger: pino({ level: 'silent' }),
    ...options,
  });
  const changes: ServingMaterial[] = [];
  reloader.onChange((m) => changes.push(m));
  return { reloader, changes };
}

test('a kubelet-style ..data swap is picked up by the directory watch', async () => {
  const first = serving(0);
  project(pair(first));
  const { reloader: r, changes } = start();
  expect(r.current()).toEqual({ certPem: first.certPem, keyPem: first.keyPem, caBundlePem: ca.certPem });

  const second = serving(1);
  project(pair(second));
  await waitFor('the new certificate', () => changes.length === 1);
  expect(serial(r.current().certPem)).toBe(serial(second.certPem));
  expect(r.current().keyPem).toBe(second.keyPem);

  // The symlinked files themselves never changed inode-wise; a watch on the file would have missed it.
  const third = serving(2);
  project(pair(third));
  await waitFor('the third certificate', () => changes.length === 2);
  expect(serial(changes[1]!.certPem)).toBe(serial(third.certPem));
});

test('invalid content is logged and counted once, and the current certificate stays', async () => {
  const good = serving(0);
  project(pair(good));
  const registry = new Registry();
  const { lines, logger } = capture();
  const { reloader: r, changes } = start({ registry, logger });

  // A key from another certificate (e.g. a half-finished update done by hand).
  project({ ...pair(serving(1)), 'tls.key': keys[2]! });
  await waitFor('the rejection', () =>
    lines.some((l) => l['msg'] === 'new certificate files are invalid; keeping the current certificate'),
  );
  expect(lines.find((l) => l['level'] === 50)).toMatchObject({
    reason: 'the key file does not belong to the certificate file (first certificate)',
    serial: serial(good.certPem),
  });
  // Re-reading the same bad content (retry, poll) does not repeat the complaint.
  await r.reloadNow();
  await r.reloadNow();
  expect(lines.filter((l) => l['level'] === 50)).toHaveLength(1);
  expect(await metric(registry, 'buildkit_fleet_certs_errors_total', { reason: 'invalid_files' })).toBe(1);

  project({ ...pair(serving(1)), 'tls.crt': 'garbage' });
  await waitFor('the second rejection', () => lines.filter((l) => l['level'] === 50).length === 2);
  expect(lines.filter((l) => l['level'] === 50)[1]!['reason']).toMatch(/^certificate file: malformed PEM/);

  const expired = serving(1, new Date(Date.now() - 10 * DAY), 5);
  project(pair(expired));
  await waitFor('the third rejection', () => lines.filter((l) => l['level'] === 50).length === 3);
  expect(lines.filter((l) => l['level'] === 50)[2]!['reason']).toMatch(/^the certificate expired at /);

  expect(changes).toEqual([]);
  expect(r.current().certPem).toBe(good.certPem);

  const fixed = serving(1);
  project(pair(fixed));
  await waitFor('the fixed certificate', () => changes.length === 1);
  expect(r.current().certPem).toBe(fixed.certPem);
  expect(await metric(registry, 'buildkit_fleet_certs_reloads_total', { source: 'files' })).toBe(1);
  expect(await metric(registry, 'buildkit_fleet_certs_errors_total', { reason: 'invalid_files' })).toBe(3);
});

test('without the watch, the periodic re-read picks the change up', async () => {
  project(pair(serving(0)));
  const { changes } = start({ watch: false, pollIntervalMs: 100 });
  const next = serving(1);
  project(pair(next));
  await waitFor('the periodic re-read', () => changes.length === 1);
  expect(changes[0]!.certPem).toBe(next.certPem);
});

test('files written in place one after the other: the half-written state is skipped', async () => {
  const first = serving(0);
  fs.writeFileSync(path.join(dir, 'tls.crt'), first.certPem);
  fs.writeFileSync(path.join(dir, 'tls.key'), first.keyPem);
  fs.writeFileSync(path.join(dir, 'ca.crt'), ca.certPem);
  const { reloader: r, changes } = start();
  const next = serving(1);
  fs.writeFileSync(path.join(dir, 'tls.crt'), next.certPem);
  await sleep(300);
  expect(r.current().certPem).toBe(first.certPem);
  fs.writeFileSync(path.join(dir, 'tls.key'), next.keyPem);
  await waitFor('the complete pair', () => changes.length === 1);
  expect(changes[0]).toMatchObject({ certPem: next.certPem, keyPem: next.keyPem });
});

test('unusable files at start are refused with the reason', () => {
  project({ ...pair(serving(0)), 'tls.key': keys[1]! });
  expect(() => start()).toThrow(CertificateError);
  expect(() => start()).toThrow(
    /cannot serve .*tls\.crt with .*tls\.key: the key file does not belong to the certificate file/,
  );
});

test('an HTTPS server swaps certificates while requests keep succeeding', async () => {
  const first = serving(0);
  project(pair(first));
  const { reloader: r } = start();
  const server = createWebhookServer((_req, res) => res.end('ok'), r.current());
  r.onChange((m) => server.setCertificate(m));
  const { port } = await server.listen('127.0.0.1', 0);
  const seen = new Set<string>();
  const failures: string[] = [];
  const request = () =>
    new Promise<void>((resolve) => {
      // agent: false -> a new TLS handshake each time, so each request shows the certificate in use.
      const req = https.get({ host: '127.0.0.1', port, path: '/', ca: ca.certPem, agent: false }, (res) => {
        seen.add((res.socket as TLSSocket).getPeerCertificate().serialNumber.toLowerCase());
        res.resume();
        res.on('end', () => resolve());
      });
      req.on('error', (e) => {
        failures.push(e.message);
        resolve();
      });
    });
  let running = true;
  const loop = (async () => {
    while (running) await request();
  })();
  try {
    await sleep(100);
    const second = serving(1);
    project(pair(second));
    await waitFor('the server to present the new certificate', () => seen.has(serial(second.certPem)));
    await sleep(100);
  } finally {
    running = false;
    await loop;
    await server.close(100);
  }
  expect(failures).toEqual([]);
  expect(seen.has(serial(first.certPem))).toBe(true);
});
