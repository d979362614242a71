// The first time a watch saw each pod reach a state a benchmark times (created, scheduled,
// Ready), re-watching when the API server ends a watch. Shared by the real-node benchmarks.
import { Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';

/** The first time a watch saw each pod event we time. */
export class PodTimes {
  private readonly namespace: string;
  constructor(namespace: string) {
    this.namespace = namespace;
  }
  readonly seen = new Map<string, { created?: number; scheduled?: number; ready?: number; uid?: string }>();
  private stopped = false;
  private abort?: () => void;
  /** Watches until stopped, re-watching when the API server ends a watch. */
  async watch(kc: KubeConfig): Promise<() => void> {
    const start = async (): Promise<void> => {
      const req = await new Watch(kc).watch(
        `/api/v1/namespaces/${this.namespace}/pods`,
        {},
        (_type, pod: V1Pod) => {
          const now = Date.now();
          const name = pod.metadata!.name!;
          const t = this.seen.get(name) ?? {};
          t.created ??= now;
          t.uid = pod.metadata!.uid;
          if (pod.spec?.nodeName) t.scheduled ??= now;
          if (pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) t.ready ??= now;
          this.seen.set(name, t);
        },
        (err) => {
          if (this.stopped) return;
          if (err) process.stderr.write(`pod watch ended (${String(err)}); watching again\n`);
          void start();
        },
      );
      this.abort = () => req.abort();
    };
    await start();
    return () => {
      this.stopped = true;
      this.abort?.();
    };
  }
}
