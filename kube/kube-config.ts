// A KubeConfig whose API calls share connections.
//
// client-node 2.0 builds a new undici Agent for every API request (KubeConfig
// .applySecurityAuthentication -> createDispatcher), so each call pays a TCP connect and a full TLS
// handshake with a fresh SecureContext, and the abandoned agents keep their idle sockets open until
// the keep-alive timeout. Profiling the controller while it made 300 Buildkits ready showed TLS
// setup (SecureContext, getPeerCertificate, handshakes) as the largest CPU cost after idle time.
// Here one Agent is kept per distinct TLS configuration (cluster address, CA, client
// certificate and key, verification settings), so requests reuse keep-alive connections, and a
// rotated client certificate (exec plugins, in-cluster projected tokens do not change TLS) simply
// gets a new Agent.
import { createHash } from 'node:crypto';
import { KubeConfig } from '@kubernetes/client-node';

import type { Cluster } from '@kubernetes/client-node';
import type { AgentOptions } from 'node:https';

// createDispatcher is private in client-node's typings, so it is wrapped on the instance.
type Dispatcher = { close(): Promise<void> } | undefined;
type ClusterArg = Cluster | null;
type AgentOptionsArg = AgentOptions;
type CreateDispatcher = (cluster: ClusterArg, agentOptions: AgentOptionsArg) => Dispatcher;

/** Agents kept per configuration; more than a handful means certificates keep changing. */
const MAX_DISPATCHERS = 8;

function fingerprint(cluster: ClusterArg, options: AgentOptionsArg): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify([cluster?.server, cluster?.proxyUrl, cluster?.skipTLSVerify]));
  for (const value of [
    options.ca,
    options.cert,
    options.key,
    options.pfx,
    options.passphrase,
    options.rejectUnauthorized,
    options.servername,
  ]) {
    hash.update('\0');
    if (value === undefined) continue;
    hash.update(Buffer.isBuffer(value) ? value : JSON.stringify(value));
  }
  return hash.digest('hex');
}

export class PooledKubeConfig extends KubeConfig {
  private readonly dispatchers = new Map<string, Dispatcher>();

  constructor() {
    super();
    const self = this as unknown as { createDispatcher: CreateDispatcher };
    const create = self.createDispatcher.bind(this);
    self.createDispatcher = (cluster, agentOptions) => this.pooled(create, cluster, agentOptions);
  }

  private pooled(create: CreateDispatcher, cluster: ClusterArg, agentOptions: AgentOptionsArg): Dispatcher {
    const key = fingerprint(cluster, agentOptions);
    if (this.dispatchers.has(key)) return this.dispatchers.get(key);
    const dispatcher = create(cluster, agentOptions);
    if (this.dispatchers.size >= MAX_DISPATCHERS) {
      // the oldest configuration is stale (a rotated certificate): close its idle connections
      const [oldestKey, oldest] = this.dispatchers.entries().next().value!;
      this.dispatchers.delete(oldestKey);
      void oldest?.close().catch(() => {});
    }
    this.dispatchers.set(key, dispatcher);
    return dispatcher;
  }
}
