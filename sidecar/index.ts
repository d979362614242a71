// The sidecar component's public face: what another component needs to run the sidecar in a pod
// (the injected container's flags, by their environment names, and its process settings). Only
// declaration modules are re-exported, so importing this never loads the proxy engines, the native
// addon or main.ts; the webhook imports it on every start.
export { SIDECAR_OPTIONS } from './options.ts';
export { SIDECAR_ENV } from './process-settings.ts';
