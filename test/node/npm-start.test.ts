// `npm start -- --detach` as the README tells a new user to run it, in a .local of its own: it
// brings up the local cluster with the real node, installs the chart and returns once the example
// Buildkit is Ready; `npm stop` then leaves nothing running.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { describeRealNode } from '../support/node-tier.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);

async function script(name: string, args: string[], env: NodeJS.ProcessEnv) {
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      ['--disable-warning=ExperimentalWarning', path.join(ROOT, 'scripts', name), ...args],
      { cwd: ROOT, env, maxBuffer: 64 * 1024 * 1024, timeout: 900_000 },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Processes whose command line or working directory mentions `dir`. */
function processesUnder(dir: string): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes(dir)) found.push(`${pid} ${cmd}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describeRealNode('npm start -- --detach and npm stop', () => {
  let local = '';
  let env: NodeJS.ProcessEnv = {};

  beforeAll(() => {
    local = fs.mkdtempSync(path.join(os.tmpdir(), 'bkf-npm-start-'));
    env = { ...process.env, BKF_LOCAL_DIR: local };
  });
  afterAll(async () => {
    // whatever happened, leave no cluster behind
    await script('stop.ts', [], env);
    fs.rmSync(local, { recursive: true, force: true });
  }, 300_000);

  test('start --detach returns once the example is Ready; stop leaves nothing running', async () => {
    // dist/ is built (npm ci's prepare; the other node tests use it too): rebuilding it here could
    // rewrite files another test reads
    const started = await script('start.ts', ['--detach', '--no-build'], env);
    const output = started.stdout + started.stderr;
    expect({ code: started.code, tail: output.slice(-3000) }).toMatchObject({ code: 0 });
    expect(output).toContain('[start] a local cluster with the real node');
    expect(output).toContain('the webhook and the controller run (2 replicas each)');
    expect(output).toMatch(/\[start\] demo: (Pending -> )?Running; endpoint tcp:\/\/[\d.]+:1234/);
    expect(output).toMatch(/\[start\] ready: demo at tcp:\/\/[\d.]+:1234; everything keeps running/);
    // progress is readable text, not JSON log lines
    expect(output).not.toMatch(/^\{"level"/m);
    const kubeconfig = path.join(local, 'cluster', 'kubeconfig');
    expect(fs.existsSync(kubeconfig)).toBe(true);
    expect(processesUnder(local).length).toBeGreaterThan(0);

    const stopped = await script('stop.ts', [], env);
    expect({ code: stopped.code, out: stopped.stdout.slice(-2000) }).toMatchObject({ code: 0 });
    expect(processesUnder(local)).toEqual([]);
    expect(fs.existsSync(path.join(local, 'cluster'))).toBe(false);
    expect(fs.existsSync(path.join(local, 'start.json'))).toBe(false);
  }, 900_000);
});
