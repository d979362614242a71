import { REASON } from '../../../../api/conditions.ts';
import type {
  IdleInput,
  SidecarReading,
  SidecarStats,
} from '../../../../controller/autoscale/idle-decision.ts';
import { decideIdle, humanSpan } from '../../../../controller/autoscale/idle-decision.ts';

const T0 = Date.parse('2026-12-01T10:00:00Z');
const MIN = 60_000;

const stats = (s: Partial<SidecarStats> = {}): SidecarStats => ({
  bootId: 'boot-a',
  open: 0,
  opened: 4,
  lastActivity: '2026-12-01T09:59:00.000Z',
  ...s,
});
const ok = (s: Partial<SidecarStats> = {}, readAtMs = T0): SidecarReading => ({
  ok: true,
  stats: stats(s),
  readAtMs,
});

function input(o: Partial<IdleInput> = {}): IdleInput {
  return {
    nowMs: T0,
    idleTimeoutMs: 5 * MIN,
    pods: ['bk-0'],
    readings: new Map([['bk-0', ok()]]),
    maxReadingAgeMs: 10_000,
    record: undefined,
    ...o,
  };
}

test('the first idle reading starts the clock now and keeps the pod', () => {
  const d = decideIdle(input());
  expect(d.scaleDown).toBe(false);
  expect(d.reason).toBe(REASON.IdleBelowTimeout);
  expect(d.record).toEqual({
    idleSince: '2026-12-01T10:00:00.000Z',
    idleEvidence: [{ pod: 'bk-0', bootId: 'boot-a', opened: 4 }],
  });
  expect(d.message).toBe(
    'no connection since 2026-12-01T10:00:00.000Z: scales to zero at 2026-12-01T10:05:00.000Z (timeout 5m)',
  );
  expect(d.lastActivity).toBe('2026-12-01T09:59:00.000Z');
});

test('the persisted clock runs on when fresh readings confirm it, and scales down at the timeout', () => {
  const first = decideIdle(input());
  const later = T0 + 5 * MIN;
  const d = decideIdle(
    input({ nowMs: later, readings: new Map([['bk-0', ok({}, later)]]), record: first.record }),
  );
  expect(d.scaleDown).toBe(true);
  expect(d.reason).toBe(REASON.ScalingDown);
  expect(d.message).toBe('idle 5m of 5m: scaling to zero');
  // one ms short of the timeout is not enough
  const early = decideIdle(
    input({ nowMs: later - 1, readings: new Map([['bk-0', ok({}, later - 1)]]), record: first.record }),
  );
  expect(early.scaleDown).toBe(false);
});

test('a restart of the controller neither restarts the clock nor shortens it', () => {
  // The record came from the object; the new leader has one fresh reading with the same counters.
  const record = {
    idleSince: new Date(T0 - 4 * MIN).toISOString(),
    idleEvidence: [{ pod: 'bk-0', bootId: 'boot-a', opened: 4 }],
  };
  const d = decideIdle(input({ record }));
  expect(d.record.idleSince).toBe(record.idleSince); // not restarted
  expect(d.scaleDown).toBe(false); // 4m of 5m: not shortened
  expect(
    decideIdle(input({ record, nowMs: T0 + MIN, readings: new Map([['bk-0', ok({}, T0 + MIN)]]) })).scaleDown,
  ).toBe(true);
});

test('without a fresh reading of every pod nothing scales down, however old the record', () => {
  const record = {
    idleSince: new Date(T0 - 60 * MIN).toISOString(),
    idleEvidence: [{ pod: 'bk-0', bootId: 'boot-a', opened: 4 }],
  };
  const missing = decideIdle(input({ record, readings: new Map() }));
  expect(missing).toMatchObject({ scaleDown: false, reason: REASON.AwaitingFreshStats });
  expect(missing.message).toBe('sidecar of pod bk-0 not read yet: treated as active');
  expect(missing.record).toEqual(record); // unknown blocks, but is no evidence of activity
  const stale = decideIdle(input({ record, readings: new Map([['bk-0', ok({}, T0 - 11_000)]]) }));
  expect(stale).toMatchObject({
    scaleDown: false,
    reason: REASON.SidecarUnreachable,
    message: 'last reading of pod bk-0 is 11s old: treated as active',
  });
  const down = decideIdle(
    input({
      record,
      readings: new Map([['bk-0', { ok: false, error: 'connect ECONNREFUSED', readAtMs: T0 }]]),
    }),
  );
  expect(down).toMatchObject({ scaleDown: false, reason: REASON.SidecarUnreachable });
  expect(down.message).toBe('sidecar of pod bk-0 unreachable (connect ECONNREFUSED): treated as active');
  const secondPod = decideIdle(input({ record, pods: ['bk-0', 'bk-1'] }));
  expect(secondPod.scaleDown).toBe(false);
});

test('an open connection keeps the target awake even with no traffic, and clears the clock', () => {
  const record = {
    idleSince: new Date(T0 - 60 * MIN).toISOString(),
    idleEvidence: [{ pod: 'bk-0', bootId: 'boot-a', opened: 4 }],
  };
  const d = decideIdle(
    input({
      record,
      readings: new Map([['bk-0', ok({ open: 2, opened: 6, lastActivity: '2026-12-01T08:00:00.000Z' })]]),
    }),
  );
  expect(d).toMatchObject({
    scaleDown: false,
    reason: REASON.OpenConnections,
    message: '2 open connections',
    record: {},
  });
  const queued = decideIdle(input({ record, readings: new Map([['bk-0', ok({ backlog: 1 })]]) }));
  expect(queued).toMatchObject({
    scaleDown: false,
    reason: REASON.OpenConnections,
    message: '1 waiting to be accepted',
  });
});

test('a connection opened and closed between readings, a restarted sidecar or a new pod starts the clock again', () => {
  const record = {
    idleSince: new Date(T0 - 60 * MIN).toISOString(),
    idleEvidence: [{ pod: 'bk-0', bootId: 'boot-a', opened: 4 }],
  };
  const busy = decideIdle(input({ record, readings: new Map([['bk-0', ok({ opened: 5 })]]) }));
  expect(busy).toMatchObject({ scaleDown: false, reason: REASON.IdleBelowTimeout });
  expect(busy.record.idleSince).toBe(new Date(T0).toISOString());
  const restarted = decideIdle(
    input({ record, readings: new Map([['bk-0', ok({ bootId: 'boot-b', opened: 0 })]]) }),
  );
  expect(restarted).toMatchObject({ scaleDown: false, reason: REASON.SidecarRestarted });
  expect(restarted.record).toEqual({
    idleSince: new Date(T0).toISOString(),
    idleEvidence: [{ pod: 'bk-0', bootId: 'boot-b', opened: 0 }],
  });
  const replaced = decideIdle(input({ record, pods: ['bk-9'], readings: new Map([['bk-9', ok()]]) }));
  expect(replaced.record.idleSince).toBe(new Date(T0).toISOString());
});

test('humanSpan rounds to readable units', () => {
  expect([
    humanSpan(999),
    humanSpan(45_000),
    humanSpan(192_000),
    humanSpan(3_900_000),
    humanSpan(7_200_000),
  ]).toEqual(['0s', '45s', '3m12s', '1h5m', '2h']);
});

test('a pod that is not Ready yet keeps the idle clock from starting, and keeps a running one as it is', () => {
  const d = decideIdle(input({ notReady: ['bk-0'] }));
  expect(d).toMatchObject({
    scaleDown: false,
    reason: REASON.AwaitingFreshStats,
    message: 'pod bk-0 is not ready: the idle clock waits for it',
    record: {},
  });
  const record = {
    idleSince: new Date(T0 - 60 * MIN).toISOString(),
    idleEvidence: [{ pod: 'bk-0', bootId: 'boot-a', opened: 4 }],
  };
  expect(decideIdle(input({ notReady: ['bk-0'], record })).record).toEqual(record);
});
