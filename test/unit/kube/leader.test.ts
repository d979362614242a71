// Leader election rules on an in-memory Lease and a hand-moved clock: when a Lease counts as
// expired (observed time, and renewTime only beyond the clock-skew allowance), step-down at the
// renew deadline when requests hang, a lost create race, and releasing on stop.
import type { V1Lease } from '@kubernetes/client-node';
import { V1MicroTime } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import { ManualClock } from '../../../kube/clock.ts';
import { LeaderElector } from '../../../kube/leader.ts';
import type { LeaderElectorOptions, LeaseClient } from '../../../kube/leader.ts';

const silent = pino({ level: 'silent' });
const status = (code: number) => Object.assign(new Error(`HTTP ${code}`), { code });

/** One Lease kept the way the API server keeps it: resourceVersion checked on replace. */
class MemoryLeases implements LeaseClient {
  lease: V1Lease | undefined;
  private rv = 0;
  hang = false;
  /** Runs before a create is stored (to simulate a racing replica). */
  beforeCreate: (() => void) | undefined;
  calls: string[] = [];

  private stored(lease: V1Lease): V1Lease {
    this.lease = JSON.parse(
      JSON.stringify({ ...lease, metadata: { ...lease.metadata, resourceVersion: String(++this.rv) } }),
    );
    return JSON.parse(JSON.stringify(this.lease));
  }

  private async gate(call: string): Promise<void> {
    this.calls.push(call);
    if (this.hang) await new Promise(() => {});
  }

  async get(): Promise<V1Lease> {
    await this.gate('get');
    if (!this.lease) throw status(404);
    return JSON.parse(JSON.stringify(this.lease));
  }

  async create(_ns: string, lease: V1Lease): Promise<V1Lease> {
    await this.gate('create');
    this.beforeCreate?.();
    if (this.lease) throw status(409);
    return this.stored(lease);
  }

  async replace(_ns: string, _name: string, lease: V1Lease): Promise<V1Lease> {
    await this.gate('replace');
    if (!this.lease) throw status(404);
    if (lease.metadata?.resourceVersion !== this.lease.metadata?.resourceVersion) throw status(409);
    return this.stored(lease);
  }

  /** What another replica (with its own clock) writes. */
  set(holder: string, renewTimeMs: number, leaseDurationSeconds = 15): void {
    this.stored({
      metadata: { name: 'lease', namespace: 'ns', resourceVersion: this.lease?.metadata?.resourceVersion },
      spec: {
        holderIdentity: holder,
        renewTime: new V1MicroTime(renewTimeMs),
        acquireTime: new V1MicroTime(renewTimeMs),
        leaseDurationSeconds,
        leaseTransitions: 3,
      },
    });
  }
}

let clock: ManualClock;
let leases: MemoryLeases;
const electors: LeaderElector[] = [];

function elector(options: Partial<LeaderElectorOptions> = {}) {
  const events: string[] = [];
  const e = new LeaderElector({
    namespace: 'ns',
    name: 'lease',
    identity: 'me',
    client: leases,
    clock,
    logger: silent,
    registry: new Registry(),
    jitter: 0,
    onStartedLeading: () => void events.push(`started@${clock.now()}`),
    onStoppedLeading: () => events.push(`stopped@${clock.now()}`),
    ...options,
  });
  electors.push(e);
  return { e, events };
}

beforeEach(() => {
  clock = new ManualClock(1_000_000);
  leases = new MemoryLeases();
});

afterEach(async () => {
  leases.hang = false;
  await Promise.all(electors.splice(0).map((e) => e.stop()));
});

test('an absent Lease is created with us as holder, microsecond times and a whole-second duration', async () => {
  const { e, events } = elector();
  e.start();
  await clock.advance(0);
  expect(e.isLeader()).toBe(true);
  expect(events).toEqual(['started@1000000']);
  expect(leases.lease?.spec).toMatchObject({
    holderIdentity: 'me',
    leaseDurationSeconds: 15,
    leaseTransitions: 0,
    renewTime: '1970-01-01T00:16:40.000000Z',
  });
});

test('the leader renews every retry period, writing over its own last write (one request each)', async () => {
  const { e } = elector();
  e.start();
  await clock.advance(0);
  leases.calls = [];
  await clock.advance(6000);
  expect(leases.calls).toEqual(['replace', 'replace', 'replace']);
  expect(new Date(String(leases.lease?.spec?.renewTime)).getTime()).toBe(1_006_000);
  expect(e.isLeader()).toBe(true);
});

test('a Lease held by another replica that keeps renewing is never taken', async () => {
  leases.set('other', clock.now());
  const { e } = elector();
  e.start();
  for (let i = 0; i < 20; i++) {
    await clock.advance(2000);
    leases.set('other', clock.now());
  }
  expect(e.isLeader()).toBe(false);
  expect(e.leader()).toBe('other');
});

test('a Lease that stops changing is taken leaseDuration after we first saw it, not before', async () => {
  leases.set('other', clock.now());
  const { e, events } = elector();
  e.start();
  await clock.advance(14_000);
  expect(e.isLeader()).toBe(false);
  await clock.advance(2000);
  expect(e.isLeader()).toBe(true);
  expect(events).toEqual(['started@1016000']);
  expect(leases.lease?.spec).toMatchObject({ holderIdentity: 'me', leaseTransitions: 4 });
});

test('renewTime counts only beyond the clock-skew allowance: a long-dead Lease is taken at once', async () => {
  leases.set('crashed', clock.now() - 31_000); // older than 15 s + 15 s skew allowance
  const { e } = elector();
  e.start();
  await clock.advance(0);
  expect(e.isLeader()).toBe(true);
});

test('a holder whose clock lags 20 s but keeps renewing keeps its Lease (skew tolerated)', async () => {
  const lag = 20_000;
  leases.set('lagging', clock.now() - lag);
  const { e } = elector();
  e.start();
  for (let i = 0; i < 20; i++) {
    await clock.advance(2000);
    leases.set('lagging', clock.now() - lag);
  }
  expect(e.isLeader()).toBe(false);
});

test('a leader whose requests hang steps down at the renew deadline', async () => {
  const { e, events } = elector();
  e.start();
  await clock.advance(0);
  await clock.advance(2000); // one good renewal at +2 s
  leases.hang = true;
  await clock.advance(9900);
  expect(e.isLeader()).toBe(true);
  await clock.advance(200);
  expect(e.isLeader()).toBe(false);
  expect(events).toEqual(['started@1000000', 'stopped@1012000']);
});

test('losing the create race to another replica is not leading', async () => {
  leases.beforeCreate = () => {
    leases.beforeCreate = undefined;
    leases.set('faster', clock.now());
  };
  const { e, events } = elector();
  e.start();
  await clock.advance(0);
  expect(e.isLeader()).toBe(false);
  expect(events).toEqual([]);
  await clock.advance(2000); // the next attempt reads who won
  expect(e.leader()).toBe('faster');
  expect(e.isLeader()).toBe(false);
});

test('stop releases the Lease (no holder) after the leading work has ended', async () => {
  let signal: AbortSignal | undefined;
  let holderWhenWorkEnded: string | undefined;
  const { e, events } = elector({
    onStartedLeading: (s) => {
      signal = s;
      return new Promise<void>((resolve) =>
        s.addEventListener('abort', () => {
          holderWhenWorkEnded = leases.lease?.spec?.holderIdentity;
          resolve();
        }),
      );
    },
  });
  e.start();
  await clock.advance(0);
  expect(e.isLeader()).toBe(true);
  await e.stop();
  expect(signal?.aborted).toBe(true);
  expect(holderWhenWorkEnded).toBe('me');
  expect(leases.lease?.spec).toMatchObject({ holderIdentity: '', leaseDurationSeconds: 1 });
  expect(events).toEqual(['stopped@1000000']);
});

test('leading work that ends on its own gives the Lease up, and campaigning goes on', async () => {
  let terms = 0;
  const { e } = elector({
    onStartedLeading: (signal) => {
      terms++;
      if (terms === 1) return Promise.reject(new Error('controller crashed'));
      return new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
    },
  });
  e.start();
  await clock.advance(0);
  expect(leases.lease?.spec?.holderIdentity).toBe('');
  expect(e.isLeader()).toBe(false);
  await clock.advance(2000);
  expect(e.isLeader()).toBe(true);
  expect(terms).toBe(2);
});

test('durations are checked as client-go checks them', () => {
  expect(() => elector({ leaseDurationMs: 10_000, renewDeadlineMs: 10_000 })).toThrow(
    'greater than renewDeadline',
  );
  expect(() => elector({ renewDeadlineMs: 2000, retryPeriodMs: 2000 })).toThrow('greater than retryPeriod');
  expect(() => elector({ leaseDurationMs: 15_500 })).toThrow('whole seconds');
});
