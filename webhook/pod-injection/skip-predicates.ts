// Why a pod is left alone without a word to its owner (a skip, not a refusal). Each predicate is
// named so a reason in the logs leads to one function and one table test.
import {
  AUTOSCALE_ENABLED,
  AUTOSCALE_LABEL,
  INJECT_ANNOTATION,
  INJECT_DISABLED,
  SIDECAR_INJECTED_ANNOTATION,
} from '../../api/labels.ts';
import { SYSTEM_NAMESPACES } from '../../api/namespaces.ts';
import type { PodContext } from './config.ts';

/** Returns why the pod is left alone, or undefined. */
export type SkipPredicate = (ctx: PodContext) => string | undefined;

export const platformNamespace: SkipPredicate = ({ namespace, config }) =>
  namespace === config.platformNamespace ? `namespace ${namespace} is the platform's own` : undefined;

export const systemNamespace: SkipPredicate = ({ namespace }) =>
  SYSTEM_NAMESPACES.includes(namespace) ? `namespace ${namespace} is a system namespace` : undefined;

export const notOptedIn: SkipPredicate = ({ pod }) =>
  pod.metadata?.labels?.[AUTOSCALE_LABEL] === AUTOSCALE_ENABLED
    ? undefined
    : `not opted in (label ${AUTOSCALE_LABEL} is not "${AUTOSCALE_ENABLED}")`;

export const optedOut: SkipPredicate = ({ pod }) =>
  pod.metadata?.annotations?.[INJECT_ANNOTATION] === INJECT_DISABLED
    ? `opted out (annotation ${INJECT_ANNOTATION}: "${INJECT_DISABLED}")`
    : undefined;

export const alreadyInjected: SkipPredicate = ({ pod }) => {
  const marker = pod.metadata?.annotations?.[SIDECAR_INJECTED_ANNOTATION];
  return marker === undefined ? undefined : `already injected (${SIDECAR_INJECTED_ANNOTATION}: ${marker})`;
};

/**
 * Checked in this order, the first reason wins: the namespaces first, so a platform or system pod
 * is never judged by its labels, and the opt-in before anything that only opted-in pods carry.
 */
export const SKIP_PREDICATES: readonly SkipPredicate[] = [
  platformNamespace,
  systemNamespace,
  notOptedIn,
  optedOut,
  alreadyInjected,
];

/** The first predicate's reason to skip the pod, or undefined to go on. */
export function skipReason(ctx: PodContext): string | undefined {
  for (const predicate of SKIP_PREDICATES) {
    const reason = predicate(ctx);
    if (reason !== undefined) return reason;
  }
  return undefined;
}
