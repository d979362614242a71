// shutdownSignal: a real process, a real signal.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const shutdownModule = fileURLToPath(new URL('../../../telemetry/shutdown.ts', import.meta.url));

async function signalChild(signal: NodeJS.Signals): Promise<{ code: number | null; out: string }> {
  const script = `
    import { shutdownSignal } from ${JSON.stringify(shutdownModule)};
    const signalled = shutdownSignal();
    // a server would keep the process alive; signal listeners alone do not
    const keepAlive = setInterval(() => {}, 1000);
    console.log('ready');
    const got = await signalled;
    console.log('stopping on ' + got);
    // the signal did not end the process: it stops in its own time
    await new Promise((r) => setTimeout(r, 200));
    console.log('stopped');
    clearInterval(keepAlive);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  await new Promise<void>((resolve) => {
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('ready')) resolve();
    });
  });
  child.kill(signal);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  return { code, out };
}

test.each(['SIGTERM', 'SIGINT'] as const)(
  '%s resolves with its name and the process ends in order',
  async (signal) => {
    const { code, out } = await signalChild(signal);
    expect(out).toContain(`stopping on ${signal}`);
    expect(out).toContain('stopped');
    expect(code).toBe(0);
  },
);
