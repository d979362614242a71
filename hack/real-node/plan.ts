// What the real node runs with: names, addresses and the configuration files and command lines
// of containerd, the CNI bridge, the kubelet, kube-proxy and the egress guard. Pure functions, so
// every setting is read (and unit tested) in one place; start.ts only writes and runs them.
// docs/architecture.md ("The real node") says why each setting is there.
import path from 'node:path';
import { SERVICE_CLUSTER_IP_RANGE } from '../flags.ts';
import { LOOPBACK } from '../ports.ts';

export const REAL_NODE_NAME = 'real-node';
// The bridge the CNI plugin makes; named so nobody mistakes it for another tool's cni0.
export const BRIDGE = 'bkf0';
// Outside podCidr()'s range for hollow nodes (10.244.0-200.0/24).
export const POD_CIDR = '10.244.250.0/24';
export const POD_GATEWAY = '10.244.250.1';
// kube-proxy's view of all pod networks, hollow nodes' included.
export const CLUSTER_CIDR = '10.244.0.0/16';
// The kubelet refuses a loopback node IP. The address lives on lo (this kernel has no dummy
// links), in the benchmarking range (RFC 2544), which no real network routes.
export const NODE_IP = '198.18.0.1';
// A second host address beside it, for a second controller replica's activator in the tests (two
// replicas on one host cannot both listen on the node IP's ports).
export const SECOND_HOST_IP = '198.18.0.2';
export const HOST_ADDRESSES = [NODE_IP, SECOND_HOST_IP];
// A comment on the /etc/hosts line, so teardown finds exactly its own line.
export const HOSTS_MARKER = 'buildkit-fleet real node';
// iptables chains of the guard; every chain teardown removes starts with a prefix of its list.
export const GUARD_CHAIN = 'BKF-EGRESS-GUARD';
export const POD_EGRESS_CHAIN = 'BKF-POD-EGRESS';
export const OWNED_CHAIN_PREFIXES = ['KUBE-', 'CNI-', 'BKF-'];
// Kernel settings the node's processes change (kubelet with protectKernelDefaults off, the bridge
// plugin, kube-proxy). Their values are saved before the start and put back by teardown.
export const SAVED_SYSCTLS = [
  'net/ipv4/ip_forward',
  'net/ipv4/conf/all/route_localnet',
  'net/bridge/bridge-nf-call-iptables',
  'net/bridge/bridge-nf-call-ip6tables',
  'vm/overcommit_memory',
  'vm/panic_on_oom',
  'kernel/panic',
  'kernel/panic_on_oops',
  'kernel/keys/root_maxkeys',
  'kernel/keys/root_maxbytes',
];
// Host paths the kubelet and CNI use whatever their flags say. Teardown removes the ones that
// did not exist before the start.
export const FIXED_HOST_DIRS = ['/var/lib/kubelet', '/var/log/pods', '/var/log/containers', '/var/lib/cni'];
// The kubelet's pod cgroups (cgroupfs driver, no --cgroup-root): /kubepods in every hierarchy.
export const KUBEPODS_CGROUP = 'kubepods';

export interface NodeLayout {
  dir: string;
  containerdDir: string;
  containerdSocket: string;
  containerdConfig: string;
  cniConfDir: string;
  kubeletDir: string;
  kubeletConfig: string;
  kubeProxyConfig: string;
  kubeconfig: string;
  hostPathDir: string;
}

export function nodeLayout(clusterDir: string): NodeLayout {
  const dir = path.join(clusterDir, 'node');
  const containerdDir = path.join(dir, 'containerd');
  return {
    dir,
    containerdDir,
    containerdSocket: path.join(containerdDir, 'containerd.sock'),
    containerdConfig: path.join(containerdDir, 'config.toml'),
    cniConfDir: path.join(containerdDir, 'cni'),
    kubeletDir: path.join(dir, 'kubelet'),
    kubeletConfig: path.join(dir, 'kubelet-config.yaml'),
    kubeProxyConfig: path.join(dir, 'kube-proxy-config.yaml'),
    kubeconfig: path.join(dir, 'node.kubeconfig'),
    hostPathDir: path.join(dir, 'host'),
  };
}

export function containerdConfig(l: NodeLayout, sandboxImage: string): string {
  const c = l.containerdDir;
  return `version = 2
root = "${c}/root"
state = "${c}/state"
[grpc]
  address = "${l.containerdSocket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "${c}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${sandboxImage}"
  # This machine lacks CAP_SYS_RESOURCE: runc cannot give the sandbox its negative oom_score_adj.
  restrict_oom_score_adj = true
  # Network namespaces under the state dir, not /var/run/netns, so teardown finds them.
  netns_mounts_under_state_dir = true
  # Images are imported, never pulled; a pull can only mean a wrong name.
  max_concurrent_downloads = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "${c}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${l.cniConfDir}"
`;
}

export function cniConflist(l: NodeLayout): string {
  return `${JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: 'bkf-pod-network',
      plugins: [
        {
          type: 'bridge',
          bridge: BRIDGE,
          isGateway: true,
          // No SNAT: a pod's packets could only leave with its own address, and the guard drops those.
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: POD_CIDR, gateway: POD_GATEWAY }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: path.join(l.containerdDir, 'cni-ipam'),
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
        { type: 'loopback' },
      ],
    },
    null,
    2,
  )}\n`;
}

export interface KubeletPorts {
  port: number;
  healthzPort: number;
}

export function kubeletConfig(p: KubeletPorts): string {
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The API only on loopback; the apiserver finds it through the node's Hostname address, which
# /etc/hosts maps to 127.0.0.1.
address: ${LOOPBACK}
port: ${p.port}
readOnlyPort: 0
healthzBindAddress: ${LOOPBACK}
healthzPort: ${p.healthzPort}
# The apiserver has no kubelet client certificate, so exec, logs and port-forward come in
# anonymously: acceptable only because the API listens on loopback.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
resolvConf: ""
hairpinMode: hairpin-veth
runtimeRequestTimeout: 2m
serializeImagePulls: false
# Status often enough that a test sees a pod's phase change within a second or two.
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
# A test disk may be nearly full; never evict test pods for it.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 50
`;
}

export interface KubeletFlags {
  layout: NodeLayout;
  labels: Record<string, string>;
}

export function kubeletArgs(o: KubeletFlags): string[] {
  const l = o.layout;
  const labels = Object.entries(o.labels)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return [
    `--config=${l.kubeletConfig}`,
    `--kubeconfig=${l.kubeconfig}`,
    '--container-runtime=remote',
    `--container-runtime-endpoint=unix://${l.containerdSocket}`,
    `--image-service-endpoint=unix://${l.containerdSocket}`,
    `--root-dir=${l.kubeletDir}`,
    `--cert-dir=${path.join(l.kubeletDir, 'pki')}`,
    `--volume-plugin-dir=${path.join(l.kubeletDir, 'volume-plugins')}`,
    `--hostname-override=${REAL_NODE_NAME}`,
    `--node-ip=${NODE_IP}`,
    '--cloud-provider=',
    ...(labels ? [`--node-labels=${labels}`] : []),
    '--v=1',
  ];
}

// The kubelet's in-tree AWS credential provider asks the cloud metadata address for credentials
// at start unless told not to.
export const KUBELET_ENV = { AWS_EC2_METADATA_DISABLED: 'true' };

export interface KubeProxyPorts {
  healthzPort: number;
  metricsPort: number;
}

export function kubeProxyConfig(l: NodeLayout, p: KubeProxyPorts): string {
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${l.kubeconfig}
hostnameOverride: ${REAL_NODE_NAME}
bindAddress: ${LOOPBACK}
healthzBindAddress: ${LOOPBACK}:${p.healthzPort}
metricsBindAddress: ${LOOPBACK}:${p.metricsPort}
mode: iptables
clusterCIDR: ${CLUSTER_CIDR}
# NodePorts only on loopback.
nodePortAddresses: ["127.0.0.0/8"]
iptables:
  masqueradeAll: false
  syncPeriod: 30s
  minSyncPeriod: 0s
# 0 leaves the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`;
}

export function kubeProxyArgs(l: NodeLayout): string[] {
  return [`--config=${l.kubeProxyConfig}`, '--v=1'];
}

// Destinations the node tier may reach: loopback, the pods, the services, and the node itself.
export const ALLOWED_DESTINATIONS = ['127.0.0.0/8', CLUSTER_CIDR, SERVICE_CLUSTER_IP_RANGE, `${NODE_IP}/32`];

/**
 * iptables commands (argv after the binary) that install the egress guard: every packet a process
 * in the guard's cgroup sends must go to an allowed destination, or it is rejected; pods may
 * not route out at all. REJECT rather than DROP, so a blocked connect fails at once and says so.
 * `cgroupPath` is the guard's cgroup-v2 path, relative to the v2 mount.
 */
export function guardRules(cgroupPath: string): { v4: string[][]; v6: string[][] } {
  const v4: string[][] = [
    ['-N', GUARD_CHAIN],
    ...ALLOWED_DESTINATIONS.map((d) => ['-A', GUARD_CHAIN, '-d', d, '-j', 'RETURN']),
    ['-A', GUARD_CHAIN, '-o', 'lo', '-j', 'RETURN'],
    ['-A', GUARD_CHAIN, '-o', BRIDGE, '-j', 'RETURN'],
    ['-A', GUARD_CHAIN, '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable'],
    ['-I', 'OUTPUT', '1', '-m', 'cgroup', '--path', cgroupPath, '-j', GUARD_CHAIN],
    ['-N', POD_EGRESS_CHAIN],
    ['-A', POD_EGRESS_CHAIN, '-d', CLUSTER_CIDR, '-j', 'RETURN'],
    ['-A', POD_EGRESS_CHAIN, '-d', SERVICE_CLUSTER_IP_RANGE, '-j', 'RETURN'],
    ['-A', POD_EGRESS_CHAIN, '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable'],
    ['-I', 'FORWARD', '1', '-s', POD_CIDR, '-j', POD_EGRESS_CHAIN],
  ];
  // Nothing of the node speaks IPv6 but loopback; the host may have a v6 route out.
  const v6: string[][] = [
    ['-N', GUARD_CHAIN],
    ['-A', GUARD_CHAIN, '-o', 'lo', '-j', 'RETURN'],
    ['-A', GUARD_CHAIN, '-j', 'REJECT'],
    ['-I', 'OUTPUT', '1', '-m', 'cgroup', '--path', cgroupPath, '-j', GUARD_CHAIN],
    ['-N', POD_EGRESS_CHAIN],
    ['-A', POD_EGRESS_CHAIN, '-j', 'REJECT'],
    ['-I', 'FORWARD', '1', '-i', BRIDGE, '-j', POD_EGRESS_CHAIN],
  ];
  return { v4, v6 };
}

/** The /etc/hosts line that lets the apiserver reach the kubelet by the node's name. */
export function hostsLine(clusterId: string): string {
  return `${LOOPBACK} ${REAL_NODE_NAME} # ${HOSTS_MARKER} (${clusterId})`;
}

/**
 * The `kubernetes` Service's endpoints on a real-node cluster: the API relay on the node's address
 * (api-relay.ts). The API server's own endpoint reconciler is off (it would advertise loopback,
 * which Endpoints refuse), so these stay as written. The Endpoints carry skip-mirror, and the
 * slice is written directly (kube-proxy 1.20 reads slices), so nothing else manages either.
 */
export function apiServiceEndpoints(nodeIp: string, port: number): { endpoints: object; slice: object } {
  const meta = { name: 'kubernetes', namespace: 'default' };
  return {
    endpoints: {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { ...meta, labels: { 'endpointslice.kubernetes.io/skip-mirror': 'true' } },
      subsets: [{ addresses: [{ ip: nodeIp }], ports: [{ name: 'https', port, protocol: 'TCP' }] }],
    },
    slice: {
      apiVersion: 'discovery.k8s.io/v1beta1',
      kind: 'EndpointSlice',
      metadata: {
        ...meta,
        labels: {
          'kubernetes.io/service-name': 'kubernetes',
          'endpointslice.kubernetes.io/managed-by': 'real-node.buildkit-fleet.io',
        },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: [nodeIp], conditions: { ready: true } }],
      ports: [{ name: 'https', port, protocol: 'TCP' }],
    },
  };
}
