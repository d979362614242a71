// A TCP relay on 127.0.0.1 for tests: forwards each connection, untouched (TLS passes through), to
// the target `pick` names for it, or closes it at once when `pick` gives none. Tests use it as a
// round-robin balancer in front of webhook replicas and to break watches on purpose.
import net from 'node:net';

export interface TcpTarget {
  host: string;
  port: number;
}

export interface TcpRelay {
  port: number;
  /** Destroys every open connection. */
  cut(): void;
  close(): Promise<void>;
}

export async function startTcpRelay(pick: () => TcpTarget | undefined): Promise<TcpRelay> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const target = pick();
    if (!target) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cut = () => {
    for (const socket of sockets) socket.destroy();
  };
  return {
    port: (server.address() as net.AddressInfo).port,
    cut,
    close: () =>
      new Promise((resolve) => {
        cut();
        server.close(() => resolve());
      }),
  };
}
