// Starts a cluster and holds it until killed: `node hack/hold.ts <dir> [nodes]`.
// Prints one JSON line ({"dir","server","kubeconfig","pid"}) on stdout once the cluster is
// ready. The harness tests use it as a cluster owner they can SIGKILL; it is also handy for
// poking at a cluster by hand (Ctrl-C stops it cleanly).
import { startCluster } from './cluster.ts';

const [dir, nodes] = process.argv.slice(2);
const cluster = await startCluster({ dir: dir || undefined, nodes: Number(nodes ?? 0) });
process.stdout.write(
  `${JSON.stringify({ dir: cluster.dir, server: cluster.server, kubeconfig: cluster.kubeconfigPath, pid: process.pid })}\n`,
);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => void cluster.stop().then(() => process.exit(0)));
}
setInterval(() => undefined, 1 << 30);
