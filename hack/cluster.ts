// startCluster(): a real, throwaway Kubernetes control plane on loopback.
//
// etcd + kube-apiserver always; with nodes >= 1 also kube-controller-manager, kube-scheduler and
// N kubemark hollow nodes (a real kubelet with a fake container runtime), so pods get scheduled
// and reach Running. See docs/architecture.md ("The local cluster").
//
// Lifecycle guarantees:
// - every process gets free loopback ports; a port taken between picking and binding is retried
//   with new ports instead of failing the start;
// - every process logs to <dir>/<name>.log; a failed start says which process failed and shows
//   the tail of its log;
// - stop() kills all processes (SIGTERM, SIGKILL after a grace period), waits for them, and
//   removes the cluster's dirs;
// - if the owner dies without stop(), a detached watchdog tears the cluster down, and the next
//   startCluster() on the machine sweeps anything that still remains (state.ts).
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { apiRequest, probeHealthz, type ApiTarget } from './api.ts';
import { ensureBinaries, ensureNodeBinaries, type Binaries, type NodeBinaries } from './binaries.ts';
import {
  apiserverArgs,
  controllerManagerArgs,
  etcdArgs,
  kubemarkArgs,
  nodeName,
  schedulerArgs,
} from './flags.ts';
import { newToken, renderKubeconfig, renderTokenAuthFile, type TokenUser } from './kubeconfig.ts';
import { freePort, LOOPBACK } from './ports.ts';
import { ClusterDownError, ClusterProcessError, waitFor } from './wait.ts';
import { isReady, registrationPatch } from './node-registration.ts';
import { buildNodeImages } from './images.ts';
import { acquireRealNodeLock } from './real-node/lock.ts';
import { REAL_NODE_NAME } from './real-node/plan.ts';
import {
  realNodeUnavailable,
  startRealNode,
  type RealNode,
  type RealNodeOptions,
} from './real-node/start.ts';
import {
  isRunning,
  logTail,
  signal,
  spawnLogged,
  startTimeOf,
  type ManagedProcess,
  type ProcRef,
} from './proc.ts';
import {
  destroy,
  MARKER_FILE,
  readState,
  register,
  selfRef,
  sweepStale,
  writeState,
  type ClusterState,
} from './state.ts';

export { ClusterDownError, ClusterProcessError };

export interface StartOptions {
  // Hollow nodes to run. 0 (the default) starts only etcd and kube-apiserver: enough for CRUD
  // against the API, but nothing schedules pods or runs controllers.
  nodes?: number;
  // Cluster dir (created if missing; must be empty or a dir left by a dead cluster). Default: a
  // new dir in the system temp folder.
  dir?: string;
  // Progress lines. Default: stderr.
  log?: (line: string) => void;
  // Ports to try first (e.g. a fixed apiserver port for a dev cluster). A port that turns out to
  // be taken is replaced by a free one, like any other collision.
  ports?: { apiserver?: number; etcdClient?: number; etcdPeer?: number };
  // Give up (and clean up) after this long. Default 120 s (240 s with a real node).
  timeoutMs?: number;
  // Add the machine's one real node (kubelet, containerd, runc, kube-proxy; root on Debian only):
  // pods on it really run. `true` or options (extra node labels). See hack/real-node/.
  realNode?: boolean | RealNodeOptions;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  // Written to kubectl's stdin (for `apply -f -`).
  input?: string;
  // Resolve with a non-zero code instead of throwing.
  allowFail?: boolean;
  // Kill kubectl after this long. Default 60 s.
  timeoutMs?: number;
}

export interface ProcessInfo {
  name: string;
  pid: number;
  logPath: string;
}

export interface LocalCluster {
  readonly dir: string;
  readonly kubeconfigPath: string;
  readonly server: string;
  readonly kubectlPath: string;
  readonly helmPath: string;
  readonly nodeNames: readonly string[];
  readonly processes: readonly ProcessInfo[];
  // Set when the cluster runs a real node.
  readonly realNode?: RealNode;
  kubectl(args: string[], opts?: KubectlOptions): Promise<RunResult>;
  // Throws ClusterDownError if a cluster process has died since the start.
  assertRunning(): void;
  stop(): Promise<void>;
}

const WATCHDOG = fileURLToPath(new URL('./watchdog.ts', import.meta.url));
const BIND_ATTEMPTS = 5;

function defaultLog(line: string): void {
  process.stderr.write(`${line}\n`);
}

interface Conditions {
  status?: { conditions?: { type: string; status: string }[] };
  spec?: { taints?: { key: string; effect: string }[]; podCIDR?: string };
  secrets?: unknown[];
}

class Cluster implements LocalCluster {
  readonly dir: string;
  readonly kubeconfigPath: string;
  readonly kubectlPath: string;
  readonly helmPath: string;
  server = '';
  nodeNames: string[] = [];
  readonly procs: ManagedProcess[] = [];
  readonly state: ClusterState;
  readonly bins: Binaries;
  readonly log: (line: string) => void;
  readonly t0 = Date.now();
  watchdogStdin?: NodeJS.WritableStream & { unref?: () => void };
  caPem = '';
  stopping?: Promise<void>;
  realNode?: RealNode;
  nodeBins?: NodeBinaries;

  constructor(dir: string, bins: Binaries, log: (line: string) => void) {
    this.dir = dir;
    this.bins = bins;
    this.log = log;
    this.kubeconfigPath = path.join(dir, 'kubeconfig');
    this.kubectlPath = bins.kubectl;
    this.helmPath = bins.helm;
    this.state = {
      version: 1,
      id: `${path.basename(dir)}-${randomBytes(4).toString('hex')}`,
      dir,
      owner: selfRef(),
      processes: [],
      extraDirs: [],
    };
  }

  get processes(): ProcessInfo[] {
    return this.procs.map((p) => ({ name: p.name, pid: p.pid, logPath: p.logPath }));
  }

  progress(msg: string): void {
    this.log(`[cluster +${((Date.now() - this.t0) / 1000).toFixed(1)}s] ${msg}`);
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  // Records a process in state.json before anything waits on it, so the watchdog and the sweep
  // can always see every process we started.
  launch(name: string, command: string, args: string[], env?: NodeJS.ProcessEnv): ManagedProcess {
    const p = spawnLogged({ name, command, args, logPath: this.file(`${name}.log`), env, cwd: this.dir });
    this.procs.push(p);
    this.state.processes.push({ name: p.name, pid: p.pid, start: p.start });
    writeState(this.state);
    return p;
  }

  forget(p: ManagedProcess): void {
    this.procs.splice(this.procs.indexOf(p), 1);
    this.state.processes = this.state.processes.filter((r) => r.pid !== p.pid);
    writeState(this.state);
  }

  // Starts a process on freshly picked ports and waits until it is ready; if it died because a
  // port was taken in the meantime, picks new ports and tries again.
  async launchWithPorts<P>(
    name: string,
    pick: (attempt: number) => Promise<P>,
    start: (ports: P) => ManagedProcess,
    ready: (p: ManagedProcess, ports: P) => Promise<void>,
  ): Promise<{ proc: ManagedProcess; ports: P }> {
    for (let attempt = 0; ; attempt++) {
      const ports = await pick(attempt);
      const proc = start(ports);
      try {
        await ready(proc, ports);
        return { proc, ports };
      } catch (e) {
        if (e instanceof ClusterProcessError && e.pid === proc.pid && e.addressInUse) {
          if (attempt + 1 < BIND_ATTEMPTS) {
            this.progress(`${name}: a port was taken (${JSON.stringify(ports)}); retrying with new ports`);
            this.forget(proc);
            continue;
          }
        }
        throw e;
      }
    }
  }

  startWatchdog(): void {
    const logFd = fs.openSync(this.file('watchdog.log'), 'a');
    try {
      const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', WATCHDOG, this.dir], {
        stdio: ['pipe', logFd, logFd],
        detached: true,
        cwd: this.dir,
      });
      if (child.pid === undefined) throw new Error('could not start the cluster watchdog');
      child.unref();
      // We never write to it: the watchdog reads EOF when this process exits.
      const stdin = child.stdin as (NodeJS.WritableStream & { unref?: () => void }) | null;
      stdin?.unref?.();
      stdin?.on('error', () => undefined);
      this.watchdogStdin = stdin ?? undefined;
      const ref: ProcRef = { name: 'watchdog', pid: child.pid };
      this.state.watchdog = { ...ref, start: startTimeOf(child.pid) };
      writeState(this.state);
    } finally {
      fs.closeSync(logFd);
    }
  }

  target(token: string): ApiTarget {
    return { server: this.server, caPem: this.caPem, token };
  }

  writeKubeconfig(file: string, user: TokenUser): void {
    fs.writeFileSync(
      file,
      renderKubeconfig({ server: this.server, caPem: this.caPem, token: user.token, user: user.user }),
      { mode: 0o600 },
    );
  }

  async start(opts: StartOptions): Promise<void> {
    const nodes = opts.nodes ?? 0;
    const realNode = opts.realNode === true ? {} : opts.realNode || undefined;
    const deadline = Date.now() + (opts.timeoutMs ?? (realNode ? 240_000 : 120_000));
    const preferred = opts.ports ?? {};

    fs.writeFileSync(this.file(MARKER_FILE), 'created by buildkit-fleet hack/cluster.ts\n');
    writeState(this.state);
    register(this.state);
    this.startWatchdog();

    // Credentials. The service-account key signs and verifies service account tokens.
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(this.file('sa.key'), privateKey.export({ type: 'pkcs1', format: 'pem' }), {
      mode: 0o600,
    });
    fs.writeFileSync(this.file('sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    // Components and hollow kubelets are in system:masters too: with RBAC as the only
    // authorizer, system:nodes has no permissions, and the controller-manager would need
    // per-controller service accounts (--use-service-account-credentials), which only slows
    // the start. This is a throwaway test cluster on loopback.
    const admin: TokenUser = { token: newToken(), user: 'admin', uid: 'admin', groups: ['system:masters'] };
    const cm: TokenUser = {
      token: newToken(),
      user: 'system:kube-controller-manager',
      uid: 'kube-controller-manager',
      groups: ['system:masters'],
    };
    const sched: TokenUser = {
      token: newToken(),
      user: 'system:kube-scheduler',
      uid: 'kube-scheduler',
      groups: ['system:masters'],
    };
    this.nodeNames = Array.from({ length: nodes }, (_, i) => nodeName(i));
    const nodeUsers: TokenUser[] = this.nodeNames.map((n) => ({
      token: newToken(),
      user: `system:node:${n}`,
      uid: n,
      groups: ['system:nodes', 'system:masters'],
    }));
    const realNodeUser: TokenUser = {
      token: newToken(),
      user: `system:node:${REAL_NODE_NAME}`,
      uid: REAL_NODE_NAME,
      groups: ['system:nodes', 'system:masters'],
    };
    if (realNode) nodeUsers.push(realNodeUser);
    fs.writeFileSync(this.file('tokens.csv'), renderTokenAuthFile([admin, cm, sched, ...nodeUsers]), {
      mode: 0o600,
    });

    // etcd
    this.progress('starting etcd');
    const etcd = await this.launchWithPorts(
      'etcd',
      async (attempt) => ({
        client: (attempt === 0 && preferred.etcdClient) || (await freePort()),
        peer: (attempt === 0 && preferred.etcdPeer) || (await freePort()),
      }),
      (ports) =>
        this.launch(
          'etcd',
          this.bins.etcd,
          etcdArgs({ dataDir: this.file('etcd-data'), clientPort: ports.client, peerPort: ports.peer }),
        ),
      (p, ports) =>
        waitFor(
          'etcd to answer',
          async () =>
            (await fetch(`http://${LOOPBACK}:${ports.client}/health`, { signal: AbortSignal.timeout(2000) }))
              .ok,
          [p],
          deadline,
        ),
    );

    // kube-apiserver
    this.progress('starting kube-apiserver');
    const certDir = this.file('apiserver-certs');
    const caFile = path.join(certDir, 'apiserver.crt');
    const apiserver = await this.launchWithPorts(
      'kube-apiserver',
      async (attempt) => (attempt === 0 && preferred.apiserver) || (await freePort()),
      (port) => {
        fs.rmSync(certDir, { recursive: true, force: true });
        return this.launch(
          'kube-apiserver',
          this.bins.kubeApiserver,
          apiserverArgs({
            etcdPort: etcd.ports.client,
            securePort: port,
            certDir,
            serviceAccountPublicKeyFile: this.file('sa.pub'),
            serviceAccountPrivateKeyFile: this.file('sa.key'),
            tokenAuthFile: this.file('tokens.csv'),
          }),
        );
      },
      async (p, port) => {
        this.server = `https://${LOOPBACK}:${port}`;
        await waitFor(
          'kube-apiserver to write its certificate',
          async () => fs.existsSync(caFile),
          [p, etcd.proc],
          deadline,
        );
        await waitFor(
          'kube-apiserver /readyz',
          async () => {
            if (!this.caPem) this.caPem = caOf(fs.readFileSync(caFile, 'utf8'));
            const r = await apiRequest(this.target(admin.token), 'GET', '/readyz');
            return r.status === 200;
          },
          [p, etcd.proc],
          deadline,
        );
      },
    );
    this.state.server = this.server;
    writeState(this.state);
    // The CA the apiserver generated in --cert-dir (its serving cert is for 127.0.0.1).
    fs.writeFileSync(this.file('ca.crt'), this.caPem);
    this.writeKubeconfig(this.kubeconfigPath, admin);
    const api = this.target(admin.token);
    const core = [etcd.proc, apiserver.proc];
    await waitFor(
      'the default namespace',
      async () => (await apiRequest(api, 'GET', '/api/v1/namespaces/default')).status === 200,
      core,
      deadline,
    );
    this.progress(`kube-apiserver ready at ${this.server}`);
    if (nodes === 0 && !realNode) return;

    // Controllers, scheduler and nodes start side by side.
    this.progress(
      `starting kube-controller-manager, kube-scheduler, ${nodes} hollow node(s)${realNode ? ' and the real node' : ''}`,
    );
    this.writeKubeconfig(this.file('controller-manager.kubeconfig'), cm);
    this.writeKubeconfig(this.file('scheduler.kubeconfig'), sched);
    const component = (
      name: string,
      bin: string,
      args: (port: number) => string[],
    ): Promise<{ proc: ManagedProcess; ports: number }> =>
      this.launchWithPorts(
        name,
        () => freePort(),
        (port) => this.launch(name, bin, args(port)),
        (p, port) => waitFor(`${name} /healthz`, () => probeHealthz(port), [p, ...core], deadline),
      );
    const controllers = component('kube-controller-manager', this.bins.kubeControllerManager, (port) =>
      controllerManagerArgs({
        kubeconfig: this.file('controller-manager.kubeconfig'),
        securePort: port,
        certDir: this.file('controller-manager-certs'),
        serviceAccountPrivateKeyFile: this.file('sa.key'),
        rootCaFile: this.file('ca.crt'),
      }),
    );
    const scheduler = component('kube-scheduler', this.bins.kubeScheduler, (port) =>
      schedulerArgs({
        kubeconfig: this.file('scheduler.kubeconfig'),
        securePort: port,
        certDir: this.file('scheduler-certs'),
      }),
    );
    const hollow = this.nodeNames.map((name, i) => this.startNode(i, name, nodeUsers[i]!, core, deadline));
    const real = realNode ? this.startRealNode(realNode, realNodeUser, core, deadline) : undefined;
    const [started] = await Promise.all([Promise.all([controllers, scheduler, ...hollow]), real]);
    const watch = [...core, ...started.map((s) => s.proc), ...(this.realNode?.processes ?? [])];

    // Pods need their namespace's default service account, and in 1.20 its token secret.
    await waitFor(
      'the default service account token',
      async () => {
        const r = await apiRequest(api, 'GET', '/api/v1/namespaces/default/serviceaccounts/default');
        return r.status === 200 && ((r.body as Conditions).secrets?.length ?? 0) > 0;
      },
      watch,
      deadline,
    );
  }

  // One hollow node: kubemark with its own kubelet port and TMPDIR (the patched kubemark serves
  // its fake container runtime on a socket there), untainted and Ready.
  async startNode(
    index: number,
    name: string,
    user: TokenUser,
    core: ManagedProcess[],
    deadline: number,
  ): Promise<{ proc: ManagedProcess; ports: number }> {
    const kubeconfig = this.file(`${name}.kubeconfig`);
    this.writeKubeconfig(kubeconfig, user);
    // Short path in the system temp dir: unix socket paths are limited to 108 bytes.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bkf-node-'));
    this.state.extraDirs!.push(tmp);
    writeState(this.state);
    const api = this.target(user.token);
    const nodePath = `/api/v1/nodes/${name}`;
    const started = await this.launchWithPorts(
      name,
      () => freePort(),
      (port) =>
        this.launch(
          name,
          this.bins.kubemark,
          kubemarkArgs({ kubeconfig, nodeName: name, kubeletPort: port }),
          {
            ...process.env,
            TMPDIR: tmp,
          },
        ),
      async (p) => {
        const watch = [p, ...core];
        let node: Conditions = {};
        await waitFor(
          `node ${name} to register`,
          async () => {
            const r = await apiRequest(api, 'GET', nodePath);
            node = r.body as Conditions;
            return r.status === 200;
          },
          watch,
          deadline,
        );
        this.trackKubeletRootDir(p, tmp);
        // Nothing would ever remove the not-ready taint the kubelet registers with (that is the
        // node-lifecycle controller's job), nor give the node a pod CIDR (nodeipam's); we do
        // both. The pod CIDR also matters for speed: a 1.20 kubelet polls for it every 100 ms
        // after start and, once it is set, posts its node status at once. Otherwise the node
        // turns Ready only at the next periodic status update, 10 s later. The kubelet is only
        // Ready once its CSINode object exists, so the pod CIDR waits for that (up to 5 s).
        const registered = Date.now();
        await waitFor(
          `node ${name} to be untainted and Ready`,
          async () => {
            const r = await apiRequest(api, 'GET', nodePath);
            node = r.body as Conditions;
            const csiReady = async (): Promise<boolean> =>
              Date.now() - registered > 5000 ||
              (await apiRequest(api, 'GET', `/apis/storage.k8s.io/v1/csinodes/${name}`)).status === 200;
            const ops = registrationPatch(node, podCidr(index), !node.spec?.podCIDR && (await csiReady()));
            if (ops.length > 0) {
              await apiRequest(api, 'PATCH', nodePath, ops, 'application/json-patch+json');
              return false;
            }
            return isReady(node);
          },
          watch,
          deadline,
        );
      },
    );
    this.progress(`node ${name} Ready`);
    return started;
  }

  async startRealNode(
    options: RealNodeOptions,
    user: TokenUser,
    core: ManagedProcess[],
    deadline: number,
  ): Promise<void> {
    const bins = this.nodeBins!;
    this.progress('real node: building its images');
    const images = await buildNodeImages(path.join(this.dir, 'images'), bins.pause);
    this.realNode = await startRealNode(
      this,
      bins,
      user,
      images.images,
      images.sandbox,
      options,
      core,
      deadline,
    );
  }

  // kubemark 1.20 puts the hollow kubelet's root dir in /tmp whatever TMPDIR says, and never
  // removes it. Its log names the dir; make it part of the cluster so it goes with it.
  trackKubeletRootDir(p: ManagedProcess, tmp: string): void {
    const m = /Using (\S+) as root dir for hollow-kubelet/.exec(logTail(p.logPath, 200));
    const dir = m?.[1];
    if (!dir || dir.startsWith(`${tmp}/`) || !path.basename(dir).startsWith('hollow-kubelet.')) return;
    this.state.extraDirs!.push(dir);
    writeState(this.state);
  }

  assertRunning(): void {
    if (this.stopping) throw new Error(`the cluster in ${this.dir} has been stopped`);
    for (const p of this.procs) {
      if (p.exit || !isRunning(p)) throw new ClusterDownError(p);
    }
  }

  // assertRunning, but gives a process that just died a moment to report how it ended.
  async ensureRunning(): Promise<void> {
    const dead = this.procs.find((p) => p.exit || !isRunning(p));
    if (dead && !dead.exit) await Promise.race([dead.exited, sleep(500)]);
    this.assertRunning();
  }

  async kubectl(args: string[], opts: KubectlOptions = {}): Promise<RunResult> {
    await this.ensureRunning();
    const r = await runKubectl(this.kubectlPath, this.kubeconfigPath, args, opts);
    if (r.code !== 0) {
      // A dead apiserver shows as "connection refused"; say what actually happened instead.
      await this.ensureRunning();
      if (!opts.allowFail) throw kubectlError(args, r);
    }
    return r;
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const t = Date.now();
      const keepFiles = process.env.BKF_KEEP_CLUSTER_DIR === '1';
      try {
        await destroy(this.state, { keepFiles });
      } finally {
        this.watchdogStdin?.end();
      }
      if (keepFiles) this.log(`[cluster] kept ${this.dir} (BKF_KEEP_CLUSTER_DIR=1)`);
      this.log(`[cluster] stopped in ${((Date.now() - t) / 1000).toFixed(1)}s`);
    })();
    return this.stopping;
  }
}

// The apiserver writes its serving certificate followed by the self-signed CA that issued it;
// clients should trust the CA only.
export function caOf(chainPem: string): string {
  const blocks = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  for (const pem of blocks) {
    const cert = new X509Certificate(pem);
    if (cert.ca && cert.subject === cert.issuer) return `${pem}\n`;
  }
  throw new Error('no self-signed CA certificate in the apiserver certificate chain');
}

export function kubectlError(args: string[], r: RunResult): Error {
  return new Error(
    `kubectl ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`,
  );
}

export function runKubectl(
  kubectlPath: string,
  kubeconfigPath: string,
  args: string[],
  opts: KubectlOptions = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(kubectlPath, [`--kubeconfig=${kubeconfigPath}`, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, KUBECONFIG: kubeconfigPath },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${opts.timeoutMs ?? 60_000} ms)`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      resolve({ code: code ?? (sig ? 128 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

// Distinct per node, outside the service range (10.96.0.0/12).
export function podCidr(index: number): string {
  return `10.244.${index}.0/24`;
}

function prepareDir(dir: string | undefined): string {
  if (!dir) return fs.mkdtempSync(path.join(os.tmpdir(), 'bkf-cluster-'));
  const abs = path.resolve(dir);
  fs.mkdirSync(abs, { recursive: true });
  const entries = fs.readdirSync(abs);
  if (entries.length > 0) {
    const state = readState(abs);
    if (state && isRunning(state.owner)) {
      throw new Error(`${abs} holds a cluster that is still running (owner pid ${state.owner.pid})`);
    }
    throw new Error(`cluster dir ${abs} is not empty; remove it or pick another`);
  }
  return abs;
}

export async function startCluster(opts: StartOptions = {}): Promise<LocalCluster> {
  const log = opts.log ?? defaultLog;
  const nodes = opts.nodes ?? 0;
  // podCidr() numbers nodes in one octet.
  if (!Number.isInteger(nodes) || nodes < 0 || nodes > 200) {
    throw new Error(`nodes must be a whole number from 0 to 200, got ${nodes}`);
  }
  const realNode = Boolean(opts.realNode);
  if (realNode) {
    const why = realNodeUnavailable();
    if (why) throw new Error(`a real node cannot run on this machine: ${why}`);
  }
  const bins = await ensureBinaries(log);
  const nodeBins = realNode ? await ensureNodeBinaries(log) : undefined;
  for (const swept of await sweepStale(opts.dir ? [path.resolve(opts.dir)] : [])) {
    log(
      `[cluster] removed a stale cluster in ${swept.dir} (owner pid ${swept.ownerPid} is gone)` +
        (swept.killed.length ? `; killed ${swept.killed.join(', ')}` : ''),
    );
  }
  const cluster = new Cluster(prepareDir(opts.dir), bins, log);
  cluster.nodeBins = nodeBins;
  cluster.progress(
    `starting a cluster with ${nodes} hollow node(s)${realNode ? ' and a real node' : ''} in ${cluster.dir}`,
  );
  try {
    if (realNode) {
      await acquireRealNodeLock(cluster.dir, cluster.state.owner, opts.timeoutMs ?? 240_000, (m) =>
        cluster.progress(m),
      );
      cluster.state.realNodeLock = true;
      writeState(cluster.state);
    }
    await cluster.start(opts);
  } catch (e) {
    await cluster
      .stop()
      .catch((stopErr: unknown) => log(`[cluster] cleanup after a failed start: ${String(stopErr)}`));
    throw e;
  }
  cluster.progress('cluster ready');
  return cluster;
}

// Sends SIGTERM/SIGKILL to one process of a running cluster, for tests of the failure paths.
export function killClusterProcess(
  cluster: LocalCluster,
  name: string,
  sig: NodeJS.Signals = 'SIGKILL',
): void {
  const p = cluster.processes.find((x) => x.name === name);
  if (!p) throw new Error(`no process ${name} in the cluster`);
  signal({ name: p.name, pid: p.pid, start: startTimeOf(p.pid) }, sig);
}
