// Credentials of a local cluster: the static token file the apiserver reads, and kubeconfigs
// for the admin and for each component. Pure rendering; cluster.ts writes the files.
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';

export interface TokenUser {
  token: string;
  user: string;
  uid: string;
  groups: string[];
}

export function newToken(): string {
  return randomBytes(24).toString('hex');
}

// Format of --token-auth-file: token,user,uid,"group1,group2" (a CSV line per user).
export function renderTokenAuthFile(users: TokenUser[]): string {
  for (const u of users) {
    for (const field of [u.token, u.user, u.uid, ...u.groups]) {
      if (/[",\n]/.test(field)) throw new Error(`token file field may not contain , " or newline: ${field}`);
    }
  }
  return users.map((u) => `${u.token},${u.user},${u.uid},"${u.groups.join(',')}"\n`).join('');
}

export interface KubeconfigInput {
  server: string;
  // PEM of the CA that signed the apiserver's serving certificate.
  caPem: string;
  token: string;
  user: string;
  clusterName?: string;
  namespace?: string;
}

export function renderKubeconfig(o: KubeconfigInput): string {
  const cluster = o.clusterName ?? 'buildkit-fleet-local';
  const context = `${o.user}@${cluster}`;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: cluster,
        cluster: {
          server: o.server,
          'certificate-authority-data': Buffer.from(o.caPem).toString('base64'),
        },
      },
    ],
    users: [{ name: o.user, user: { token: o.token } }],
    contexts: [
      {
        name: context,
        context: { cluster, user: o.user, ...(o.namespace ? { namespace: o.namespace } : {}) },
      },
    ],
    'current-context': context,
    preferences: {},
  });
}
