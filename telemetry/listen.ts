// Starts a server listening and resolves with its address; a bind error (port in use, bad host)
// rejects instead of surfacing later as an unhandled 'error' event.
import type { AddressInfo, Server } from 'node:net';

export function listenOn(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
