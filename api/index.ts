// The public API of buildkit-fleet: resource types, CRDs and shared names.
export * from './group.ts';
export type * from './types.generated.ts';
export { allCrds, buildkitCrd, buildkitTemplateCrd } from './crds.ts';
