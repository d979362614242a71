// `npm start`: the main job on a local control plane. Brings up the cluster (or reuses the running
// one), installs the CRDs, runs the admission webhook in local mode, applies the seatgeek README
// examples and shows them. Runs until Ctrl-C; the cluster keeps running (npm run cluster:down).
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { installCrds } from '../hack/crds.ts';
import { readableLogs } from '../hack/readable-logs.ts';
import { createLogger } from '../telemetry/logger.ts';
import { shutdownSignal } from '../telemetry/shutdown.ts';

import { parseOptions } from '../flags/options.ts';
import { CONTROLLER_OPTIONS, startController } from '../controller/main.ts';
import { WEBHOOK_OPTIONS, startWebhook } from '../webhook/main.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
// the harness's BKF_LOCAL_DIR moves .local (e.g. to run beside another checkout's cluster)
const local = process.env['BKF_LOCAL_DIR'] ?? `${root}.local`;
const kubeconfig = `${local}/cluster/kubeconfig`;
const kubectlPath = `${local}/bin/kubectl`;
const run = promisify(execFile);
const say = (line: string) => process.stdout.write(`[start] ${line}\n`);

async function clusterRunning(): Promise<boolean> {
  const child = spawn(process.execPath, [`${root}hack/cli.ts`, 'status'], { stdio: 'ignore' });
  const [code] = (await once(child, 'exit')) as [number];
  return code === 0;
}

async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await run(kubectlPath, ['--kubeconfig', kubeconfig, ...args]);
  return stdout;
}

if (await clusterRunning()) {
  say('reusing the running local cluster');
} else {
  say('starting a local cluster (the first run builds Kubernetes: about 6 minutes)');
  const up = spawn(process.execPath, [`${root}hack/cli.ts`, 'up', '--nodes', '1'], {
    stdio: 'inherit',
  });
  const [code] = (await once(up, 'exit')) as [number];
  if (code !== 0) {
    console.error(`[start] the local cluster did not start (exit ${code}); see the messages above`);
    process.exit(1);
  }
}

say('installing the CRDs');
await installCrds((args) => kubectl(...args));

// A person watches this: the components' decision lines as readable text, not JSON.
say('starting the admission webhook (local mode)');
const logger = createLogger({ level: 'info', component: 'webhook', destination: readableLogs() });
const webhook = await startWebhook(
  parseOptions(['--local', '--kubeconfig', kubeconfig], WEBHOOK_OPTIONS),
  logger,
  false,
);

say('starting the controller');
const controller = await startController(
  parseOptions(
    ['--kubeconfig', kubeconfig, '--disable-leader-election', '--metrics-listen', '127.0.0.1:0'],
    CONTROLLER_OPTIONS,
  ),
  createLogger({ level: 'info', component: 'controller', destination: readableLogs() }),
);

say('applying examples/ (the seatgeek README examples, unchanged)');
process.stdout.write(await kubectl('apply', '-f', `${root}examples/namespace.yaml`));
process.stdout.write(
  await kubectl(
    'apply',
    '-f',
    `${root}examples/buildkittemplate.yaml`,
    '-f',
    `${root}examples/buildkit.yaml`,
  ),
);
// give the controller a moment to report the instance's status
await new Promise((resolve) => setTimeout(resolve, 5000));
process.stdout.write(`\n${await kubectl('get', 'bkt,bk', '-A')}\n`);
process.stdout.write(
  `${await kubectl('get', 'bk', '-n', 'some-ns', 'buildkit-arm64-instance', '-o', 'jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\\n"}{end}')}\n`,
);
say(`webhook serving at ${webhook.url}, controller metrics at ${controller.metricsUrl}; try:`);
say(`  export KUBECONFIG=${kubeconfig} PATH=${local}/bin:$PATH`);
say('  kubectl get bkt,bk -A; kubectl explain buildkittemplate.spec.autoscaling');
say(
  'Ctrl-C stops the webhook (and removes its registration) and the controller; `npm run cluster:down` stops the cluster.',
);

await shutdownSignal();
await Promise.allSettled([webhook.stop(), controller.stop()]);
say('webhook and controller stopped; the cluster is still running (npm run cluster:down)');
