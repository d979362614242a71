// Namespaces more than one component has to agree on: the webhook leaves their pods alone and its
// configurations exclude them, and the install manifests and flags default to the platform's own.
// Kept free of project imports so any component can depend on it.

/** Namespaces never injected (besides the platform's own), also when a 1.20 namespace lacks its name label. */
export const SYSTEM_NAMESPACES: readonly string[] = ['kube-system', 'kube-public', 'kube-node-lease'];

/** Where the chart installs the platform (webhook/manifests.ts), when POD_NAMESPACE does not say. */
export const DEFAULT_PLATFORM_NAMESPACE = 'buildkit-fleet-system';
