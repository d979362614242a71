// Credentials rendering of the local control plane (hack/kubeconfig.ts, caOf, namespaceName).
import { KubeConfig } from '@kubernetes/client-node';
import forge from 'node-forge';
import { parse } from 'yaml';
import { caOf } from '../../../hack/cluster.ts';
import { newToken, renderKubeconfig, renderTokenAuthFile } from '../../../hack/kubeconfig.ts';
import { namespaceName } from '../../../hack/testenv.ts';

const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

test('the kubeconfig names the server, trusts the CA and carries the token', () => {
  const text = renderKubeconfig({
    server: 'https://127.0.0.1:6443',
    caPem: CA_PEM,
    token: 'abc',
    user: 'admin',
  });
  const doc = parse(text) as {
    clusters: { name: string; cluster: { server: string; 'certificate-authority-data': string } }[];
    users: { name: string; user: { token: string } }[];
    contexts: { name: string; context: { cluster: string; user: string } }[];
    'current-context': string;
  };
  expect(doc.clusters[0]!.cluster.server).toBe('https://127.0.0.1:6443');
  expect(Buffer.from(doc.clusters[0]!.cluster['certificate-authority-data'], 'base64').toString()).toBe(
    CA_PEM,
  );
  expect(doc.users[0]).toEqual({ name: 'admin', user: { token: 'abc' } });
  expect(doc['current-context']).toBe(doc.contexts[0]!.name);
  expect(doc.contexts[0]!.context).toEqual({ cluster: doc.clusters[0]!.name, user: 'admin' });
  expect(text).not.toContain('insecure-skip-tls-verify');
});

test('client-node loads the kubeconfig as rendered', () => {
  const kc = new KubeConfig();
  kc.loadFromString(
    renderKubeconfig({
      server: 'https://127.0.0.1:6443',
      caPem: CA_PEM,
      token: 't0k',
      user: 'u',
      namespace: 'ns1',
    }),
  );
  expect(kc.getCurrentCluster()?.server).toBe('https://127.0.0.1:6443');
  expect(kc.getCurrentUser()?.token).toBe('t0k');
  expect(kc.getContextObject(kc.getCurrentContext())?.namespace).toBe('ns1');
});

test('token auth file lines: token,user,uid,"groups"', () => {
  const text = renderTokenAuthFile([
    { token: 't1', user: 'admin', uid: 'admin', groups: ['system:masters'] },
    { token: 't2', user: 'system:node:n0', uid: 'n0', groups: ['system:nodes', 'system:masters'] },
  ]);
  expect(text).toBe('t1,admin,admin,"system:masters"\nt2,system:node:n0,n0,"system:nodes,system:masters"\n');
  expect(() => renderTokenAuthFile([{ token: 'a,b', user: 'u', uid: 'u', groups: [] }])).toThrow(
    /may not contain/,
  );
});

test('tokens are random and CSV-safe', () => {
  const a = newToken();
  expect(a).toMatch(/^[0-9a-f]{48}$/);
  expect(newToken()).not.toBe(a);
});

function cert(
  subject: string,
  issuer: forge.pki.CertificateField[],
  key: forge.pki.rsa.KeyPair,
  signer: forge.pki.rsa.PrivateKey,
  ca: boolean,
): string {
  const c = forge.pki.createCertificate();
  c.publicKey = key.publicKey;
  c.serialNumber = '01';
  c.validity.notBefore = new Date();
  c.validity.notAfter = new Date(Date.now() + 3600_000);
  c.setSubject([{ name: 'commonName', value: subject }]);
  c.setIssuer(issuer);
  c.setExtensions([{ name: 'basicConstraints', cA: ca }]);
  c.sign(signer, forge.md.sha256.create());
  return forge.pki.certificateToPem(c);
}

test('caOf picks the self-signed CA out of the chain the apiserver writes', () => {
  const caKey = forge.pki.rsa.generateKeyPair(1024);
  const leafKey = forge.pki.rsa.generateKeyPair(1024);
  const caName = [{ name: 'commonName', value: 'host-ca@1' }];
  const ca = cert('host-ca@1', caName, caKey, caKey.privateKey, true);
  const leaf = cert('host@1', caName, leafKey, caKey.privateKey, false);
  expect(caOf(leaf + ca).trim()).toBe(ca.trim());
  expect(() => caOf(leaf)).toThrow(/no self-signed CA/);
});

test('namespace names are unique, valid DNS labels', () => {
  expect(namespaceName('My Test_ns', 'abc123')).toBe('my-test-ns-abc123');
  expect(namespaceName('---', 'abc123')).toBe('test-abc123');
  const long = namespaceName('x'.repeat(100));
  expect(long.length).toBeLessThanOrEqual(63);
  expect(long).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  expect(namespaceName('a')).not.toBe(namespaceName('a'));
});
