import { execFileSync } from 'node:child_process';

import { runCli } from '../../../cli/commands.ts';
import { millisecondsOf, parseHostPort, parseOptions } from '../../../flags/options.ts';
import { WEBHOOK_OPTIONS } from '../../../webhook/main.ts';

async function cli(...argv: string[]) {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

test('unknown commands and bad flags exit 2 with the reason and usage', async () => {
  expect(await cli('bogus')).toMatchObject({
    code: 2,
    err: expect.stringContaining('unknown command "bogus"'),
  });
  const bad = await cli('crds', '--nope');
  expect(bad).toMatchObject({ code: 2, err: expect.stringContaining("Unknown option '--nope'") });
  expect(bad.err).toContain('Usage: buildkit-fleet crds');
});

test('crds prints both CRDs', async () => {
  const { code, out } = await cli('crds');
  expect(code).toBe(0);
  expect(out).toContain('name: buildkittemplates.buildkit.seatgeek.io');
  expect(out).toContain('name: buildkits.buildkit.seatgeek.io');
});

describe('webhook options', () => {
  test('defaults, flags and environment', () => {
    const o = parseOptions([], WEBHOOK_OPTIONS, {});
    expect(o).toMatchObject({
      listen: { host: '0.0.0.0', port: 9443 },
      local: false,
      'failure-policy': 'Fail',
      'shutdown-grace': 10,
    });
    const env = parseOptions([], WEBHOOK_OPTIONS, {
      BKF_WEBHOOK_LISTEN: '127.0.0.1:8443',
      BKF_LOG_LEVEL: 'debug',
    });
    expect(env).toMatchObject({ listen: { host: '127.0.0.1', port: 8443 }, 'log-level': 'debug' });
    const flag = parseOptions(['--listen', ':9000'], WEBHOOK_OPTIONS, {
      BKF_WEBHOOK_LISTEN: '127.0.0.1:8443',
    });
    expect(flag.listen).toEqual({ host: '0.0.0.0', port: 9000 });
  });

  test.each([
    [['--listen', 'nowhere'], '--listen "nowhere": must be host:port'],
    [['--listen', '1.2.3.4:70000'], 'must be host:port'],
    [['--failure-policy', 'Maybe'], '--failure-policy "Maybe": must be one of Fail, Ignore'],
    [['--shutdown-grace', 'soon'], 'must be a number of seconds'],
    // a longer timer fires at once: it would end the grace at the start
    [['--shutdown-grace', '2147484'], '--shutdown-grace "2147484": must be at most 2147483 seconds'],
    [['--log-level', 'loud'], 'must be one of trace, debug, info, warn, error'],
    [['--tls-cert-file', ''], 'must not be empty'],
  ])('%j is refused clearly', (args, message) => {
    expect(() => parseOptions(args, WEBHOOK_OPTIONS, {})).toThrow(message);
  });

  test('a bad environment value names the variable', () => {
    expect(() => parseOptions([], WEBHOOK_OPTIONS, { BKF_SHUTDOWN_GRACE: 'x' })).toThrow(
      'BKF_SHUTDOWN_GRACE "x"',
    );
  });

  test('a seconds value in whole milliseconds, where the plain product is not whole', () => {
    expect(Number.isInteger(1.001 * 1000)).toBe(false);
    expect([1.001, 1.005, 0.3, 2.5, 600].map(millisecondsOf)).toEqual([1001, 1005, 300, 2500, 600_000]);
  });

  test('host:port forms', () => {
    expect(parseHostPort('[::1]:9443')).toEqual({ host: '::1', port: 9443 });
    expect(parseHostPort(':0')).toEqual({ host: '0.0.0.0', port: 0 });
    expect(parseHostPort('9443')).toBeUndefined();
  });

  test('webhook start-up refuses missing or half certificates before doing anything', async () => {
    const none = await cli('webhook', '--kubeconfig', '/nonexistent');
    expect(none).toMatchObject({
      code: 2,
      err: expect.stringContaining(
        'no certificate: set --tls-cert-file and --tls-key-file (mounted, e.g. by cert-manager), use --cert-mode self-managed, or --local',
      ),
    });
    const half = await cli('webhook', '--tls-cert-file', '/x');
    expect(half.err).toContain('--tls-cert-file and --tls-key-file go together');
    const local = await cli('webhook', '--local', '--kubeconfig', '/nonexistent/kubeconfig');
    expect(local.err).toContain('cannot load kubeconfig /nonexistent/kubeconfig');
    const files = await cli(
      'webhook',
      '--tls-cert-file',
      '/nonexistent/c',
      '--tls-key-file',
      '/nonexistent/k',
      '--kubeconfig',
      '/nonexistent/kc',
    );
    expect(files).toMatchObject({ code: 2 });
  });
});

describe('each command loads only its own dependencies', () => {
  // Resolving the CLI and a command's flags must not pull in the libraries other commands need:
  // the sidecar runs in every buildkitd pod and has a memory budget.
  const heavy = ['@kubernetes/client-node', 'express', 'node-forge', 'prom-client'];

  function packagesLoaded(code: string): string[] {
    const script = `
      import { registerHooks } from 'node:module';
      const seen = new Set();
      registerHooks({ resolve(specifier, context, next) { if (!specifier.startsWith('.') && !specifier.startsWith('node:') && !specifier.startsWith('file:')) seen.add(specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/')); return next(specifier, context); } });
      ${code}
      console.log(JSON.stringify([...seen]));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: new URL('../../../', import.meta.url),
      encoding: 'utf8',
    });
    return JSON.parse(out.trim().split('\n').pop()!) as string[];
  }

  test('listing commands and parsing flags loads none of the heavy libraries', () => {
    const loaded = packagesLoaded(`
      const { COMMANDS, helpText } = await import('./cli/commands.ts');
      helpText();
      for (const name of Object.keys(COMMANDS)) void COMMANDS[name].options;`);
    expect(loaded.filter((p) => heavy.includes(p))).toEqual([]);
  });

  test('the sidecar loads none of them, prom-client included (its /metrics has its own writer)', () => {
    // what `buildkit-fleet sidecar` imports: the CLI entry, then the command's module
    const loaded = packagesLoaded(`
      await import('./cli/main.ts');
      await import('./sidecar/main.ts');`);
    expect(loaded).toContain('pino'); // the hook does see the sidecar's packages
    for (const p of heavy) expect(loaded).not.toContain(p);
  });
});
