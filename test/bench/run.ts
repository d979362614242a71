// `npm run bench [-- name ...]`: runs the benchmarks (all by default). Not part of npm test:
// each compares against a baseline measured in the same run and reports ratios.
const BENCHMARKS: Record<string, () => Promise<{ run: () => Promise<void> }>> = {
  webhook: () => import('./webhook.ts'),
  controller: () => import('./controller.ts'),
  sidecar: () => import('./sidecar.ts'),
  'cold-start': () => import('./cold-start.ts'),
  wake: () => import('./wake.ts'),
  activator: () => import('./activator.ts'),
  races: () => import('./races.ts'),
};

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !(name in BENCHMARKS));
if (unknown.length) {
  console.error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(BENCHMARKS).join(', ')}`);
  process.exit(2);
}
for (const name of wanted.length ? wanted : Object.keys(BENCHMARKS)) {
  const module = await BENCHMARKS[name]!();
  await module.run();
}
