// The handoff address: where the sidecar sends clients that still arrive after SIGTERM (POST
// /fence?handoff=<host>:<port>). The controller scales a fenced pod down by routing its Service to
// the activator and deleting the pod; until kube-proxy everywhere has the new route, clients can
// still reach this pod. With a handoff address the stopping sidecar keeps accepting for a while
// (--handoff-linger) and proxies each new connection there (the activator, which holds it and
// wakes a new pod) instead of to buildkitd, which is going away, so no late client is refused or
// reset.
//
// The address is checked strictly, since a mistake would only show when the pod is already
// stopping: an IP literal (IPv6 in brackets) and a port, nothing else. Names are refused (a
// lookup at SIGTERM is one more thing that can fail, and the controller knows the activator's
// address); so are unspecified, multicast and broadcast addresses, this sidecar's own ports (the
// proxy would connect to itself) and buildkitd's address (where the late clients must not go).
import net from 'node:net';
import { networkInterfaces } from 'node:os';

import type { HostPort } from '../flags/options.ts';
import { addressBytes } from './listen-backlog.ts';

export interface HandoffContext {
  /** the proxy's bound public address */
  listen: HostPort;
  /** the stats port's bound address */
  stats: HostPort;
  /** buildkitd's resolved address */
  upstream: HostPort;
  /** this host's own addresses (default: every interface's) */
  localAddresses?: readonly string[];
}

export type HandoffParse = { address: HostPort } | { error: string };

/** `host:port` as the sidecar writes an address (IPv6 in brackets). */
export const formatHostPort = ({ host, port }: HostPort): string =>
  net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;

const canonical = (host: string): string => (addressBytes(host) ?? []).join('.');

/** The bytes of an IPv4 address, also when written as an IPv4-mapped IPv6 one. */
function ipv4Of(bytes: number[]): number[] | undefined {
  if (bytes.length === 4) return bytes;
  const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? bytes.slice(12) : undefined;
}

function isLoopback(bytes: number[]): boolean {
  const v4 = ipv4Of(bytes);
  if (v4) return v4[0] === 127;
  return bytes.slice(0, 15).every((b) => b === 0) && bytes[15] === 1;
}

/** Why an address cannot receive connections, or undefined when it can. */
function unusable(bytes: number[]): string | undefined {
  const v4 = ipv4Of(bytes);
  if (v4) {
    if (v4[0] === 0) return 'an unspecified address';
    if (v4[0]! >= 224 && v4[0]! <= 239) return 'a multicast address';
    if (v4.every((b) => b === 255)) return 'the broadcast address';
    return undefined;
  }
  if (bytes.every((b) => b === 0)) return 'an unspecified address';
  if (bytes[0] === 0xff) return 'a multicast address';
  return undefined;
}

function ownAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((entries) => entries ?? [])
    .map((entry) => entry.address);
}

/** Parses and checks the value of `handoff`; the error says what is wrong with it. */
export function parseHandoff(text: string, context: HandoffContext): HandoffParse {
  const bad = (why: string): HandoffParse => ({ error: `handoff ${JSON.stringify(text)}: ${why}` });
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):([^:]*)$/.exec(text);
  if (!match) return bad('must be <ip>:<port>, e.g. 10.0.0.7:1234 or [fd00::7]:1234');
  const [, v6, v4, portText] = match as unknown as [string, string | undefined, string | undefined, string];
  const host = v6 ?? v4!;
  if (v6 !== undefined && (!net.isIPv6(v6) || v6.includes('%'))) {
    return bad(`${JSON.stringify(v6)} is not an IPv6 address (a zone is not accepted)`);
  }
  if (v4 !== undefined && !net.isIPv4(v4)) {
    return bad(
      `${JSON.stringify(v4)} is not an IPv4 address (names are not accepted; IPv6 goes in brackets)`,
    );
  }
  if (!/^[1-9][0-9]{0,4}$/.test(portText) || Number(portText) > 65535) {
    return bad(`the port must be a number from 1 to 65535, not ${JSON.stringify(portText)}`);
  }
  const port = Number(portText);
  const bytes = addressBytes(host)!;
  const why = unusable(bytes);
  if (why) return bad(`${host} is ${why}`);

  const self = new Set((context.localAddresses ?? ownAddresses()).map(canonical));
  const isSelf = (bound: HostPort) =>
    port === bound.port &&
    (isLoopback(bytes) ||
      self.has(canonical(host)) ||
      (addressBytes(bound.host) !== undefined && canonical(bound.host) === canonical(host)));
  if (isSelf(context.listen))
    return bad("that is this sidecar's own public port: it would connect to itself");
  if (isSelf(context.stats)) return bad("that is this sidecar's stats port");
  const upstream = addressBytes(context.upstream.host);
  if (
    upstream &&
    port === context.upstream.port &&
    (canonical(context.upstream.host) === canonical(host) || (isLoopback(upstream) && isLoopback(bytes)))
  ) {
    return bad("that is buildkitd's address (--upstream): late clients must go elsewhere");
  }
  return { address: { host, port } };
}
