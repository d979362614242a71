// The activator under test in a process of its own, driven by the activator benchmark
// (activator.ts) over the IPC channel of child_process.fork. It runs the activator as the
// controller runs it (createActivator with a prom-client Registry and a pino logger; warn and
// above go to stdout, so a reset or an unreachable upstream shows in the benchmark's output),
// listening on 127.0.0.1 and with default bounds unless argv[2] raises maxHeldPerTarget.
//
// Messages in:  { id, type: 'setTargets', targets }  makes `targets` the whole set
//               { id, type: 'usage', gc? }           RSS, heap, CPU and stats (gc first when asked
//                                                    and node runs with --expose-gc)
//               { id, type: 'close' }                closes the activator, then the process exits
// Messages out: { type: 'ready' } once, then { id, ok: true, result } or { id, ok: false, error }.
import { pino } from 'pino';
import { Registry } from 'prom-client';

import { createActivator } from '../../activator/index.ts';
import type { ActivatorStats, ActivatorTarget } from '../../activator/index.ts';

export type DriverRequest =
  { type: 'setTargets'; targets: ActivatorTarget[] } | { type: 'usage'; gc?: boolean } | { type: 'close' };
export type DriverCommand = DriverRequest & { id: number };

export interface DriverUsage {
  /** process.memoryUsage().rss, bytes */
  rss: number;
  /** process.memoryUsage().heapUsed, bytes */
  heapUsed: number;
  /** process.cpuUsage(), microseconds since the process started */
  cpu: NodeJS.CpuUsage;
  stats: ActivatorStats;
  /** onWake calls so far */
  wakes: number;
}

export type DriverReply =
  | { type: 'ready' }
  | { id: number; ok: true; result?: DriverUsage }
  | { id: number; ok: false; error: string };

const send = (reply: DriverReply) => process.send!(reply);

if (!process.send) {
  console.error('activator-process.ts runs under child_process.fork (the activator benchmark starts it)');
  process.exit(2);
}

const maxHeldPerTarget = process.argv[2] ? Number(process.argv[2]) : undefined;
let wakes = 0;
const activator = createActivator({
  logger: pino({ level: 'warn' }),
  registry: new Registry(),
  listenHost: '127.0.0.1',
  ...(maxHeldPerTarget ? { maxHeldPerTarget, maxHeldTotal: Math.max(10_000, maxHeldPerTarget) } : {}),
  onWake: () => void wakes++,
});
const gc = (globalThis as { gc?: () => void }).gc;

function usage(collect: boolean): DriverUsage {
  if (collect) gc?.();
  const memory = process.memoryUsage();
  return {
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    cpu: process.cpuUsage(),
    stats: activator.stats(),
    wakes,
  };
}

process.on('message', (command: DriverCommand) => {
  const answer = async (): Promise<DriverUsage | undefined> => {
    switch (command.type) {
      case 'setTargets':
        await activator.setTargets(command.targets);
        return undefined;
      case 'usage':
        return usage(command.gc === true);
      case 'close':
        await activator.close();
        return undefined;
    }
  };
  answer().then(
    (result) => {
      if (!process.connected) return;
      send({ id: command.id, ok: true, ...(result ? { result } : {}) });
      if (command.type === 'close') process.disconnect();
    },
    (error: unknown) => {
      if (process.connected) send({ id: command.id, ok: false, error: String(error) });
    },
  );
});
// the parent went away: nothing is left to measure
process.on('disconnect', () => void activator.close().then(() => process.exit(0)));
send({ type: 'ready' });
