// Byte-stream checks shared by the data-path tests (sidecar and activator): everything a socket
// receives, as a hash and a length, so large transfers are compared without holding them.
import { createHash } from 'node:crypto';
import type net from 'node:net';

/** Everything a socket receives until its end: hash and length. */
export function receiveAll(socket: net.Socket): Promise<{ sha: string; length: number }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let length = 0;
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      length += chunk.length;
    });
    socket.once('end', () => resolve({ sha: hash.digest('hex'), length }));
    socket.once('error', reject);
  });
}

export const sha = (buffer: Buffer) => createHash('sha256').update(buffer).digest('hex');
