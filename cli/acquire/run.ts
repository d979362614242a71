// The API calls of `buildkit-fleet acquire` and `release`. acquire checks what it needs before it
// creates anything (the template, the owner pod), then creates (or reuses) the Buildkit, wakes it
// if it is at zero, waits until it is Ready and prints where to connect. Whatever fails after it
// created the Buildkit, the Buildkit is deleted again, so a failed CI job leaves nothing behind.
import type { KubeConfig } from '@kubernetes/client-node';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';

import { formatDuration } from '../../api/duration.ts';
import { BUILDKIT, BUILDKIT_TEMPLATE, GROUP, VERSION } from '../../api/group.ts';
import type { Buildkit } from '../../api/types.generated.ts';
import { StartupError } from '../../flags/errors.ts';
import {
  apiErrorText,
  errorMessage,
  errorStatus,
  isConflict,
  isForbidden,
  isNotFound,
} from '../../kube/errors.ts';
import { loadKubeConfig } from '../../kube/load-kube-config.ts';
import type { Io } from '../commands.ts';
import type { AcquireRequest, OwnerPod, ReleaseRequest } from './plan.ts';
import {
  buildkitToCreate,
  existingProblem,
  needsWake,
  resolveNamespace,
  shellAssignments,
  wakePatch,
} from './plan.ts';
import { WaitFailure, waitUntilReady } from './wait.ts';

/** client-node sends patches as JSON Patch by default; the wake request is a merge patch. */
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** What the API server said, in one line, with a hint when it was a permission. */
function problem(error: unknown): string {
  const text = (error as { body?: unknown }).body ? apiErrorText(error) : errorMessage(error);
  return isForbidden(error) ? `${text} (the service account needs the RBAC in docs/ci-client.md)` : text;
}

function contextNamespace(kc: KubeConfig): string | undefined {
  return kc.getContextObject(kc.getCurrentContext())?.namespace;
}

function buildkitApi(custom: CustomObjectsApi, namespace: string) {
  const base = { group: GROUP, version: VERSION, namespace, plural: BUILDKIT.plural };
  return {
    get: async (name: string) => (await custom.getNamespacedCustomObject({ ...base, name })) as Buildkit,
    create: async (body: Buildkit) =>
      (await custom.createNamespacedCustomObject({ ...base, body })) as Buildkit,
    delete: (name: string) => custom.deleteNamespacedCustomObject({ ...base, name }),
    patch: (name: string, body: object) =>
      custom.patchNamespacedCustomObject({ ...base, name, body }, mergePatch),
  };
}

async function checkTemplate(custom: CustomObjectsApi, namespace: string, template: string): Promise<void> {
  try {
    await custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: BUILDKIT_TEMPLATE.plural,
      name: template,
    });
  } catch (error) {
    if (isNotFound(error))
      throw new StartupError(`template "${template}" not found in namespace "${namespace}"`);
    throw new StartupError(
      `could not read template "${template}" in namespace "${namespace}": ${problem(error)}`,
    );
  }
}

async function readOwnerPod(core: CoreV1Api, namespace: string, name: string): Promise<OwnerPod> {
  try {
    const pod = await core.readNamespacedPod({ name, namespace });
    return { name, uid: pod.metadata!.uid! };
  } catch (error) {
    if (isNotFound(error)) {
      throw new StartupError(
        `--owner-pod: pod "${name}" not found in namespace "${namespace}" (it must be the CI job's pod, in the Buildkit's namespace)`,
      );
    }
    throw new StartupError(
      `--owner-pod: could not read pod "${name}" in namespace "${namespace}": ${problem(error)}`,
    );
  }
}

export async function runAcquire(request: AcquireRequest, io: Io, signal?: AbortSignal): Promise<number> {
  const say = (line: string) => io.err(`buildkit-fleet acquire: ${line}\n`);
  const kc = loadKubeConfig(request.kubeconfig);
  const namespace = resolveNamespace(request.namespace, contextNamespace(kc));
  const custom = kc.makeApiClient(CustomObjectsApi);
  const buildkits = buildkitApi(custom, namespace);
  const started = Date.now();

  // 1. everything that can be wrong before anything is created
  await checkTemplate(custom, namespace, request.template);
  const owner = request.ownerPod
    ? await readOwnerPod(kc.makeApiClient(CoreV1Api), namespace, request.ownerPod)
    : undefined;

  // 2. the Buildkit: a named one that exists is used as it is; otherwise a new one
  let buildkit: Buildkit | undefined;
  if (request.name) {
    try {
      buildkit = await buildkits.get(request.name);
    } catch (error) {
      if (!isNotFound(error)) {
        throw new StartupError(
          `could not read Buildkit "${request.name}" in namespace "${namespace}": ${problem(error)}`,
        );
      }
    }
  }
  let created = false;
  if (signal?.aborted) throw new StartupError('interrupted before creating a Buildkit');
  if (!buildkit) {
    try {
      buildkit = await buildkits.create(
        buildkitToCreate({ template: request.template, namespace, name: request.name, owner }),
      );
      created = true;
    } catch (error) {
      if (!(request.name && isConflict(error))) {
        throw new StartupError(
          `could not create a Buildkit from template "${request.template}" in namespace "${namespace}": ${problem(error)}`,
        );
      }
      buildkit = await buildkits.get(request.name); // created by someone else meanwhile
    }
  }
  const name = buildkit.metadata!.name!;
  if (created) {
    say(`created Buildkit "${name}" from template "${request.template}" in namespace "${namespace}"`);
  } else {
    const why = existingProblem(buildkit, request.template);
    if (why) throw new StartupError(why);
    say(
      `using the existing Buildkit "${name}" in namespace "${namespace}"${owner ? ' (--owner-pod applies only to a Buildkit acquire creates)' : ''}`,
    );
  }

  // 3. wake it if it is at zero, wait until it is Ready; on any failure remove what was created
  try {
    say(`waiting up to ${formatDuration(request.waitMs)} for "${name}" to be Ready`);
    const endpoint = await waitUntilReady({
      kc,
      custom,
      initial: buildkit,
      timeoutMs: request.waitMs,
      signal,
      onProgress: (reason) => say(`"${name}": ${reason}`),
      onNotReady: async (current) => {
        if (!needsWake(current)) return;
        try {
          await buildkits.patch(name, wakePatch(current, new Date()));
          say(`"${name}" is scaled to zero: asked for a wake`);
        } catch (error) {
          // a conflict: it changed since (woken, or asked for); the watch brings the new version
          if (!isConflict(error))
            throw new StartupError(`could not ask for a wake of "${name}": ${problem(error)}`);
        }
      },
    });
    say(`"${name}" is Ready at ${endpoint} (after ${((Date.now() - started) / 1000).toFixed(1)}s)`);
    io.out(shellAssignments(name, endpoint));
    return 0;
  } catch (error) {
    const why = failureText(error, name, namespace, request.waitMs);
    if (!created) throw new StartupError(`${why}; it was not created by acquire, so it is left in place`);
    throw new StartupError(`${why}; ${await removeCreated(buildkits, name, namespace)}`);
  }
}

function failureText(error: unknown, name: string, namespace: string, waitMs: number): string {
  const what = `Buildkit "${name}" in namespace "${namespace}"`;
  if (error instanceof WaitFailure) {
    if (error.end === 'timeout') {
      return `${what} was not Ready after ${formatDuration(waitMs)} (last: ${error.lastReason})`;
    }
    if (error.end === 'deleted') return `${what} was deleted while waiting for it`;
    return `interrupted while waiting for ${what} (last: ${error.lastReason})`;
  }
  if (error instanceof StartupError) return error.message;
  return `failed while waiting for ${what}: ${problem(error)}`;
}

async function removeCreated(
  buildkits: ReturnType<typeof buildkitApi>,
  name: string,
  namespace: string,
): Promise<string> {
  try {
    await buildkits.delete(name);
    return `deleted it`;
  } catch (error) {
    if (isNotFound(error)) return 'it is gone';
    return `could not delete it (${problem(error)}): kubectl delete buildkit ${name} -n ${namespace}`;
  }
}

/** Deletes the Buildkit; one that does not exist is not an error (cleanup steps run twice). */
export async function runRelease(request: ReleaseRequest, io: Io): Promise<number> {
  const kc = loadKubeConfig(request.kubeconfig);
  const namespace = resolveNamespace(request.namespace, contextNamespace(kc));
  const buildkits = buildkitApi(kc.makeApiClient(CustomObjectsApi), namespace);
  const what = `Buildkit "${request.name}" in namespace "${namespace}"`;
  try {
    await buildkits.delete(request.name);
  } catch (error) {
    if (isNotFound(error)) {
      io.err(`buildkit-fleet release: ${what} not found: nothing to release\n`);
      return 0;
    }
    const status = errorStatus(error);
    throw new StartupError(`could not delete ${what}: ${problem(error)}${status ? ` (HTTP ${status})` : ''}`);
  }
  io.err(`buildkit-fleet release: deleted ${what}\n`);
  return 0;
}
