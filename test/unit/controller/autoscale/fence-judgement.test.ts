import type { FenceReading } from '../../../../controller/autoscale/fence-judgement.ts';
import { judgeFence } from '../../../../controller/autoscale/fence-judgement.ts';

const evidence = [
  { pod: 'a', bootId: 'b1', opened: 3 },
  { pod: 'b', bootId: 'b2', opened: 7 },
];
const reading = (o: Partial<FenceReading> = {}): FenceReading => ({
  bootId: 'b1',
  open: 0,
  opened: 3,
  backlog: 0,
  fenced: true,
  fenceBroken: false,
  ...o,
});
const both = (
  a: FenceReading | { error: string },
  b: FenceReading | { error: string } = reading({ bootId: 'b2', opened: 7 }),
) =>
  new Map([
    ['a', a],
    ['b', b],
  ]);

test('a fence that still shows the idle state of every pod is clean', () => {
  expect(judgeFence(evidence, both(reading()))).toEqual({ clean: true });
});

test.each([
  [
    'a connection accepted under the fence',
    reading({ fenceBroken: true, opened: 4, open: 1 }),
    'pod a: a client connected under the fence',
  ],
  ['an open connection', reading({ open: 1 }), 'pod a: 1 open connection(s)'],
  [
    'a connection in the accept queue',
    reading({ backlog: 2 }),
    'pod a: 2 connection(s) waiting to be accepted',
  ],
  [
    'a connection between the idle reading and the fence',
    reading({ opened: 5 }),
    'pod a: 2 connection(s) since the idle clock started',
  ],
  ['a restarted sidecar', reading({ bootId: 'other' }), 'pod a: the sidecar restarted'],
  ['a sidecar that lost its fence', reading({ fenced: false }), 'pod a: the sidecar is not fenced'],
  ['an unreadable sidecar', { error: 'timed out' }, 'pod a: timed out'],
])('%s aborts the scale-down', (_what, a, reason) => {
  expect(judgeFence(evidence, both(a))).toEqual({ clean: false, reason });
});

test('a pod whose fence was not read, or no evidence at all, aborts', () => {
  expect(judgeFence(evidence, new Map([['a', reading()]]))).toEqual({
    clean: false,
    reason: 'pod b: fence not read',
  });
  expect(judgeFence([], new Map())).toMatchObject({ clean: false });
});
