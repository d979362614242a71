// Object metadata shared by everything the controller creates: owner references, names and label
// values that Kubernetes accepts whatever the Buildkit or template is called.
import { createHash } from 'node:crypto';

import type { V1OwnerReference } from '@kubernetes/client-node';

import type { ConditionReason } from '../api/conditions.ts';
import { REASON } from '../api/conditions.ts';
import { API_VERSION, BUILDKIT, BUILDKIT_TEMPLATE } from '../api/group.ts';
import { byCodePoint } from '../api/order.ts';
import type { Buildkit, BuildkitTemplate } from '../api/types.generated.ts';

/** The object cannot be built from this input (the controller reports it as a condition). */
export class BuildError extends Error {
  readonly reason: ConditionReason;
  constructor(reason: ConditionReason, message: string) {
    super(message);
    this.name = 'BuildError';
    this.reason = reason;
  }
}

function controllerReference(kind: string, object: Buildkit | BuildkitTemplate): V1OwnerReference {
  const name = object.metadata?.name;
  const uid = object.metadata?.uid;
  if (!name || !uid) {
    // An owner reference without uid is refused by the API server; say why here instead.
    throw new BuildError(
      REASON.MissingMetadata,
      `${kind} needs metadata.name and metadata.uid to own objects`,
    );
  }
  // controller: only one controller per object, so nobody else adopts it; blockOwnerDeletion:
  // foreground deletion of the owner waits for it.
  return { apiVersion: API_VERSION, kind, name, uid, controller: true, blockOwnerDeletion: true };
}

export const buildkitOwnerReference = (buildkit: Buildkit): V1OwnerReference =>
  controllerReference(BUILDKIT.kind, buildkit);

export const templateOwnerReference = (template: BuildkitTemplate): V1OwnerReference =>
  controllerReference(BUILDKIT_TEMPLATE.kind, template);

const shortHash = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 10);

/** Cuts `text` to `length` and removes what a name may not end with. */
const cut = (text: string, length: number): string => text.slice(0, length).replace(/[^a-z0-9]+$/i, '');

const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

/**
 * `name` as a label value. Object names may be 253 characters, label values 63: a longer name
 * becomes its first 52 characters, '-' and 10 hex digits of its SHA-256, unique in practice and
 * still recognisable. Selections that must be exact also check the owner reference's uid.
 */
export function labelValueForName(name: string): string {
  if (name.length <= 63 && LABEL_VALUE.test(name)) return name;
  return `${cut(name, 52)}-${shortHash(name)}`;
}

const DNS_1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

/**
 * The Service name of a Buildkit: its own name when that is a valid Service name (DNS-1035 label:
 * at most 63 characters, lowercase letters, digits and '-', starting with a letter). Buildkit
 * names are DNS subdomains (dots, a leading digit, up to 253 characters); such a name is made
 * valid and, because that could make two names equal ("a.b" and "a-b"), always gets a hash of the
 * original: `<valid prefix>-<10 hex digits>`.
 *
 * The name can still be taken, by an unrelated Service or (improbably) by another Buildkit named
 * exactly like a hashed name: the controller must only adopt a Service whose controller owner
 * reference is this Buildkit's uid, and report a conflict otherwise.
 */
export function serviceNameFor(buildkitName: string): string {
  if (buildkitName.length <= 63 && DNS_1035_LABEL.test(buildkitName)) return buildkitName;
  let base = buildkitName.toLowerCase().replace(/[^a-z0-9-]+/g, '-');
  if (!/^[a-z]/.test(base)) base = `bk-${base}`;
  const prefix = cut(base, 52);
  return `${prefix || 'bk'}-${shortHash(buildkitName)}`;
}

const CLAIM_SUFFIX = '-cache';
const DNS_SUBDOMAIN_MAX = 253;

/**
 * The PersistentVolumeClaim of a Buildkit with spec.persistence: `<buildkit>-cache`. Buildkit
 * names are DNS subdomains like claim names, so only the length can break it: a name too long for
 * the suffix keeps a valid prefix and gets a hash of the whole name, `<prefix>-<10 hex>-cache`.
 * The name is all that ties a retained claim to a later Buildkit of the same name.
 */
export function claimNameFor(buildkitName: string): string {
  if (buildkitName.length + CLAIM_SUFFIX.length <= DNS_SUBDOMAIN_MAX) return buildkitName + CLAIM_SUFFIX;
  const prefix = cut(buildkitName, DNS_SUBDOMAIN_MAX - CLAIM_SUFFIX.length - 11);
  return `${prefix}-${shortHash(buildkitName)}${CLAIM_SUFFIX}`;
}

/** Kubernetes resource names of a template's ConfigMaps (seatgeek's names). */
export const tomlConfigMapName = (templateName: string): string => `buildkit-${templateName}-toml`;
export const scriptsConfigMapName = (templateName: string): string => `buildkit-${templateName}-scripts`;

/** A copy of `map` with sorted keys and without undefined values; undefined when empty. */
export function sortedMap(
  map: Record<string, string | undefined> | undefined,
): Record<string, string> | undefined {
  const entries = Object.entries(map ?? {}).filter((e): e is [string, string] => typeof e[1] === 'string');
  if (entries.length === 0) return undefined;
  return Object.fromEntries(entries.sort(([a], [b]) => byCodePoint(a, b)));
}
