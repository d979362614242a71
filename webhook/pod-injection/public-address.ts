// Finding buildkitd's public TCP address in a pod: the `--addr tcp://host:port` (or
// `--addr=tcp://...`) arguments of its containers, narrowed by the target-port annotation when
// there are several. Anything that looks like a TCP address but does not parse is a refusal, not
// a skip: the pod opted in, so its owner must hear why nothing happened.
import type { V1Container, V1Pod } from '@kubernetes/client-node';

import { TARGET_PORT_ANNOTATION } from '../../api/labels.ts';
import { refuse } from './refusal.ts';

/** Where one `--addr tcp://...` value sits in a container's command or args. */
export interface TcpAddr {
  container: V1Container;
  list: 'command' | 'args';
  index: number;
  /** `--addr=tcp://...` (one element) rather than `--addr`, `tcp://...` */
  inline: boolean;
  value: string;
  port: number;
}

const TCP_ADDR = /^tcp:\/\/(\[[^\]]*\]|[^[\]:/]*):([0-9]{1,5})$/;

/** Every TCP address of `container`; throws Refusal on one that does not parse. */
export function tcpAddrs(container: V1Container): TcpAddr[] {
  const found: TcpAddr[] = [];
  for (const list of ['command', 'args'] as const) {
    const items = container[list] ?? [];
    items.forEach((item, i) => {
      let value: string | undefined;
      let index = i;
      const inline = item.startsWith('--addr=');
      if (inline) value = item.slice('--addr='.length);
      else if (item === '--addr' && i + 1 < items.length) [value, index] = [items[i + 1], i + 1];
      if (value === undefined || !value.startsWith('tcp://')) return;
      const match = TCP_ADDR.exec(value);
      const port = match ? Number(match[2]) : NaN;
      if (!match || port < 1 || port > 65535) {
        refuse(
          `container ${container.name}: cannot understand buildkitd address ${JSON.stringify(value)} (expected tcp://<host>:<port>)`,
        );
      }
      found.push({ container, list, index, inline, value, port });
    });
  }
  return found;
}

function targetPortAnnotation(pod: V1Pod): number | undefined {
  const text = pod.metadata?.annotations?.[TARGET_PORT_ANNOTATION];
  if (text === undefined) return undefined;
  const port = /^[0-9]{1,5}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    refuse(`annotation ${TARGET_PORT_ANNOTATION}: ${JSON.stringify(text)} is not a port number 1-65535`);
  }
  return port;
}

const describeAddrs = (addrs: TcpAddr[]) => addrs.map((a) => `${a.container.name}: ${a.value}`).join(', ');

/** buildkitd's public address: the target-port annotation's, else the only one in the pod. */
export function publicAddr(pod: V1Pod, containers: V1Container[]): TcpAddr {
  const addrs = containers.flatMap(tcpAddrs);
  const wanted = targetPortAnnotation(pod);
  if (!addrs.length) {
    refuse(
      'no container has a buildkitd TCP address (--addr tcp://<host>:<port> or --addr=tcp://...), so there is no port to put the sidecar in front of',
    );
  }
  if (wanted === undefined) {
    if (addrs.length > 1) {
      refuse(
        `several buildkitd TCP addresses (${describeAddrs(addrs)}); set annotation ${TARGET_PORT_ANNOTATION} to the port clients use`,
      );
    }
    return addrs[0]!;
  }
  const matching = addrs.filter((a) => a.port === wanted);
  if (matching.length !== 1) {
    refuse(
      matching.length
        ? `annotation ${TARGET_PORT_ANNOTATION}: ${wanted} matches several addresses (${describeAddrs(matching)})`
        : `annotation ${TARGET_PORT_ANNOTATION}: ${wanted} is not the port of any buildkitd TCP address (${describeAddrs(addrs)})`,
    );
  }
  return matching[0]!;
}
