// Free loopback ports for the control-plane processes.
//
// We ask the kernel for a free port by binding port 0 on 127.0.0.1 and closing the socket again.
// Between that close and the real process binding, someone else can take the port, so callers
// must treat "address already in use" from a process as retryable (see isAddressInUse) rather
// than fatal.
import net from 'node:net';

export const LOOPBACK = '127.0.0.1';

// Ports handed out by this process recently: two processes of one cluster must never get the
// same port just because the first one has not bound it yet.
const handedOut = new Set<number>();

function bindZero(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: LOOPBACK, port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('bind to port 0 gave no port'))));
    });
  });
}

export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await bindZero();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      // Forget it after a while so a long-lived process (the CLI supervisor) does not grow the set.
      setTimeout(() => handedOut.delete(port), 120_000).unref();
      return port;
    }
  }
  throw new Error('could not find a free loopback port');
}

export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  return ports;
}

// Whether a process log says it failed because its port was taken. etcd, kube-apiserver and the
// other Go binaries all surface the syscall error text.
export function isAddressInUse(logText: string): boolean {
  return /address already in use/i.test(logText);
}
