// Sidecar injection (webhook/pod-injection/): golden files of both shapes, idempotency, every
// skip and refusal reason, probe rewrites, the --addr forms and the postStart wait program.
//
//   UPDATE_GOLDEN=1 npm run test:unit -- test/unit/webhook/pod-injection.test.ts
//
// rewrites test/unit/webhook/golden/injected/*.yaml instead of comparing; review the diff like code.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';

import type { V1Container, V1Pod } from '@kubernetes/client-node';
import fastJsonPatch from 'fast-json-patch';
import { stringify } from 'yaml';

import type { BuildkitTemplateSpec } from '../../../api/types.generated.ts';
import {
  INJECT_ANNOTATION,
  SIDECAR_INJECTED_ANNOTATION,
  TARGET_PORT_ANNOTATION,
} from '../../../api/labels.ts';
import { buildPod } from '../../../controller/pod-builder.ts';
import type { ServerFeatures } from '../../../kube/server-features.ts';
import { serverFeatures } from '../../../kube/server-features.ts';
import type { InjectionDecision } from '../../../webhook/pod-injection/index.ts';
import {
  SIDECAR_CONTAINER_NAME,
  WAIT_FOR_LISTEN_SCRIPT,
  injectSidecar,
  keepBehindSidecar,
} from '../../../webhook/pod-injection/index.ts';
import { goldenDir } from '../../support/golden.ts';

const { expectGolden } = goldenDir(new URL('./golden/', import.meta.url));
import { INJECTION_CONFIG, buildkitdPod } from '../../support/admission-requests.ts';

const MODERN = serverFeatures({ major: 1, minor: 31 });
const LEGACY = serverFeatures({ major: 1, minor: 20 });
const SHAPES: [string, ServerFeatures][] = [
  ['modern', MODERN],
  ['legacy', LEGACY],
];

/** The autoscaled pod the controller builds (the real builder, not a copy of its output). */
function controllerPod(features: ServerFeatures, spec: BuildkitTemplateSpec = {}): V1Pod {
  return buildPod(
    {
      apiVersion: 'buildkit.seatgeek.io/v1alpha1',
      kind: 'BuildkitTemplate',
      metadata: { name: 'builders', namespace: 'ci', uid: '0c2d4e6f-1111-4000-8000-000000000001' },
      spec: { autoscaling: { enabled: true, idleTimeout: '90s' }, ...spec },
    },
    {
      apiVersion: 'buildkit.seatgeek.io/v1alpha1',
      kind: 'Buildkit',
      metadata: { name: 'job-42', namespace: 'ci', uid: '7a9b1c3d-2222-4000-8000-000000000002' },
      spec: { template: 'builders' },
    },
    features,
  );
}

const run = (pod: V1Pod, features = LEGACY, namespace = 'ci', config = INJECTION_CONFIG): InjectionDecision =>
  injectSidecar({ pod, namespace, config }, features);

function injected(pod: V1Pod, features = LEGACY): V1Pod {
  const result = run(pod, features);
  if (result.decision !== 'inject')
    throw new Error(`expected inject, got ${result.decision}: ${result.reason}`);
  return result.pod;
}

const buildkitdOf = (pod: V1Pod) => pod.spec!.containers.find((c) => c.name !== SIDECAR_CONTAINER_NAME)!;
const sidecarOf = (pod: V1Pod) =>
  [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers].find(
    (c) => c.name === SIDECAR_CONTAINER_NAME,
  )!;
const yaml = (value: unknown) => stringify(value, { sortMapEntries: true, lineWidth: 0 });

describe('golden files', () => {
  const scenarios: [string, (f: ServerFeatures) => V1Pod][] = [
    ['controller-autoscaling', (f) => controllerPod(f)],
    ['controller-prestop', (f) => controllerPod(f, { port: 8372, lifecycle: { preStopScript: true } })],
    [
      'statefulset',
      () =>
        buildkitdPod({
          args: ['--addr=unix:///run/buildkit/buildkitd.sock', '--addr=tcp://0.0.0.0:1234', '--debug'],
          readinessProbe: { tcpSocket: { port: 'grpc' }, periodSeconds: 10 },
          livenessProbe: { exec: { command: ['buildctl', 'debug', 'workers'] }, periodSeconds: 30 },
        }),
    ],
  ];
  test.each(scenarios.flatMap(([name, make]) => SHAPES.map(([shape, f]) => [name, shape, make, f] as const)))(
    '%s (%s)',
    (name, shape, make, features) => {
      const before = make(features);
      const header =
        `# injectSidecar golden file: scenario "${name}", ${shape} shape (Kubernetes ${features.version.major}.${features.version.minor}).\n` +
        '# Written by UPDATE_GOLDEN=1 npm run test:unit -- test/unit/webhook/pod-injection.test.ts; review changes.\n';
      expectGolden(`injected/${name}.${shape}.yaml`, header + yaml(injected(before, features)));
    },
  );
});

describe('the two shapes', () => {
  test('1.29 and later: a native sidecar, first init container, restartPolicy Always', () => {
    const pod = injected(
      controllerPod(serverFeatures({ major: 1, minor: 29 })),
      serverFeatures({ major: 1, minor: 29 }),
    );
    expect(pod.spec!.initContainers!.map((c) => c.name)).toEqual([SIDECAR_CONTAINER_NAME]);
    expect(pod.spec!.initContainers![0]!.restartPolicy).toBe('Always');
    expect(pod.spec!.containers.map((c) => c.name)).toEqual(['buildkit']);
  });

  test('before 1.29: a regular container placed first, without restartPolicy', () => {
    const before = buildkitdPod();
    before.spec!.initContainers = [{ name: 'setup', image: 'busybox' }];
    const pod = injected(before, serverFeatures({ major: 1, minor: 28 }));
    expect(pod.spec!.containers.map((c) => c.name)).toEqual([SIDECAR_CONTAINER_NAME, 'buildkitd']);
    expect(pod.spec!.initContainers!.map((c) => c.name)).toEqual(['setup']);
    expect(JSON.stringify(pod)).not.toContain('restartPolicy');
  });

  test('a native sidecar goes before existing init containers', () => {
    const before = buildkitdPod();
    before.spec!.initContainers = [{ name: 'setup', image: 'busybox' }];
    expect(injected(before, MODERN).spec!.initContainers!.map((c) => c.name)).toEqual([
      SIDECAR_CONTAINER_NAME,
      'setup',
    ]);
  });

  test.each(SHAPES)(
    '%s: the sidecar is locked down, wired by env and waits until it listens',
    (_shape, features) => {
      const sidecar = sidecarOf(injected(buildkitdPod(), features));
      expect(sidecar.command).toEqual(['buildkit-fleet', 'sidecar']);
      expect(sidecar.securityContext).toMatchObject({
        runAsNonRoot: true,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
      });
      expect(Object.fromEntries(sidecar.env!.map((e) => [e.name, e.value]))).toEqual({
        BKF_SIDECAR_LISTEN: '0.0.0.0:1234',
        BKF_SIDECAR_UPSTREAM: '127.0.0.1:1233',
        BKF_SIDECAR_STATS: '0.0.0.0:9436',
        BKF_SIDECAR_TOKEN_FILE: '/var/run/buildkit-fleet/sidecar-token/token',
        BKF_SIDECAR_GRACE: '30',
        // the process settings of sidecar/process-settings.ts
        NODE_OPTIONS: '--max-semi-space-size=1 --max-old-space-size=64',
        MALLOC_ARENA_MAX: '2',
      });
      expect(sidecar.resources).toEqual(INJECTION_CONFIG.resources);
      expect(sidecar.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 9436, scheme: 'HTTP' });
      expect(sidecar.lifecycle!.postStart!.exec!.command!.slice(0, 2)).toEqual(['node', '-e']);
      expect(sidecar.lifecycle!.postStart!.exec!.command!.slice(3)).toEqual(['1234', '30']);
    },
  );
});

describe('buildkitd moves to the private port', () => {
  test.each([
    [
      ['--addr', 'tcp://0.0.0.0:1234'],
      ['--addr', 'tcp://127.0.0.1:1233'],
    ],
    [['--addr=tcp://0.0.0.0:1234'], ['--addr=tcp://127.0.0.1:1233']],
    [
      ['--addr', 'tcp://[::]:1234', '--addr=unix:///run/b.sock'],
      ['--addr', 'tcp://127.0.0.1:1233', '--addr=unix:///run/b.sock'],
    ],
    [
      ['--addr', 'tcp://:1234', '--debug'],
      ['--addr', 'tcp://127.0.0.1:1233', '--debug'],
    ],
  ])('%j becomes %j', (args, expected) => {
    expect(buildkitdOf(injected(buildkitdPod({ args }))).args).toEqual(expected);
  });

  test('an address in command rather than args is moved too', () => {
    const pod = injected(
      buildkitdPod({ command: ['buildkitd', '--addr', 'tcp://0.0.0.0:1234'], args: ['--debug'] }),
    );
    expect(buildkitdOf(pod).command).toEqual(['buildkitd', '--addr', 'tcp://127.0.0.1:1233']);
    expect(buildkitdOf(pod).args).toEqual(['--debug']);
  });

  test('the public port entry, with its name, moves to the sidecar; other ports stay', () => {
    const pod = injected(
      buildkitdPod({
        ports: [
          { name: 'grpc', containerPort: 1234, protocol: 'TCP' },
          { name: 'debug', containerPort: 6060 },
        ],
      }),
    );
    expect(buildkitdOf(pod).ports).toEqual([{ name: 'debug', containerPort: 6060 }]);
    expect(sidecarOf(pod).ports).toEqual([
      { name: 'grpc', containerPort: 1234, protocol: 'TCP' },
      { name: 'bkf-stats', containerPort: 9436, protocol: 'TCP' },
    ]);
  });

  test('the target-port annotation picks one of several addresses', () => {
    const pod = injected(
      buildkitdPod(
        { args: ['--addr', 'tcp://0.0.0.0:1234', '--addr', 'tcp://0.0.0.0:2345'] },
        { annotations: { [TARGET_PORT_ANNOTATION]: '2345' } },
      ),
    );
    expect(buildkitdOf(pod).args).toEqual(['--addr', 'tcp://0.0.0.0:1234', '--addr', 'tcp://127.0.0.1:2344']);
    expect(sidecarOf(pod).env!.find((e) => e.name === 'BKF_SIDECAR_LISTEN')!.value).toBe('0.0.0.0:2345');
  });

  test('a configured private port is used', () => {
    const result = run(buildkitdPod(), LEGACY, 'ci', { ...INJECTION_CONFIG, privatePort: 11234 });
    expect(result.decision === 'inject' && buildkitdOf(result.pod).args).toEqual([
      '--addr',
      'unix:///run/buildkit/buildkitd.sock',
      '--addr',
      'tcp://127.0.0.1:11234',
    ]);
  });

  test('the grace period follows the pod unless configured', () => {
    const pod = buildkitdPod();
    pod.spec!.terminationGracePeriodSeconds = 900;
    const grace = (p: V1Pod) => sidecarOf(p).env!.find((e) => e.name === 'BKF_SIDECAR_GRACE')!.value;
    expect(grace(injected(pod))).toBe('900');
    const configured = run(pod, LEGACY, 'ci', { ...INJECTION_CONFIG, graceSeconds: 120 });
    expect(configured.decision === 'inject' && grace(configured.pod)).toBe('120');
  });
});

describe('probes', () => {
  const readyz = (extra: object = {}) => ({
    httpGet: { path: '/readyz', port: 9436, scheme: 'HTTP' },
    ...extra,
  });
  test.each([
    ['grpc on the public port', { grpc: { port: 1234 }, periodSeconds: 15 }, readyz({ periodSeconds: 15 })],
    ['grpc with a service name', { grpc: { port: 1234, service: 'x' } }, readyz()],
    ['tcpSocket by number', { tcpSocket: { port: 1234 }, timeoutSeconds: 3 }, readyz({ timeoutSeconds: 3 })],
    [
      'tcpSocket by port name',
      { tcpSocket: { port: 'grpc' }, failureThreshold: 2 },
      readyz({ failureThreshold: 2 }),
    ],
    ['httpGet by number', { httpGet: { path: '/x', port: 1234 } }, readyz()],
    ['httpGet by port name', { httpGet: { path: '/x', port: 'grpc' } }, readyz()],
  ])('%s goes to the sidecar /readyz, timing kept', (_name, probe, expected) => {
    const pod = injected(buildkitdPod({ readinessProbe: probe, livenessProbe: probe, startupProbe: probe }));
    const c = buildkitdOf(pod);
    expect([c.readinessProbe, c.livenessProbe, c.startupProbe]).toEqual([expected, expected, expected]);
  });

  test.each([
    ['exec', { exec: { command: ['buildctl', 'debug', 'workers'] } }],
    ['another port by number', { httpGet: { path: '/metrics', port: 6060 } }],
    ['another port by name', { tcpSocket: { port: 'debug' } }],
  ])('%s stays as it is', (_name, probe) => {
    const c = buildkitdOf(
      injected(
        buildkitdPod({
          ports: [
            { name: 'grpc', containerPort: 1234 },
            { name: 'debug', containerPort: 6060 },
          ],
          readinessProbe: probe,
        }),
      ),
    );
    expect(c.readinessProbe).toEqual(probe);
  });

  test('the controller pod: gRPC probes rewritten on 1.31, exec probes kept on 1.20', () => {
    const modern = buildkitdOf(injected(controllerPod(MODERN), MODERN));
    expect(modern.readinessProbe).toEqual(
      readyz({ periodSeconds: 15, timeoutSeconds: 3, failureThreshold: 2 }),
    );
    expect(JSON.stringify(modern)).not.toContain('grpc');
    const legacy = controllerPod(LEGACY);
    expect(buildkitdOf(injected(legacy)).readinessProbe).toEqual(legacy.spec!.containers[0]!.readinessProbe);
  });
});

describe('idempotent and side-effect free', () => {
  test.each(SHAPES)(
    '%s: applying the patch gives the injected pod; a second run changes nothing',
    (_s, features) => {
      const before = controllerPod(features);
      const frozen = JSON.stringify(before);
      const first = run(before, features);
      expect(first.decision).toBe('inject');
      if (first.decision !== 'inject') return;
      expect(JSON.stringify(before)).toBe(frozen); // the input is not touched
      const patched = fastJsonPatch.applyPatch(structuredClone(before), first.patch, true, false).newDocument;
      expect(patched).toEqual(first.pod);
      const second = run(patched, features);
      expect(second).toEqual({
        decision: 'skip',
        reason: expect.stringMatching(
          /^already injected \(buildkit-fleet.io\/sidecar-injected: sha256:[0-9a-f]{16}\)$/,
        ),
      });
    },
  );

  test('the same pod and config always give the same patch and marker', () => {
    const a = run(buildkitdPod());
    const b = run(buildkitdPod());
    expect(a).toEqual(b);
    expect(a.decision === 'inject' && a.pod.metadata!.annotations![SIDECAR_INJECTED_ANNOTATION]).toMatch(
      /^sha256:[0-9a-f]{16}$/,
    );
  });

  test('the patch replaces whole fields: annotations added, containers and volumes', () => {
    const result = run(buildkitdPod());
    expect(result.decision === 'inject' && result.patch.map((op) => `${op.op} ${op.path}`)).toEqual([
      'add /metadata/annotations',
      'replace /spec/containers',
      'add /spec/volumes',
    ]);
  });

  test('the token Secret is mounted optional, so a missing Secret only disables the fence', () => {
    const pod = injected(buildkitdPod(), MODERN);
    expect(pod.spec!.volumes).toEqual([
      {
        name: 'buildkit-fleet-sidecar-token',
        secret: { secretName: 'buildkit-fleet-sidecar-token', optional: true },
      },
    ]);
    expect(sidecarOf(pod).volumeMounts).toEqual([
      {
        name: 'buildkit-fleet-sidecar-token',
        mountPath: '/var/run/buildkit-fleet/sidecar-token',
        readOnly: true,
      },
    ]);
  });
});

describe('updates of an injected pod (kubectl apply of the original manifest again)', () => {
  /** What the API server makes of kubectl's three-way patch: the manifest's values merged into the live pod. */
  function reverted(live: V1Pod): V1Pod {
    const pod = structuredClone(live);
    const buildkitd = buildkitdOf(pod);
    buildkitd.args = ['--addr', 'unix:///run/buildkit/buildkitd.sock', '--addr', 'tcp://0.0.0.0:1234'];
    buildkitd.ports = [{ name: 'grpc', containerPort: 1234, protocol: 'TCP' }];
    buildkitd.readinessProbe = { ...buildkitd.readinessProbe, tcpSocket: { port: 'grpc' } };
    return pod;
  }
  const manifest = () => buildkitdPod({ readinessProbe: { tcpSocket: { port: 'grpc' }, periodSeconds: 10 } });

  test.each(SHAPES)(
    '%s: the reverted fields are moved back, so the update changes nothing',
    (_s, features) => {
      const live = injected(manifest(), features);
      const result = keepBehindSidecar(reverted(live));
      expect(result.decision).toBe('inject');
      if (result.decision !== 'inject') return;
      expect(result.patch.map((op) => `${op.op} ${op.path}`)).toEqual(['replace /spec/containers']);
      const patched = fastJsonPatch.applyPatch(reverted(live), result.patch, true, false).newDocument;
      expect(patched).toEqual(live);
    },
  );

  test('an update that did not touch buildkitd, or of a pod never injected, is left alone', () => {
    const live = injected(manifest());
    const labelled = structuredClone(live);
    labelled.metadata!.labels = { ...labelled.metadata!.labels, team: 'ci' };
    expect(keepBehindSidecar(labelled)).toEqual({
      decision: 'skip',
      reason: 'buildkitd is still behind the sidecar',
    });
    expect(keepBehindSidecar(manifest())).toEqual({ decision: 'skip', reason: 'not injected' });
  });

  test('a configured private port is read back from the sidecar, not from the current flags', () => {
    const result = run(manifest(), LEGACY, 'ci', { ...INJECTION_CONFIG, privatePort: 11234 });
    if (result.decision !== 'inject') throw new Error(result.reason);
    const again = keepBehindSidecar(reverted(result.pod));
    expect(again.decision === 'inject' && buildkitdOf(again.pod).args).toContain('tcp://127.0.0.1:11234');
  });
});

describe('skip reasons', () => {
  test.each([
    [
      'not opted in',
      buildkitdPod({}, { labels: { app: 'buildkitd' } }),
      'ci',
      'not opted in (label buildkit-fleet.io/autoscale is not "enabled")',
    ],
    [
      'label with another value',
      buildkitdPod({}, { labels: { 'buildkit-fleet.io/autoscale': 'true' } }),
      'ci',
      'not opted in (label buildkit-fleet.io/autoscale is not "enabled")',
    ],
    [
      'opted out',
      buildkitdPod({}, { annotations: { [INJECT_ANNOTATION]: 'disabled' } }),
      'ci',
      'opted out (annotation buildkit-fleet.io/inject: "disabled")',
    ],
    [
      'already injected',
      buildkitdPod({}, { annotations: { [SIDECAR_INJECTED_ANNOTATION]: 'sha256:0123456789abcdef' } }),
      'ci',
      'already injected (buildkit-fleet.io/sidecar-injected: sha256:0123456789abcdef)',
    ],
    [
      'platform namespace',
      buildkitdPod(),
      'buildkit-fleet-system',
      "namespace buildkit-fleet-system is the platform's own",
    ],
    ['kube-system', buildkitdPod(), 'kube-system', 'namespace kube-system is a system namespace'],
    ['kube-node-lease', buildkitdPod(), 'kube-node-lease', 'namespace kube-node-lease is a system namespace'],
  ])('%s', (_name, pod, namespace, reason) => {
    expect(run(pod, LEGACY, namespace)).toEqual({ decision: 'skip', reason });
  });

  test('a pod that is not understandable is still skipped when it did not opt in', () => {
    expect(run(buildkitdPod({ args: [] }, { labels: {} })).decision).toBe('skip');
  });
});

describe('refusals name the problem', () => {
  test.each([
    [
      'no tcp address',
      { args: ['--addr', 'unix:///run/buildkit/buildkitd.sock'] },
      {},
      'no container has a buildkitd TCP address',
    ],
    ['no args at all', { args: undefined }, {}, 'no container has a buildkitd TCP address'],
    [
      'unparsable address',
      { args: ['--addr', 'tcp://0.0.0.0'] },
      {},
      'cannot understand buildkitd address "tcp://0.0.0.0"',
    ],
    [
      'port out of range',
      { args: ['--addr=tcp://0.0.0.0:99999'] },
      {},
      'cannot understand buildkitd address "tcp://0.0.0.0:99999"',
    ],
    [
      'several addresses, no annotation',
      { args: ['--addr', 'tcp://0.0.0.0:1234', '--addr', 'tcp://0.0.0.0:2345'] },
      {},
      'several buildkitd TCP addresses (buildkitd: tcp://0.0.0.0:1234, buildkitd: tcp://0.0.0.0:2345); set annotation buildkit-fleet.io/target-port',
    ],
    [
      'annotation matches no address',
      {},
      { [TARGET_PORT_ANNOTATION]: '4321' },
      'annotation buildkit-fleet.io/target-port: 4321 is not the port of any buildkitd TCP address (buildkitd: tcp://0.0.0.0:1234)',
    ],
    [
      'annotation not a port',
      {},
      { [TARGET_PORT_ANNOTATION]: 'grpc' },
      'annotation buildkit-fleet.io/target-port: "grpc" is not a port number 1-65535',
    ],
    [
      'private port taken',
      { ports: [{ containerPort: 1234 }, { containerPort: 1233 }] },
      {},
      'the private port for buildkitd 1233 is already used by container buildkitd',
    ],
    [
      'stats port taken',
      { ports: [{ containerPort: 1234 }, { containerPort: 9436 }] },
      {},
      'the sidecar stats port 9436 is already used by container buildkitd',
    ],
    [
      'stats port is the public port',
      { args: ['--addr', 'tcp://0.0.0.0:9436'] },
      {},
      "the sidecar stats port 9436 is buildkitd's public port",
    ],
    [
      'no private port below 1',
      { args: ['--addr', 'tcp://0.0.0.0:1'] },
      {},
      'no private port below public port 1',
    ],
    [
      'bad opt-out value',
      {},
      { [INJECT_ANNOTATION]: 'off' },
      'annotation buildkit-fleet.io/inject: "off" must be "disabled" or "enabled"',
    ],
  ])('%s', (_name, container, annotations, reason) => {
    const result = run(buildkitdPod(container as Partial<V1Container>, { annotations }));
    expect(result.decision).toBe('refuse');
    expect(result.reason).toContain(reason);
  });

  test('a container already named like the sidecar, without the marker', () => {
    const pod = buildkitdPod();
    pod.spec!.containers.push({ name: SIDECAR_CONTAINER_NAME, image: 'x' });
    expect(run(pod).reason).toBe(
      'a container is already named buildkit-fleet-sidecar but the pod has no buildkit-fleet.io/sidecar-injected annotation',
    );
  });

  test('a private port used by another container, or the stats port named elsewhere', () => {
    const pod = buildkitdPod();
    pod.spec!.containers.push({ name: 'metrics', image: 'x', ports: [{ containerPort: 1233 }] });
    expect(run(pod).reason).toBe('the private port for buildkitd 1233 is already used by container metrics');
    const named = buildkitdPod();
    named.spec!.containers.push({
      name: 'metrics',
      image: 'x',
      ports: [{ name: 'bkf-stats', containerPort: 8000 }],
    });
    expect(run(named).reason).toBe('a container port is already named bkf-stats');
  });

  test('two containers with TCP addresses need the annotation', () => {
    const pod = buildkitdPod();
    pod.spec!.containers.push({ name: 'other', image: 'x', args: ['--addr=tcp://0.0.0.0:2345'] });
    expect(run(pod).reason).toContain(
      'several buildkitd TCP addresses (buildkitd: tcp://0.0.0.0:1234, other: tcp://0.0.0.0:2345)',
    );
    pod.metadata!.annotations = { [TARGET_PORT_ANNOTATION]: '2345' };
    const result = run(pod);
    expect(result.decision === 'inject' && result.pod.spec!.containers.map((c) => c.name)).toEqual([
      SIDECAR_CONTAINER_NAME,
      'buildkitd',
      'other',
    ]);
  });
});

describe('the postStart wait program', () => {
  const exec = promisify(execFile);
  /** Runs the hook exactly as the injected pod has it, with this test's node for `node`. */
  const wait = (port: number, seconds: number) => {
    const pod = injected(
      buildkitdPod({ args: ['--addr', `tcp://0.0.0.0:${port}`], ports: [{ containerPort: port }] }),
    );
    const [node, ...args] = sidecarOf(pod).lifecycle!.postStart!.exec!.command!;
    expect(node).toBe('node');
    args[args.length - 1] = String(seconds);
    return exec(process.execPath, args).then(
      () => 0,
      (error: { code?: number }) => error.code ?? -1,
    );
  };

  test('the pod runs the asset webhook/assets/wait-for-listen.js.txt, without its final newline', () => {
    const asset = readFileSync(
      new URL('../../../webhook/assets/wait-for-listen.js.txt', import.meta.url),
      'utf8',
    );
    expect(`${WAIT_FOR_LISTEN_SCRIPT}\n`).toBe(asset);
    expect(sidecarOf(injected(buildkitdPod())).lifecycle!.postStart!.exec!.command![2]).toBe(
      WAIT_FOR_LISTEN_SCRIPT,
    );
  });

  test.each(['0.0.0.0', '127.0.0.1'])(
    'returns 0 as soon as something listens on the port (%s), without connecting to it',
    async (host) => {
      const server = net.createServer();
      let connections = 0;
      server.on('connection', (s) => {
        connections++;
        s.destroy();
      });
      await new Promise<void>((resolve) => server.listen(0, host, resolve));
      const port = (server.address() as net.AddressInfo).port;
      try {
        expect(await wait(port, 5)).toBe(0);
        expect(connections).toBe(0);
      } finally {
        server.close();
      }
    },
  );

  test('fails after its timeout when nothing listens (the kubelet then restarts the container)', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise((resolve) => server.close(resolve));
    const started = Date.now();
    expect(await wait(port, 1)).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
  });
});
