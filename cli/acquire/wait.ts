// Waiting for one Buildkit to be Ready: a watch on it by name from the version last seen, re-opened
// after every change; when the watch ends or is refused, the object is read again (so without
// `watch` permission this degrades to a poll every second). Ends at the deadline, when the
// Buildkit is deleted, or when the caller aborts.
import { setTimeout as sleep } from 'node:timers/promises';

import type { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { Watch } from '@kubernetes/client-node';

import { BUILDKIT, GROUP, VERSION } from '../../api/group.ts';
import type { Buildkit } from '../../api/types.generated.ts';
import { isNotFound } from '../../kube/errors.ts';
import { readiness } from './plan.ts';

export type WaitEnd = 'timeout' | 'deleted' | 'aborted';

/** The wait ended without a Ready Buildkit; `lastReason` is why it was not ready when it did. */
export class WaitFailure extends Error {
  readonly end: WaitEnd;
  readonly lastReason: string;
  constructor(end: WaitEnd, lastReason: string) {
    super(`${end}: ${lastReason}`);
    this.name = 'WaitFailure';
    this.end = end;
    this.lastReason = lastReason;
  }
}

export interface WaitOptions {
  kc: KubeConfig;
  custom: CustomObjectsApi;
  /** the Buildkit as last read (its namespace, name and resourceVersion start the watch) */
  initial: Buildkit;
  timeoutMs: number;
  signal?: AbortSignal;
  /** each version of the Buildkit that is not ready yet (acquire asks for a wake from here) */
  onNotReady?: (buildkit: Buildkit) => Promise<void>;
  /** a new reason why it is not ready */
  onProgress?: (reason: string) => void;
  /** how long a watch stays open before it is re-opened (the server closes it then) */
  watchSeconds?: number;
  /** the pause before reading again after a watch ended */
  retryMs?: number;
}

type Change = { type: 'changed'; buildkit: Buildkit } | { type: 'ended' } | { type: WaitEnd };

/** Resolves with the Buildkit's endpoint once it is Ready; rejects with WaitFailure otherwise. */
export async function waitUntilReady(o: WaitOptions): Promise<string> {
  const deadline = Date.now() + o.timeoutMs;
  const namespace = o.initial.metadata!.namespace!;
  const name = o.initial.metadata!.name!;
  let lastReason = 'not read yet';
  let current = o.initial;
  for (;;) {
    const state = readiness(current);
    if (state.ready) return state.endpoint;
    if (state.reason !== lastReason) {
      lastReason = state.reason;
      o.onProgress?.(state.reason);
    }
    await o.onNotReady?.(current);
    const change = await nextChange(o, namespace, name, current.metadata?.resourceVersion, deadline);
    if (change.type === 'changed') {
      current = change.buildkit;
      continue;
    }
    if (change.type !== 'ended') throw new WaitFailure(change.type, lastReason);
    // the watch ended (closed by the server, refused, broken): read the object again
    const pause = await interruptible(o.retryMs ?? 1000, deadline, o.signal);
    if (pause !== 'ok') throw new WaitFailure(pause, lastReason);
    try {
      current = (await o.custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: BUILDKIT.plural,
        name,
      })) as Buildkit;
    } catch (error) {
      if (isNotFound(error)) throw new WaitFailure('deleted', lastReason);
      throw error;
    }
  }
}

/** Sleeps `ms`, unless the deadline or an abort comes first. */
async function interruptible(ms: number, deadline: number, signal?: AbortSignal): Promise<'ok' | WaitEnd> {
  if (signal?.aborted) return 'aborted';
  const left = deadline - Date.now();
  if (left <= 0) return 'timeout';
  try {
    await sleep(Math.min(ms, left), undefined, { signal });
  } catch {
    return 'aborted';
  }
  return Math.min(ms, left) === left ? 'timeout' : 'ok';
}

/** The first change after `resourceVersion`, or why there is none. */
function nextChange(
  o: WaitOptions,
  namespace: string,
  name: string,
  resourceVersion: string | undefined,
  deadline: number,
): Promise<Change> {
  return new Promise<Change>((resolve) => {
    let settled = false;
    let watch: AbortController | undefined;
    const timer = setTimeout(() => finish({ type: 'timeout' }), Math.max(0, deadline - Date.now()));
    const onAbort = () => finish({ type: 'aborted' });
    function finish(change: Change) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      watch?.abort();
      resolve(change);
    }
    if (o.signal?.aborted) return finish({ type: 'aborted' });
    o.signal?.addEventListener('abort', onAbort, { once: true });
    new Watch(o.kc)
      .watch(
        `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(namespace)}/${BUILDKIT.plural}`,
        {
          fieldSelector: `metadata.name=${name}`,
          timeoutSeconds: o.watchSeconds ?? 25,
          ...(resourceVersion ? { resourceVersion } : {}),
        },
        (type: string, object: Buildkit) => {
          if (type === 'DELETED') return finish({ type: 'deleted' });
          // ERROR: e.g. 410 Gone, the version is too old to watch from; reading again recovers
          if (type === 'ERROR') return finish({ type: 'ended' });
          if (
            (type === 'ADDED' || type === 'MODIFIED') &&
            object.metadata?.resourceVersion !== resourceVersion
          )
            finish({ type: 'changed', buildkit: object });
        },
        () => finish({ type: 'ended' }),
      )
      .then(
        (controller) => {
          watch = controller;
          if (settled) controller.abort();
        },
        () => finish({ type: 'ended' }),
      );
  });
}
