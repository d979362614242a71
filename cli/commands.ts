// Command dispatch and help for the `buildkit-fleet` CLI. Each component registers one command
// here, and so do the CI client commands (acquire, release in cli/acquire/).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { StartupError, UsageError } from '../flags/errors.ts';
import type { OptionSpecs, ParsedOptions } from '../flags/options.ts';
import { optionsHelp, parseOptions } from '../flags/options.ts';
// Only the flags are loaded up front; a command's code (and its dependencies: client-node,
// express, node-forge, ...) is imported when it runs, so the sidecar does not carry the
// controller's libraries in memory and the reverse.
import { WEBHOOK_OPTIONS } from '../webhook/options.ts';
import { CERTS_COMMAND_OPTIONS } from '../certs/cert-options.ts';
import { CONTROLLER_OPTIONS } from '../controller/options.ts';
import { SIDECAR_OPTIONS } from '../sidecar/options.ts';
import { REMOVE_CONFIGURATIONS_OPTIONS } from '../webhook/uninstall-options.ts';
import { ACQUIRE_OPTIONS, RELEASE_OPTIONS } from './acquire/options.ts';

export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
}

export interface Command {
  summary: string;
  usage: string;
  options?: OptionSpecs;
  run: (args: string[], io: Io) => Promise<number>;
}

export { UsageError };

const crdsCommand: Command = {
  summary: 'Print the BuildkitTemplate and Buildkit CRDs as YAML (pipe into `kubectl apply -f -`).',
  usage: 'buildkit-fleet crds',
  async run(args, io) {
    parseStrict(args, {});
    const [{ allCrds }, { stringify }] = await Promise.all([import('../api/crds.ts'), import('yaml')]);
    io.out(
      allCrds()
        .map((crd) => stringify(crd, { lineWidth: 0 }))
        .join('---\n'),
    );
    return 0;
  },
};

const webhookCommand: Command = {
  summary: 'Run the HTTPS admission webhook that defaults and validates BuildkitTemplates and Buildkits.',
  usage: 'buildkit-fleet webhook [flags]',
  options: WEBHOOK_OPTIONS,
  async run(args) {
    const options = parseOptions(args, WEBHOOK_OPTIONS);
    const explicitListen =
      args.some((a) => a.startsWith('--listen')) || Boolean(process.env['BKF_WEBHOOK_LISTEN']);
    const { runWebhookCommand } = await import('../webhook/main.ts');
    return runWebhookCommand(options, explicitListen);
  },
};

/** A long-running component: flags parsed from its option specs, then its run function. */
function componentCommand<S extends OptionSpecs>(
  name: string,
  summary: string,
  options: S,
  run: (parsed: ParsedOptions<S>) => Promise<number>,
): Command {
  return {
    summary,
    usage: `buildkit-fleet ${name} [flags]`,
    options,
    run: (args) => run(parseOptions(args, options)),
  };
}

const certsCommand = componentCommand(
  'certs',
  'Make and rotate the webhook certificates in a Secret and keep the CA in the webhook caBundle (self-managed mode, without cert-manager).',
  CERTS_COMMAND_OPTIONS,
  async (options) => (await import('../certs/main.ts')).runCertsCommand(options),
);

const controllerCommand = componentCommand(
  'controller',
  'Reconcile BuildkitTemplates into ConfigMaps and Buildkits into a buildkitd Pod, a Service and status.',
  CONTROLLER_OPTIONS,
  async (options) => (await import('../controller/main.ts')).runControllerCommand(options),
);

const sidecarCommand = componentCommand(
  'sidecar',
  'Run the activity-tracking TCP proxy in front of buildkitd: counts connections, serves stats, fences and drains.',
  SIDECAR_OPTIONS,
  async (options) => (await import('../sidecar/main.ts')).runSidecarCommand(options),
);

const removeConfigurationsCommand: Command = {
  summary:
    "Remove the webhook configurations (the chart's pre-delete hook: the pod webhook fails closed, so they go before the webhook pods).",
  usage: 'buildkit-fleet remove-webhook-configurations [flags]',
  options: REMOVE_CONFIGURATIONS_OPTIONS,
  async run(args, io) {
    const options = parseOptions(args, REMOVE_CONFIGURATIONS_OPTIONS);
    const { runRemoveConfigurations } = await import('../webhook/uninstall.ts');
    return runRemoveConfigurations(options, io.out);
  },
};

const acquireCommand: Command = {
  summary:
    "CI: create a Buildkit from a template (owned by the job's pod), wake it, wait until it is Ready and print BUILDKIT_HOST=tcp://... and BUILDKIT_NAME=... for `eval`.",
  usage: 'buildkit-fleet acquire --template <name> [flags]',
  options: ACQUIRE_OPTIONS,
  async run(args, io) {
    const { parseAcquireArgs } = await import('./acquire/plan.ts');
    const request = parseAcquireArgs(args);
    const [{ runAcquire }, { untilInterrupted }] = await Promise.all([
      import('./acquire/run.ts'),
      import('./acquire/interrupt.ts'),
    ]);
    return untilInterrupted((signal) => runAcquire(request, io, signal));
  },
};

const releaseCommand: Command = {
  summary:
    'CI: delete a Buildkit that acquire printed (BUILDKIT_NAME); one that is already gone is a note, exit 0.',
  usage: 'buildkit-fleet release <name> [flags]',
  options: RELEASE_OPTIONS,
  async run(args, io) {
    const { parseReleaseArgs } = await import('./acquire/plan.ts');
    const request = parseReleaseArgs(args);
    const { runRelease } = await import('./acquire/run.ts');
    return runRelease(request, io);
  },
};

export const COMMANDS: Record<string, Command> = {
  crds: crdsCommand,
  webhook: webhookCommand,
  certs: certsCommand,
  controller: controllerCommand,
  sidecar: sidecarCommand,
  'remove-webhook-configurations': removeConfigurationsCommand,
  acquire: acquireCommand,
  release: releaseCommand,
};

function version(): string {
  // ../package.json from the sources, ../../package.json from the compiled dist/ tree.
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as {
        name?: string;
        version: string;
      };
      if (pkg.name === 'buildkit-fleet') return pkg.version;
    } catch {
      // try the next location
    }
  }
  return 'unknown';
}

export function helpText(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return [
    'buildkit-fleet: BuildKit build servers on Kubernetes that scale to zero when idle.',
    '',
    'Usage: buildkit-fleet <command> [flags]',
    '',
    'Commands:',
    ...lines,
    '',
    'Flags:',
    '  -h, --help     Show help (also `buildkit-fleet <command> --help`).',
    '  -v, --version  Print the version.',
    '',
  ].join('\n');
}

type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

/** parseArgs that turns its errors into UsageError (unknown flag, missing value, stray argument). */
export function parseStrict<O extends Options>(args: string[], options: O) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export async function runCli(argv: string[], io: Io): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    io.out(helpText());
    return name === undefined ? 2 : 0;
  }
  if (name === '-v' || name === '--version') {
    io.out(`${version()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    io.err(`buildkit-fleet: unknown command "${name}"\n\n${helpText()}`);
    return 2;
  }
  if (rest.includes('-h') || rest.includes('--help')) {
    const flags = command.options ? `\nFlags:\n${optionsHelp(command.options)}\n` : '';
    io.out(`Usage: ${command.usage}\n\n${command.summary}\n${flags}`);
    return 0;
  }
  try {
    return await command.run(rest, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`buildkit-fleet ${name}: ${error.message}\nUsage: ${command.usage}\n`);
      return 2;
    }
    if (error instanceof StartupError) {
      io.err(`buildkit-fleet ${name}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
