// Which folders of node_modules an image needs, decided from package-lock.json alone: the images
// copy them from the node_modules npm ci already made, so building one needs no network and no
// second install. Lock keys are the folders (`node_modules/a/node_modules/b`), which is also the
// layout Node's resolution walks, so a copied subset resolves exactly as the full tree does.

export interface LockPackage {
  version?: string;
  dev?: boolean;
  optional?: boolean;
  devOptional?: boolean;
  link?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

export interface Lockfile {
  lockfileVersion: number;
  packages: Record<string, LockPackage>;
}

export function checkLockfile(lock: unknown, file: string): Lockfile {
  const l = lock as Partial<Lockfile> | null;
  if (!l || typeof l.packages !== 'object' || (l.lockfileVersion ?? 0) < 2) {
    throw new Error(`${file}: not an npm lockfile of version 2 or later (no "packages")`);
  }
  return l as Lockfile;
}

const isPackageKey = (key: string) => key.startsWith('node_modules/');

/**
 * The lock keys a production install (`npm ci --omit=dev`, `npm prune --omit=dev`) keeps: every
 * package not marked `dev`. `devOptional` ones stay: they are optional dependencies of a
 * production package. Sorted.
 */
export function productionPackages(lock: Lockfile): string[] {
  return Object.entries(lock.packages)
    .filter(([key, p]) => isPackageKey(key) && !p.dev && !p.link)
    .map(([key]) => key)
    .sort();
}

/**
 * The lock key `name` resolves to when required from the package at `from` ('' is the project
 * itself), by Node's rule: the nearest node_modules folder up the tree that has it.
 */
export function resolvePackage(lock: Lockfile, from: string, name: string): string | undefined {
  let dir = from;
  for (;;) {
    const candidate = `${dir === '' ? '' : `${dir}/`}node_modules/${name}`;
    if (lock.packages[candidate]) return candidate;
    if (dir === '') return undefined;
    dir = dir.slice(0, dir.lastIndexOf('node_modules/')).replace(/\/$/, '');
  }
}

/**
 * The lock keys of `roots` (package names as the project requires them) and everything they
 * need at run time: dependencies, and optional and peer dependencies where installed. A missing
 * required dependency means node_modules would not run either, so it throws. Sorted.
 */
export function dependencyClosure(lock: Lockfile, roots: readonly string[]): string[] {
  const found = new Set<string>();
  const visit = (from: string, name: string, required: boolean) => {
    const key = resolvePackage(lock, from, name);
    if (key === undefined) {
      if (required) {
        throw new Error(`package-lock.json has no ${name} for ${from === '' ? 'the project' : from}`);
      }
      return;
    }
    if (found.has(key)) return;
    found.add(key);
    const p = lock.packages[key]!;
    for (const dep of Object.keys(p.dependencies ?? {})) visit(key, dep, true);
    for (const dep of Object.keys(p.optionalDependencies ?? {})) visit(key, dep, false);
    for (const dep of Object.keys(p.peerDependencies ?? {})) {
      visit(key, dep, !p.peerDependenciesMeta?.[dep]?.optional);
    }
  };
  for (const root of roots) visit('', root, true);
  return [...found].sort();
}
