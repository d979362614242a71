// A minimal writer of the Prometheus text exposition format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format), for the
// sidecar. Without prom-client the sidecar's RSS is measurably lower (docs/benchmarks.md), and it
// runs in every buildkitd pod under a memory budget; all it needs is a few counters and gauges whose values are read from live state
// when scraped. The controller and the webhook keep prom-client.
//
// The output is what prom-client's Registry#metrics() writes for the same metrics: per family a
// HELP line, a TYPE line and the sample lines; families in definition order separated by an empty
// line; a final newline.

/** The Content-Type of the text format, version 0.0.4. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type MetricType = 'counter' | 'gauge';

/** Constant labels of a metric, written in insertion order. */
export type Labels = Readonly<Record<string, string>>;

export interface MetricsText {
  readonly contentType: string;
  /** A counter: `read` returns the running total (finite, never negative) at each scrape. */
  counter(name: string, help: string, read: () => number, labels?: Labels): void;
  /** A gauge: `read` returns the current value at each scrape. */
  gauge(name: string, help: string, read: () => number, labels?: Labels): void;
  /**
   * The exposition text, every value read now. Throws when a counter reads a negative or
   * non-finite value (as prom-client does), so a broken counter fails the scrape instead of
   * going backwards silently.
   */
  metrics(): string;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
// names starting with __ are reserved for Prometheus' own use
const LABEL_NAME = /^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$/;

/** HELP text: backslash and line feed are escaped (as `\\` and `\n`). */
export function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'));
}

/** A label value: backslash, double quote and line feed are escaped (as `\\`, `\"` and `\n`). */
export function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

/** A sample value: a float as Go's ParseFloat reads it, with NaN, +Inf and -Inf spelled out. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/** `{a="1",b="2"}`, or '' without labels. Throws on an invalid or reserved label name. */
export function formatLabels(labels: Labels): string {
  const parts = Object.entries(labels).map(([name, value]) => {
    if (!LABEL_NAME.test(name)) throw new Error(`invalid label name ${JSON.stringify(name)}`);
    return `${name}="${escapeLabelValue(value)}"`;
  });
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

interface Family {
  /** everything before the value: HELP and TYPE lines, then the sample's name and labels */
  head: string;
  type: MetricType;
  name: string;
  read: () => number;
}

export function createMetricsText(): MetricsText {
  const families: Family[] = [];
  const names = new Set<string>();

  function define(type: MetricType, name: string, help: string, read: () => number, labels: Labels = {}) {
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
    if (names.has(name)) throw new Error(`metric ${name} is already defined`);
    const series = `${name}${formatLabels(labels)}`;
    names.add(name);
    families.push({
      head: `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n${series} `,
      type,
      name,
      read,
    });
  }

  function sample(family: Family): string {
    const value = family.read();
    if (typeof value !== 'number') {
      throw new TypeError(`${family.name}: value is not a number: ${String(value)}`);
    }
    if (family.type === 'counter' && !(Number.isFinite(value) && value >= 0)) {
      throw new RangeError(`${family.name}: a counter must be finite and not negative, got ${value}`);
    }
    return family.head + formatValue(value);
  }

  return {
    contentType: PROMETHEUS_CONTENT_TYPE,
    counter: (name, help, read, labels) => define('counter', name, help, read, labels),
    gauge: (name, help, read, labels) => define('gauge', name, help, read, labels),
    metrics: () => (families.length === 0 ? '' : `${families.map(sample).join('\n\n')}\n`),
  };
}
