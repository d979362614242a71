// Installs the platform's CRDs into a cluster and waits until both serve. Shared by the test
// harness, `npm start` and the benchmarks.
//
// `kubectl wait --for=condition=Established` right after the create can run before the API
// server has set any condition, and then fails at once (".status.conditions accessor error:
// <nil>") instead of waiting; so this polls the condition itself.
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.ts';

export const CRD_DIR = fileURLToPath(new URL('../api/crds/', import.meta.url));
export const CRD_NAMES = ['buildkittemplates.buildkit.seatgeek.io', 'buildkits.buildkit.seatgeek.io'];

/** Runs kubectl against the cluster with these arguments and resolves with its stdout. */
export type KubectlText = (args: string[]) => Promise<string>;

const ESTABLISHED =
  '{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\\n"}{end}';

/** The names among `names` whose Established condition is True in `kubectl get -o jsonpath` text. */
export function establishedNames(jsonpathText: string): Set<string> {
  const ready = new Set<string>();
  for (const line of jsonpathText.split('\n')) {
    const [name, status] = line.trim().split('=');
    if (name && status === 'True') ready.add(name);
  }
  return ready;
}

export async function installCrds(kubectl: KubectlText, timeoutMs = 60_000): Promise<void> {
  await kubectl(['apply', '-f', CRD_DIR]);
  let last = '';
  try {
    await waitFor(
      'the CRDs to become Established',
      async () => {
        last = await kubectl(['get', 'crd', ...CRD_NAMES, '-o', `jsonpath=${ESTABLISHED}`]);
        const ready = establishedNames(last);
        return CRD_NAMES.every((n) => ready.has(n));
      },
      [],
      Date.now() + timeoutMs,
    );
  } catch (err) {
    throw new Error(
      `CRDs did not become Established within ${timeoutMs / 1000}s (last seen: ${last.trim() || 'nothing'})`,
      {
        cause: err,
      },
    );
  }
}
