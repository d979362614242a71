// Prometheus metrics of the webhook: reviews by route and result, and their latency.
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface WebhookMetrics {
  registry: Registry;
  reviews: Counter<'route' | 'result'>;
  latency: Histogram<'route' | 'result'>;
  /** the counter and histogram children of one route/result, created once and reused */
  series(
    route: string,
    result: string,
  ): { reviews: { inc(): void }; latency: { observe(seconds: number): void } };
}

export function createWebhookMetrics(): WebhookMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'buildkit_fleet_webhook_' });
  const reviews = new Counter({
    name: 'buildkit_fleet_webhook_reviews_total',
    help: 'Admission reviews answered, by route and result (allowed, patched, denied, bad_request, error).',
    labelNames: ['route', 'result'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'buildkit_fleet_webhook_review_duration_seconds',
    help: 'Time from request body received to response written, by route and result.',
    labelNames: ['route', 'result'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const children = new Map<string, ReturnType<WebhookMetrics['series']>>();
  const series = (route: string, result: string) => {
    const key = `${route} ${result}`;
    let child = children.get(key);
    if (!child) {
      child = { reviews: reviews.labels(route, result), latency: latency.labels(route, result) };
      children.set(key, child);
    }
    return child;
  };
  return { registry, reviews, latency, series };
}
