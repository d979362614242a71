// Command lines of the local control plane (hack/flags.ts).
import {
  apiserverArgs,
  controllerManagerArgs,
  etcdArgs,
  kubemarkArgs,
  nodeName,
  schedulerArgs,
} from '../../../hack/flags.ts';

// --flag=value lists as a map, to assert on single flags.
function flags(args: string[]): Map<string, string> {
  return new Map(
    args.map((a) => {
      const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
      if (!m) throw new Error(`not a --flag: ${a}`);
      return [m[1]!, m[2] ?? ''];
    }),
  );
}

function loopbackOnly(args: string[]): void {
  for (const a of args) {
    for (const ip of a.match(/\b\d+\.\d+\.\d+\.\d+\b/g) ?? []) {
      if (a.startsWith('--service-cluster-ip-range')) continue;
      expect(ip).toBe('127.0.0.1');
    }
    expect(a).not.toMatch(/localhost|0\.0\.0\.0/);
  }
}

test('etcd listens on the given loopback ports only, peer port included', () => {
  const args = etcdArgs({ dataDir: '/d/etcd', clientPort: 1111, peerPort: 2222 });
  const f = flags(args);
  expect(f.get('data-dir')).toBe('/d/etcd');
  expect(f.get('listen-client-urls')).toBe('http://127.0.0.1:1111');
  expect(f.get('advertise-client-urls')).toBe('http://127.0.0.1:1111');
  expect(f.get('listen-peer-urls')).toBe('http://127.0.0.1:2222');
  expect(f.get('initial-cluster')).toBe('default=http://127.0.0.1:2222');
  loopbackOnly(args);
});

test('kube-apiserver: the documented flags, our ports and files, no insecure port', () => {
  const args = apiserverArgs({
    etcdPort: 1111,
    securePort: 6443,
    certDir: '/d/certs',
    serviceAccountPublicKeyFile: '/d/sa.pub',
    serviceAccountPrivateKeyFile: '/d/sa.key',
    tokenAuthFile: '/d/tokens.csv',
  });
  const f = flags(args);
  expect(Object.fromEntries(f)).toMatchObject({
    'etcd-servers': 'http://127.0.0.1:1111',
    'cert-dir': '/d/certs',
    'secure-port': '6443',
    'bind-address': '127.0.0.1',
    'insecure-port': '0',
    'service-cluster-ip-range': '10.96.0.0/12',
    'service-account-key-file': '/d/sa.pub',
    'service-account-signing-key-file': '/d/sa.key',
    'token-auth-file': '/d/tokens.csv',
    'authorization-mode': 'RBAC',
  });
  expect(f.get('service-account-issuer')).toMatch(/^https:\/\//);
  expect(f.has('allow-privileged')).toBe(true);
  loopbackOnly(args);
});

test('controller-manager: no node/cloud controllers, own secure port, insecure port off', () => {
  const args = controllerManagerArgs({
    kubeconfig: '/d/cm.kubeconfig',
    securePort: 3333,
    certDir: '/d/cm-certs',
    serviceAccountPrivateKeyFile: '/d/sa.key',
    rootCaFile: '/d/ca.crt',
  });
  const f = flags(args);
  const controllers = f.get('controllers')!.split(',');
  expect(controllers[0]).toBe('*');
  for (const off of ['nodeipam', 'nodelifecycle', 'cloud-node-lifecycle', 'route', 'service']) {
    expect(controllers).toContain(`-${off}`);
  }
  expect(f.get('secure-port')).toBe('3333');
  expect(f.get('port')).toBe('0');
  expect(f.get('bind-address')).toBe('127.0.0.1');
  expect(f.get('leader-elect')).toBe('false');
  expect(f.get('service-account-private-key-file')).toBe('/d/sa.key');
  expect(f.get('root-ca-file')).toBe('/d/ca.crt');
  loopbackOnly(args);
});

test('scheduler: own secure port, insecure port off, no leader election', () => {
  const f = flags(schedulerArgs({ kubeconfig: '/d/s.kubeconfig', securePort: 4444, certDir: '/d/s' }));
  expect(f.get('secure-port')).toBe('4444');
  expect(f.get('port')).toBe('0');
  expect(f.get('leader-elect')).toBe('false');
  expect(f.get('kubeconfig')).toBe('/d/s.kubeconfig');
});

test('kubemark: a hollow kubelet with its own port and the read-only port off', () => {
  const f = flags(
    kubemarkArgs({ kubeconfig: '/d/n.kubeconfig', nodeName: 'hollow-node-3', kubeletPort: 5555 }),
  );
  expect(f.get('morph')).toBe('kubelet');
  expect(f.get('name')).toBe('hollow-node-3');
  expect(f.get('kubelet-port')).toBe('5555');
  expect(f.get('kubelet-read-only-port')).toBe('0');
  expect(f.get('kubeconfig')).toBe('/d/n.kubeconfig');
});

test('node names are distinct and valid DNS labels', () => {
  const names = [0, 1, 2, 10].map(nodeName);
  expect(new Set(names).size).toBe(names.length);
  for (const n of names) expect(n).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
});
