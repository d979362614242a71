// The controller runtime against the real API server: informers on ConfigMaps (label selector)
// and on our custom resources see adds, updates and deletes, resync, and recover on their own
// after their connection breaks while the API server stays unreachable for a while; leader
// election on a Lease: one leader of two, handover on stop, step-down when the Lease is taken
// under the leader or when it cannot renew before its deadline (and never two leaders at once).
//
// Connections are broken with a TCP relay between the client and the API server that can cut
// every open connection and refuse new ones: the same failure a restarting API server or a lost
// network path causes, and one that client-node 2.x does not recover from by itself.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { CoordinationV1Api, CoreV1Api, KubeConfig, V1MicroTime } from '@kubernetes/client-node';
import type { KubernetesObject, V1ConfigMap } from '@kubernetes/client-node';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';

import { Informer } from '../../kube/informer.ts';
import type { InformerHandlers } from '../../kube/informer.ts';
import { LeaderElector } from '../../kube/leader.ts';
import type { LeaderElectorOptions } from '../../kube/leader.ts';
import { buildkitSource, buildkitTemplateSource, configMapSource } from '../../kube/sources.ts';
import { testCluster } from '../../hack/testenv.ts';
import { installCrds } from '../support/crds.ts';
import { startTcpRelay } from '../support/tcp-relay.ts';
import type { WaitOptions } from '../support/wait.ts';
import { waitFor as waitForWith } from '../support/wait.ts';

/** This file polls fast and waits less: watch events arrive within milliseconds. */
const waitFor = <T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
) => waitForWith(what, probe, { timeoutMs, intervalMs: 50 } satisfies WaitOptions);

const cluster = testCluster();
const kc = cluster.kubeConfig;
const core = kc.makeApiClient(CoreV1Api);
const coordination = kc.makeApiClient(CoordinationV1Api);
const id = randomBytes(3).toString('hex');
const LABEL = `bkf-runtime-test/${id}`;
/** Each test takes 1-4 s alone; the margin is for a busy machine running every test file at once. */
const TIMEOUT_MS = 60_000;

let namespace: string;
const cleanups: (() => Promise<unknown> | unknown)[] = [];
let logLines: Record<string, unknown>[] = [];

/** Log lines are kept for assertions; BKF_TEST_LOG=info also prints them. */
function testLogger(component: string): Logger {
  const echo = process.env['BKF_TEST_LOG'];
  return pino(
    { level: 'debug', base: { component } },
    {
      write(line: string) {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        logLines.push(parsed);
        if (echo && (parsed['level'] as number) >= pino.levels.values[echo]!) process.stderr.write(line);
      },
    },
  );
}

const logged = (msg: string, component?: string) =>
  logLines.filter((l) => l['msg'] === msg && (!component || l['component'] === component));

async function counter(registry: Registry, name: string, labels: Record<string, string> = {}) {
  const metric = registry.getSingleMetric(name);
  const values = (await metric?.get())?.values ?? [];
  return values
    .filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))
    .reduce((sum, v) => sum + v.value, 0);
}

interface Relay {
  port: number;
  /** Destroys every open connection. */
  cut(): void;
  /** While on, new connections are closed at once. */
  refuse(on: boolean): void;
  close(): Promise<void>;
}

/** A TCP relay to the API server (TLS passes through untouched) that can refuse connections. */
async function startRelay(target: URL): Promise<Relay> {
  let refusing = false;
  const relay = await startTcpRelay(() =>
    refusing ? undefined : { host: target.hostname, port: Number(target.port || 443) },
  );
  return {
    ...relay,
    refuse(on) {
      refusing = on;
    },
  };
}

/** The test cluster's KubeConfig, reaching the API server through `relay`. */
function throughRelay(relay: Relay): KubeConfig {
  const current = kc.getCurrentCluster()!;
  const server = new URL(current.server);
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: kc
      .getClusters()
      .map((c) =>
        c.name === current.name
          ? { ...c, server: `${server.protocol}//${server.hostname}:${relay.port}` }
          : c,
      ),
    users: kc.getUsers(),
    contexts: kc.getContexts(),
    currentContext: kc.getCurrentContext(),
  });
  return out;
}

/** Records every handler call as `kind name`, plus the objects. */
function recorder<T extends KubernetesObject>() {
  const events: { kind: 'add' | 'update' | 'delete'; object: T; old?: T }[] = [];
  const handlers: InformerHandlers<T> = {
    onAdd: (object) => events.push({ kind: 'add', object }),
    onUpdate: (object, old) => events.push({ kind: 'update', object, old }),
    onDelete: (object) => events.push({ kind: 'delete', object }),
  };
  const seen = (kind: string, name: string) =>
    events.find((e) => e.kind === kind && e.object.metadata?.name === name);
  const names = (kind: string) => events.filter((e) => e.kind === kind).map((e) => e.object.metadata?.name);
  return { events, handlers, seen, names };
}

function startInformer<T extends KubernetesObject>(informer: Informer<T>): Informer<T> {
  cleanups.push(() => informer.stop());
  informer.start();
  return informer;
}

const configMap = (
  name: string,
  labelled: boolean,
  data: Record<string, string> = { v: '1' },
): V1ConfigMap => ({
  metadata: { name, namespace, labels: labelled ? { [LABEL]: 'yes' } : { other: 'yes' } },
  data,
});

beforeAll(async () => {
  namespace = await cluster.createNamespace('ctrl-runtime');
}, TIMEOUT_MS);

beforeEach(() => {
  logLines = [];
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  if (namespace) await cluster.deleteNamespace(namespace);
});

describe('Informer', () => {
  test(
    'ConfigMaps with a label selector: initial list, adds, updates, relabels and deletes; others never seen',
    async () => {
      await core.createNamespacedConfigMap({ namespace, body: configMap('before-start', true) });
      await core.createNamespacedConfigMap({ namespace, body: configMap('unlabelled', false) });
      const registry = new Registry();
      const informer = new Informer({
        kubeConfig: kc,
        source: configMapSource(kc, { namespace, labelSelector: `${LABEL}=yes` }),
        logger: testLogger('informer'),
        registry,
        name: 'cm-basic',
      });
      const rec = recorder<V1ConfigMap>();
      informer.addEventHandler(rec.handlers);
      expect(informer.hasSynced()).toBe(false);
      startInformer(informer);
      await informer.waitForSync({ timeoutMs: 15_000 });
      expect(informer.hasSynced()).toBe(true);
      expect(rec.names('add')).toEqual(['before-start']);
      expect(informer.list().map((c) => c.metadata?.name)).toEqual(['before-start']);

      await core.createNamespacedConfigMap({ namespace, body: configMap('created', true) });
      await waitFor('add of created', () => rec.seen('add', 'created'));
      expect(informer.get(namespace, 'created')?.data).toEqual({ v: '1' });

      await core.replaceNamespacedConfigMap({
        name: 'created',
        namespace,
        body: configMap('created', true, { v: '2' }),
      });
      const update = await waitFor('update of created', () => rec.seen('update', 'created'));
      expect(update.object.data).toEqual({ v: '2' });
      expect(update.old?.data).toEqual({ v: '1' });
      expect(informer.get(namespace, 'created')?.data).toEqual({ v: '2' });

      // Listed and watched objects have the same shape (Date timestamps), however they arrived.
      expect(informer.get(namespace, 'before-start')?.metadata?.creationTimestamp).toBeInstanceOf(Date);
      expect(informer.get(namespace, 'created')?.metadata?.creationTimestamp).toBeInstanceOf(Date);

      // Leaving the selector is a delete for this informer; entering it an add.
      await core.replaceNamespacedConfigMap({
        name: 'before-start',
        namespace,
        body: configMap('before-start', false),
      });
      await core.replaceNamespacedConfigMap({
        name: 'unlabelled',
        namespace,
        body: configMap('unlabelled', true),
      });
      await waitFor('relabel delete', () => rec.seen('delete', 'before-start'));
      await waitFor('relabel add', () => rec.seen('add', 'unlabelled'));

      await core.deleteNamespacedConfigMap({ name: 'created', namespace });
      await waitFor('delete of created', () => rec.seen('delete', 'created'));
      expect(informer.get(namespace, 'created')).toBeUndefined();
      expect(informer.list().map((c) => c.metadata?.name)).toEqual(['unlabelled']);

      expect(await counter(registry, 'buildkit_fleet_informer_synced', { informer: 'cm-basic' })).toBe(1);
      expect(await counter(registry, 'buildkit_fleet_informer_objects', { informer: 'cm-basic' })).toBe(1);
      expect(
        await counter(registry, 'buildkit_fleet_informer_watch_events_total', { informer: 'cm-basic' }),
      ).toBeGreaterThanOrEqual(5);
      expect(await counter(registry, 'buildkit_fleet_informer_restarts_total')).toBe(0);

      // After stop, nothing more is delivered.
      await informer.stop();
      const count = rec.events.length;
      await core.createNamespacedConfigMap({ namespace, body: configMap('after-stop', true) });
      await sleep(500);
      expect(rec.events).toHaveLength(count);
    },
    TIMEOUT_MS,
  );

  test(
    'restarts by itself after its connection is cut and the API server stays unreachable, and catches up',
    async () => {
      const relay = await startRelay(new URL(kc.getCurrentCluster()!.server));
      cleanups.push(() => relay.close());
      const viaRelay = throughRelay(relay);
      const selector = `${LABEL}=outage`;
      const labelled = (name: string): V1ConfigMap => ({
        metadata: { name, namespace, labels: { [LABEL]: 'outage' } },
        data: { v: '1' },
      });
      await core.createNamespacedConfigMap({ namespace, body: labelled('outage-kept') });
      await core.createNamespacedConfigMap({ namespace, body: labelled('outage-deleted') });
      const registry = new Registry();
      const informer = new Informer({
        kubeConfig: viaRelay,
        source: configMapSource(viaRelay, { namespace, labelSelector: selector }),
        logger: testLogger('informer'),
        registry,
        name: 'cm-outage',
        restartBaseMs: 100,
        restartMaxMs: 800,
      });
      const rec = recorder<V1ConfigMap>();
      informer.addEventHandler(rec.handlers);
      startInformer(informer);
      await informer.waitForSync({ timeoutMs: 15_000 });
      expect(rec.names('add').sort()).toEqual(['outage-deleted', 'outage-kept']);

      // Outage: every connection is cut and new ones are refused for 3 s, while the API server
      // (reached directly) sees a create and a delete the informer has to find out about.
      relay.refuse(true);
      relay.cut();
      const failedAt = Date.now();
      await waitFor('a restart to be logged', () => logged('list/watch failed; restarting').length > 0);
      await core.createNamespacedConfigMap({ namespace, body: labelled('outage-created') });
      await core.deleteNamespacedConfigMap({ name: 'outage-deleted', namespace });
      await sleep(Math.max(0, 3000 - (Date.now() - failedAt)));
      const failures = logged('list/watch failed; restarting');
      expect(failures.length).toBeGreaterThanOrEqual(2); // it kept trying, with growing delays
      expect(failures.map((l) => l['delayMs'])).toEqual(failures.map((_, i) => Math.min(800, 100 * 2 ** i)));
      expect(rec.seen('add', 'outage-created')).toBeUndefined();

      relay.refuse(false);
      const recovered = Date.now();
      await waitFor('the add made during the outage', () => rec.seen('add', 'outage-created'), 15_000);
      await waitFor('the delete made during the outage', () => rec.seen('delete', 'outage-deleted'), 15_000);
      const catchUpMs = Date.now() - recovered;
      expect(
        informer
          .list()
          .map((c) => c.metadata?.name)
          .sort(),
      ).toEqual(['outage-created', 'outage-kept']);
      expect(
        await counter(registry, 'buildkit_fleet_informer_restarts_total', { informer: 'cm-outage' }),
      ).toBe(logged('list/watch failed; restarting').length);

      // And it keeps watching afterwards.
      await core.replaceNamespacedConfigMap({
        name: 'outage-kept',
        namespace,
        body: { ...labelled('outage-kept'), data: { v: '2' } },
      });
      await waitFor('an update after recovery', () =>
        rec.events.find((e) => e.kind === 'update' && e.object.data?.['v'] === '2'),
      );
      console.log(
        `informer outage: ${failures.length} restarts in 3 s; caught up ${catchUpMs} ms after recovery`,
      );
    },
    TIMEOUT_MS,
  );

  test(
    'resync delivers every cached object again as an update (old === object)',
    async () => {
      await core.createNamespacedConfigMap({
        namespace,
        body: { metadata: { name: 'resync-a', namespace, labels: { [LABEL]: 'resync' } } },
      });
      const registry = new Registry();
      const informer = new Informer({
        kubeConfig: kc,
        source: configMapSource(kc, { namespace, labelSelector: `${LABEL}=resync` }),
        logger: testLogger('informer'),
        registry,
        name: 'cm-resync',
        resyncMs: 300,
      });
      const rec = recorder<V1ConfigMap>();
      informer.addEventHandler(rec.handlers);
      startInformer(informer);
      await informer.waitForSync({ timeoutMs: 15_000 });
      const resynced = await waitFor('two resyncs', () => {
        const updates = rec.events.filter((e) => e.kind === 'update');
        return updates.length >= 2 && updates;
      });
      for (const u of resynced) {
        expect(u.object.metadata?.name).toBe('resync-a');
        expect(u.old).toBe(u.object);
      }
      expect(await counter(registry, 'buildkit_fleet_informer_resyncs_total')).toBeGreaterThanOrEqual(2);
    },
    TIMEOUT_MS,
  );

  test(
    'custom resources across all namespaces: BuildkitTemplates and Buildkits',
    async () => {
      await installCrds();
      const logger = testLogger('informer');
      const templates = new Informer({ kubeConfig: kc, source: buildkitTemplateSource(kc), logger });
      const buildkits = new Informer({ kubeConfig: kc, source: buildkitSource(kc), logger });
      const templateEvents = recorder();
      const buildkitEvents = recorder();
      templates.addEventHandler(templateEvents.handlers);
      buildkits.addEventHandler(buildkitEvents.handlers);
      startInformer(templates);
      startInformer(buildkits);
      await Promise.all([
        templates.waitForSync({ timeoutMs: 15_000 }),
        buildkits.waitForSync({ timeoutMs: 15_000 }),
      ]);

      const name = `runtime-${id}`;
      await cluster.kubectl(['apply', '-n', namespace, '-f', '-'], {
        input:
          `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: ${name}\n` +
          'spec:\n  image: moby/buildkit:v0.13.1\n---\n' +
          `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: ${name}\n` +
          `spec:\n  template: ${name}\n`,
      });
      const added = await waitFor('the template add', () => templateEvents.seen('add', name));
      expect(added.object.metadata?.namespace).toBe(namespace);
      await waitFor('the buildkit add', () => buildkitEvents.seen('add', name));
      expect(templates.get(namespace, name)).toMatchObject({ spec: { image: 'moby/buildkit:v0.13.1' } });
      expect(buildkits.get(namespace, name)).toMatchObject({ spec: { template: name } });

      await cluster.kubectl(['delete', '-n', namespace, `buildkit/${name}`, `buildkittemplate/${name}`]);
      await waitFor('the template delete', () => templateEvents.seen('delete', name));
      await waitFor('the buildkit delete', () => buildkitEvents.seen('delete', name));
      expect(templates.get(namespace, name)).toBeUndefined();
    },
    TIMEOUT_MS,
  );
});

describe('LeaderElector', () => {
  // Short but valid durations (lease > renew deadline > retry period), as client-go requires.
  const timing = { leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 300 };
  const electors: LeaderElector[] = [];

  afterEach(async () => {
    await Promise.all(electors.splice(0).map((e) => e.stop()));
  });

  interface Candidate {
    elector: LeaderElector;
    registry: Registry;
    /** `started@<ms>` and `stopped@<ms>` entries. */
    log: string[];
    /** Signal of the current term. */
    signal?: AbortSignal;
    /** When the leading work last finished winding down. */
    workEnded?: number;
  }

  /** `windDownMs`: the leading work takes this long to finish once its signal aborts. */
  function candidate(
    identity: string,
    leaseName: string,
    options: Partial<LeaderElectorOptions> & { windDownMs?: number } = {},
  ): Candidate {
    const { windDownMs, ...electorOptions } = options;
    const c: Candidate = {
      elector: undefined as unknown as LeaderElector,
      registry: new Registry(),
      log: [],
    };
    c.elector = new LeaderElector({
      kubeConfig: kc,
      namespace,
      name: leaseName,
      identity,
      logger: testLogger(identity),
      registry: c.registry,
      ...timing,
      onStartedLeading: (signal) => {
        c.signal = signal;
        c.log.push(`started@${Date.now()}`);
        if (windDownMs === undefined) return;
        return new Promise<void>((resolve) =>
          signal.addEventListener('abort', () =>
            setTimeout(() => {
              c.workEnded = Date.now();
              resolve();
            }, windDownMs),
          ),
        );
      },
      onStoppedLeading: () => c.log.push(`stopped@${Date.now()}`),
      ...electorOptions,
    });
    electors.push(c.elector);
    return c;
  }

  const readLease = (name: string) => coordination.readNamespacedLease({ name, namespace });
  const at = (entry: string | undefined) => Number(entry?.split('@')[1]);

  test(
    'two candidates: exactly one leads; stopping it hands over within a few seconds, after its work ended',
    async () => {
      const leaseName = `runtime-${id}-handover`;
      // The leader's work takes 400 ms to wind down once told to stop; the Lease must stay held
      // (nobody else leads) until it has. A 10 s lease (6 s renew deadline): a loaded machine
      // does not cost the leader its term mid-test, and a handover well inside the lease duration
      // can only come from the Lease being released.
      const slow = { leaseDurationMs: 10_000, renewDeadlineMs: 6000, windDownMs: 400 };
      const a = candidate('replica-a', leaseName, slow);
      const b = candidate('replica-b', leaseName, slow);
      a.elector.start();
      b.elector.start();
      const leader = await waitFor('a leader', () => [a, b].find((c) => c.elector.isLeader()), 15_000);
      const follower = leader === a ? b : a;

      // For 2 s (several renewals): exactly one leads, and the Lease names it.
      const until = Date.now() + 2000;
      while (Date.now() < until) {
        expect([a, b].filter((c) => c.elector.isLeader())).toEqual([leader]);
        await sleep(50);
      }
      const held = await readLease(leaseName);
      expect(held.spec?.holderIdentity).toBe(leader.elector.identity);
      expect(held.spec?.leaseDurationSeconds).toBe(10);
      expect(follower.elector.leader()).toBe(leader.elector.identity);
      expect(await counter(leader.registry, 'buildkit_fleet_leader_is_leader')).toBe(1);
      expect(await counter(follower.registry, 'buildkit_fleet_leader_is_leader')).toBe(0);

      const stoppedAt = Date.now();
      await leader.elector.stop();
      expect(leader.signal?.aborted).toBe(true);
      expect(leader.log).toHaveLength(2);
      expect(at(leader.log[1])).toBeGreaterThanOrEqual(leader.workEnded!); // onStoppedLeading after the work

      await waitFor('the follower to lead', () => follower.elector.isLeader(), 5000);
      const handoverMs = at(follower.log[0]) - stoppedAt;
      expect(at(follower.log[0])).toBeGreaterThanOrEqual(leader.workEnded!);
      expect(handoverMs).toBeLessThan(3000);
      const taken = await readLease(leaseName);
      expect(taken.spec?.holderIdentity).toBe(follower.elector.identity);
      expect(taken.spec?.leaseTransitions).toBeGreaterThanOrEqual(1);
      expect(
        await counter(leader.registry, 'buildkit_fleet_leader_transitions_total', { event: 'released' }),
      ).toBe(1);
      expect(logged('released the Lease', leader.elector.identity)).toHaveLength(1);
      console.log(`leader handover after stop: ${handoverMs} ms (the old leader's work took 400 ms of it)`);
    },
    TIMEOUT_MS,
  );

  test(
    'a leader whose Lease is taken under it steps down at its next renewal, then waits for expiry',
    async () => {
      const leaseName = `runtime-${id}-taken`;
      const a = candidate('replica-a', leaseName);
      a.elector.start();
      await waitFor('a to lead', () => a.elector.isLeader(), 15_000);

      const lease = await readLease(leaseName);
      const now = Date.now();
      await coordination.replaceNamespacedLease({
        name: leaseName,
        namespace,
        body: {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: 'intruder',
            renewTime: new V1MicroTime(now),
            leaseDurationSeconds: 3,
          },
        },
      });
      await waitFor('a to step down', () => !a.elector.isLeader(), 3000);
      const stepDownMs = Date.now() - now;
      expect(a.signal?.aborted).toBe(true);
      expect(a.log.map((l) => l.split('@')[0])).toEqual(['started', 'stopped']);
      expect(logged('stopped leading: the Lease is held by another replica', 'replica-a')[0]).toMatchObject({
        holder: 'intruder',
        lease: `${namespace}/${leaseName}`,
      });
      expect(await counter(a.registry, 'buildkit_fleet_leader_transitions_total', { event: 'lost' })).toBe(1);
      expect(await counter(a.registry, 'buildkit_fleet_leader_is_leader')).toBe(0);
      // Not released: it is not ours any more.
      expect((await readLease(leaseName)).spec?.holderIdentity).toBe('intruder');

      // The intruder never renews: a takes the Lease back once it has expired (3 s after a saw it).
      await waitFor('a to lead again', () => a.elector.isLeader(), 8000);
      const backAfterMs = Date.now() - now;
      expect(backAfterMs).toBeGreaterThanOrEqual(2900);
      expect((await readLease(leaseName)).spec?.holderIdentity).toBe('replica-a');
      console.log(`lease taken: stepped down after ${stepDownMs} ms, led again after ${backAfterMs} ms`);
    },
    TIMEOUT_MS,
  );

  test(
    'a leader cut off from the API server steps down at its renew deadline, before anyone else leads',
    async () => {
      const leaseName = `runtime-${id}-cutoff`;
      const relay = await startRelay(new URL(kc.getCurrentCluster()!.server));
      cleanups.push(() => relay.close());
      const a = candidate('replica-a', leaseName, { kubeConfig: throughRelay(relay) });
      a.elector.start();
      await waitFor('a to lead', () => a.elector.isLeader(), 15_000);
      const b = candidate('replica-b', leaseName);
      b.elector.start();
      await waitFor('b to see a as leader', () => b.elector.leader() === 'replica-a', 5000);

      relay.refuse(true);
      relay.cut();
      const cutAt = Date.now();
      await waitFor('a to step down', () => !a.elector.isLeader(), 6000);
      const stepDownMs = Date.now() - cutAt;
      await waitFor('b to lead', () => b.elector.isLeader(), 8000);
      const takeoverMs = at(b.log[0]) - cutAt;

      // a renewed at most one retry period before the cut, so it stepped down about a renew
      // deadline later; b waited a whole lease duration after the last renewal it saw.
      expect(stepDownMs).toBeGreaterThanOrEqual(timing.renewDeadlineMs - timing.retryPeriodMs - 100);
      expect(stepDownMs).toBeLessThan(timing.renewDeadlineMs + 1500);
      expect(at(a.log[1])).toBeLessThan(at(b.log[0])); // never two leaders
      expect(takeoverMs).toBeGreaterThanOrEqual(timing.leaseDurationMs - timing.retryPeriodMs - 100);
      expect(
        logged('stopped leading: could not renew the Lease within the renew deadline', 'replica-a'),
      ).toHaveLength(1);
      expect(await counter(a.registry, 'buildkit_fleet_leader_errors_total')).toBeGreaterThan(0);
      console.log(
        `cut-off leader stepped down after ${stepDownMs} ms; the other took over after ${takeoverMs} ms`,
      );
    },
    TIMEOUT_MS,
  );
});
