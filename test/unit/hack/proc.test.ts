// Process bookkeeping of the local control plane (hack/proc.ts, state.ts): identifying
// a process by pid + start time, log tails, and the state file round trip.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { podCidr } from '../../../hack/cluster.ts';
import { describeExit, isRunning, logTail, startTimeOf } from '../../../hack/proc.ts';
import {
  isHarnessDir,
  MARKER_FILE,
  readState,
  selfRef,
  writeState,
  type ClusterState,
} from '../../../hack/state.ts';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bkf-proc-test-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('a process is identified by pid and start time, so a reused pid is not mistaken for it', () => {
  const start = startTimeOf(process.pid);
  expect(start).toEqual(expect.any(Number));
  expect(isRunning({ pid: process.pid, start })).toBe(true);
  expect(isRunning({ pid: process.pid })).toBe(true);
  expect(isRunning({ pid: process.pid, start: start! + 1 })).toBe(false);
  expect(isRunning({ pid: 0 })).toBe(false);
  expect(isRunning({ pid: -5 })).toBe(false);
  expect(isRunning({ pid: 2 ** 22 + 17 })).toBe(false); // above pid_max
  expect(selfRef()).toEqual({ name: 'owner', pid: process.pid, start });
});

test('log tails: the last lines, and a placeholder for a missing log', () => {
  const log = path.join(tmp, 'x.log');
  fs.writeFileSync(log, Array.from({ length: 100 }, (_, i) => `line ${i}`).join('\n') + '\n');
  expect(logTail(log, 3)).toBe('line 97\nline 98\nline 99');
  expect(logTail(path.join(tmp, 'missing.log'))).toBe('(no log)');
});

test('exits are described the way the error messages use them', () => {
  expect(describeExit({ code: null, signal: 'SIGKILL' })).toBe('was killed by SIGKILL');
  expect(describeExit({ code: 255, signal: null })).toBe('exited with code 255');
});

test('state.json round trip; only marked dirs count as harness dirs', () => {
  const state: ClusterState = {
    version: 1,
    id: 'x-1',
    dir: tmp,
    owner: selfRef(),
    processes: [{ name: 'etcd', pid: 123, start: 456 }],
    extraDirs: ['/tmp/bkf-node-x'],
  };
  expect(readState(tmp)).toBeUndefined();
  writeState(state);
  expect(readState(tmp)).toEqual(state);
  expect(fs.readdirSync(tmp)).toEqual(['state.json']); // no temp file left behind
  fs.writeFileSync(path.join(tmp, 'state.json'), '{"version": 2}');
  expect(readState(tmp)).toBeUndefined();
  expect(isHarnessDir(tmp)).toBe(false);
  fs.writeFileSync(path.join(tmp, MARKER_FILE), '');
  expect(isHarnessDir(tmp)).toBe(true);
});

test('hollow nodes get distinct pod CIDRs outside the service range', () => {
  expect(podCidr(0)).toBe('10.244.0.0/24');
  expect(podCidr(7)).toBe('10.244.7.0/24');
});
