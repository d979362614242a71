// Which pod fields the API server we talk to understands, from its version (GET /version).
//
// Rule: never send a field the server would drop silently. A server that does not know a field
// (or knows it behind a disabled feature gate) removes it from the stored object without an error,
// so a pod asking for gRPC probes on 1.20 would simply have no probes. For each such field the pod
// builder has a fallback that means the same thing on the older server, or refuses to build.

export interface ServerVersion {
  major: number;
  minor: number;
}

/** What /version returns (client-node's VersionInfo has these fields, all strings). */
export interface VersionInfoLike {
  major?: string;
  minor?: string;
  gitVersion?: string;
}

export interface ServerFeatures {
  version: ServerVersion;
  /**
   * `probe.grpc`. Alpha in 1.23, beta and on by default in 1.24, GA (gate locked on) in 1.27.
   * From 1.24 on: on 1.24-1.26 an admin could still turn the gate off, but then the API server
   * refuses the pod (a probe without handler), so nothing is lost silently.
   * Fallback: an exec probe running `buildctl debug workers` on buildkitd's unix socket.
   */
  grpcProbes: boolean;
  /**
   * Init containers with `restartPolicy: Always` (sidecars that start before and stop after the
   * main container). Beta and on by default in 1.29, GA in 1.33. Used by the sidecar injector.
   */
  nativeSidecars: boolean;
  /**
   * `securityContext.appArmorProfile`, GA in 1.30 (the API server copies it to the annotation for
   * older kubelets). Fallback: the `container.apparmor.security.beta.kubernetes.io/<container>`
   * annotation, which 1.30+ still honours but deprecates.
   */
  appArmorField: boolean;
  /**
   * `securityContext.seccompProfile`, GA in 1.19. Fallback: the
   * `container.seccomp.security.alpha.kubernetes.io/<container>` annotation.
   */
  seccompField: boolean;
  /**
   * The server keeps `spec.hostUsers: false`. The field exists since 1.25, but only behind the
   * UserNamespacesSupport gate, which is off by default until 1.33; with the gate off the API
   * server drops the field silently and the pod would run in the host user namespace. So this is
   * true from 1.33 on; for 1.25-1.32 see hostUsersBehindGate.
   */
  hostUsers: boolean;
  /**
   * 1.25-1.32: the field exists but its gate is off by default. The version cannot tell; a caller
   * that can check (e.g. a dry-run create that keeps `hostUsers: false`) may set hostUsers to true.
   */
  hostUsersBehindGate: boolean;
  /**
   * The EndpointSlice API version: `discovery.k8s.io/v1` from 1.21 (GA), `v1beta1` before (which
   * kube-proxy reads from 1.19 on). The activator route is an EndpointSlice.
   */
  endpointSliceVersion: 'v1' | 'v1beta1';
  /** 1.20 is the oldest server the platform builds pods for (the local control plane). */
  supported: boolean;
}

export const OLDEST_SUPPORTED: ServerVersion = { major: 1, minor: 20 };

const atLeast = (v: ServerVersion, major: number, minor: number): boolean =>
  v.major > major || (v.major === major && v.minor >= minor);

// "v1.31.1-eks-a737599", "v1.31.1+k3s1", "1.20.2", "v1.28.3-gke.1286000"
const GIT_VERSION = /^v?(\d+)\.(\d+)(?:[.+-]|$)/;
// major "1", minor "20" or "28+" (EKS, GKE)
const LEADING_NUMBER = /^\s*(\d+)/;

/**
 * The major and minor version of a server, from `/version` (gitVersion first, then major/minor),
 * or from a version string. Undefined when neither can be read.
 */
export function parseServerVersion(info: VersionInfoLike | string | undefined): ServerVersion | undefined {
  if (info === undefined) return undefined;
  const fromGit = (text: string | undefined): ServerVersion | undefined => {
    const match = text === undefined ? null : GIT_VERSION.exec(text.trim());
    return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
  };
  if (typeof info === 'string') return fromGit(info);
  const git = fromGit(info.gitVersion);
  if (git) return git;
  const major = LEADING_NUMBER.exec(info.major ?? '');
  const minor = LEADING_NUMBER.exec(info.minor ?? '');
  return major && minor ? { major: Number(major[1]), minor: Number(minor[1]) } : undefined;
}

/** Features of a server version; an unknown version gets the oldest supported server's. */
export function serverFeatures(version: ServerVersion | undefined): ServerFeatures {
  const v = version ?? OLDEST_SUPPORTED;
  return {
    version: { major: v.major, minor: v.minor },
    grpcProbes: atLeast(v, 1, 24),
    nativeSidecars: atLeast(v, 1, 29),
    appArmorField: atLeast(v, 1, 30),
    seccompField: atLeast(v, 1, 19),
    hostUsers: atLeast(v, 1, 33),
    hostUsersBehindGate: atLeast(v, 1, 25) && !atLeast(v, 1, 33),
    endpointSliceVersion: atLeast(v, 1, 21) ? 'v1' : 'v1beta1',
    supported: atLeast(v, OLDEST_SUPPORTED.major, OLDEST_SUPPORTED.minor),
  };
}

/** Shortcut for `serverFeatures(parseServerVersion(info))`. */
export function featuresFromVersionInfo(info: VersionInfoLike | string | undefined): ServerFeatures {
  return serverFeatures(parseServerVersion(info));
}
