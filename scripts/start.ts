// `npm start`: the whole story on a local cluster. Brings up the cluster (with the real node where
// the machine can run one), installs the Helm chart with the locally built image, applies
// examples/autoscaled.yaml and narrates the example Buildkit: Ready, its endpoint, a client
// connecting, the idle countdown, the scale to zero and the wake on the next connection. Ctrl-C
// stops it all; --detach returns once the example is Ready (npm stop tears it down). Without a real
// node, pods run no containers: the webhook and the controller then run in this process and the
// story stops at the instance's status (see startMode in start-plan.ts).
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';

import { findBinaries } from '../hack/binaries.ts';
import { installCrds } from '../hack/crds.ts';
import { readableLogs } from '../hack/readable-logs.ts';
import { realNodeUnavailable } from '../hack/real-node/start.ts';
import { parseOptions } from '../flags/options.ts';
import { CONTROLLER_OPTIONS, startController } from '../controller/main.ts';
import { WEBHOOK_OPTIONS, startWebhook } from '../webhook/main.ts';
import { createLogger } from '../telemetry/logger.ts';
import { shutdownSignal } from '../telemetry/shutdown.ts';
import {
  START_HELP,
  StartUsageError,
  parseStartFlags,
  progressLines,
  splitImage,
  startMode,
  type BuildkitView,
  type StartFlags,
} from './start-plan.ts';
import { START_STATE_FILE, type StartState } from './start-state.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
// the harness's BKF_LOCAL_DIR moves .local (e.g. to run beside another checkout's cluster)
const local = path.resolve(process.env['BKF_LOCAL_DIR'] ?? path.join(root, '.local'));
const localKubeconfig = path.join(local, 'cluster', 'kubeconfig');
const run = promisify(execFile);
const say = (line: string) => process.stdout.write(`[start] ${line}\n`);
const RELEASE = 'fleet';
const PLATFORM_NS = 'buildkit-fleet-system';
const EXAMPLE = { namespace: 'demo', name: 'demo', file: path.join(root, 'examples', 'autoscaled.yaml') };

let flags: StartFlags;
try {
  flags = parseStartFlags(process.argv.slice(2));
} catch (error) {
  if (!(error instanceof StartUsageError)) throw error;
  process.stderr.write(`npm start: ${error.message}\n\n${START_HELP}`);
  process.exit(2);
}
if (flags.help) {
  process.stdout.write(START_HELP);
  process.exit(0);
}
if (flags.kubeconfig && !fs.existsSync(flags.kubeconfig)) {
  process.stderr.write(`npm start: --kubeconfig ${flags.kubeconfig}: no such file\n`);
  process.exit(2);
}
const mode = startMode(flags, realNodeUnavailable());
if (flags.detach && mode.install === 'in-process') {
  process.stderr.write(
    `npm start: --detach needs the real node (${mode.why}); without it the platform runs inside npm start\n`,
  );
  process.exit(2);
}
say(mode.why);

const kubeconfig = flags.kubeconfig ?? localKubeconfig;
const tools = await ensureTools();
const kubectl = async (...args: string[]) =>
  (await run(tools.kubectl, ['--kubeconfig', kubeconfig, ...args], { maxBuffer: 16 << 20 })).stdout;
const helm = async (...args: string[]) =>
  (await run(tools.helm, ['--kubeconfig', kubeconfig, ...args], { maxBuffer: 16 << 20 })).stdout;

// Ctrl-C at any point undoes what exists by then (a cluster `up` still starting stops on the same
// Ctrl-C by itself); --detach exits before it would.
let cleanup: (() => Promise<void>) | undefined;
void shutdownSignal().then(async (signal) => {
  say(`${signal}: stopping`);
  await cleanup?.();
  fs.rmSync(path.join(local, START_STATE_FILE), { force: true });
  process.exit(0);
});
if (mode.cluster === 'local') {
  await ensureLocalCluster(mode.realNode);
  cleanup = stopLocalCluster;
} else {
  cleanup = async () => {
    await helm('uninstall', RELEASE, '-n', PLATFORM_NS, '--wait').catch(() => undefined);
    await kubectl('delete', '-f', EXAMPLE.file, '--ignore-not-found', '--wait=false').catch(() => undefined);
    say('the release and the example are removed');
  };
}
writeState({ kubeconfig, external: mode.cluster === 'existing', release: RELEASE, namespace: PLATFORM_NS });

if (mode.install === 'chart') {
  const { repository, tag } = splitImage(flags.image);
  say(
    `installing the chart: helm upgrade --install ${RELEASE} charts/buildkit-fleet -n ${PLATFORM_NS} (image ${flags.image})`,
  );
  try {
    await helm(
      'upgrade',
      '--install',
      RELEASE,
      path.join(root, 'charts', 'buildkit-fleet'),
      '-n',
      PLATFORM_NS,
      '--create-namespace',
      '--set',
      `image.repository=${repository},image.tag=${tag}`,
      ...(mode.cluster === 'local' ? ['--set', 'image.pullPolicy=Never'] : []),
      '--set',
      'minIdleTimeout=10s',
      '--wait',
      '--timeout',
      '5m',
    );
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    fail(`helm install failed: ${(e.stderr ?? e.message).trim()}`);
  }
  say('the webhook and the controller run (2 replicas each)');
} else {
  const stopInProcess = await runInProcess();
  const stopCluster = cleanup;
  cleanup = async () => {
    await stopInProcess();
    await stopCluster?.();
  };
}

say(
  `applying examples/autoscaled.yaml: template "autoscaled" (idle timeout 20s), Buildkit "${EXAMPLE.name}"`,
);
process.stdout.write(await kubectl('apply', '-f', EXAMPLE.file));

const kc = new KubeConfig();
kc.loadFromFile(kubeconfig);
const api = kc.makeApiClient(CustomObjectsApi);
const view = async (): Promise<BuildkitView> => {
  const bk = (await api.getNamespacedCustomObject({
    group: 'buildkit.seatgeek.io',
    version: 'v1alpha1',
    plural: 'buildkits',
    namespace: EXAMPLE.namespace,
    name: EXAMPLE.name,
  })) as {
    status?: { phase?: string; endpoint?: string; conditions?: { type: string; message?: string }[] };
  };
  const active = bk.status?.conditions?.find((c) => c.type === 'Active')?.message;
  return {
    ...(bk.status?.phase ? { phase: bk.status.phase } : {}),
    ...(bk.status?.endpoint ? { endpoint: bk.status.endpoint } : {}),
    ...(active ? { active } : {}),
  };
};
let last: BuildkitView = {};
const poll = async () => {
  const next = await view().catch(() => last);
  for (const line of progressLines(EXAMPLE.name, last, next)) say(line);
  last = next;
  return next;
};
/** Narrates whatever changes for `ms`. */
const watchFor = async (ms: number) => {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    await poll();
    await sleep(Math.min(500, Math.max(0, until - Date.now())));
  }
};
const watchUntil = async (what: string, done: (v: BuildkitView) => boolean, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const next = await poll();
    if (done(next)) return next;
    if (Date.now() > deadline) fail(`${EXAMPLE.name} did not become ${what} within ${timeoutMs / 1000}s`);
    await sleep(500);
  }
};

const ready = await watchUntil('Running', (v) => v.phase === 'Running', 300_000);
if (flags.detach) {
  say(`ready: ${EXAMPLE.name} at ${ready.endpoint}; everything keeps running`);
  usage();
  say('npm stop tears it all down');
  process.exit(0);
}

if (mode.install === 'chart' && ready.endpoint) {
  say(`a client connects to ${ready.endpoint} and stays 5 s: an open connection keeps it awake`);
  await Promise.all([holdConnection(ready.endpoint, 5000), watchFor(5000)]);
  say('the client left: the idle countdown starts');
  await watchUntil('ScaledToZero', (v) => v.phase === 'ScaledToZero', 180_000);
  say(`a client connects to ${ready.endpoint}: the activator holds it and wakes ${EXAMPLE.name}`);
  const answered = firstAnswer(ready.endpoint, 120_000).then((ms) =>
    say(`the held client was answered by buildkitd ${(ms / 1000).toFixed(1)} s after it connected`),
  );
  await watchUntil('Running', (v) => v.phase === 'Running', 180_000);
  await answered;
}
usage();
say('Ctrl-C stops it all (npm start -- --detach leaves it running); watching meanwhile');
for (;;) await watchFor(60_000);

function fail(message: string): never {
  const hint = cleanup ? ' (npm stop removes what was set up)' : '';
  process.stderr.write(`[start] ${message}${hint}\n`);
  process.exit(1);
}

function usage(): void {
  // a local cluster links kubectl and helm into .local/bin
  const bin = fs.existsSync(path.join(local, 'bin', 'kubectl'))
    ? path.join(local, 'bin')
    : path.dirname(tools.kubectl);
  say(`  export KUBECONFIG=${kubeconfig} PATH=${bin}:$PATH`);
  say('  kubectl get bk -A -w     # PHASE: Running -> ScaledToZero -> Waking -> Running');
}

function writeState(state: StartState): void {
  fs.mkdirSync(local, { recursive: true });
  fs.writeFileSync(path.join(local, START_STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
}

async function ensureTools(): Promise<{ kubectl: string; helm: string }> {
  const lookup = () => findBinaries().found;
  let found = lookup();
  if (!found.kubectl || !found.helm) {
    say('installing kubectl and helm (npm run cluster:prereqs)');
    const child = spawn('bash', [path.join(root, 'hack', 'install-prereqs.sh')], { stdio: 'inherit' });
    const [code] = (await once(child, 'exit')) as [number];
    if (code !== 0) fail(`installing the prerequisites failed (exit ${code})`);
    found = lookup();
  }
  if (!found.kubectl || !found.helm) fail('kubectl and helm are still missing after installing them');
  return { kubectl: found.kubectl, helm: found.helm };
}

async function clusterCli(...args: string[]): Promise<number> {
  const child = spawn(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', path.join(root, 'hack', 'cli.ts'), ...args],
    {
      stdio: args[0] === 'status' ? 'ignore' : 'inherit',
    },
  );
  const [code] = (await once(child, 'exit')) as [number];
  return code;
}

/** Starts the local cluster unless one runs. */
async function ensureLocalCluster(realNode: boolean): Promise<void> {
  if ((await clusterCli('status')) === 0) {
    say('reusing the running local cluster');
    return;
  }
  say(
    realNode
      ? 'starting a local cluster with the real node (the first run builds Kubernetes: about 11 minutes)'
      : 'starting a local cluster (the first run builds Kubernetes: about 6 minutes)',
  );
  if (realNode && !flags.noBuild) {
    // the real node imports the platform image built from dist/: build it from the current source
    say('building the platform (npm run build): the image the real node imports is made from it');
    const build = spawn('npm', ['run', 'build'], { stdio: 'inherit', cwd: root });
    const [built] = (await once(build, 'exit')) as [number];
    if (built !== 0) fail(`npm run build failed (exit ${built})`);
  }
  const code = await clusterCli('up', ...(realNode ? ['--real-node', '--nodes', '0'] : ['--nodes', '1']));
  if (code !== 0) fail(`the local cluster did not start (exit ${code}); see the messages above`);
}

async function stopLocalCluster(): Promise<void> {
  const code = await clusterCli('down');
  say(code === 0 ? 'the local cluster is stopped' : `stopping the local cluster failed (exit ${code})`);
}

/** The hollow-node path: webhook (local mode) and controller in this process. */
async function runInProcess(): Promise<() => Promise<void>> {
  say('installing the CRDs');
  await installCrds((args) => kubectl(...args));
  say('starting the admission webhook (local mode) and the controller in this process');
  const webhook = await startWebhook(
    parseOptions(['--local', '--kubeconfig', kubeconfig], WEBHOOK_OPTIONS),
    createLogger({ level: 'info', component: 'webhook', destination: readableLogs() }),
    false,
  );
  const controller = await startController(
    parseOptions(
      ['--kubeconfig', kubeconfig, '--disable-leader-election', '--metrics-listen', '127.0.0.1:0'],
      CONTROLLER_OPTIONS,
    ),
    createLogger({ level: 'info', component: 'controller', destination: readableLogs() }),
  );
  say(`webhook at ${webhook.url}, controller metrics at ${controller.metricsUrl}`);
  return async () => {
    await Promise.allSettled([webhook.stop(), controller.stop()]);
  };
}

function hostPort(endpoint: string): { host: string; port: number } {
  const url = new URL(endpoint);
  return { host: url.hostname, port: Number(url.port) };
}

/** A client that connects and stays: activity the sidecar counts. */
async function holdConnection(endpoint: string, ms: number): Promise<void> {
  const socket = net.connect(hostPort(endpoint));
  await once(socket, 'connect');
  await sleep(ms);
  socket.end();
  socket.destroy();
}

/**
 * A client at zero: connects, sends the HTTP/2 preface and an empty SETTINGS frame as any gRPC
 * client does, and resolves when the first byte comes back (buildkitd's own SETTINGS): the
 * activator held the connection and spliced it through once buildkitd was up.
 */
async function firstAnswer(endpoint: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  const socket = net.connect(hostPort(endpoint));
  socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs / 1000}s`)));
  await once(socket, 'connect');
  socket.write(
    Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
    ]),
  );
  await once(socket, 'data');
  socket.destroy();
  return Date.now() - started;
}
