// Validation of BuildkitTemplate (create and update): seatgeek's rules plus what users need.
// Every problem is collected, so one `kubectl apply` reports them all.
import { parse as parseToml, TomlError } from 'smol-toml';

import { TEMPLATE_NAME_MAX_LENGTH } from '../api/group.ts';
import type { BuildkitTemplate } from '../api/types.generated.ts';
import { parseDuration, formatDuration } from '../api/duration.ts';
import type { FieldError } from './field-errors.ts';
import { invalid } from './field-errors.ts';
import { validateKeyMap } from './kube-names.ts';
import { validatePersistence } from './persistence-validation.ts';
import { checkRequirements, parseQuantityMap } from './resources.ts';
import { IDLE_TIMEOUT_MAX_MS } from '../flags/min-idle-timeout.ts';

export const IDLE_TIMEOUT_MIN_MS = 30_000;

/** Admin-set bounds the webhook checks templates against (the webhook's flags). */
export interface TemplateLimits {
  /** the shortest spec.autoscaling.idleTimeout a template may set (--min-idle-timeout) */
  minIdleTimeoutMs: number;
}
export const DEFAULT_TEMPLATE_LIMITS: TemplateLimits = { minIdleTimeoutMs: IDLE_TIMEOUT_MIN_MS };

export interface Verdict {
  errors: FieldError[];
  warnings: string[];
}

/** Tags that move: a pod created tomorrow may run a different buildkitd than one created today. */
export function floatingTagProblem(image: string): string | undefined {
  if (image.includes('@sha256:')) return undefined;
  const lastSegment = image.slice(image.lastIndexOf('/') + 1);
  const tag = lastSegment.includes(':') ? lastSegment.slice(lastSegment.indexOf(':') + 1) : '';
  if (!tag) return 'has no tag (means :latest)';
  if (['latest', 'rootless', 'master', 'master-rootless', 'nightly'].includes(tag))
    return `uses the floating tag :${tag}`;
  return undefined;
}

/** The parsed TOML, or undefined when there is none or it does not parse (then an error says so). */
function validateToml(
  toml: string | undefined,
  rootless: boolean,
  errors: FieldError[],
): Record<string, unknown> | undefined {
  if (!toml) return undefined;
  let parsed: Record<string, unknown>;
  try {
    parsed = parseToml(toml) as Record<string, unknown>;
  } catch (error) {
    const where = error instanceof TomlError ? `line ${error.line}, column ${error.column}: ` : '';
    const reason = (error as Error).message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
    errors.push({
      field: 'spec.buildkitdToml',
      type: 'Invalid',
      detail: `not valid TOML: ${where}${reason}`,
    });
    return undefined;
  }
  const worker = parsed['worker'] as Record<string, Record<string, unknown> | undefined> | undefined;
  if (rootless && worker?.['containerd']?.['enabled'] === true) {
    errors.push({
      field: 'spec.buildkitdToml',
      type: 'Invalid',
      detail:
        '[worker.containerd] enabled = true cannot work rootless (it needs the host containerd socket as root); use the OCI worker or set spec.rootless: false',
    });
  }
  return parsed;
}

export function validateTemplate(
  template: BuildkitTemplate,
  bounds: TemplateLimits = DEFAULT_TEMPLATE_LIMITS,
): Verdict {
  const errors: FieldError[] = [];
  const warnings: string[] = [];
  const name = template.metadata?.name ?? '';
  const spec = template.spec ?? {};

  if (name.length > TEMPLATE_NAME_MAX_LENGTH) {
    errors.push({
      field: 'metadata.name',
      type: 'TooLong',
      value: name,
      detail: `must be no more than ${TEMPLATE_NAME_MAX_LENGTH} characters (its ConfigMap "buildkit-<name>-scripts" must stay a valid name)`,
    });
  }
  if (spec.port !== undefined && (spec.port < 1 || spec.port > 65535 || !Number.isInteger(spec.port))) {
    errors.push(invalid('spec.port', spec.port, 'must be between 1 and 65535'));
  }
  const toml = validateToml(spec.buildkitdToml, spec.rootless === true, errors);

  errors.push(...validateKeyMap('spec.podLabels', spec.podLabels, 'labels'));
  errors.push(...validateKeyMap('spec.podAnnotations', spec.podAnnotations, 'annotations'));
  errors.push(...validateKeyMap('spec.scheduling.nodeSelector', spec.scheduling?.nodeSelector, 'labels'));

  const maximum = spec.resources?.maximum;
  parseQuantityMap('spec.resources.maximum', maximum, errors);
  const resources = checkRequirements('spec.resources.default', spec.resources?.default, maximum);
  errors.push(...resources.errors);
  for (const over of resources.aboveMaximum) {
    errors.push(
      invalid(
        over.field,
        over.value,
        `must not exceed spec.resources.maximum.${over.field.split('.').pop()} (${over.maximum})`,
      ),
    );
  }

  const idle = spec.autoscaling?.idleTimeout;
  if (idle !== undefined) {
    const ms = parseDuration(idle);
    if (ms === undefined) {
      errors.push(
        invalid('spec.autoscaling.idleTimeout', idle, 'must be a duration such as 90s, 5m or 1h30m'),
      );
    } else if (ms < bounds.minIdleTimeoutMs || ms > IDLE_TIMEOUT_MAX_MS) {
      errors.push(
        invalid(
          'spec.autoscaling.idleTimeout',
          idle,
          `must be between ${formatDuration(bounds.minIdleTimeoutMs)} and ${formatDuration(IDLE_TIMEOUT_MAX_MS)}`,
        ),
      );
    }
  }

  errors.push(...validatePersistence(spec));
  if (spec.persistence?.enabled && typeof toml?.['root'] === 'string') {
    warnings.push(
      `spec.buildkitdToml sets root = ${JSON.stringify(toml['root'])}, but with spec.persistence.enabled buildkitd is started with --root ${spec.persistence.mountPath ?? '(the state directory)'} (the claim), which wins`,
    );
  }

  for (const key of Object.keys(spec.observability?.otlp?.resourceAttributes ?? {})) {
    if (/[,=\s]/.test(key) || !key) {
      errors.push(
        invalid(
          'spec.observability.otlp.resourceAttributes',
          key,
          'keys must be non-empty without ",", "=" or spaces (OTEL_RESOURCE_ATTRIBUTES syntax)',
        ),
      );
    }
  }

  if (spec.image) {
    const floating = floatingTagProblem(spec.image);
    if (floating) {
      warnings.push(
        `spec.image "${spec.image}" ${floating}: new pods may get a different buildkitd; pin a version tag or digest`,
      );
    }
    if (spec.rootless && !spec.image.includes('rootless')) {
      warnings.push(
        `spec.rootless is true but spec.image "${spec.image}" does not look like a rootless image; buildkitd fails to start unless the image supports rootless mode`,
      );
    }
  }
  const limits = spec.resources?.default?.limits;
  if (!limits?.['memory'] && !maximum?.['memory']) {
    warnings.push(
      "no memory limit (spec.resources.default.limits.memory or spec.resources.maximum.memory): one build can exhaust its node's memory",
    );
  }
  return { errors, warnings };
}
