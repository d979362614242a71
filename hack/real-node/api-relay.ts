// The real node's pods reach the API server through this relay: the API server listens on loopback
// only, which a pod cannot reach, so the relay listens on the node's address and passes the bytes
// (TLS and all) to the API server on loopback. The `kubernetes` Service's endpoints point at it
// (api-route.ts), so in-cluster clients (the platform's own pods, installed by Helm) connect to
// the Service address as on any cluster. It never dials anything but its one loopback target.
//   node api-relay.ts <listen host> <listen port> <target port>
import net from 'node:net';

const [host, listenPort, targetPort] = process.argv.slice(2);
if (!host || !Number(listenPort) || !Number(targetPort)) {
  console.error('usage: api-relay.ts <listen host> <listen port> <target port>');
  process.exit(2);
}

const server = net.createServer({ allowHalfOpen: true }, (client) => {
  const upstream = net.connect({ host: '127.0.0.1', port: Number(targetPort), allowHalfOpen: true });
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.on('error', (error) => {
  console.error(`api-relay: ${error.message}`);
  process.exit(1);
});
server.listen(Number(listenPort), host, () => {
  console.log(`api-relay: ${host}:${listenPort} -> 127.0.0.1:${targetPort}`);
});
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => process.exit(0));
