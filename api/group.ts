// Names shared by every component: the API group, the kinds and the defaults that the CRD schema,
// the webhook and the controller must agree on.

export const GROUP = 'buildkit.seatgeek.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export const BUILDKIT_TEMPLATE = {
  kind: 'BuildkitTemplate',
  listKind: 'BuildkitTemplateList',
  plural: 'buildkittemplates',
  singular: 'buildkittemplate',
  shortNames: ['bkt'],
} as const;

export const BUILDKIT = {
  kind: 'Buildkit',
  listKind: 'BuildkitList',
  plural: 'buildkits',
  singular: 'buildkit',
  shortNames: ['bk'],
} as const;

/** seatgeek keeps `buildkit-<template>-toml` (63 chars) a valid name by capping template names. */
export const TEMPLATE_NAME_MAX_LENGTH = 57;

export const DEFAULT_PORT = 1234;
export const DEFAULT_IMAGE = 'moby/buildkit:latest';
export const DEFAULT_ROOTLESS_IMAGE = 'moby/buildkit:rootless';
export const DEFAULT_IMAGE_PULL_POLICY = 'IfNotPresent';
export const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS = 900;
export const DEFAULT_IDLE_TIMEOUT = '5m';
export const DEFAULT_PERSISTENCE_SIZE = '20Gi';
export const PERSISTENCE_ACCESS_MODES = ['ReadWriteOnce', 'ReadWriteOncePod', 'ReadWriteMany'] as const;
/** buildkitd's state directory (its --root), where the build cache lives. */
export const DEFAULT_STATE_DIR = '/var/lib/buildkit';
export const DEFAULT_ROOTLESS_STATE_DIR = '/home/user/.local/share/buildkit';
/** Where the buildkitd pod mounts buildkitd.toml (read-only), per layout. */
export const CONFIG_DIR = '/etc/buildkit';
export const ROOTLESS_CONFIG_DIR = '/home/user/.config/buildkit';
/** The uid and gid rootless buildkitd runs as (the moby/buildkit:rootless image's `user`). */
export const ROOTLESS_UID = 1000;
/** buildkitd's unix socket; a uid-1000 process cannot create /run/buildkit, so rootless uses XDG_RUNTIME_DIR. */
export const SOCKET_PATH = '/run/buildkit/buildkitd.sock';
export const ROOTLESS_SOCKET_PATH = `/run/user/${ROOTLESS_UID}/buildkit/buildkitd.sock`;
/** Where the pod mounts the preStop drain script (one file, by subPath). */
export const PRESTOP_SCRIPT_PATH = '/usr/local/bin/buildkit-prestop.sh';

export const PHASES = ['Pending', 'Running', 'ScaledToZero', 'Waking', 'Failed'] as const;
export type Phase = (typeof PHASES)[number];
