// Which node_modules folders an image gets (scripts/image/packages.ts), on a made-up lockfile with
// the shapes npm writes: nested copies, scoped names, dev, optional and peer dependencies.
import {
  checkLockfile,
  dependencyClosure,
  productionPackages,
  resolvePackage,
} from '../../../scripts/image/packages.ts';
import type { Lockfile } from '../../../scripts/image/packages.ts';
import { parseLdd } from '../../../scripts/image/files.ts';

const lock: Lockfile = {
  lockfileVersion: 3,
  packages: {
    '': { dependencies: { app: '1' }, devDependencies: { tool: '1' } } as never,
    'node_modules/app': { dependencies: { '@s/util': '1', shared: '2' } },
    'node_modules/@s/util': { dependencies: { shared: '1' }, optionalDependencies: { 'not-here': '1' } },
    'node_modules/shared': { version: '1.0.0' },
    'node_modules/app/node_modules/shared': { version: '2.0.0', peerDependencies: { host: '1' } },
    'node_modules/host': { version: '1.0.0' },
    'node_modules/tool': { dev: true, dependencies: { shared: '1', 'tool-only': '1' } },
    'node_modules/tool-only': { dev: true },
    'node_modules/fsevents': { optional: true },
    'node_modules/both': { devOptional: true },
  },
};

test('production packages: everything not marked dev, optional ones included', () => {
  expect(productionPackages(lock)).toEqual([
    'node_modules/@s/util',
    'node_modules/app',
    'node_modules/app/node_modules/shared',
    'node_modules/both',
    'node_modules/fsevents',
    'node_modules/host',
    'node_modules/shared',
  ]);
});

test.each([
  ['', 'shared', 'node_modules/shared'],
  ['node_modules/app', 'shared', 'node_modules/app/node_modules/shared'],
  ['node_modules/@s/util', 'shared', 'node_modules/shared'],
  ['node_modules/app/node_modules/shared', 'host', 'node_modules/host'],
  ['node_modules/app', 'nothing', undefined],
])('from %j, %s resolves to %s (the nearest node_modules up the tree)', (from, name, key) => {
  expect(resolvePackage(lock, from, name)).toBe(key);
});

test('a closure follows dependencies, nested copies and installed peers, and skips absent optional ones', () => {
  expect(dependencyClosure(lock, ['app'])).toEqual([
    'node_modules/@s/util',
    'node_modules/app',
    'node_modules/app/node_modules/shared',
    'node_modules/host',
    'node_modules/shared',
  ]);
  // a dev package's closure is its own: nothing of app's
  expect(dependencyClosure(lock, ['tool'])).toEqual([
    'node_modules/shared',
    'node_modules/tool',
    'node_modules/tool-only',
  ]);
});

test('a required package the lock does not have is an error, not a smaller image', () => {
  expect(() => dependencyClosure(lock, ['missing'])).toThrow(
    'package-lock.json has no missing for the project',
  );
  const { ['node_modules/host']: _gone, ...packages } = lock.packages;
  const broken: Lockfile = { ...lock, packages };
  expect(() => dependencyClosure(broken, ['app'])).toThrow(
    'package-lock.json has no host for node_modules/app/node_modules/shared',
  );
});

test('an old lockfile without "packages" is refused', () => {
  expect(() => checkLockfile({ lockfileVersion: 1, dependencies: {} }, 'x/package-lock.json')).toThrow(
    'x/package-lock.json: not an npm lockfile of version 2 or later',
  );
});

describe('parseLdd', () => {
  test('the libraries and the loader, by the path the binary asks for; the vDSO is not a file', () => {
    const output = [
      '\tlinux-vdso.so.1 (0x00007ffd)',
      '\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f40fd600000)',
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f40fd41e000)',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007f40fd94b000)',
      '',
    ].join('\n');
    expect(parseLdd(output, 'node')).toEqual([
      '/lib/x86_64-linux-gnu/libstdc++.so.6',
      '/lib/x86_64-linux-gnu/libc.so.6',
      '/lib64/ld-linux-x86-64.so.2',
    ]);
  });

  test('a static binary needs none; a library ldd cannot find is an error', () => {
    expect(parseLdd('\tstatically linked\n', 'busybox')).toEqual([]);
    expect(() => parseLdd('\tlibfoo.so.1 => not found\n', 'x')).toThrow(
      'x needs libfoo.so.1, which ldd cannot find',
    );
  });
});
