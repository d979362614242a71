// Kubernetes Events for what the controller did (`kubectl describe bk` shows them). Failures to
// record an event are logged, never fatal: events are a courtesy, the status is the record.
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig, V1ObjectReference } from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface EventRecorder {
  record(object: V1ObjectReference, type: 'Normal' | 'Warning', reason: string, message: string): void;
}

export function kubeEventRecorder(
  kc: KubeConfig,
  logger: Logger,
  component = 'buildkit-fleet-controller',
): EventRecorder {
  const api = kc.makeApiClient(CoreV1Api);
  return {
    record(object, type, reason, message) {
      const now = new Date();
      const namespace = object.namespace ?? 'default';
      api
        .createNamespacedEvent({
          namespace,
          body: {
            metadata: { generateName: `${object.name}.`, namespace },
            involvedObject: object,
            type,
            reason,
            message: message.slice(0, 1024),
            source: { component },
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        })
        .catch((error: Error) =>
          logger.warn({ namespace, name: object.name, reason, err: error.message }, 'could not record event'),
        );
    },
  };
}
