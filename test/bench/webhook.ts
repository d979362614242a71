// Admission latency and throughput of the webhook for a typical BuildkitTemplate review (the
// seed template, validate route: TOML parse included) over TLS with keep-alive, against a bare
// HTTPS server answering the same payload, measured in the same run and interleaved.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

import { createCa, createServingCert } from '../../certs/index.ts';
import { ROUTES } from '../../webhook/configurations.ts';
import { median, percentile, table, writeResult } from './lib.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 4);
const RATE = 500; // reviews/s for the latency measurement
const CONCURRENCY = 16; // in-flight requests for the throughput measurement

const review = readFileSync(
  new URL(
    '../unit/webhook/fixtures/admission/seed-template-create.validate-buildkittemplates.json',
    import.meta.url,
  ),
);
const node = process.execPath;

interface Target {
  name: string;
  port: number;
  child: ChildProcess;
}

async function startServer(
  mode: 'webhook' | 'bare',
  tls: { certPem: string; keyPem: string },
  fixed: Buffer,
): Promise<Target> {
  const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
  // taskset pins the server to one core, as the target is stated for one core
  const child = spawn(
    'taskset',
    [
      '-c',
      '1',
      node,
      new URL('./webhook-server.ts', import.meta.url).pathname,
      mode,
      b64(tls.certPem),
      b64(tls.keyPem),
      b64(fixed),
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  return { name: mode, port: Number(line), child };
}

function post(agent: https.Agent, port: number, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: ROUTES.validateTemplate,
        method: 'POST',
        agent,
        ca,
        headers: { 'content-type': 'application/json', 'content-length': review.length },
      },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
          else resolve(Number(process.hrtime.bigint() - start) / 1e6);
        });
      },
    );
    req.on('error', reject);
    req.end(review);
  });
}

async function throughput(target: Target, ca: string): Promise<number> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const end = Date.now() + SECONDS * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < end) {
        await post(agent, target.port, ca);
        done++;
      }
    }),
  );
  agent.destroy();
  return done / SECONDS;
}

/** Open loop at RATE/s: latencies are not hidden by waiting for the previous answer. */
async function latency(target: Target, ca: string): Promise<number[]> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 64 });
  const total = RATE * SECONDS;
  const start = performance.now();
  const pending: Promise<number>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(post(agent, target.port, ca));
  }
  const samples = await Promise.all(pending);
  agent.destroy();
  return samples.sort((a, b) => a - b);
}

export async function run(): Promise<void> {
  // client (all threads: main, libuv pool, GC) on core 0, servers on core 1: no contention
  // between the load generator and the server being measured
  execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  const ca = createCa({ commonName: 'bench CA' });
  const tls = createServingCert({ ca, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const webhook = await startServer('webhook', tls, Buffer.alloc(0));
  // the bare server answers exactly what the webhook answers for this review
  const agent = new https.Agent({ keepAlive: false });
  const fixed = await new Promise<Buffer>((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: webhook.port,
        path: ROUTES.validateTemplate,
        method: 'POST',
        agent,
        ca: ca.certPem,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks)));
      },
    );
    req.on('error', reject);
    req.end(review);
  });
  const bare = await startServer('bare', tls, fixed);
  const results: Record<string, { rps: number[]; p50: number[]; p99: number[] }> = {
    webhook: { rps: [], p50: [], p99: [] },
    bare: { rps: [], p50: [], p99: [] },
  };
  try {
    // warm-up (JIT, heap growth, TLS sessions): the first measured round was otherwise ~2x slow
    for (let i = 0; i < 2; i++) for (const target of [webhook, bare]) await throughput(target, ca.certPem);
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of round % 2 ? [bare, webhook] : [webhook, bare]) {
        results[target.name]!.rps.push(await throughput(target, ca.certPem));
        const samples = await latency(target, ca.certPem);
        results[target.name]!.p50.push(percentile(samples, 50));
        results[target.name]!.p99.push(percentile(samples, 99));
      }
    }
  } finally {
    webhook.child.kill();
    bare.child.kill();
  }
  const m = (name: string, key: 'rps' | 'p50' | 'p99') => median(results[name]![key]);
  const summary = {
    config: {
      rounds: ROUNDS,
      secondsPerMeasurement: SECONDS,
      latencyRate: RATE,
      concurrency: CONCURRENCY,
      serverCores: 1,
      payloadBytes: review.length,
    },
    webhook: {
      reviewsPerSecond: m('webhook', 'rps'),
      p50Ms: m('webhook', 'p50'),
      p99Ms: m('webhook', 'p99'),
    },
    bare: { reviewsPerSecond: m('bare', 'rps'), p50Ms: m('bare', 'p50'), p99Ms: m('bare', 'p99') },
    // Each round measures both servers back to back, so the per-round ratio cancels most of the
    // machine's drift; the median of those is the headline figure.
    ratios: {
      throughputWebhookOverBare: median(results['webhook']!.rps.map((v, i) => v / results['bare']!.rps[i]!)),
      p99WebhookOverBare: median(results['webhook']!.p99.map((v, i) => v / results['bare']!.p99[i]!)),
    },
    targets: { p99MsAt500PerSecond: 5, throughputRatioAtLeast: 0.8 },
    rounds: results,
  };
  console.log(
    `\nwebhook: BuildkitTemplate validate review over TLS keep-alive (${ROUNDS} rounds, medians; server pinned to 1 core)`,
  );
  console.log(
    table(
      ['server', 'reviews/s', `p50 ms @${RATE}/s`, `p99 ms @${RATE}/s`],
      [
        [
          'buildkit-fleet webhook',
          summary.webhook.reviewsPerSecond,
          summary.webhook.p50Ms,
          summary.webhook.p99Ms,
        ],
        ['bare HTTPS (same payload)', summary.bare.reviewsPerSecond, summary.bare.p50Ms, summary.bare.p99Ms],
        [
          'ratio webhook/bare',
          summary.ratios.throughputWebhookOverBare,
          '',
          summary.ratios.p99WebhookOverBare,
        ],
      ],
    ),
  );
  console.log(`results: ${writeResult('webhook', summary)}`);
}
