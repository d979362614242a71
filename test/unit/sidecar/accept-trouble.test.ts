// A sidecar at its descriptor limit retries all the time: the log says so once when it starts and
// once when it is over, whichever engine noticed.
import { jest } from '@jest/globals';
import { pino } from 'pino';

import { AcceptTrouble, isOutOfResources } from '../../../sidecar/accept-trouble.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  return { lines, logger };
}

test('an episode is logged once when it starts and once when it ends, not per failure', () => {
  jest.useFakeTimers({ now: 1_000_000 });
  try {
    const { lines, logger } = capture();
    const trouble = new AcceptTrouble(logger);
    trouble.recovered();
    expect(lines).toHaveLength(0);

    trouble.failed('EMFILE');
    jest.advanceTimersByTime(250);
    trouble.failed('EMFILE');
    trouble.failed('ENFILE');
    expect(trouble.failing).toBe(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 50, err: 'EMFILE' });
    expect(lines[0]!['msg']).toMatch(/^proxy cannot take new connections: out of file descriptors/);

    jest.advanceTimersByTime(750);
    trouble.recovered();
    trouble.recovered();
    expect(trouble.failing).toBe(false);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ level: 30, ms: 1000, msg: 'proxy accepting new connections again' });

    trouble.failed('EPERM');
    expect(lines[2]).toMatchObject({ level: 50, err: 'EPERM' });
    expect(lines[2]!['msg']).toMatch(/^proxy listener error: could not accept a connection/);
  } finally {
    jest.useRealTimers();
  }
});

test('out-of-resources errors are told apart from the rest', () => {
  expect(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM'].map(isOutOfResources)).toEqual([true, true, true, true]);
  expect(['ECONNREFUSED', 'EPERM', 'ETIMEDOUT'].map(isOutOfResources)).toEqual([false, false, false]);
});
