// Talks to the sidecars' stats ports: reads /stats, sets and reads the fence. Plain HTTP on the
// pod network (the stats port is not the proxied one, so nothing here counts as client
// activity), with short timeouts: a sidecar that does not answer quickly is treated as active.
import http from 'node:http';
import type { V1Pod } from '@kubernetes/client-node';

import { SIDECAR_CONTAINER_NAME, STATS_PORT_NAME } from '../../api/sidecar-contract.ts';
import type { FenceReading } from './fence-judgement.ts';
import type { SidecarStats } from './idle-decision.ts';

export interface SidecarAddress {
  host: string;
  port: number;
}

/** Where the pod's sidecar serves its stats, or why it cannot be reached. */
export function sidecarAddress(pod: V1Pod): SidecarAddress | { error: string } {
  const host = pod.status?.podIP;
  if (!host) return { error: 'the pod has no IP yet' };
  // a regular container, or a native sidecar (an init container that keeps running)
  const container = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])].find(
    (c) => c.name === SIDECAR_CONTAINER_NAME,
  );
  const port = container?.ports?.find((p) => p.name === STATS_PORT_NAME)?.containerPort;
  if (!port) return { error: 'the pod has no injected sidecar (no stats port)' };
  return { host, port };
}

const hostPart = (host: string) => (host.includes(':') ? `[${host}]` : host);

export class SidecarRequestError extends Error {}

function request(
  address: SidecarAddress,
  method: 'GET' | 'POST',
  path: string,
  timeoutMs: number,
  token?: string,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: address.host,
        port: address.port,
        method,
        path,
        timeout: timeoutMs,
        agent: false,
        headers: token ? { authorization: `Bearer ${token}` } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) {
            let detail = text.trim();
            try {
              detail = (JSON.parse(text) as { error?: string }).error ?? detail;
            } catch {
              // not JSON: keep the text
            }
            reject(new SidecarRequestError(`${method} ${path} answered ${res.statusCode}: ${detail}`));
            return;
          }
          try {
            resolve(JSON.parse(text));
          } catch {
            reject(new SidecarRequestError(`${method} ${path} answered something that is not JSON`));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () =>
      req.destroy(new SidecarRequestError(`${method} ${path} timed out after ${timeoutMs} ms`)),
    );
    req.on('error', (err) =>
      reject(
        err instanceof SidecarRequestError
          ? err
          : new SidecarRequestError(`${method} ${path}: ${err.message}`),
      ),
    );
    req.end();
  });
}

function isStats(v: unknown): v is SidecarStats {
  const o = v as Record<string, unknown>;
  return (
    typeof o?.['bootId'] === 'string' && typeof o['open'] === 'number' && typeof o['opened'] === 'number'
  );
}

function isFence(v: unknown): v is FenceReading {
  const o = v as Record<string, unknown>;
  return isStats(v) && typeof o['fenced'] === 'boolean' && typeof o['fenceBroken'] === 'boolean';
}

export async function readStats(address: SidecarAddress, timeoutMs: number): Promise<SidecarStats> {
  const body = await request(address, 'GET', '/stats', timeoutMs);
  if (!isStats(body)) throw new SidecarRequestError('GET /stats answered without bootId, open or opened');
  return body;
}

export async function setFence(
  address: SidecarAddress,
  token: string,
  timeoutMs: number,
  handoff?: SidecarAddress,
): Promise<FenceReading> {
  const query = handoff ? `?handoff=${encodeURIComponent(`${hostPart(handoff.host)}:${handoff.port}`)}` : '';
  const body = await request(address, 'POST', `/fence${query}`, timeoutMs, token);
  if (!isFence(body)) throw new SidecarRequestError('POST /fence answered without the fence state');
  return body;
}

export async function readFence(address: SidecarAddress, timeoutMs: number): Promise<FenceReading> {
  const body = await request(address, 'GET', '/fence', timeoutMs);
  if (!isFence(body)) throw new SidecarRequestError('GET /fence answered without the fence state');
  return body;
}

export async function clearFence(address: SidecarAddress, token: string, timeoutMs: number): Promise<void> {
  await request(address, 'POST', '/unfence', timeoutMs, token);
}

/**
 * Whether buildkitd in the pod serves: the sidecar's /readyz with its gRPC health check (the
 * sidecar asks buildkitd itself, so the check is no client activity). A sidecar that predates
 * the check ignores the query and answers its TCP check.
 */
export function checkServing(address: SidecarAddress, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: address.host,
        port: address.port,
        path: '/readyz?check=grpc',
        timeout: timeoutMs,
        agent: false,
      },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
