// A local cluster for development: `node hack/cli.ts up|down|status`
// (npm run cluster:up / cluster:down). See HELP below.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runKubectl } from './cluster.ts';
import { isRunning, logTail, signal } from './proc.ts';
import { sweepStale } from './state.ts';
import { readSupervisor, SUPERVISOR_LOG, writeSupervisor, type SupervisorState } from './supervisor-state.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
// BKF_LOCAL_DIR lets a second checkout (or a test of this CLI) keep its own cluster.
const LOCAL = path.resolve(process.env.BKF_LOCAL_DIR ?? path.join(REPO, '.local'));
const LOCAL_DIR = path.join(LOCAL, 'cluster');
const BIN_DIR = path.join(LOCAL, 'bin');
const SUPERVISOR = fileURLToPath(new URL('./supervisor.ts', import.meta.url));
// Paths as the user would type them: relative inside the working dir, absolute elsewhere.
const rel = (p: string): string => {
  const r = path.relative(process.cwd(), p);
  return r === '' ? '.' : r.startsWith('..') ? p : r;
};

const HELP = `Usage: node hack/cli.ts <command> [options]
       npm run cluster:up [-- [--nodes N] [--real-node]]    npm run cluster:down

A local Kubernetes 1.20 control plane on 127.0.0.1 for development: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kubemark hollow nodes (pods get scheduled and
report Running, but no containers run), and optionally one real node whose pods really run.

Commands:
  up        Start a cluster in the background and return once it answers. Writes the admin
            kubeconfig to ${rel(path.join(LOCAL_DIR, 'kubeconfig'))} and links kubectl and helm into ${rel(BIN_DIR)}.
            Refuses if a cluster is already running; cleans up after one that crashed.
            Options:
              --nodes N   hollow nodes (default 1; 0 runs only etcd and kube-apiserver)
              --port P    apiserver port to try first (default: any free port)
              --real-node add the machine's real node: containerd, runc, a CNI bridge, a
                          kubelet and kube-proxy, behind an egress guard (root on Debian;
                          the first run installs and builds what it needs). The platform
                          image, the buildkitd stand-in and pause are imported into it.
  down      Stop the cluster (all its processes) and remove ${rel(LOCAL_DIR)}; with a real
            node, also its pods, mounts, iptables chains, bridge, cgroups, sysctls and
            /etc/hosts line.
  status    Show whether a cluster is running. Exit code 0 if it is, 3 if not.

Options:
  -h, --help  Show this help.

Process logs are in ${rel(path.join(LOCAL_DIR, 'run'))}/*.log while the cluster runs and
${rel(path.join(LOCAL_DIR, SUPERVISOR_LOG))} has the supervisor's. Environment: BKF_LOCAL_DIR moves
.local; KUBEBUILDER_ASSETS and BUILDKIT_FLEET_CACHE choose the binaries (see install-prereqs.sh).
`;

class UsageError extends Error {}

function supervisorAlive(s: SupervisorState): boolean {
  return isRunning({ pid: s.pid, start: s.start });
}

function usageLines(s: SupervisorState): string {
  return [
    `  export KUBECONFIG=${s.kubeconfig}`,
    `  export PATH=${BIN_DIR}:$PATH`,
    '  kubectl get nodes',
    '',
    'Stop it with: npm run cluster:down',
  ].join('\n');
}

// Removes the state of a cluster whose supervisor is gone, killing anything it left behind.
async function cleanStale(): Promise<void> {
  const swept = await sweepStale([path.join(LOCAL_DIR, 'run')]);
  for (const s of swept) {
    if (s.killed.length) console.log(`Killed leftover processes: ${s.killed.join(', ')}`);
  }
  fs.rmSync(LOCAL_DIR, { recursive: true, force: true });
}

function linkTool(name: string, target: string): void {
  fs.mkdirSync(BIN_DIR, { recursive: true });
  const link = path.join(BIN_DIR, name);
  fs.rmSync(link, { force: true });
  fs.symlinkSync(target, link);
}

async function up(nodes: number, port: number | undefined, realNode: boolean): Promise<number> {
  const existing = readSupervisor(LOCAL_DIR);
  if (existing && supervisorAlive(existing)) {
    if (existing.phase === 'ready') {
      console.error(`A cluster is already running (supervisor pid ${existing.pid}, ${existing.server}).`);
      console.error(`Use it:\n${usageLines(existing)}`);
    } else {
      console.error(
        `A cluster is already ${existing.phase} (supervisor pid ${existing.pid}); see ${rel(path.join(LOCAL_DIR, SUPERVISOR_LOG))}.`,
      );
    }
    return 1;
  }
  if (fs.existsSync(LOCAL_DIR)) {
    const why = existing
      ? `its supervisor (pid ${existing.pid}) is gone${existing.error ? `; it reported: ${existing.error.split('\n')[0]}` : ''}`
      : 'no supervisor state';
    console.log(`Cleaning up ${rel(LOCAL_DIR)} from an earlier run that did not stop cleanly (${why}).`);
    await cleanStale();
  }
  fs.mkdirSync(LOCAL, { recursive: true });
  try {
    // Non-recursive mkdir is the lock against a concurrent `up`.
    fs.mkdirSync(LOCAL_DIR);
  } catch {
    console.error(`${rel(LOCAL_DIR)} appeared while starting: another \`up\` is running.`);
    return 1;
  }

  const logPath = path.join(LOCAL_DIR, SUPERVISOR_LOG);
  const logFd = fs.openSync(logPath, 'a');
  const args = ['--disable-warning=ExperimentalWarning', SUPERVISOR, LOCAL_DIR, String(nodes)];
  if (port !== undefined) args.push(String(port));
  if (realNode) args.push('--real-node');
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', logFd, logFd], cwd: REPO });
  fs.closeSync(logFd);
  if (child.pid === undefined) throw new Error('could not start the supervisor');
  let exitCode: number | null | undefined;
  child.on('exit', (code) => (exitCode = code));
  child.unref();
  if (!readSupervisor(LOCAL_DIR)) {
    writeSupervisor(LOCAL_DIR, { pid: child.pid, phase: 'starting', nodes, clusterDir: '', updatedAt: '' });
  }

  console.log(
    `Starting a cluster with ${nodes} hollow node(s)${realNode ? ' and the real node' : ''} (supervisor pid ${child.pid}, log ${rel(logPath)})`,
  );
  // Follow the supervisor's log until the cluster is ready or the supervisor gives up.
  let shown = 0;
  const show = (): void => {
    const text = fs.readFileSync(logPath, 'utf8');
    const lines = text.slice(shown).split('\n');
    const complete = lines.slice(0, -1);
    for (const l of complete) console.log(`  ${l}`);
    shown += complete.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  };
  const deadline = Date.now() + 20 * 60_000; // a first run builds the binaries
  for (;;) {
    await sleep(200);
    show();
    const s = readSupervisor(LOCAL_DIR);
    if (s?.phase === 'ready') {
      linkTool('kubectl', s.kubectl!);
      linkTool('helm', s.helm!);
      console.log(`\nCluster ready at ${s.server}. Use it:\n${usageLines(s)}`);
      return 0;
    }
    const dead = exitCode !== undefined || !isRunning({ pid: child.pid });
    if (dead || s?.phase === 'failed' || Date.now() > deadline) {
      if (!dead) signal({ name: 'supervisor', pid: child.pid }, 'SIGTERM');
      await sleep(500);
      show();
      // The supervisor's log (shown above) has the details, e.g. the failing process's log tail.
      console.error(`\nThe cluster did not start${s?.error ? `: ${s.error.split('\n')[0]}` : ''}`);
      if (!s?.error) console.error(logTail(logPath, 15));
      await waitGone(child.pid, 30_000);
      await cleanStale();
      return 1;
    }
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (isRunning({ pid })) {
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
  return true;
}

async function down(): Promise<number> {
  const s = readSupervisor(LOCAL_DIR);
  if (!fs.existsSync(LOCAL_DIR)) {
    console.log('No cluster is running.');
    return 0;
  }
  if (s && supervisorAlive(s)) {
    console.log(`Stopping the cluster (supervisor pid ${s.pid})...`);
    signal({ name: 'supervisor', pid: s.pid, start: s.start }, 'SIGTERM');
    if (!(await waitGone(s.pid, 30_000))) {
      console.log('The supervisor did not stop within 30 s; killing it.');
      signal({ name: 'supervisor', pid: s.pid, start: s.start }, 'SIGKILL');
      await waitGone(s.pid, 5000);
    }
  } else if (s) {
    console.log(`The supervisor (pid ${s.pid}) is already gone; cleaning up what it left.`);
  }
  await cleanStale();
  console.log('Stopped.');
  return 0;
}

async function status(): Promise<number> {
  const s = readSupervisor(LOCAL_DIR);
  if (!s) {
    console.log(
      fs.existsSync(LOCAL_DIR)
        ? `No cluster is running (${rel(LOCAL_DIR)} is left over; \`up\` or \`down\` cleans it).`
        : 'No cluster is running.',
    );
    return 3;
  }
  if (!supervisorAlive(s)) {
    console.log(
      `No cluster is running: its supervisor (pid ${s.pid}) is gone${s.error ? ` (${s.error.split('\n')[0]})` : ''}. \`up\` or \`down\` cleans up.`,
    );
    return 3;
  }
  if (s.phase !== 'ready') {
    console.log(
      `A cluster is ${s.phase} (supervisor pid ${s.pid}); see ${rel(path.join(LOCAL_DIR, SUPERVISOR_LOG))}.`,
    );
    return 3;
  }
  console.log(
    `A cluster is running at ${s.server} (supervisor pid ${s.pid}, ${s.nodes} hollow node(s)${s.realNode ? ' and the real node' : ''}).`,
  );
  const nodes = await runKubectl(s.kubectl!, s.kubeconfig!, ['get', 'nodes'], { timeoutMs: 10_000 });
  console.log(nodes.code === 0 ? nodes.stdout.trimEnd() : `kubectl get nodes failed: ${nodes.stderr.trim()}`);
  console.log(`\n${usageLines(s)}`);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        nodes: { type: 'string' },
        port: { type: 'string' },
        'real-node': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [command, ...extra] = positionals;
  if (!command) throw new UsageError('missing command (up, down or status)');
  if (extra.length > 0) throw new UsageError(`unexpected argument: ${extra[0]}`);
  if (command !== 'up' && (values.nodes !== undefined || values.port !== undefined || values['real-node'])) {
    throw new UsageError(`--nodes, --port and --real-node only go with \`up\``);
  }
  switch (command) {
    case 'up': {
      const nodes = values.nodes === undefined ? 1 : Number(values.nodes);
      if (!/^\d+$/.test(values.nodes ?? '1') || nodes > 20) {
        throw new UsageError(`--nodes must be a whole number from 0 to 20, got ${values.nodes}`);
      }
      let port: number | undefined;
      if (values.port !== undefined) {
        port = Number(values.port);
        if (!/^\d+$/.test(values.port) || port < 1 || port > 65535) {
          throw new UsageError(`--port must be a port number (1-65535), got ${values.port}`);
        }
      }
      return up(nodes, port, values['real-node'] === true);
    }
    case 'down':
      return down();
    case 'status':
      return status();
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
}

// `cluster:up | head` must not turn into an EPIPE crash.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof UsageError) {
    console.error(`cluster: ${e.message}\nRun with --help for usage.`);
    process.exitCode = 2;
  } else {
    console.error(`cluster: ${(e as Error).stack ?? String(e)}`);
    process.exitCode = 1;
  }
}
