// Brings up the real node beside the local control plane: containerd with a CNI bridge, the
// kubelet and kube-proxy, all inside an egress guard that is in place before the first of them
// starts. Every host change is written to the journal (state.json) before it is made, so the
// teardown (teardown.ts) undoes it whoever runs it. See docs/architecture.md ("The real node").
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { apiRequest, type ApiTarget } from '../api.ts';
import type { NodeBinaries } from '../binaries.ts';
import type { TokenUser } from '../kubeconfig.ts';
import { isReady, registrationPatch, type RegisteredNode } from '../node-registration.ts';
import { freePort, LOOPBACK } from '../ports.ts';
import type { ManagedProcess } from '../proc.ts';
import { writeState, type ClusterState } from '../state.ts';
import { waitFor } from '../wait.ts';
import { cgroupRoots, cgroupV2Root, mustRun, readSysctl, run } from './host.ts';
import type { RealNodeJournal } from './journal.ts';
import {
  apiServiceEndpoints,
  containerdConfig,
  cniConflist,
  FIXED_HOST_DIRS,
  guardRules,
  hostsLine,
  KUBELET_ENV,
  kubeletArgs,
  kubeletConfig,
  KUBEPODS_CGROUP,
  kubeProxyArgs,
  kubeProxyConfig,
  HOST_ADDRESSES,
  NODE_IP,
  nodeLayout,
  POD_CIDR,
  REAL_NODE_NAME,
  SAVED_SYSCTLS,
  type NodeLayout,
} from './plan.ts';

export interface RealNodeOptions {
  /** Extra node labels (the kubelet's --node-labels), e.g. to match a template's nodeSelector. */
  labels?: Record<string, string>;
}

/** An image for the node's containerd: an OCI layout tar and the normalized name it is stored under. */
export interface NodeImage {
  reference: string;
  tarPath: string;
  /** More names for the same image (ctr images tag). */
  aliases?: string[];
}

/** What the cluster gives the real node to start with. */
export interface NodeHost {
  dir: string;
  state: ClusterState & { realNode?: RealNodeJournal };
  progress(msg: string): void;
  launch(name: string, command: string, args: string[], env?: NodeJS.ProcessEnv): ManagedProcess;
  writeKubeconfig(file: string, user: TokenUser): void;
  target(token: string): ApiTarget;
}

export interface RealNode {
  name: string;
  layout: NodeLayout;
  /** Runs ctr against the node's containerd (namespace k8s.io). */
  ctr(args: string[]): string;
  /** The guard's cgroup dir: a process that writes its pid to <dir>/cgroup.procs is guarded. */
  guardCgroupDir: string;
  processes: ManagedProcess[];
}

/** Why the real node cannot run on this machine, or undefined if it can. */
export function realNodeUnavailable(): string | undefined {
  if (process.getuid?.() !== 0)
    return 'it needs root (it runs containerd and a kubelet and changes host networking)';
  if (!fs.existsSync('/etc/debian_version'))
    return 'it is set up from Debian packages, and this is not Debian';
  if (!cgroupV2Root()) return 'the egress guard needs a cgroup-v2 mount, and there is none';
  return undefined;
}

function journal(host: NodeHost): RealNodeJournal {
  return host.state.realNode!;
}

function save(host: NodeHost): void {
  writeState(host.state);
}

// Records first, then changes: a crash between the two leaves an entry teardown tolerates.
function recordHostState(host: NodeHost, layout: NodeLayout): void {
  const sysctls: Record<string, string | undefined> = {};
  for (const key of SAVED_SYSCTLS) sysctls[key] = readSysctl(key);
  const leftover = cgroupRoots().find((r) => fs.existsSync(path.join(r, KUBEPODS_CGROUP)));
  if (leftover) {
    throw new Error(
      `${path.join(leftover, KUBEPODS_CGROUP)} already exists: another kubelet runs on this machine, or one crashed ` +
        'without a cluster state to clean up after it. Stop it (or remove those cgroups) first.',
    );
  }
  host.state.realNode = {
    clusterId: host.state.id,
    layout,
    sysctls,
    iptablesBefore: { v4: mustRun('iptables-save', []), v6: mustRun('ip6tables-save', []) },
    createdDirs: FIXED_HOST_DIRS.filter((d) => !fs.existsSync(d)),
  };
  save(host);
}

function installGuard(host: NodeHost): string {
  const j = journal(host);
  const v2 = cgroupV2Root()!;
  const rel = `bkf-guard-${j.clusterId}`;
  j.guard = { dir: path.join(v2, rel), path: rel };
  save(host);
  fs.mkdirSync(j.guard.dir);
  const rules = guardRules(rel);
  j.guardRulesInstalled = true;
  save(host);
  for (const r of rules.v4) mustRun('iptables', ['-w', ...r]);
  for (const r of rules.v6) mustRun('ip6tables', ['-w', ...r]);
  return j.guard.dir;
}

function addHostEntries(host: NodeHost): void {
  const j = journal(host);
  j.hostsLine = hostsLine(j.clusterId);
  j.nodeAddressAdded = true;
  save(host);
  fs.appendFileSync(
    '/etc/hosts',
    `${fs.readFileSync('/etc/hosts', 'utf8').endsWith('\n') ? '' : '\n'}${j.hostsLine}\n`,
  );
  for (const address of HOST_ADDRESSES) {
    const r = run('ip', ['addr', 'add', `${address}/32`, 'dev', 'lo']);
    if (r.code !== 0 && !/File exists/.test(r.stderr))
      throw new Error(`ip addr add ${address}/32 dev lo: ${r.stderr.trim()}`);
  }
}

// `sh` puts itself into the guard's cgroup and then becomes the program, so the program and
// everything it starts are guarded from their first instruction.
const API_RELAY = fileURLToPath(new URL('./api-relay.ts', import.meta.url));

async function writeApiServiceEndpoints(api: ApiTarget, port: number): Promise<void> {
  const { endpoints, slice } = apiServiceEndpoints(NODE_IP, port);
  for (const [collection, body] of [
    ['/api/v1/namespaces/default/endpoints', endpoints],
    ['/apis/discovery.k8s.io/v1beta1/namespaces/default/endpointslices', slice],
  ] as const) {
    const created = await apiRequest(api, 'POST', collection, body);
    if (created.status === 201) continue;
    if (created.status !== 409)
      throw new Error(`writing ${collection}/kubernetes: ${created.status} ${created.text}`);
    const current = await apiRequest(api, 'GET', `${collection}/kubernetes`);
    const resourceVersion = (current.body as { metadata?: { resourceVersion?: string } }).metadata
      ?.resourceVersion;
    const replaced = await apiRequest(api, 'PUT', `${collection}/kubernetes`, {
      ...body,
      metadata: { ...(body as { metadata: object }).metadata, resourceVersion },
    });
    if (replaced.status !== 200)
      throw new Error(`writing ${collection}/kubernetes: ${replaced.status} ${replaced.text}`);
  }
}

function guarded(guardDir: string, command: string, args: string[]): [string, string[]] {
  return ['/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', guardDir, command, ...args]];
}

export function importImages(ctr: (args: string[]) => string, images: NodeImage[]): void {
  for (const image of images) {
    ctr(['images', 'import', image.tarPath]);
    for (const alias of image.aliases ?? []) ctr(['images', 'tag', '--force', image.reference, alias]);
  }
}

export async function startRealNode(
  host: NodeHost,
  bins: NodeBinaries,
  user: TokenUser,
  images: NodeImage[],
  sandboxImage: string,
  opts: RealNodeOptions,
  watch: ManagedProcess[],
  deadline: number,
): Promise<RealNode> {
  const layout = nodeLayout(host.dir);
  for (const d of [
    layout.dir,
    layout.containerdDir,
    layout.cniConfDir,
    layout.kubeletDir,
    layout.hostPathDir,
  ]) {
    fs.mkdirSync(d, { recursive: true });
  }
  recordHostState(host, layout);
  host.progress('real node: installing the egress guard');
  const guardDir = installGuard(host);
  addHostEntries(host);

  // containerd
  fs.writeFileSync(layout.containerdConfig, containerdConfig(layout, sandboxImage));
  fs.writeFileSync(path.join(layout.cniConfDir, '10-bkf-bridge.conflist'), cniConflist(layout));
  host.progress('real node: starting containerd');
  const containerd = host.launch(
    'containerd',
    ...guarded(guardDir, 'containerd', ['--config', layout.containerdConfig]),
  );
  const ctr = (args: string[]): string =>
    mustRun('ctr', ['--address', layout.containerdSocket, '-n', 'k8s.io', ...args]);
  await waitFor(
    'containerd to answer',
    async () =>
      fs.existsSync(layout.containerdSocket) &&
      run('ctr', ['--address', layout.containerdSocket, 'version']).code === 0,
    [containerd, ...watch],
    deadline,
  );
  host.progress(`real node: importing ${images.length} image(s)`);
  importImages((args) => ctr(args), images);

  // kubelet
  host.writeKubeconfig(layout.kubeconfig, user);
  const kubeletPorts = { port: await freePort(), healthzPort: await freePort() };
  fs.writeFileSync(layout.kubeletConfig, kubeletConfig(kubeletPorts));
  host.progress('real node: starting the kubelet');
  const kubelet = host.launch(
    'kubelet',
    ...guarded(guardDir, bins.kubelet, kubeletArgs({ layout, labels: opts.labels ?? {} })),
    { ...process.env, ...KUBELET_ENV },
  );
  const api = host.target(user.token);
  const nodePath = `/api/v1/nodes/${REAL_NODE_NAME}`;
  const procs = [containerd, kubelet];
  await waitFor(
    `node ${REAL_NODE_NAME} to be untainted and Ready`,
    async () => {
      const r = await apiRequest(api, 'GET', nodePath);
      if (r.status !== 200) return false;
      const node = r.body as RegisteredNode;
      const ops = registrationPatch(node, POD_CIDR);
      if (ops.length > 0) {
        await apiRequest(api, 'PATCH', nodePath, ops, 'application/json-patch+json');
        return false;
      }
      return isReady(node);
    },
    [...procs, ...watch],
    deadline,
  );
  host.progress(`real node: ${REAL_NODE_NAME} Ready`);

  // kube-proxy
  const proxyPorts = { healthzPort: await freePort(), metricsPort: await freePort() };
  fs.writeFileSync(layout.kubeProxyConfig, kubeProxyConfig(layout, proxyPorts));
  const kubeProxy = host.launch('kube-proxy', ...guarded(guardDir, bins.kubeProxy, kubeProxyArgs(layout)));
  procs.push(kubeProxy);
  await waitFor(
    'kube-proxy /healthz',
    async () =>
      (
        await fetch(`http://${LOOPBACK}:${proxyPorts.healthzPort}/healthz`, {
          signal: AbortSignal.timeout(2000),
        })
      ).ok,
    [...procs, ...watch],
    deadline,
  );
  host.progress('real node: kube-proxy syncing rules');

  // pods reach the API server (on loopback) through a relay on the node's address
  const relayPort = await freePort();
  const apiPort = Number(new URL(api.server).port);
  const relay = host.launch(
    'api-relay',
    ...guarded(guardDir, process.execPath, [
      '--disable-warning=ExperimentalWarning',
      API_RELAY,
      NODE_IP,
      String(relayPort),
      String(apiPort),
    ]),
  );
  procs.push(relay);
  await waitFor(
    'the API relay to listen',
    () =>
      new Promise<boolean>((resolve) => {
        const s = net.connect({ host: NODE_IP, port: relayPort }, () => (s.destroy(), resolve(true)));
        s.on('error', () => resolve(false));
      }),
    [...procs, ...watch],
    deadline,
  );
  await writeApiServiceEndpoints(api, relayPort);
  host.progress(`real node: pods reach the API server through ${NODE_IP}:${relayPort}`);
  return { name: REAL_NODE_NAME, layout, ctr, guardCgroupDir: guardDir, processes: procs };
}
