// Log lines for a person watching (npm start): the components' one-line decisions as text,
// "[controller] some-ns/bk: buildkit reconciled" followed by the fields, instead of JSON.
import type { Writable } from 'node:stream';

import pretty from 'pino-pretty';
import type { DestinationStream } from 'pino';

export function readableLogs(destination?: Writable): DestinationStream {
  return pretty({
    colorize: destination === undefined && process.stdout.isTTY,
    translateTime: 'SYS:HH:MM:ss',
    // shown in the message instead (pino-pretty would print `name` as a logger name)
    ignore: 'pid,hostname,component,subsystem,namespace,name',
    messageFormat:
      '[{component}{if subsystem}/{subsystem}{end}] {if namespace}{namespace}/{end}{if name}{name}: {end}{msg}',
    sync: true,
    ...(destination ? { destination } : {}),
  });
}
