// Command lines of the control-plane processes. Pure functions so the flags can be unit tested
// and read in one place; see docs/architecture.md ("The local cluster") for why each flag is there.
import { LOOPBACK } from './ports.ts';

export const SERVICE_CLUSTER_IP_RANGE = '10.96.0.0/12';
export const SERVICE_ACCOUNT_ISSUER = 'https://kubernetes.default.svc.cluster.local';

export interface EtcdFlags {
  dataDir: string;
  clientPort: number;
  peerPort: number;
}

export function etcdArgs(o: EtcdFlags): string[] {
  const client = `http://${LOOPBACK}:${o.clientPort}`;
  const peer = `http://${LOOPBACK}:${o.peerPort}`;
  return [
    '--name=default',
    `--data-dir=${o.dataDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    // The peer URL must be set even for a single member, or etcd binds the default :2380 and
    // two clusters on one machine collide.
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=default=${peer}`,
    '--initial-cluster-state=new',
    // A test cluster lives for minutes: no need for a large WAL before snapshotting.
    '--snapshot-count=10000',
    '--logger=zap',
    '--log-outputs=stderr',
  ];
}

export interface ApiserverFlags {
  etcdPort: number;
  securePort: number;
  certDir: string;
  serviceAccountPublicKeyFile: string;
  serviceAccountPrivateKeyFile: string;
  tokenAuthFile: string;
}

export function apiserverArgs(o: ApiserverFlags): string[] {
  return [
    `--etcd-servers=http://${LOOPBACK}:${o.etcdPort}`,
    // No --tls-cert-file: the apiserver generates a CA and serving cert (valid for 127.0.0.1 and
    // localhost) into --cert-dir, and the kubeconfig trusts that CA.
    `--cert-dir=${o.certDir}`,
    `--secure-port=${o.securePort}`,
    `--bind-address=${LOOPBACK}`,
    // 1.20 still has the unauthenticated port; keep it off so it can never collide on :8080.
    '--insecure-port=0',
    `--service-cluster-ip-range=${SERVICE_CLUSTER_IP_RANGE}`,
    `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
    `--service-account-key-file=${o.serviceAccountPublicKeyFile}`,
    `--service-account-signing-key-file=${o.serviceAccountPrivateKeyFile}`,
    `--token-auth-file=${o.tokenAuthFile}`,
    '--authorization-mode=RBAC',
    '--allow-privileged=true',
    // The advertise address is the loopback bind address, and Endpoints objects refuse loopback
    // addresses: the default "lease" reconciler would log a failure every 10 s. Nothing in a
    // test cluster reaches the apiserver through the `kubernetes` Service anyway.
    '--endpoint-reconciler-type=none',
    '--profiling=false',
  ];
}

export interface ControllerManagerFlags {
  kubeconfig: string;
  securePort: number;
  certDir: string;
  serviceAccountPrivateKeyFile: string;
  rootCaFile: string;
}

export function controllerManagerArgs(o: ControllerManagerFlags): string[] {
  return [
    `--kubeconfig=${o.kubeconfig}`,
    // No cloud, no pod network, no node lifecycle (we untaint nodes ourselves), and no service
    // load balancers: those controllers would only fail or evict hollow pods.
    '--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service',
    `--service-account-private-key-file=${o.serviceAccountPrivateKeyFile}`,
    `--root-ca-file=${o.rootCaFile}`,
    ...controlPlaneComponentArgs(o),
  ];
}

/**
 * What kube-controller-manager and kube-scheduler share: one instance each (no leader election),
 * their own secure port on loopback and no insecure port, so two clusters can coexist.
 */
function controlPlaneComponentArgs(o: { securePort: number; certDir: string }): string[] {
  return [
    '--leader-elect=false',
    `--secure-port=${o.securePort}`,
    `--bind-address=${LOOPBACK}`,
    '--port=0',
    `--cert-dir=${o.certDir}`,
    '--profiling=false',
  ];
}

export interface SchedulerFlags {
  kubeconfig: string;
  securePort: number;
  certDir: string;
}

export function schedulerArgs(o: SchedulerFlags): string[] {
  return [`--kubeconfig=${o.kubeconfig}`, ...controlPlaneComponentArgs(o)];
}

export interface KubemarkFlags {
  kubeconfig: string;
  nodeName: string;
  kubeletPort: number;
}

export function kubemarkArgs(o: KubemarkFlags): string[] {
  return [
    '--morph=kubelet',
    `--name=${o.nodeName}`,
    `--kubeconfig=${o.kubeconfig}`,
    // Every hollow kubelet needs its own port; 0 turns the unauthenticated read-only port off.
    `--kubelet-port=${o.kubeletPort}`,
    '--kubelet-read-only-port=0',
  ];
}

export function nodeName(index: number): string {
  return `hollow-node-${index}`;
}
