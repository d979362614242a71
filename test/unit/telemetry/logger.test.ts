// The batched logger: a line shows up within about a second, and nothing is lost at exit.
import { spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const loggerModule = new URL('../../../telemetry/logger.ts', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'bkf-logger-'));

function runScript(body: string): {
  lines: () => string[];
  exited: Promise<number>;
  stderr: () => string;
  kill: () => void;
} {
  const file = join(dir, `${Math.random().toString(16).slice(2)}.ts`);
  writeFileSync(
    file,
    `import { createLogger } from '${loggerModule}';\nconst logger = createLogger({ level: 'info', component: 'test' });\n${body}\n`,
  );
  const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  return {
    lines: () => out.split('\n').filter(Boolean),
    exited: new Promise((resolve) => child.on('exit', (code) => resolve(code ?? -1))),
    stderr: () => err,
    kill: () => child.kill('SIGKILL'),
  };
}

test('a line is written within about a second while the process keeps running', async () => {
  // timed from the moment the child has logged, not from its spawn: start-up (type stripping,
  // loading pino) takes seconds when the test workers load the machine
  const run = runScript(
    "logger.info({ decision: 'allowed' }, 'admission review');\nprocess.stderr.write('logged\\n');\nsetTimeout(() => {}, 60_000);",
  );
  while (!run.stderr().includes('logged')) await new Promise((resolve) => setTimeout(resolve, 20));
  await new Promise((resolve) => setTimeout(resolve, 1800));
  expect(run.lines().map((l) => JSON.parse(l))).toEqual([
    expect.objectContaining({ component: 'test', decision: 'allowed', msg: 'admission review' }),
  ]);
  run.kill();
  await run.exited;
}, 20_000);

test('lines logged just before exit are not lost', async () => {
  const run = runScript("for (let i = 0; i < 100; i++) logger.info({ i }, 'line');\nprocess.exitCode = 3;");
  expect(await run.exited).toBe(3);
  expect(run.lines()).toHaveLength(100);
});

/** A stream that keeps what is written to it, for reading back as text. */
async function collected() {
  const { PassThrough } = await import('node:stream');
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return Object.assign(stream, { text: () => text });
}

test('with a readable stream as its destination, a decision reads as text at once (npm start)', async () => {
  const { readableLogs } = await import('../../../hack/readable-logs.ts');
  const { createLogger } = await import('../../../telemetry/logger.ts');
  const sink = await collected();
  const logger = createLogger({ level: 'info', component: 'controller', destination: readableLogs(sink) });
  logger.info({ namespace: 'ci', name: 'bk', reason: 'PodPending' }, 'buildkit reconciled');
  logger.info({ informer: 'pods' }, 'informer synced');
  await new Promise((resolve) => setImmediate(resolve));
  const text = sink.text();
  const lines = text.split('\n');
  expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\] INFO: \[controller\] ci\/bk: buildkit reconciled$/);
  expect(lines[1]).toContain('reason: "PodPending"');
  expect(text).toMatch(/INFO: \[controller\] informer synced\n\s+informer: "pods"/);
  expect(text).not.toContain('{"level"');
});

test('a part of a component logs under its own key, shown after the component', async () => {
  const { readableLogs } = await import('../../../hack/readable-logs.ts');
  const { createLogger } = await import('../../../telemetry/logger.ts');
  const raw = await collected();
  createLogger({ level: 'info', component: 'controller', destination: raw })
    .child({ subsystem: 'activator' })
    .info({ port: 1 }, 'holding');
  const sink = await collected();
  createLogger({ level: 'info', component: 'controller', destination: readableLogs(sink) })
    .child({ subsystem: 'activator' })
    .info('holding');
  await new Promise((resolve) => setImmediate(resolve));
  const json = raw.text();
  const text = sink.text();
  // one key each: a JSON line with a key twice is read differently by different tools
  expect(json.match(/"component"/g)).toHaveLength(1);
  expect(JSON.parse(json)).toMatchObject({ component: 'controller', subsystem: 'activator' });
  expect(text).toMatch(/INFO: \[controller\/activator\] holding\n/);
});
