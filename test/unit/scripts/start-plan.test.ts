// `npm start`'s decisions: its flags, where it runs the platform, and the lines a person reads.
import {
  StartUsageError,
  parseStartFlags,
  progressLines,
  splitImage,
  startMode,
} from '../../../scripts/start-plan.ts';

describe('flags', () => {
  test('defaults', () => {
    expect(parseStartFlags([])).toEqual({
      detach: false,
      noBuild: false,
      image: 'buildkit-fleet:local',
      help: false,
    });
  });

  test('--detach, --kubeconfig and --image', () => {
    expect(
      parseStartFlags([
        '--detach',
        '--no-build',
        '--kubeconfig',
        '/k',
        '--image',
        'reg.example:5000/team/bkf:1.2',
      ]),
    ).toEqual({
      detach: true,
      noBuild: true,
      kubeconfig: '/k',
      image: 'reg.example:5000/team/bkf:1.2',
      help: false,
    });
  });

  test.each([
    [['--detatch'], /Unknown option '--detatch'/],
    [['--kubeconfig'], /--kubeconfig/],
    [['--kubeconfig', ''], /--kubeconfig needs a file/],
    [['--image', 'Not An Image'], /--image must be an image reference/],
    [['extra'], /Unexpected argument 'extra'/],
  ])('%j is refused', (argv, message) => {
    expect(() => parseStartFlags(argv)).toThrow(StartUsageError);
    expect(() => parseStartFlags(argv)).toThrow(message);
  });
});

test('splitImage takes the tag after the last slash', () => {
  expect(splitImage('buildkit-fleet:local')).toEqual({ repository: 'buildkit-fleet', tag: 'local' });
  expect(splitImage('reg.example:5000/bkf')).toEqual({ repository: 'reg.example:5000/bkf', tag: 'latest' });
  expect(splitImage('reg.example:5000/bkf:1')).toEqual({ repository: 'reg.example:5000/bkf', tag: '1' });
});

describe('where the platform runs', () => {
  const flags = parseStartFlags([]);
  test('with the real node: the chart, and it says pods really run', () => {
    expect(startMode(flags, undefined)).toMatchObject({ cluster: 'local', realNode: true, install: 'chart' });
    expect(startMode(flags, undefined).why).toMatch(/real node: pods really run/);
  });
  test('without it: in this process, and it says why and what that means', () => {
    const mode = startMode(flags, 'not root');
    expect(mode).toMatchObject({ cluster: 'local', realNode: false, install: 'in-process' });
    expect(mode.why).toMatch(/no real node here: not root.*no container runs/);
  });
  test('--kubeconfig: the chart into that cluster', () => {
    expect(startMode(parseStartFlags(['--kubeconfig', '/k']), 'not root')).toMatchObject({
      cluster: 'existing',
      install: 'chart',
    });
  });
});

describe('progress lines', () => {
  test('a phase change, with the endpoint once Running and the endpoint kept at zero', () => {
    expect(progressLines('demo', {}, { phase: 'Pending' })).toEqual(['demo: Pending']);
    expect(
      progressLines('demo', { phase: 'Pending' }, { phase: 'Running', endpoint: 'tcp://10.96.0.9:1234' }),
    ).toEqual(['demo: Pending -> Running; endpoint tcp://10.96.0.9:1234']);
    expect(
      progressLines(
        'demo',
        { phase: 'Running' },
        { phase: 'ScaledToZero', endpoint: 'tcp://10.96.0.9:1234' },
      ),
    ).toEqual(['demo: Running -> ScaledToZero: its pod is gone, the endpoint tcp://10.96.0.9:1234 stays']);
  });

  test('the idle countdown: each new Active message once', () => {
    const a = { phase: 'Running', active: 'idle 2s of 20s' };
    expect(progressLines('demo', a, a)).toEqual([]);
    expect(progressLines('demo', a, { ...a, active: 'idle 4s of 20s' })).toEqual(['demo: idle 4s of 20s']);
  });
});
