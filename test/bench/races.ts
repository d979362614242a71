// Connection races around a scale-down on the real node: at least 1,000 clients that connect
// right before an autoscaled instance's idle deadline, at it, during its fence (fenced, routed to
// the activator, settling, confirming) and just after the scale-down is recorded, spread over
// many idle cycles. Every one must get its full answer: the bench fails (exits non-zero) on any
// connection refused, reset, cut short or never answered. That is a correctness check, not a
// timing target.
//
// Each cycle waits for the raced instance's idle clock (status.autoscaling.idleSince, written
// once its pod is Ready and nothing is connected), takes the deadline idleSince + the idle
// timeout, and fires a burst of clients starting at the deadline plus an offset that moves from
// cycle to cycle (-0.5 s to +2.5 s). A burst that beats the fence resets the clock, one inside it
// aborts the scale-down, one after it reaches the activator (through the sidecar's handoff, the
// preStop drain or the activator route) and wakes the instance.
//
// Baseline, in the same cycles: the same burst against an instance of a template whose idle
// timeout never runs out (the same sidecar, Service and kube-proxy path), fired while the raced
// instance waits out its idle clock, so the two never overlap.
//
// Each client is its own TCP connection (node:http2, no gRPC library between: no shared
// connection, no transparent retry) making one buildkit Status call, a short server stream from
// the stand-in; the full answer is every message, byte for byte, and grpc-status 0.
import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';

import { freePort } from '../../hack/ports.ts';
import { NODE_IP } from '../../hack/real-node/plan.ts';
import { standinServices } from '../../hack/buildkitd-standin/services.ts';
import { healthCheck } from '../support/buildkit-client.ts';
import { startBenchCluster, startPlatform, type PlatformProcess } from '../support/node-tier.ts';
import { waitFor } from '../support/wait.ts';
import { percentile, processCpuMs, sleep, table, writeResult } from './lib.ts';

const RACES = Number(process.env['BENCH_RACES'] ?? 1000);
const PER_CYCLE = Number(process.env['BENCH_RACES_PER_CYCLE'] ?? 25);
const CYCLES = Math.ceil(RACES / PER_CYCLE);
const IDLE_SECONDS = 3;
const BURST_MS = 500; // a burst's clients start evenly over this long
// where a cycle's burst starts, from the idle deadline: before it, at it, through the fence
// (first reading after the deadline, 1 s settle, the confirming reading) and past the record
const OFFSETS_MS = Array.from({ length: 31 }, (_, i) => -500 + i * 100);
const STEPS = 5;
const REF = `steps=${STEPS},quiet=20`;
const CALL_TIMEOUT_MS = 120_000;
const NAMESPACE = 'bench-races';

const STATUS = standinServices().Control.service['Status']!;
const grpcFrame = (message: Buffer) => {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
};
/** The stand-in's whole answer to REF, as framed on the wire. */
const FULL_ANSWER = Buffer.concat(
  Array.from({ length: STEPS }, (_, i) =>
    grpcFrame(
      STATUS.responseSerialize({
        logs: [{ vertex: 'sha256:standin', stream: 1, msg: Buffer.from(`step ${i + 1}/${STEPS}\n`) }],
      }),
    ),
  ),
);

type Outcome = 'served' | 'refused' | 'reset' | 'short' | 'unanswered' | 'other';
interface Race {
  outcome: Outcome;
  /** connect start, ms from the idle deadline (races only) */
  atMs: number;
  latencyMs: number;
  lostBytes: number;
  detail?: string;
}

const RESETS = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ERR_HTTP2_STREAM_ERROR',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_GOAWAY_SESSION',
  'ERR_HTTP2_STREAM_CANCEL',
  'ERR_HTTP2_INVALID_SESSION',
]);

/** One client: its own connection, one Status call, the answer checked byte for byte. */
function race(endpoint: string, deadline: number): Promise<Race> {
  const started = Date.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const session = http2.connect(`http://${endpoint.replace('tcp://', '')}`);
    const finish = (outcome: Outcome, detail?: string) => {
      clearTimeout(timer);
      session.destroy();
      resolve({
        outcome,
        atMs: started - deadline,
        latencyMs: Date.now() - started,
        lostBytes: Math.max(0, FULL_ANSWER.length - received),
        ...(detail ? { detail } : {}),
      });
      resolve = () => {};
    };
    const failed = (error: NodeJS.ErrnoException) => {
      const code = error.code ?? '';
      if (code === 'ECONNREFUSED') finish('refused', error.message);
      else if (RESETS.has(code)) finish('reset', `${code}: ${error.message}`);
      else finish('other', `${code}: ${error.message}`);
    };
    const timer = setTimeout(
      () => finish('unanswered', `no full answer in ${CALL_TIMEOUT_MS} ms`),
      CALL_TIMEOUT_MS,
    );
    session.on('error', failed);
    session.on('close', () => finish('reset', `connection closed after ${received} bytes`));
    const stream = session.request({
      ':method': 'POST',
      ':path': STATUS.path,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    let grpcStatus: string | undefined;
    stream.on('response', (headers) => (grpcStatus = headers['grpc-status'] as string | undefined));
    stream.on('trailers', (trailers) => (grpcStatus = trailers['grpc-status'] as string | undefined));
    stream.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
    });
    stream.on('error', failed);
    stream.on('end', () => {
      const whole = Buffer.concat(chunks);
      if (grpcStatus === '0' && whole.equals(FULL_ANSWER)) finish('served');
      else finish('short', `grpc-status ${grpcStatus}, ${received} of ${FULL_ANSWER.length} bytes`);
    });
    stream.end(grpcFrame(STATUS.requestSerialize({ Ref: REF })));
  });
}

/** PER_CYCLE clients started evenly over BURST_MS from `at`. */
async function burst(endpoint: string, at: number, deadline: number): Promise<Race[]> {
  return Promise.all(
    Array.from({ length: PER_CYCLE }, async (_, i) => {
      await sleep(Math.max(0, at + (i * BURST_MS) / PER_CYCLE - Date.now()));
      return race(endpoint, deadline);
    }),
  );
}

/** The sum of a Prometheus counter's samples whose labels include `labels`. */
function counter(metrics: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

interface Counts {
  scaled: number;
  aborted: number;
  wakes: number;
  activator: Record<string, number>;
}
const ACTIVATOR_OUTCOMES = [
  'spliced',
  'forwarded',
  'gave_up',
  'bound_count',
  'bound_time',
  'upstream_failed',
];
async function readCounts(metricsPort: number): Promise<Counts> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return {
    scaled: counter(text, 'buildkit_fleet_scale_downs_total', { outcome: 'scaled' }),
    aborted: counter(text, 'buildkit_fleet_scale_downs_total', { outcome: 'aborted' }),
    wakes: counter(text, 'buildkit_fleet_wakes_total'),
    activator: Object.fromEntries(
      ACTIVATOR_OUTCOMES.map((o) => [
        o,
        counter(text, 'buildkit_fleet_activator_connections_total', { outcome: o }),
      ]),
    ),
  };
}

interface BuildkitView {
  status?: { phase?: string; endpoint?: string; autoscaling?: { idleSince?: string } };
}

const latency = (races: Race[]) => {
  const ms = races
    .filter((r) => r.outcome === 'served')
    .map((r) => r.latencyMs)
    .sort((a, b) => a - b);
  return { p50: percentile(ms, 50), p90: percentile(ms, 90), max: ms.at(-1) ?? NaN };
};

export async function run(): Promise<void> {
  const cluster = await startBenchCluster('races');
  if (!cluster) return;
  const platform: PlatformProcess[] = [];
  const failures: Race[] = [];
  try {
    const metricsPort = await freePort();
    const controllerFlags = Object.entries({
      'activator-address': NODE_IP,
      'scale-interval': '0.5',
      'fence-settle': '1',
      'activator-hold-timeout': '120',
      'metrics-listen': `127.0.0.1:${metricsPort}`,
    }).flatMap(([flag, value]) => [`--${flag}`, value]);
    platform.push(
      ...(await startPlatform(cluster, 'bkf-bench-races', controllerFlags, [
        '--min-idle-timeout',
        `${IDLE_SECONDS}s`,
      ])),
    );
    const controllerPid = platform[1]!.child.pid!;
    await cluster.kubectl(['create', 'namespace', NAMESPACE]);
    // a template and its Buildkit, the same but for the idle timeout
    const instance = (name: string, idleTimeout: string) => {
      const metadata = { name, namespace: NAMESPACE };
      const apiVersion = 'buildkit.seatgeek.io/v1alpha1';
      const autoscaling = { enabled: true, idleTimeout };
      return [
        {
          apiVersion,
          kind: 'BuildkitTemplate',
          metadata,
          spec: { port: 1234, autoscaling, lifecycle: { preStopScript: true } },
        },
        { apiVersion, kind: 'Buildkit', metadata, spec: { template: name } },
      ];
    };
    const items = [...instance('raced', `${IDLE_SECONDS}s`), ...instance('steady', '24h')];
    await cluster.kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items }),
    });

    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfigPath);
    const api = kc.makeApiClient(CustomObjectsApi);
    const get = async (name: string) =>
      (await api.getNamespacedCustomObject({
        group: 'buildkit.seatgeek.io',
        version: 'v1alpha1',
        namespace: NAMESPACE,
        plural: 'buildkits',
        name,
      })) as BuildkitView;
    const endpointOf = (name: string) =>
      waitFor(
        `${name} running`,
        async () => {
          const bk = await get(name);
          return bk.status?.phase === 'Running' && bk.status.endpoint;
        },
        { timeoutMs: 180_000, intervalMs: 200 },
      );
    const [raced, steady] = await Promise.all([endpointOf('raced'), endpointOf('steady')]);
    await healthCheck(steady, 30_000);

    const races: Race[] = [];
    const baseline: Race[] = [];
    const offsets: number[] = [];
    const snapshots: Counts[] = [];
    const counts0 = await readCounts(metricsPort);
    const cpu0 = processCpuMs(controllerPid);
    const t0 = Date.now();
    let lastStart = 0;
    let benchWakes = 0;
    for (let c = 0; c < CYCLES; c++) {
      // the idle clock that started after the last client of the previous cycle
      let waking: Promise<unknown> | undefined;
      const deadline = await waitFor(
        `the idle clock of cycle ${c}`,
        async () => {
          const bk = await get('raced');
          // a cycle whose clients all came before the scale-down leaves it at zero: wake it
          if (bk.status?.phase === 'ScaledToZero' && !waking) {
            benchWakes++;
            waking = healthCheck(raced, CALL_TIMEOUT_MS).finally(() => (waking = undefined));
          }
          const since = Date.parse(bk.status?.autoscaling?.idleSince ?? '');
          return bk.status?.phase === 'Running' && since > lastStart && since + IDLE_SECONDS * 1000;
        },
        { timeoutMs: 120_000, intervalMs: 100 },
      );
      await waking;
      snapshots.push(await readCounts(metricsPort));
      const offsetMs = OFFSETS_MS[(c * 13) % OFFSETS_MS.length]!;
      offsets.push(offsetMs);
      lastStart = deadline + offsetMs + BURST_MS;
      // the baseline burst runs while the raced instance waits out its clock
      const [base, raceBurst] = await Promise.all([
        burst(steady, Date.now(), Date.now()),
        burst(raced, deadline + offsetMs, deadline),
      ]);
      baseline.push(...base);
      races.push(...raceBurst);
      process.stderr.write(
        `races: cycle ${c + 1}/${CYCLES}, offset ${offsetMs} ms: ${races.length} driven, ` +
          `${races.filter((r) => r.outcome !== 'served').length} failed\n`,
      );
    }
    // the last cycle's scale-down, if any, is recorded once its fence is done
    await sleep(4000);
    const wallMs = Date.now() - t0;
    const cpuMs = processCpuMs(controllerPid) - cpu0;
    const counts1 = await readCounts(metricsPort);
    snapshots.push(counts1);
    // what each cycle's burst ended in: the counters from its start to the next cycle's
    const cycles = offsets.map((offsetMs, c) => ({
      offsetMs,
      scaled: snapshots[c + 1]!.scaled - snapshots[c]!.scaled,
      aborted: snapshots[c + 1]!.aborted - snapshots[c]!.aborted,
    }));

    failures.push(
      ...races.filter((r) => r.outcome !== 'served'),
      ...baseline.filter((r) => r.outcome !== 'served'),
    );
    const count = (list: Race[], outcome: Outcome) => list.filter((r) => r.outcome === outcome).length;
    const lost = (list: Race[]) =>
      list.reduce((sum, r) => sum + (r.outcome === 'served' ? 0 : r.lostBytes), 0);
    const windows: [string, number, number][] = [
      ['before the deadline', -Infinity, 0],
      ['deadline to +0.5 s (first reading, fence)', 0, 500],
      ['+0.5 to +1.5 s (fence settle, confirm)', 500, 1500],
      ['+1.5 s and later (recorded, pod going, zero)', 1500, Infinity],
    ];
    const raceLatency = latency(races);
    const beforeZero = latency(races.filter((r) => r.atMs < 1500));
    const baseLatency = latency(baseline);
    const summary = {
      races: races.length,
      cycles: CYCLES,
      perCycle: PER_CYCLE,
      idleTimeoutSeconds: IDLE_SECONDS,
      outcomes: Object.fromEntries(
        (['served', 'refused', 'reset', 'short', 'unanswered', 'other'] as Outcome[]).map((o) => [
          o,
          { races: count(races, o), baseline: count(baseline, o) },
        ]),
      ),
      lostBytes: { races: lost(races), baseline: lost(baseline) },
      landed: Object.fromEntries(
        windows.map(([label, from, to]) => [
          label,
          races.filter((r) => r.atMs >= from && r.atMs < to).length,
        ]),
      ),
      scaleDowns: { scaled: counts1.scaled - counts0.scaled, aborted: counts1.aborted - counts0.aborted },
      cyclesBy: {
        scaled: cycles.filter((x) => x.scaled > 0).length,
        aborted: cycles.filter((x) => x.aborted > 0).length,
        neither: cycles.filter((x) => !x.scaled && !x.aborted).length,
      },
      wakes: counts1.wakes - counts0.wakes,
      benchWakes,
      activatorConnections: Object.fromEntries(
        ACTIVATOR_OUTCOMES.map((o) => [o, counts1.activator[o]! - counts0.activator[o]!]),
      ),
      latencyMs: { races: raceLatency, baseline: baseLatency, racesStartedBefore1500ms: beforeZero },
      ratio: { p50: raceLatency.p50 / baseLatency.p50, p90: raceLatency.p90 / baseLatency.p90 },
      wallSeconds: wallMs / 1000,
      controllerCpuMs: { total: cpuMs, perCycle: cpuMs / CYCLES, perRace: cpuMs / races.length },
      cycleOutcomes: cycles,
      failures: failures.slice(0, 50),
    };
    const both = (o: Outcome) => `${count(races, o)} / ${count(baseline, o)}`;
    console.log(
      `\nraces around scale-down on the real node: ${races.length} clients in ${CYCLES} idle cycles ` +
        `(idle timeout ${IDLE_SECONDS} s), ${baseline.length} baseline clients`,
    );
    console.log(
      table(
        ['measure', 'races / baseline'],
        [
          ['clients driven', `${races.length} / ${baseline.length}`],
          ['served (full answer)', both('served')],
          ['refused', both('refused')],
          ['reset', both('reset')],
          ['short answer', both('short')],
          ['unanswered', both('unanswered')],
          ['other error', both('other')],
          ['lost bytes', `${summary.lostBytes.races} / ${summary.lostBytes.baseline}`],
          ['latency p50 (ms)', `${raceLatency.p50} / ${baseLatency.p50} = ${summary.ratio.p50.toFixed(2)}`],
          ['latency p90 (ms)', `${raceLatency.p90} / ${baseLatency.p90} = ${summary.ratio.p90.toFixed(2)}`],
          ['latency max (ms)', `${raceLatency.max} / ${baseLatency.max}`],
          [
            'latency p50 / p90, races started before +1.5 s (ms)',
            `${beforeZero.p50} / ${beforeZero.p90} (ratio ${(beforeZero.p90 / baseLatency.p90).toFixed(2)} at p90)`,
          ],
        ],
      ),
    );
    console.log(
      table(
        ['run', 'value'],
        [
          ...windows.map(([label]) => [`clients started ${label}`, String(summary.landed[label])]),
          [
            'scale-downs completed / aborted (metrics)',
            `${summary.scaleDowns.scaled} / ${summary.scaleDowns.aborted}`,
          ],
          [
            'cycles ending scaled / aborted / neither',
            `${summary.cyclesBy.scaled} / ${summary.cyclesBy.aborted} / ${summary.cyclesBy.neither}`,
          ],
          ['wakes (metrics) / started by the bench', `${summary.wakes} / ${benchWakes}`],
          [
            'activator connections spliced / forwarded',
            `${summary.activatorConnections['spliced']} / ${summary.activatorConnections['forwarded']}`,
          ],
          ['wall time (s)', String(Math.round(summary.wallSeconds))],
          [
            'controller CPU total / per cycle / per client (ms)',
            `${Math.round(cpuMs)} / ${Math.round(summary.controllerCpuMs.perCycle)} / ${summary.controllerCpuMs.perRace.toFixed(1)}`,
          ],
        ],
      ),
    );
    for (const f of failures.slice(0, 20)) console.log(`FAILED at ${f.atMs} ms: ${f.outcome}: ${f.detail}`);
    console.log(`result: ${writeResult('races', summary)}`);
  } finally {
    await Promise.all(platform.map((p) => p.stop()));
    // the platform's logs outlive the cluster folder, for a look after a failure
    const keep = path.join(os.tmpdir(), 'bkf-bench-races-logs');
    fs.mkdirSync(keep, { recursive: true });
    for (const p of platform) fs.copyFileSync(p.logPath, path.join(keep, path.basename(p.logPath)));
    await cluster.stop();
  }
  if (failures.length) {
    console.error(`races: FAILED: ${failures.length} clients did not get their full answer`);
    process.exitCode = 1;
  }
}
