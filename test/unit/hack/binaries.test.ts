// Where the harness looks for its binaries (hack/binaries.ts), and what it says when
// they are missing. Uses fake executables in temp dirs: nothing is installed or run.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  cacheRoot,
  candidates,
  describeMissing,
  findBinaries,
  FILE_NAMES,
  K8S_VERSION,
  kubemarkPatchLevel,
} from '../../../hack/binaries.ts';
import { isAddressInUse } from '../../../hack/ports.ts';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bkf-binaries-test-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function fakeExe(dir: string, name: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, '#!/bin/sh\n', { mode: 0o755 });
  return file;
}

test('cache root: BUILDKIT_FLEET_CACHE, else XDG_CACHE_HOME, else ~/.cache', () => {
  expect(cacheRoot({ BUILDKIT_FLEET_CACHE: '/c', XDG_CACHE_HOME: '/x', HOME: '/h' })).toBe('/c');
  expect(cacheRoot({ XDG_CACHE_HOME: '/x', HOME: '/h' })).toBe('/x/buildkit-fleet');
  expect(cacheRoot({ HOME: '/h' })).toBe('/h/.cache/buildkit-fleet');
});

test('lookup order: KUBEBUILDER_ASSETS, then the cache, then /usr/bin/etcd', () => {
  const env = { KUBEBUILDER_ASSETS: '/assets', BUILDKIT_FLEET_CACHE: '/c' };
  expect(candidates('kubeApiserver', env)).toEqual([
    '/assets/kube-apiserver',
    `/c/kubernetes-${K8S_VERSION}/kube-apiserver`,
  ]);
  expect(candidates('kubectl', env)).toEqual(['/assets/kubectl', '/c/kubectl-helm-v31/kubectl']);
  expect(candidates('etcd', env)).toEqual(['/assets/etcd', '/usr/bin/etcd']);
  expect(candidates('etcd', { BUILDKIT_FLEET_CACHE: '/c' })).toEqual(['/usr/bin/etcd']);
});

test('KUBEBUILDER_ASSETS wins over the cache; the cache fills what it lacks', () => {
  const assets = path.join(tmp, 'assets');
  const cache = path.join(tmp, 'cache');
  const k8s = path.join(cache, `kubernetes-${K8S_VERSION}`);
  fakeExe(assets, 'kube-apiserver');
  fakeExe(assets, 'etcd');
  fakeExe(k8s, 'kube-apiserver');
  fakeExe(k8s, 'kube-controller-manager');
  const { found, missing } = findBinaries({ KUBEBUILDER_ASSETS: assets, BUILDKIT_FLEET_CACHE: cache });
  expect(found.kubeApiserver).toBe(path.join(assets, 'kube-apiserver'));
  expect(found.etcd).toBe(path.join(assets, 'etcd'));
  expect(found.kubeControllerManager).toBe(path.join(k8s, 'kube-controller-manager'));
  expect(missing).toEqual(expect.arrayContaining(['kubeScheduler', 'kubemark', 'kubectl', 'helm']));
  expect(missing).not.toContain('kubeApiserver');
});

test('a cached kubemark counts only when built with the current patches', () => {
  const cache = path.join(tmp, 'cache');
  const k8s = path.join(cache, `kubernetes-${K8S_VERSION}`);
  fakeExe(k8s, 'kubemark');
  const env = { BUILDKIT_FLEET_CACHE: cache };
  expect(findBinaries(env).missing).toContain('kubemark');
  fs.writeFileSync(path.join(k8s, 'kubemark.patches'), 'some-old-level\n');
  expect(findBinaries(env).missing).toContain('kubemark');
  fs.writeFileSync(path.join(k8s, 'kubemark.patches'), `${kubemarkPatchLevel()}\n`);
  expect(findBinaries(env).found.kubemark).toBe(path.join(k8s, 'kubemark'));
});

test('a non-executable file does not count', () => {
  const assets = path.join(tmp, 'assets');
  fs.mkdirSync(assets);
  fs.writeFileSync(path.join(assets, 'helm'), '', { mode: 0o644 });
  const { missing } = findBinaries({ KUBEBUILDER_ASSETS: assets, BUILDKIT_FLEET_CACHE: path.join(tmp, 'c') });
  expect(missing).toContain('helm');
});

test('the missing-binaries message says what to install and where it looked', () => {
  const msg = describeMissing(['kubemark', 'helm'], { BUILDKIT_FLEET_CACHE: '/c' });
  expect(msg).toContain(`kubemark: looked in /c/kubernetes-${K8S_VERSION}/kubemark`);
  expect(msg).toContain('helm: looked in /c/kubectl-helm-v31/helm');
  expect(msg).toContain('npm run cluster:prereqs');
  expect(msg).toContain('KUBEBUILDER_ASSETS');
  expect(Object.keys(FILE_NAMES)).toHaveLength(7);
});

test('bind collisions are recognised in Go error text', () => {
  expect(isAddressInUse('listen tcp 127.0.0.1:6443: bind: address already in use')).toBe(true);
  expect(isAddressInUse('connection refused')).toBe(false);
});
