// The decisions of `npm start` (pure): its flags, where it installs, and the progress lines a
// person reads while the example Buildkit goes through its life.
import { parseArgs } from 'node:util';

export interface StartFlags {
  detach: boolean;
  /** use dist/ as it is for the image the real node imports */
  noBuild: boolean;
  kubeconfig?: string;
  image: string;
  help: boolean;
}

export class StartUsageError extends Error {}

export const START_HELP = `Usage: npm start [-- [--detach] [--kubeconfig <file>] [--image <ref>] [--no-build]]

Brings up a local cluster (with the real node where this machine can run one: root on Debian;
hollow nodes otherwise), builds the platform image, installs the Helm chart, applies
examples/autoscaled.yaml and shows the example Buildkit becoming Ready, a client connecting, the
idle countdown, the scale to zero and the wake on the next connection. Ctrl-C stops it all.

  --detach             return once the example is Ready and leave everything running
                       (npm stop tears it down)
  --kubeconfig <file>  install into this existing cluster instead of a local one; its nodes
                       must be able to run --image
  --image <ref>        the platform image the chart installs (default buildkit-fleet:local)
  --no-build           do not run npm run build first: the real node's image is made from
                       dist/ as it is
  -h, --help           show this help
`;

export function parseStartFlags(argv: string[]): StartFlags {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        detach: { type: 'boolean', default: false },
        'no-build': { type: 'boolean', default: false },
        kubeconfig: { type: 'string' },
        image: { type: 'string', default: 'buildkit-fleet:local' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new StartUsageError((error as Error).message);
  }
  if (values.kubeconfig === '') throw new StartUsageError('--kubeconfig needs a file');
  if (!/^[a-z0-9][a-z0-9._/-]*(:[0-9]+\/[a-z0-9._/-]+)?(:[A-Za-z0-9._-]+)?$/.test(values.image)) {
    throw new StartUsageError(
      `--image must be an image reference such as repo/name:tag, got "${values.image}"`,
    );
  }
  return {
    detach: values.detach,
    noBuild: values['no-build'],
    image: values.image,
    help: values.help,
    ...(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}),
  };
}

/** repository and tag of an image reference (the tag after the last colon that follows the last slash). */
export function splitImage(ref: string): { repository: string; tag: string } {
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  if (colon > slash) return { repository: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { repository: ref, tag: 'latest' };
}

export type StartMode =
  | { cluster: 'existing'; install: 'chart'; why: string }
  | { cluster: 'local'; realNode: true; install: 'chart'; why: string }
  | { cluster: 'local'; realNode: false; install: 'in-process'; why: string };

/** Where `npm start` runs the platform, and the sentence that tells the user. */
export function startMode(flags: StartFlags, realNodeUnavailable: string | undefined): StartMode {
  if (flags.kubeconfig) {
    return {
      cluster: 'existing',
      install: 'chart',
      why: `installing into the cluster of ${flags.kubeconfig}`,
    };
  }
  if (!realNodeUnavailable) {
    return {
      cluster: 'local',
      realNode: true,
      install: 'chart',
      why: 'a local cluster with the real node: pods really run (containerd, runc, kube-proxy)',
    };
  }
  return {
    cluster: 'local',
    realNode: false,
    install: 'in-process',
    why:
      `a local cluster with a hollow node (no real node here: ${realNodeUnavailable}); pods are scheduled ` +
      'but no container runs, so the webhook and the controller run in this process and nothing scales',
  };
}

export interface BuildkitView {
  phase?: string;
  endpoint?: string;
  active?: string;
}

/** The lines worth printing when the example Buildkit's status changes from `prev` to `next`. */
export function progressLines(name: string, prev: BuildkitView, next: BuildkitView): string[] {
  const lines: string[] = [];
  if (next.phase !== prev.phase && next.phase) {
    const arrow = prev.phase ? `${prev.phase} -> ${next.phase}` : next.phase;
    const note =
      next.phase === 'ScaledToZero'
        ? `: its pod is gone, the endpoint ${next.endpoint ?? ''} stays`
        : next.phase === 'Running' && next.endpoint
          ? `; endpoint ${next.endpoint}`
          : '';
    lines.push(`${name}: ${arrow}${note}`);
  }
  if (next.active && next.active !== prev.active) lines.push(`${name}: ${next.active}`);
  return lines;
}
