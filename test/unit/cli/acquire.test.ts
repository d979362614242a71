// `buildkit-fleet acquire` and `release`: what the flags mean, the Buildkit acquire creates, how
// it reads readiness and a Buildkit at zero, what it prints; and bad input refused with exit 2
// before anything reaches an API server.
import { runCli } from '../../../cli/commands.ts';
import {
  CREATED_BY_LABEL,
  CREATED_BY_VALUE,
  buildkitToCreate,
  existingProblem,
  needsWake,
  parseAcquireArgs,
  parseReleaseArgs,
  parseWait,
  readiness,
  resolveNamespace,
  shellAssignments,
  splitPositionals,
  wakePatch,
} from '../../../cli/acquire/plan.ts';
import { RELEASE_OPTIONS } from '../../../cli/acquire/options.ts';
import type { Buildkit } from '../../../api/types.generated.ts';

async function cli(...argv: string[]) {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const ready = (type: string, status: 'True' | 'False', reason = 'Running', message = '') => ({
  type,
  status,
  reason,
  message,
  lastTransitionTime: '2026-01-01T00:00:00Z',
});

function bk(status?: Buildkit['status'], annotations?: Record<string, string>): Buildkit {
  return {
    metadata: {
      name: 'ci-x1',
      namespace: 'ci',
      resourceVersion: '42',
      ...(annotations ? { annotations } : {}),
    },
    spec: { template: 't' },
    ...(status ? { status } : {}),
  };
}

describe('acquire flags', () => {
  test('defaults: a 5m wait, no name, namespace or owner', () => {
    expect(parseAcquireArgs(['--template', 'ci'], {})).toEqual({
      template: 'ci',
      namespace: undefined,
      name: undefined,
      ownerPod: undefined,
      waitMs: 300_000,
      kubeconfig: undefined,
    });
  });

  test('every flag', () => {
    expect(
      parseAcquireArgs(
        [
          '--template=ci',
          '--namespace',
          'builds',
          '--name',
          'job-42',
          '--owner-pod',
          'runner-abc-project-1-concurrent-0',
          '--wait',
          '1m30s',
          '--kubeconfig',
          '/k',
        ],
        {},
      ),
    ).toEqual({
      template: 'ci',
      namespace: 'builds',
      name: 'job-42',
      ownerPod: 'runner-abc-project-1-concurrent-0',
      waitMs: 90_000,
      kubeconfig: '/k',
    });
  });

  test('KUBECONFIG from the environment; the flag wins', () => {
    expect(parseAcquireArgs(['--template', 'ci'], { KUBECONFIG: '/env' }).kubeconfig).toBe('/env');
    expect(
      parseAcquireArgs(['--template', 'ci', '--kubeconfig', '/f'], { KUBECONFIG: '/env' }).kubeconfig,
    ).toBe('/f');
  });

  test.each([
    [[], '--template is required'],
    [['--template', 'ci', '--bogus'], "Unknown option '--bogus'"],
    [['--template'], "Option '--template <value>' argument missing"],
    [['--template', 'Not_A_Name'], '--template "Not_A_Name": must be a lowercase DNS name'],
    [['--template', 'x'.repeat(58)], 'must be no more than 57 characters'],
    [['--template', 'ci', '--namespace', 'a.b'], '--namespace "a.b": must be a lowercase DNS label'],
    [['--template', 'ci', '--name', 'x-'], '--name "x-": must be a lowercase DNS name'],
    [['--template', 'ci', '--owner-pod', 'Pod'], '--owner-pod "Pod": must be a lowercase DNS name'],
    [['--template', 'ci', '--wait', 'soon'], '--wait "soon": must be a duration from 1s to 24h'],
    [['--template', 'ci', '--wait', '300'], '--wait "300": must be a duration'],
    [['--template', 'ci', '--wait', '0s'], '--wait "0s"'],
    [['--template', 'ci', '--wait', '25h'], '--wait "25h"'],
    [['--template', 'ci', 'extra'], "Unexpected argument 'extra'"],
  ])('%j is refused: %s', (args, message) => {
    expect(() => parseAcquireArgs(args, {})).toThrow(message);
  });

  test('--wait durations', () => {
    expect(parseWait('2s')).toBe(2000);
    expect(parseWait('5m')).toBe(300_000);
    expect(parseWait('1h')).toBe(3_600_000);
    expect(parseWait(' 1.5m ')).toBe(90_000);
  });
});

describe('release arguments', () => {
  test('the name, wherever it stands among the flags', () => {
    expect(parseReleaseArgs(['ci-x1'], {})).toEqual({
      name: 'ci-x1',
      namespace: undefined,
      kubeconfig: undefined,
    });
    expect(parseReleaseArgs(['--namespace', 'ci', 'ci-x1', '--kubeconfig=/k'], {})).toEqual({
      name: 'ci-x1',
      namespace: 'ci',
      kubeconfig: '/k',
    });
  });

  test('a flag value is not taken for the name, and `--` ends the flags', () => {
    expect(splitPositionals(['--namespace', 'ci', 'x'], RELEASE_OPTIONS)).toEqual({
      positionals: ['x'],
      flags: ['--namespace', 'ci'],
    });
    expect(splitPositionals(['--namespace=ci', '--', 'x'], RELEASE_OPTIONS)).toEqual({
      positionals: ['x'],
      flags: ['--namespace=ci'],
    });
  });

  test.each([
    [[], 'name the Buildkit to release'],
    [['a', 'b'], 'release takes one Buildkit name, got 2: a b'],
    [['a', '--force'], "Unknown option '--force'"],
    [['A_B'], 'the Buildkit name "A_B": must be a lowercase DNS name'],
    [['a', '--namespace', 'x.y'], '--namespace "x.y"'],
  ])('%j is refused: %s', (args, message) => {
    expect(() => parseReleaseArgs(args, {})).toThrow(message);
  });
});

test('the namespace: the flag, else the context (in a pod: its own), else default', () => {
  expect(resolveNamespace('a', 'b')).toBe('a');
  expect(resolveNamespace(undefined, 'b')).toBe('b');
  expect(resolveNamespace(undefined, undefined)).toBe('default');
  expect(resolveNamespace(undefined, ' ')).toBe('default');
});

describe('the Buildkit acquire creates', () => {
  test('without --name: generated from the template name, labelled as acquire', () => {
    expect(
      buildkitToCreate({ template: 'ci', namespace: 'builds', name: undefined, owner: undefined }),
    ).toEqual({
      apiVersion: 'buildkit.seatgeek.io/v1alpha1',
      kind: 'Buildkit',
      metadata: {
        generateName: 'ci-',
        namespace: 'builds',
        labels: { [CREATED_BY_LABEL]: CREATED_BY_VALUE },
      },
      spec: { template: 'ci' },
    });
  });

  test('named, and owned by the CI job pod (not as controller, not blocking its deletion)', () => {
    const object = buildkitToCreate({
      template: 'ci',
      namespace: 'builds',
      name: 'job-42',
      owner: { name: 'runner-0', uid: 'uid-1' },
    });
    expect(object.metadata).toEqual({
      name: 'job-42',
      namespace: 'builds',
      labels: { [CREATED_BY_LABEL]: CREATED_BY_VALUE },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: 'runner-0', uid: 'uid-1' }],
    });
    expect(object.metadata).not.toHaveProperty('generateName');
  });

  test('an existing Buildkit is used only when made from the same template and not being deleted', () => {
    expect(existingProblem(bk(), 't')).toBeUndefined();
    expect(existingProblem(bk(), 'other')).toBe(
      'Buildkit "ci-x1" in namespace "ci" exists and was made from template "t", not "other"',
    );
    const going = { ...bk(), metadata: { ...bk().metadata, deletionTimestamp: new Date() } };
    expect(existingProblem(going, 't')).toContain('is being deleted');
  });
});

describe('readiness', () => {
  test('Running, Ready=True and an endpoint: ready, with the endpoint', () => {
    const status = {
      phase: 'Running' as const,
      endpoint: 'tcp://10.96.0.10:1234',
      conditions: [ready('Ready', 'True')],
    };
    expect(readiness(bk(status))).toEqual({ ready: true, endpoint: 'tcp://10.96.0.10:1234' });
    expect(readiness(bk({ ...status, endpoint: 'tcp://[fd00::a]:1234' }))).toEqual({
      ready: true,
      endpoint: 'tcp://[fd00::a]:1234',
    });
  });

  test('otherwise not, with the reason', () => {
    expect(readiness(bk())).toEqual({
      ready: false,
      reason: 'no status yet (is the controller running, and watching this namespace?)',
    });
    expect(
      readiness(
        bk({
          phase: 'Pending',
          conditions: [
            ready('Ready', 'False', 'PodUnschedulable', '0/1 nodes are available: 1 Insufficient cpu.'),
          ],
        }),
      ),
    ).toEqual({
      ready: false,
      reason: 'Pending, PodUnschedulable: 0/1 nodes are available: 1 Insufficient cpu.',
    });
    // at zero, the endpoint stays set: still not ready
    expect(
      readiness(
        bk({
          phase: 'ScaledToZero',
          endpoint: 'tcp://10.96.0.10:1234',
          conditions: [ready('Ready', 'False', 'ScaledToZero', 'scaled to zero at ...')],
        }),
      ),
    ).toEqual({ ready: false, reason: 'ScaledToZero, ScaledToZero: scaled to zero at ...' });
    // Running but the condition says otherwise (or is missing)
    expect(
      readiness(
        bk({
          phase: 'Running',
          endpoint: 'tcp://a:1',
          conditions: [ready('Ready', 'False', 'ContainerNotReady')],
        }),
      ),
    ).toEqual({ ready: false, reason: 'Running, ContainerNotReady' });
    expect(readiness(bk({ phase: 'Running', endpoint: 'tcp://a:1' }))).toEqual({
      ready: false,
      reason: 'Running, no Ready condition yet',
    });
    expect(readiness(bk({ phase: 'Running', conditions: [ready('Ready', 'True')] }))).toEqual({
      ready: false,
      reason: 'Running, but no status.endpoint yet',
    });
  });

  test('an endpoint the shell would not take unquoted is not used', () => {
    const status = { phase: 'Running' as const, conditions: [ready('Ready', 'True')] };
    for (const endpoint of ['tcp://a:1;rm -rf /', 'http://a:1', 'tcp://$(x):1', 'tcp://a b:1']) {
      expect(readiness(bk({ ...status, endpoint }))).toMatchObject({
        ready: false,
        reason: expect.stringContaining('is not tcp://'),
      });
    }
  });
});

describe('waking', () => {
  test('a Buildkit at zero needs a wake, unless one was asked for', () => {
    expect(needsWake(bk({ phase: 'ScaledToZero' }))).toBe(true);
    expect(needsWake(bk({ phase: 'ScaledToZero' }, { 'buildkit-fleet.io/wake-requested': 'x' }))).toBe(false);
    expect(needsWake(bk({ phase: 'Waking' }))).toBe(false);
    expect(needsWake(bk({ phase: 'Running' }))).toBe(false);
    expect(needsWake(bk())).toBe(false);
  });

  test('the wake is the annotation the controller reads, preconditioned on the version seen', () => {
    expect(wakePatch(bk({ phase: 'ScaledToZero' }), new Date('2026-12-02T14:00:00Z'))).toEqual({
      metadata: {
        resourceVersion: '42',
        annotations: { 'buildkit-fleet.io/wake-requested': '2026-12-02T14:00:00.000Z' },
      },
    });
  });
});

test('stdout is two NAME=value lines, for eval and for $GITHUB_ENV', () => {
  expect(shellAssignments('ci-x1', 'tcp://10.96.0.10:1234')).toBe(
    'BUILDKIT_HOST=tcp://10.96.0.10:1234\nBUILDKIT_NAME=ci-x1\n',
  );
});

describe('the commands', () => {
  test('--help of each lists its flags, exit 0', async () => {
    const acquire = await cli('acquire', '--help');
    expect(acquire.code).toBe(0);
    expect(acquire.out).toContain('Usage: buildkit-fleet acquire --template <name> [flags]');
    for (const flag of ['--template', '--namespace', '--name', '--owner-pod', '--wait', '--kubeconfig'])
      expect(acquire.out).toContain(`  ${flag} <`);
    expect(acquire.out).toContain('(default 5m)');
    const release = await cli('release', '-h');
    expect(release.code).toBe(0);
    expect(release.out).toContain('Usage: buildkit-fleet release <name> [flags]');
    expect(release.out).toContain('--namespace <string>');
  });

  test('both are listed in the top-level help', async () => {
    const { out } = await cli('--help');
    expect(out).toMatch(/^ {2}acquire {2,}CI: create a Buildkit/m);
    expect(out).toMatch(/^ {2}release {2,}CI: delete a Buildkit/m);
  });

  test('bad input exits 2 with the reason and the usage, on stderr only', async () => {
    for (const [args, message] of [
      [['acquire'], '--template is required'],
      [['acquire', '--template', 'ci', '--wait', 'soon'], '--wait "soon"'],
      [['acquire', '--template', 'ci', '--nope'], "Unknown option '--nope'"],
      [['release'], 'name the Buildkit to release'],
      [['release', 'x', '--nope'], "Unknown option '--nope'"],
    ] as const) {
      const result = await cli(...args);
      expect(result).toMatchObject({ code: 2, out: '' });
      expect(result.err).toContain(`buildkit-fleet ${args[0]}: ${message}`);
      expect(result.err).toContain(`Usage: buildkit-fleet ${args[0]} `);
    }
  });

  test('a kubeconfig that cannot be loaded is refused before any API call', async () => {
    const result = await cli('acquire', '--template', 'ci', '--kubeconfig', '/nonexistent/kubeconfig');
    expect(result).toMatchObject({ code: 2, out: '' });
    expect(result.err).toContain('cannot load kubeconfig /nonexistent/kubeconfig');
  });
});
